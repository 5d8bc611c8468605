"""The real ``emostt serve`` of tools/bench_peers.py: start to ready, then 16 x 10 s over REST.

The server runs on the exported dir with its defaults, except ``EMOSTT_MAX_FILE_REQUESTS=16``
(default 4) so that all 16 files are in flight at once, as the engines' batch of 16 is; its
memory is the process tree's (the model process and any front-end processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

from bench_stream import free_port, tree_usage

STEADY_WAIT_S = 2.0


def serve_once(directory: Path, clips: dict[str, np.ndarray], work: Path) -> dict[str, Any]:
    """The real ``emostt serve`` on the exported dir: start to ready, then 16 x 10 s over REST."""
    port = free_port()
    env = {**os.environ, "EMOSTT_LOG_JSON": "true", "EMOSTT_MAX_FILE_REQUESTS": "16"}
    cmd = [sys.executable, "-m", "emostt", "serve", "--model", str(directory), "--host", "127.0.0.1"]
    cmd += ["--port", str(port)]
    log = (work / "serve.log").open("w")
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"emostt serve exited with {proc.returncode}; see {log.name}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        ready_s = time.perf_counter() - began
        ready_rss = tree_usage(proc.pid)[1]
        wavs = [wav_bytes(c) for c in clips["s10"]]
        t0 = time.perf_counter()
        texts = asyncio.run(post_all(base, wavs))
        wall = time.perf_counter() - t0
        time.sleep(STEADY_WAIT_S)
        return {
            "start_to_ready_s": round(ready_s, 2),
            "rss_at_ready_mib": round(ready_rss, 1),
            "peak_rss_mib": round(hwm_mib(proc.pid), 1),
            "steady_rss_mib": round(tree_usage(proc.pid)[1], 1),
            "run_16x10s_wall_s": round(wall, 2),
            "texts_returned": sum(1 for t in texts if t is not None),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def hwm_mib(pid: int) -> float:
    """Peak RSS of a process and its children (each one's own VmHWM, summed)."""
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


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
