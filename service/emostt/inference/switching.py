"""The encoder backend while serving: the pass in use, and the background ONNX export that
may replace it.

With backend ``auto`` on the CPU, an engine whose model has no cached ONNX export serves with
torch at once and, in a server, exports in the background: a daemon thread waits for
``onnx_export.export_in_subprocess`` (a child process at low priority, one per model revision
on the machine), loads the ONNX encoder and switches to it while serving. A failed export is
logged once and not retried; torch keeps serving.

Concurrency: ``current`` (the pass) and ``info`` are plain attributes that the export thread
replaces, never mutates: the pass first, then ``info``. A caller reads ``current`` once per
call, so it runs wholly on the backend it started with, and the pass it holds keeps its model
alive until it returns; a thread that sees ``info.backend == "onnx"`` is already served by
ONNX. ``wait_for_backend`` may be called from any thread.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Literal

from emostt.errors import ModelLoadError
from emostt.inference.engine import ModelInfo
from emostt.inference.onnx_encoder import OnnxEncoder
from emostt.inference.onnx_export import export_in_subprocess
from emostt.inference.ort_session import EncoderThreads
from emostt.inference.passes import EncoderPass, OnnxPass
from emostt.inference.threads import lower_thread_priority

log = logging.getLogger(__name__)

# "none": no export planned; "exporting": a background export runs; "ready": the engine serves
# with the ONNX encoder; "failed": the background export failed and torch keeps serving.
ExportState = Literal["none", "exporting", "ready", "failed"]

EXPORT_THREAD_NAME = "emostt-onnx-export"


class EncoderSwitch:
    """The encoder pass serving now and the model info that names its backend."""

    def __init__(self, encoder_pass: EncoderPass, info: ModelInfo) -> None:
        self.current = encoder_pass
        self.info = dataclasses.replace(info, backend=encoder_pass.backend)
        self.state: ExportState = "ready" if encoder_pass.backend == "onnx" else "none"
        # Set when a background export has ended: switched, or failed.
        self._done = threading.Event()

    def wait_for_backend(self, backend: str, timeout: float | None = None) -> bool:
        """Whether ``info.backend`` is ``backend``, waiting up to ``timeout`` s while a background
        export runs (returning early if it fails)."""
        if self.info.backend == backend:
            return True
        if self.state == "exporting":
            self._done.wait(timeout)
        return self.info.backend == backend

    def start_export(self, model_dir: Path, cache_dir: Path, onnx_threads: EncoderThreads) -> None:
        """Export the model in ``model_dir`` into ``cache_dir`` from one daemon thread, then switch."""
        self.state = "exporting"
        log.info(
            "exporting the encoder to ONNX in the background; serving with torch until it finishes",
            extra={"model": self.info.name, "dir": str(cache_dir)},
        )
        thread = threading.Thread(
            target=self._export_and_switch,
            args=(model_dir, cache_dir, onnx_threads),
            name=EXPORT_THREAD_NAME,
            daemon=True,  # the process may exit mid-export: the export child then ends too
        )
        thread.start()

    def _export_and_switch(self, model_dir: Path, cache_dir: Path, onnx_threads: EncoderThreads) -> None:
        """The export thread's body. Never raises: on failure torch keeps serving."""
        started = time.monotonic()
        try:
            # Serving keeps the cores: the child exports niced, and the session build here is too.
            lower_thread_priority()
            if not (model_dir / "config.yaml").is_file():
                raise ModelLoadError(f"no local model dir to export from (got {str(model_dir)!r})")
            encoder = OnnxEncoder(export_in_subprocess(model_dir, cache_dir), onnx_threads)
        except Exception as exc:  # whatever went wrong: say why once, keep serving, no retry
            self.state = "failed"
            log.error(
                "ONNX export failed; serving with torch: %s",
                exc,
                extra={"model": self.info.name, "dir": str(cache_dir)},
            )
            self._done.set()
            return
        self.switch_to(OnnxPass(encoder))
        elapsed = time.monotonic() - started
        log.info(
            "switched to the ONNX encoder after %.0f s",
            elapsed,
            extra={"model": self.info.name, "elapsed_s": round(elapsed, 1)},
        )

    def switch_to(self, encoder_pass: EncoderPass) -> None:
        """Serve later calls with ``encoder_pass``. Calls already running keep the pass they
        read, and its model, until they return; the old pass is then freed with its weights.
        The torch modules are not changed in place, because a running call still uses them."""
        self.current = encoder_pass
        self.info = dataclasses.replace(self.info, backend=encoder_pass.backend)
        self.state = "ready"
        self._done.set()
