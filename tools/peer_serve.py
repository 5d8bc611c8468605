"""The real ``emostt serve`` of tools/bench_peers.py: start to ready, then 16 x 10 s over REST.

The server runs on the exported dir with its defaults, except ``EMOSTT_MAX_FILE_REQUESTS=16``
(default 4) so that all 16 files are in flight at once, as the engines' batch of 16 is; its
memory is the process tree's (the model process and any front-end processes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

import reliability
from bench_stream import tree_usage

STEADY_WAIT_S = 2.0
READY_POLL_S = 0.05  # start to ready is a must-show (<= 5 s): poll finely


def serve_once(directory: Path, clips: dict[str, np.ndarray], work: Path) -> dict[str, Any]:
    """The real ``emostt serve`` on the exported dir: start to ready, then 16 x 10 s over REST."""
    args = argparse.Namespace(
        model=str(directory),
        env=["EMOSTT_MAX_FILE_REQUESTS=16"],
        work_dir=work,
        backend=None,
        device=None,
        precision=None,
    )
    server = reliability.Server(args, "peer-serve")
    began = time.perf_counter()
    try:
        server.start(poll_s=READY_POLL_S)
        ready_s = time.perf_counter() - began
        ready_rss = tree_usage(server.pid)[1]
        wavs = [wav_bytes(c) for c in clips["s10"]]
        t0 = time.perf_counter()
        texts = asyncio.run(post_all(server.base, wavs))
        wall = time.perf_counter() - t0
        time.sleep(STEADY_WAIT_S)
        return {
            "start_to_ready_s": round(ready_s, 2),
            "rss_at_ready_mib": round(ready_rss, 1),
            "peak_rss_mib": round(hwm_mib(server.pid), 1),
            "steady_rss_mib": round(tree_usage(server.pid)[1], 1),
            "run_16x10s_wall_s": round(wall, 2),
            "texts_returned": sum(1 for t in texts if t is not None),
        }
    finally:
        server.stop()


def hwm_mib(pid: int) -> float:
    """Peak RSS of a process and its children (each one's own VmHWM, summed)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return sum(reliability.proc_status_kib(p, "VmHWM") for p in pids) / 1024


def wav_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, 16_000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


async def post_all(base: str, wavs: list[bytes]) -> list[str | None]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as http:

        async def one(wav: bytes) -> str | None:
            response = await http.post(
                f"{base}/v1/audio/transcriptions",
                files={"file": ("clip.wav", wav, "audio/wav")},
                data={"model": "whisper-1"},
            )
            return str(response.json()["text"]) if response.status_code == 200 else None

        return list(await asyncio.gather(*(one(w) for w in wavs)))
