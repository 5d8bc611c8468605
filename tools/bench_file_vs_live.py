#!/usr/bin/env python
"""Do file transcriptions slow live sessions down? Live streams alone, then the same streams
while a long recording is transcribed over the OpenAI-compatible REST endpoint.

One run, two conditions, each on a fresh server process (same settings, same audio):

- ``live``: N real-time devices (tools/bench_stream.py's streams: held-out espeak-ng phrases
  with 0.8-1.6 s pauses, 100 ms frames paced to real time) for ``--duration`` seconds;
- ``live+file``: the same devices, while one client posts a ``--file-minutes`` recording (the
  same kind of speech, one WAV) to ``POST /v1/audio/transcriptions`` (verbose_json), again
  as soon as it is back, for as long as the devices stream, so file work overlaps the whole
  live window. A pass still running when the devices finish is abandoned (the server cancels it).

Reported per condition: the live sessions' endpoint→final p50/p95/p99 (server clock, from
each final's latency_ms) and the device's end-of-speech→final; partial lag and partials
shed; and for the file, the passes completed, their wall time and audio seconds per wall
second. The target: live p95 endpoint→final with the file within 20 % of without.

    python tools/bench_file_vs_live.py --model /tmp/sv-full --sessions 8 --duration 120 \
        --file-minutes 10 --out docs/bench/file-vs-live.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_stream
import demo_data

TARGET_RATIO = 1.2


@dataclass
class FileLog:
    passes: list[dict[str, Any]] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)  # statuses of refused attempts (429/503)


def recording(pool: list[np.ndarray], minutes: float) -> tuple[bytes, float]:
    """A WAV of held-out phrases and pauses, like the devices' streams, ``minutes`` long."""
    pcm, _ = bench_stream.make_stream(pool, minutes * 60, random.Random(1234))
    samples = np.frombuffer(pcm, dtype="<i2")
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16_000, format="WAV", subtype="PCM_16")
    return buffer.getvalue(), len(samples) / 16_000


async def file_loop(base: str, wav: bytes, audio_s: float, stop: asyncio.Event, log: FileLog) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(1800.0)) as http:
        while not stop.is_set():
            started = time.perf_counter()
            post = asyncio.ensure_future(
                http.post(
                    f"{base}/v1/audio/transcriptions",
                    files={"file": ("recording.wav", wav, "audio/wav")},
                    data={"model": "whisper-1", "response_format": "verbose_json"},
                )
            )
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({post, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not post.done():  # the devices are done: abandon this pass
                post.cancel()
                return
            response = post.result()
            if response.status_code in (429, 503):
                log.refused.append(response.status_code)
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                continue
            response.raise_for_status()
            wall = time.perf_counter() - started
            body = response.json()
            log.passes.append(
                {
                    "wall_s": round(wall, 2),
                    "segments": len(body["segments"]),
                    "audio_s_per_wall_s": round(audio_s / wall, 2),
                }
            )


def kind_means(base: str) -> dict[str, float]:
    """Mean queue wait and batch time per batch kind (final, partial, file), in ms."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=10).text):
        for sample in family.samples:
            kind = sample.labels.get("kind")
            if kind and sample.name.endswith(("_sum", "_count")):
                sums[f"{sample.name}[{kind}]"] = sample.value
    out = {}
    for metric, short in (
        ("emostt_queue_wait_seconds", "queue_wait"),
        ("emostt_batch_inference_seconds", "batch"),
    ):
        for kind in ("final", "partial", "file"):
            count = sums.get(f"{metric}_count[{kind}]", 0.0)
            out[f"{kind}_{short}_ms_mean"] = (
                round(sums.get(f"{metric}_sum[{kind}]", 0.0) / count * 1000, 1) if count else 0.0
            )
    return out


def run_condition(
    args: argparse.Namespace, pool: list[np.ndarray], wav: bytes | None, audio_s: float
) -> dict[str, Any]:
    port = bench_stream.free_port()
    server = bench_stream.start_server(args, port, None, args.backend)
    base = f"http://127.0.0.1:{port}"
    try:
        rng = random.Random(args.sessions)  # the same streams in both conditions
        streams = [bench_stream.make_stream(pool, args.duration, rng) for _ in range(args.sessions)]
        logs = [bench_stream.DeviceLog() for _ in streams]
        file_log = FileLog()
        urls = [f"ws://127.0.0.1:{port}/ws/stt/bench-{i}" for i in range(args.sessions)]
        cpu0, _ = bench_stream.proc_usage(server.pid)
        t0 = time.perf_counter()

        async def everything() -> None:
            stop = asyncio.Event()
            files = asyncio.ensure_future(file_loop(base, wav, audio_s, stop, file_log)) if wav else None
            await asyncio.gather(
                *(
                    bench_stream.device(u, pcm, n, log)
                    for u, (pcm, n), log in zip(urls, streams, logs, strict=True)
                )
            )
            stop.set()
            if files is not None:
                await files

        asyncio.run(everything())
        wall = time.perf_counter() - t0
        cpu1, rss = bench_stream.proc_usage(server.pid)
        observed = bench_stream.server_metrics(base)
        by_kind = kind_means(base)
    finally:
        server.terminate()
        server.wait(60)
    finals = [f for log in logs for f in log.finals]
    latency = [f["latency_ms"] / 1000 for f in finals]
    device = [x for log in logs for x in log.device_latency_s]
    lag = [x for log in logs for x in log.partial_lag_s]
    admitted = [log for log in logs if log.refused is None]
    missing = sum(max(log.utterances_sent - len(log.finals), 0) for log in admitted)

    def ms(values: list[float], qs: tuple[int, ...]) -> dict[int, float | None]:
        return {q: round(v * 1000, 1) if (v := bench_stream.pct(values, q)) is not None else None for q in qs}

    passes = file_log.passes
    return {
        "condition": "live+file" if wav else "live",
        "sessions": args.sessions,
        "refused_sessions": args.sessions - len(admitted),
        "finals": len(finals),
        "missing_finals": missing,
        "errors": sorted({e for log in logs for e in log.errors}),
        "endpoint_to_final_ms": ms(latency, (50, 95, 99)),
        "device_end_of_speech_to_final_ms": ms(device, (50, 95)),
        "partial_lag_ms": ms(lag, (50, 95)),
        "partials_sent": int(observed["partials_sent"]),
        "partials_shed": int(observed["partials_shed"]),
        **by_kind,
        "file_passes_completed": len(passes),
        "file_refused": file_log.refused,
        "file_wall_s": [p["wall_s"] for p in passes],
        "file_segments": passes[0]["segments"] if passes else None,
        "file_audio_s_per_wall_s": passes[0]["audio_s_per_wall_s"] if passes else None,
        "server_cpu_percent": round((cpu1 - cpu0) / wall * 100, 1),
        "server_rss_mib": round(rss, 1),
        "wall_s": round(wall, 1),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| condition | finals | endpoint→final p50 / **p95** / p99 (ms) | device end-of-speech→final p95 (ms)"
        " | partial lag p95 (ms) | partials sent / shed | final / file queue wait, mean (ms)"
        " | file passes (median wall) | file audio s / wall s | server CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = r["endpoint_to_final_ms"]
        walls = r["file_wall_s"]
        passes = f"{len(walls)} ({float(np.median(walls)):.1f} s each)" if walls else "–"
        file_wait = r["file_queue_wait_ms_mean"] if r["file_wall_s"] else "–"
        lines.append(
            f"| {r['condition']} | {r['finals']} | {e[50]} / **{e[95]}** / {e[99]}"
            f" | {r['device_end_of_speech_to_final_ms'][95]} | {r['partial_lag_ms'][95]}"
            f" | {r['partials_sent']} / {r['partials_shed']}"
            f" | {r['final_queue_wait_ms_mean']} / {file_wait}"
            f" | {passes} | {r['file_audio_s_per_wall_s'] or '–'}"
            f" | {r['server_cpu_percent']}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of audio per device")
    parser.add_argument("--file-minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    # What tools/bench_stream.py's start_server reads: the server's own defaults, partials on.
    args.partials, args.workers, args.max_batch = "on", None, 32

    pool = [c.audio * 0.9 for c in demo_data.generate("heldout", limit=160) if c.text]
    wav, audio_s = recording(pool, args.file_minutes)
    rows = [run_condition(args, pool, None, audio_s), run_condition(args, pool, wav, audio_s)]
    for row in rows:
        print(json.dumps(row), flush=True)
    base, loaded = (r["endpoint_to_final_ms"][95] for r in rows)
    ratio = loaded / base if base and loaded is not None else None
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPU cores",
        "model": args.model,
        "backend": args.backend,
        "device": args.device,
        "precision": args.precision,
        "sessions": args.sessions,
        "duration_s": args.duration,
        "file_audio_s": round(audio_s, 1),
        "p95_ratio": round(ratio, 3) if ratio is not None else None,
        "p95_delta_ms": round(loaded - base, 1) if base is not None and loaded is not None else None,
        "within_target": bool(ratio is not None and ratio <= TARGET_RATIO),
        "rows": rows,
    }
    print()
    print(markdown(rows))
    print(
        f"\np95 endpoint→final with the file / without: {report['p95_ratio']} (target ≤ {TARGET_RATIO}),"
        f" {report['p95_delta_ms']} ms apart"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
