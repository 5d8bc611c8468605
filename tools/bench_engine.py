#!/usr/bin/env python
"""Engine throughput benchmark: audio seconds transcribed per wall second.

Runs the SenseVoice engine over batches of utterances of fixed length for each
(precision, batch size, length) and reports real-time factor multiples. Use the ``full``
random-weight model for SenseVoiceSmall's exact compute cost:

    emostt model make-random /tmp/sv-full --size full
    python tools/bench_engine.py --model /tmp/sv-full --precisions fp32 int8 --out docs/bench/engine-cpu.json

On a CUDA machine: ``--device cuda --precisions fp32 fp16 bf16``. ``onnx-int8`` is the onnx
backend (the encoder on ONNX Runtime, int8; one intra-op thread unless ``--threads``).
``--compile`` wraps the encoder in ``torch.compile`` (with ``--pad-multiple`` shape buckets);
the engine has no CUDA-graph path. A cell that runs out of memory is recorded as such and
the run goes on; ``--out`` is rewritten after every cell, so a run cut short keeps its rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emostt.errors import OutOfMemoryError
from emostt.inference.engine import TranscriptionRequest
from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine
from emostt.inference.threads import set_thread_count


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Amplitude-modulated harmonic noise: costs the model exactly what speech of that length costs."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / 16000) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.1 * envelope * voiced + 0.01 * rng.standard_normal(n)).astype(np.float32)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}{gpu}"


def measure(
    engine: SenseVoiceEngine, batch: int, seconds: float, min_time: float, min_reps: int
) -> dict[str, Any]:
    requests = [TranscriptionRequest(speech_like(seconds, seed=i)) for i in range(batch)]
    engine.transcribe(requests)  # warm-up: allocator, kernels, caches
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        engine.transcribe(requests)
        times.append(time.perf_counter() - t0)
    per_call = statistics.median(times)
    return {
        "batch": batch,
        "seconds": seconds,
        "calls": len(times),
        "median_call_ms": round(per_call * 1000, 1),
        "x_realtime": round(batch * seconds / per_call, 1),
    }


def measure_workers(
    engine: SenseVoiceEngine, workers: int, batch: int, seconds: float, min_time: float
) -> dict[str, Any]:
    """``workers`` threads, one torch thread each, running batches side by side (the server's
    CPU layout: see emostt.server.planning)."""
    requests = [TranscriptionRequest(speech_like(seconds, seed=i)) for i in range(batch)]
    calls = [0] * workers
    barrier = threading.Barrier(workers + 1)

    def work(index: int) -> None:
        set_thread_count(1)
        engine.transcribe(requests)  # warm-up in this thread
        barrier.wait()
        start = time.perf_counter()
        while time.perf_counter() - start < min_time:
            engine.transcribe(requests)
            calls[index] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "batch": batch,
        "seconds": seconds,
        "calls": sum(calls),
        "x_realtime": round(sum(calls) * batch * seconds / wall, 1),
    }


def measure_generate(model_dir: str, seconds: float, count: int, device: str) -> dict[str, Any]:
    """The way SenseVoice's own api.py serves: one ``AutoModel.generate()`` call per utterance."""
    from emostt.inference.funasr_import import auto_model_class, stdout_to_stderr

    with stdout_to_stderr():
        model = auto_model_class()(model=model_dir, device=device, disable_update=True, disable_pbar=True)
        audios = [speech_like(seconds, seed=i) for i in range(count)]
        model.generate(input=audios[0], language="auto", use_itn=True)  # warm-up
        t0 = time.perf_counter()
        for audio in audios:
            model.generate(input=audio, language="auto", use_itn=True)
        elapsed = time.perf_counter() - t0
    return {
        "precision": "generate() per utterance (fp32)",
        "batch": 1,
        "seconds": seconds,
        "calls": count,
        "median_call_ms": round(elapsed / count * 1000, 1),
        "x_realtime": round(count * seconds / elapsed, 1),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lengths = sorted({r["seconds"] for r in rows})
    lines = [
        "| precision | batch | " + " | ".join(f"{s:g} s clips (x RT)" for s in lengths) + " |",
        "|---|---|" + "---|" * len(lengths),
    ]
    for precision in dict.fromkeys(r["precision"] for r in rows):
        for batch in sorted({r["batch"] for r in rows if r["precision"] == precision}):
            cells = []
            for s in lengths:
                match = [
                    r for r in rows if (r["precision"], r["batch"], r["seconds"]) == (precision, batch, s)
                ]
                cells.append(f"{match[0]['x_realtime']:.1f}" if match and "x_realtime" in match[0] else "-")
            lines.append(f"| {precision} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32", "int8"], help="fp32, int8, fp16, bf16, onnx-int8"
    )
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8, 16])
    parser.add_argument("--lengths", nargs="+", type=float, default=[2.0, 5.0, 10.0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="also time N worker threads x 1 torch thread running batches side by side",
    )
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds of timed calls per cell")
    parser.add_argument("--min-reps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write JSON results here")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    parser.add_argument("--pad-multiple", type=int, default=1, help="round the time axis up (frames)")
    parser.add_argument(
        "--baseline",
        type=int,
        default=0,
        help="also time N utterances through AutoModel.generate() one by one",
    )
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []

    def save() -> None:
        if args.out:
            report = {
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                "machine": machine(),
                "model": args.model,
                "device": args.device,
                "threads": torch.get_num_threads(),
                "compile": args.compile,
                "pad_multiple": args.pad_multiple,
                "rows": rows,
            }
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")

    if args.baseline:
        for seconds in args.lengths:
            row = measure_generate(args.model, seconds, args.baseline, args.device)
            rows.append(row)
            print(json.dumps(row), flush=True)
    for precision in args.precisions:
        # "onnx-int8": the onnx backend (ONNX Runtime, int8), exported once into the cache.
        backend = "onnx" if precision == "onnx-int8" else "torch"
        options = EngineOptions(
            device=args.device,
            precision="int8" if backend == "onnx" else precision,
            threads=args.threads,
            backend=backend,
            compile=args.compile,
            pad_multiple=args.pad_multiple,
        )
        engine = SenseVoiceEngine.load(args.model, options)
        label = f"{precision}, compiled" if args.compile else precision
        for seconds in args.lengths:
            for batch in args.batches:
                try:
                    cell = measure(engine, batch, seconds, args.min_time, args.min_reps)
                    row = {"precision": label, **cell}
                except OutOfMemoryError:
                    row = {"precision": label, "batch": batch, "seconds": seconds, "error": "out_of_memory"}
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                rows.append(row)
                print(json.dumps(row), flush=True)
                save()
                if args.workers:
                    row = {
                        "precision": f"{precision}, {args.workers} workers x 1 thread",
                        **measure_workers(engine, args.workers, batch, seconds, args.min_time),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        del engine
    save()
    print(f"\nmachine: {machine()}; torch threads {torch.get_num_threads()}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
