#!/usr/bin/env python
"""A lone call on the torch-free engine: one worker's one-thread session against the wide session
an idle server runs it on (``inference/lone_call.py``), with spinning threads (the server's
choice), with sleeping ones, and with spinning ones and ONNX Runtime's CPU memory arena on.
Interleaved calls in one process, so every variant sees the same load, ``--gap`` seconds apart
(0.25: as tools/bench_peers.py spaces its calls); the clips are tools/bench_peers.py's (2 s and
10 s espeak-ng speech).

    python tools/bench_lone_call.py --model EXPORTED_DIR [--calls 30] [--out docs/bench/lone-call.json]

``EXPORTED_DIR``: ``emostt model export`` output (e.g. of ``emostt model make-random DIR --size full``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from emostt.inference.engine import TranscriptionRequest
from emostt.inference.lone_call import running_alone
from emostt.inference.onnx_engine import OnnxEngine
from emostt.inference.options import EngineOptions
from emostt.inference.ort_session import CPU_PROVIDERS, session_options
from emostt.inference.serving import load_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_clips import make_clips


def engine_with(model: Path, threads: int, spinning: bool, arena: bool = False) -> OnnxEngine:
    """The server's engine, its wide session rebuilt with sleeping threads when not ``spinning``
    and with the memory arena on with ``arena`` (a measurement harness: the server always builds
    it spinning, with no arena)."""
    import onnxruntime as ort

    engine = load_engine(str(model), EngineOptions(device="cpu", lone_call_threads=threads))
    assert isinstance(engine, OnnxEngine), "give an exported dir (emostt model export)"
    if arena or not spinning:
        encoder = engine._encoder
        options = session_options(threads, spinning=spinning)
        options.enable_cpu_mem_arena = arena
        encoder._wide = ort.InferenceSession(str(encoder.path), options, providers=CPU_PROVIDERS)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/emostt-peers"))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--gap", type=float, default=0.0, help="seconds between calls")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    clips = make_clips(args.work / "clips.npz")
    spinning = engine_with(args.model, args.threads, spinning=True)
    sleeping = engine_with(args.model, args.threads, spinning=False)
    arena = engine_with(args.model, args.threads, spinning=True, arena=True)
    variants = (
        ("one worker's thread (under load)", spinning, False),
        (f"wide, {args.threads} spinning threads (lone call)", spinning, True),
        (f"wide, {args.threads} sleeping threads", sleeping, True),
        (f"wide, {args.threads} spinning threads, arena on", arena, True),
    )
    results: dict[str, dict[str, dict[str, float]]] = {}
    for clip_name, seconds in (("s2", 2), ("s10", 10)):
        request = [TranscriptionRequest(clips[clip_name][0])]
        times: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        for _, engine, alone in variants:  # one-off set-up costs
            with running_alone(alone):
                engine.transcribe(request)
        for _ in range(args.calls):
            for label, engine, alone in variants:
                time.sleep(args.gap)
                with running_alone(alone):
                    started = time.perf_counter()
                    engine.transcribe(request)
                    times[label].append((time.perf_counter() - started) * 1000)
        results[f"{seconds} s"] = {
            label: {"median_ms": statistics.median(t), "p90_ms": float(np.percentile(t, 90))}
            for label, t in times.items()
        }
        for label, t in results[f"{seconds} s"].items():
            print(f"{seconds:>3} s  {label:<38} median {t['median_ms']:6.1f} ms  p90 {t['p90_ms']:6.1f} ms")
    report = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average": os.getloadavg(),
        "model": str(args.model),
        "calls": args.calls,
        "gap_s": args.gap,
        "results": results,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
