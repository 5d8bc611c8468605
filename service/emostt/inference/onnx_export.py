"""The ONNX export in a child process whose life is bound to the process that started it.

A server exports while it serves, and not in its own process: torch's exporter traces by
patching ``torch.nn.Module.__call__`` process-wide, which breaks torch forward passes that
run meanwhile on other threads. The child also runs at a low OS priority and loads its own
fp32 copy of the model, which is freed when it exits.

One export at a time: the parent takes the cache entry's export lock (``onnx_cache``) before
it starts the child, and the child inherits the lock's descriptor, so the lock is held while
either of them lives. A second server of the same model waits for the lock in its export
thread (serving with torch meanwhile), finds the export finished, and starts no child.

The child ends with its parent, however the parent ends (SIGTERM, SIGKILL, a crash): its
stdin is a pipe from the parent that the parent never writes. A thread in the child reads
it; end of file means the parent's end was closed, which the kernel does when the parent
dies, and the child then removes its staging dir and exits at once. Chosen over Linux's
``prctl(PR_SET_PDEATHSIG)``, which fires when the parent *thread* that started the child
ends (here a thread that may end before the process), is Linux-only, and misses a parent
that died before the child set it. The pipe's write end is close-on-exec, so processes the
server starts later (spawned front ends) do not hold it open; a bare ``fork`` would.

Concurrency: ``export_in_subprocess`` blocks its calling thread (the engine's export thread)
until the export is ready; any number of threads and processes may call it at once.

This module imports only the standard library and light emostt modules at import time: the
child imports it first, to watch its parent before it spends seconds importing torch.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from emostt.errors import ModelLoadError
from emostt.inference.onnx_cache import (
    cached_export,
    export_lock,
    export_locked,
    prepare_root,
    staging_dirs,
)

log = logging.getLogger(__name__)

# An export child still running after this long is stuck: SenseVoiceSmall takes minutes on 2
# idle cores, and the child runs niced, so a busy server can stretch that a lot.
EXPORT_TIMEOUT_S = 3 * 3600.0
# The child's exit status when its parent went away (it exported nothing).
PARENT_GONE_EXIT = 75


def export_in_subprocess(model_dir: Path, cache_dir: Path, timeout_s: float = EXPORT_TIMEOUT_S) -> Path:
    """The int8 ONNX file for the model in the local dir ``model_dir``, exported into
    ``cache_dir`` by a child process unless cached or exported meanwhile by another process
    (waited for). Blocks; ModelLoadError with the child's reason on failure."""
    cached = cached_export(cache_dir)
    if cached is not None:
        return cached
    prepare_root(cache_dir)
    with export_lock(cache_dir) as lock_fd:
        cached = cached_export(cache_dir)
        if cached is not None:
            log.info("using the ONNX export another process finished", extra={"dir": str(cache_dir)})
            return cached
        return _run_child(model_dir, cache_dir, lock_fd, timeout_s)


def _child_command(model_dir: Path, cache_dir: Path) -> list[str]:
    # Imported here: threads.py imports torch, which this module must not at import time.
    from emostt.inference.threads import LOW_PRIORITY_NICE

    # The child lowers its priority before importing anything: numpy and torch start thread
    # pools at import, and threads inherit the priority of the thread that starts them.
    main = (
        "import os, sys; "
        "os.setpriority(os.PRIO_PROCESS, 0, "
        f"max(os.getpriority(os.PRIO_PROCESS, 0), {LOW_PRIORITY_NICE})); "
        "from emostt.inference.onnx_export import export_main; sys.exit(export_main(sys.argv[1:]))"
    )
    return [sys.executable, "-c", main, str(model_dir), str(cache_dir)]


def _run_child(model_dir: Path, cache_dir: Path, lock_fd: int, timeout_s: float) -> Path:
    """Run the export child (it inherits ``lock_fd``) and wait for it; the export's path."""
    # The child imports this package from wherever the caller did.
    package_root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    # stderr to a file, not a pipe: nobody has to drain it while waiting, and its tail is the reason.
    with tempfile.TemporaryFile() as errors:
        try:
            child = subprocess.Popen(
                _child_command(model_dir, cache_dir),
                stdin=subprocess.PIPE,  # never written: the child's lifeline (see the module doc)
                stdout=subprocess.DEVNULL,
                stderr=errors,
                env=env,
                pass_fds=(lock_fd,),
            )
        except OSError as exc:
            raise ModelLoadError(f"cannot start the ONNX export process: {exc}") from exc
        log.info("started the ONNX export process", extra={"pid": child.pid, "dir": str(cache_dir)})
        try:
            returncode = child.wait(timeout_s)
        except subprocess.TimeoutExpired as exc:
            child.kill()
            child.wait()
            raise ModelLoadError(
                f"the ONNX export took longer than {timeout_s:.0f} s and was stopped"
            ) from exc
        finally:
            # Whatever happened here (an exception in this thread too), the child must not outlive it.
            if child.stdin is not None:
                child.stdin.close()
        errors.seek(0)
        lines = errors.read().decode(errors="replace").splitlines()
    path = cached_export(cache_dir)
    if returncode != 0 or path is None:
        reason = next((line for line in reversed(lines) if line.strip()), "no message")
        raise ModelLoadError(f"the ONNX export process failed (exit {returncode}): {reason}")
    return path


def export_main(argv: list[str]) -> int:
    """The export child (already niced): ``MODEL_DIR CACHE_DIR``, run holding the entry's export
    lock (an inherited descriptor). 0 when the cache entry is complete; the last stderr line
    says why it failed."""
    model_dir, cache_dir = (Path(arg) for arg in argv)
    _exit_with_parent(cache_dir)
    if not (model_dir / "config.yaml").is_file():
        print(f"ModelLoadError: {model_dir} is not a model dir (no config.yaml)", file=sys.stderr)
        return 1
    try:
        from emostt.inference.funasr_import import auto_model_class

        auto_model = auto_model_class()(
            model=str(model_dir), device="cpu", disable_update=True, disable_pbar=True
        )
        # funasr turns on INFO logging, and ONNX Runtime's quantizer logs every tensor at INFO.
        logging.getLogger().setLevel(logging.WARNING)
        export_locked(auto_model, cache_dir)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def _exit_with_parent(cache_dir: Path) -> None:
    """Start the thread that ends this child when its stdin (the parent's pipe) reaches end of file."""

    def watch() -> None:
        try:
            while os.read(0, 4096):  # the parent never writes; b"" is end of file
                pass
        except OSError:
            pass
        # This child still holds the entry's lock, so every staging dir of the entry is its own
        # or a dead exporter's. A file the export writes after this is left for the next holder.
        for staging in staging_dirs(cache_dir.parent, cache_dir):
            shutil.rmtree(staging, ignore_errors=True)
        os._exit(PARENT_GONE_EXIT)  # now, from this thread: the export must not run on

    threading.Thread(target=watch, name="emostt-export-parent", daemon=True).start()
