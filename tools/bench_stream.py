#!/usr/bin/env python
"""Streaming load benchmark: N simulated devices on real WebSockets against a real server process.

Each device streams espeak-ng phrases (held-out voices of tools/demo_data.py, several voices
and speeds) separated by 0.8-1.6 s of silence, in 100 ms PCM frames paced to real time, for
a fixed duration, then closes. Reported per run:

- endpoint-to-final latency (server clock: the endpoint decision to the final being sent),
  p50/p95/p99; and the device's view, end of speech audio to the final arriving, which also
  holds the endpointing silence (``silence_duration_ms``);
- partial lag (live audio to the partial arriving), p50/p95;
- whether any stream fell behind real time (a final arriving more than 2 s after its
  endpoint would have been due, or an utterance without its final);
- engine batch sizes, audio seconds transcribed per wall second, server CPU and RSS;
- event lag (tools/stream_lag.py): each final's and partial's arrival minus the moment a
  zero-cost server could have sent it, p50/p95/p99.

    python tools/bench_stream.py --model /tmp/sv-full --sessions 4 8 16 --duration 60 \
        --batching on off --out docs/bench/stream-cpu.json

``--model instant`` runs tools/bench_server.py (the same server with the instant engine, a
measurement harness with ~0 model time) instead of ``emostt serve``: event lag is then the
front end's alone, and ``--lag-target-ms`` (50) says up to which N one server process holds
real-time streams. ``--profile DIR`` samples the server with py-spy and reports its CPU by
stage (tools/stage_profile.py); ``--server-cpus``/``--client-cpus`` pin the server and the
load generator to separate cores:

    python tools/bench_stream.py --model instant --sessions 50 100 200 400 --duration 60 \
        --ramp-s 5 --server-cpus 0 --client-cpus 1 --profile out/profile \
        --out docs/bench/stream-frontend-cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import random
import resource
import socket
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_data
import stage_profile
import stream_lag
from emostt.vocabulary.session_config import EndpointConfig

FRAME_S = 0.1
CHUNK_SAMPLES = int(16000 * FRAME_S)
SILENCE_MS = 500
ENDPOINT_DELAY_FRAMES = stream_lag.endpoint_delay_frames(EndpointConfig(silence_duration_ms=SILENCE_MS))
BENCH_SERVER = Path(__file__).resolve().parent / "bench_server.py"


@dataclass
class DeviceLog:
    finals: list[dict[str, Any]] = field(default_factory=list)
    device_latency_s: list[float] = field(default_factory=list)
    partial_lag_s: list[float] = field(default_factory=list)
    utterances_sent: int = 0
    errors: list[str] = field(default_factory=list)
    refused: str | None = None  # the error code when the server refused the session
    sent_at: list[float] = field(default_factory=list)  # each chunk's send time (s after start)
    # (type, audio_end_ms, end_reason, arrival s after start) of each final and partial
    timeline: list[tuple[str, int, str | None, float]] = field(default_factory=list)


def load_pool(clips: Path | None) -> list[np.ndarray]:
    """The phrases devices speak: rendered by espeak-ng now, or read from a saved pool (a
    machine without espeak-ng, e.g. the GPU machine: tools/gpu/save_clips.py writes one)."""
    if clips is None:
        return [c.audio * 0.9 for c in demo_data.generate("heldout", limit=160) if c.text]
    with np.load(clips) as saved:
        audio, bounds = saved["audio"], saved["bounds"]
    return [audio[a:b].astype(np.float32) / 32768 * 0.9 for a, b in itertools.pairwise(bounds)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_stream(pool: list[np.ndarray], seconds: float, rng: random.Random) -> tuple[bytes, int]:
    parts, total, count = [np.zeros(8000, dtype=np.float32)], 0.5, 0
    while total < seconds:
        clip = pool[rng.randrange(len(pool))]
        gap = np.zeros(int(rng.uniform(0.8, 1.6) * 16000), dtype=np.float32)
        parts += [clip, gap]
        total += (len(clip) + len(gap)) / 16000
        count += 1
    audio = np.concatenate(parts)
    return (np.clip(audio, -1, 32767 / 32768) * 32768).astype("<i2").tobytes(), count


async def device(
    url: str,
    pcm: bytes,
    utterances: int,
    log: DeviceLog,
    delay_s: float = 0.0,
    config: dict[str, Any] | None = None,
) -> None:
    """One device; ``config``: a ``config`` message (less its type) sent before the first audio."""
    step = CHUNK_SAMPLES * 2
    log.utterances_sent = utterances
    ends = clip_ends(pcm)
    await asyncio.sleep(delay_s)  # --ramp-s: devices connect spread out, each at its own phase
    async with connect(url, max_size=None) as ws:
        first = orjson.loads(await ws.recv())
        if first["type"] != "ready":  # refused: admission control said the server is full
            log.refused = first.get("code", first["type"])
            return
        if config is not None:
            await ws.send(orjson.dumps({"type": "config", **config}).decode())
            while (answer := orjson.loads(await ws.recv()))["type"] != "config":
                if answer["type"] == "error":
                    log.refused = f"config: {answer['code']}"
                    return
        started = time.perf_counter()

        async def sender() -> None:
            for k, i in enumerate(range(0, len(pcm), step)):
                # Absolute schedule: a slow send never makes the device drift behind real time.
                await asyncio.sleep(max(started + k * FRAME_S - time.perf_counter(), 0))
                log.sent_at.append(time.perf_counter() - started)
                await ws.send(pcm[i : i + step])
            await ws.send('{"type": "close"}')

        task = asyncio.create_task(sender())
        try:
            await receive(ws, started, ends, log)
        except ConnectionClosed as exc:
            # A policy close (e.g. too_fast when this load generator itself fell behind and then
            # caught up in a burst) ends this device's run; its error event is already counted.
            log.errors.append(f"closed_{exc.rcvd.code if exc.rcvd else 'abnormally'}")
        if not task.done():
            task.cancel()
        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            await task


async def receive(ws: ClientConnection, started: float, ends: list[float], log: DeviceLog) -> None:
    async for raw in ws:
        event = orjson.loads(raw)
        now = time.perf_counter() - started
        if event["type"] in ("final", "partial"):
            log.timeline.append((event["type"], event["audio_end_ms"], event.get("end_reason"), now))
        if event["type"] == "final":
            log.finals.append(event)
            # From the end of the speech itself (the final's audio keeps ~100 ms of silence).
            end_s = event["audio_end_ms"] / 1000
            speech_end = max((e for e in ends if e <= end_s + 0.05), default=end_s)
            log.device_latency_s.append(now - speech_end)
        elif event["type"] == "partial":
            log.partial_lag_s.append(now - event["audio_end_ms"] / 1000)
        elif event["type"] == "error":
            log.errors.append(event["code"])


def clip_ends(pcm: bytes) -> list[float]:
    """Seconds at which each clip's speech ends: make_stream separates clips with exact zeros."""
    samples = np.frombuffer(pcm, dtype="<i2")
    nonzero = np.flatnonzero(samples)
    if nonzero.size == 0:
        return []
    gaps = np.flatnonzero(np.diff(nonzero) > int(0.5 * 16000))
    last = np.append(nonzero[gaps], nonzero[-1])
    return [float((i + 1) / 16000) for i in last]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(values, q))


def tree_usage(pid: int) -> tuple[float, float]:
    """CPU seconds and RSS in MiB of a process and its descendants (the model process and its
    front-end processes, with --frontends)."""
    cpu, rss = proc_usage(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return cpu, rss
    for child in map(int, children):
        try:
            child_cpu, child_rss = tree_usage(child)
        except (OSError, StopIteration):  # exited meanwhile
            continue
        cpu += child_cpu
        rss += child_rss
    return cpu, rss


def proc_usage(pid: int) -> tuple[float, float]:
    """CPU seconds (user+system) and RSS in MiB of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = (
        next(
            int(line.split()[1])
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmRSS")
        )
        / 1024
    )
    return cpu, rss


def server_metrics(base: str) -> dict[str, float]:
    """Means from the server's own histograms and counters: where the time went."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "le" in sample.labels:
                continue
            key = sample.name + "".join(f"[{v}]" for v in sample.labels.values())
            values[key] = values.get(key, 0.0) + sample.value

    def mean(name: str, label: str = "") -> float:
        count = values.get(f"{name}_count{label}", 0.0)
        return values.get(f"{name}_sum{label}", 0.0) / count if count else 0.0

    return {
        "batches": values.get("emostt_batch_size_count", 0.0),
        "batch_size_mean": mean("emostt_batch_size"),
        "final_batch_ms_mean": mean("emostt_batch_inference_seconds", "[final]") * 1000,
        "partial_batch_ms_mean": mean("emostt_batch_inference_seconds", "[partial]") * 1000,
        "final_queue_wait_ms_mean": mean("emostt_queue_wait_seconds", "[final]") * 1000,
        "partials_sent": values.get("emostt_partials_total[sent]", 0.0),
        "partials_shed": values.get("emostt_partials_total[shed]", 0.0),
        "partials_stale": values.get("emostt_partials_total[stale]", 0.0),
        "speculative_used": values.get("emostt_speculative_finals_total[used]", 0.0),
        "speculative_discarded": values.get("emostt_speculative_finals_total[discarded]", 0.0),
    }


def cpu_list(text: str) -> set[int]:
    """argparse type: CPUs as taskset writes them, e.g. ``0`` or ``1-15`` or ``0,2``."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def server_command(args: argparse.Namespace, port: int, backend: str) -> list[str]:
    if args.model == "instant":  # the measurement harness: same server, ~0 model time
        return [
            sys.executable,
            str(BENCH_SERVER),
            "--device",
            "cuda" if args.device.startswith("cuda") else "cpu",
            "--batch-ms",
            str(args.instant_batch_ms),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ]
    return [
        sys.executable,
        "-m",
        "emostt",
        "serve",
        "--model",
        args.model,
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--backend",
        backend,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]


def start_server(
    args: argparse.Namespace, port: int, batching: bool | None, backend: str
) -> subprocess.Popen[bytes]:
    """``batching`` None: the server's own default batch size."""
    env = {
        **os.environ,
        **({} if batching is None else {"EMOSTT_MAX_BATCH_SIZE": str(args.max_batch if batching else 1)}),
        "EMOSTT_MAX_CONNECTIONS": "4096",
        **({"EMOSTT_MODEL_WORKERS": str(args.workers)} if args.workers else {}),
        **({"EMOSTT_FRONTEND_PROCESSES": str(args.frontends)} if args.frontends else {}),
        "EMOSTT_LOG_JSON": "true",
        "EMOSTT_SESSION_DEFAULTS": json.dumps(
            {"interim_results": args.partials == "on", "vad": {"silence_duration_ms": SILENCE_MS}}
        ),
    }
    cpus = args.server_cpus
    server = subprocess.Popen(
        server_command(args, port, backend),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    raise RuntimeError("server did not become ready")


def run_devices(
    urls: list[str],
    streams: list[tuple[bytes, int]],
    logs: list[DeviceLog],
    delays: list[float],
    configs: list[dict[str, Any] | None] | None = None,
) -> None:
    """Every device at once; ``configs``: each device's ``config`` message (None: none sent)."""
    each = configs if configs is not None else [None] * len(urls)

    async def everyone() -> None:
        await asyncio.gather(
            *(
                device(url, pcm, n, log, delay, config)
                for url, (pcm, n), log, delay, config in zip(urls, streams, logs, delays, each, strict=True)
            )
        )

    asyncio.run(everyone())


def run_devices_part(part: tuple[list[str], list[tuple[bytes, int]], list[float]]) -> list[DeviceLog]:
    urls, streams, delays = part
    logs = [DeviceLog() for _ in urls]
    run_devices(urls, streams, logs, delays)
    return logs


def client_cpu_seconds() -> float:
    """CPU time of the load generator: this process and its finished client processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run_one(
    args: argparse.Namespace, pool: list[np.ndarray], sessions: int, batching: bool | None, backend: str
) -> dict[str, Any]:
    port = free_port()
    server = start_server(args, port, batching, backend)
    try:
        rng = random.Random(sessions)
        streams = [make_stream(pool, args.duration, rng) for _ in range(sessions)]
        logs = [DeviceLog() for _ in range(sessions)]
        delays = [args.ramp_s * i / sessions for i in range(sessions)]
        cpu0, _ = tree_usage(server.pid)
        client_cpu0 = client_cpu_seconds()
        t0 = time.perf_counter()
        profiler = None
        if args.profile:
            # From when every device streams until shortly before the first ones finish.
            window = args.duration - args.ramp_s - 2 * PROFILE_MARGIN_S
            profiler = stage_profile.Recorder(
                server.pid,
                args.profile / f"server-{sessions}.txt",
                start_in_s=args.ramp_s + PROFILE_MARGIN_S,
                duration_s=max(window, 1.0),
                rate_hz=args.profile_rate,
            )
        urls = [f"ws://127.0.0.1:{port}/ws/stt/bench-{i}" for i in range(sessions)]
        processes = max(min(args.client_processes, sessions), 1)
        if processes == 1:
            run_devices(urls, streams, logs, delays)
        else:
            # One event loop drives a few hundred devices at most; hundreds more need more cores.
            context = multiprocessing.get_context("fork")
            parts = [slice(k, sessions, processes) for k in range(processes)]
            with ProcessPoolExecutor(processes, mp_context=context) as pool_:
                done = pool_.map(run_devices_part, [(urls[p], streams[p], delays[p]) for p in parts])
                for part, part_logs in zip(parts, done, strict=True):
                    for index, log in zip(range(sessions)[part], part_logs, strict=True):
                        logs[index] = log
        wall = time.perf_counter() - t0
        cpu1, rss = tree_usage(server.pid)
        stages = profiler.result(sessions) if profiler is not None else None
        client_cpu1 = client_cpu_seconds()
        finals = [f for log in logs for f in log.finals]
        server_latency = [f["latency_ms"] / 1000 for f in finals]
        device_latency = [x for log in logs for x in log.device_latency_s]
        partial_lag = [x for log in logs for x in log.partial_lag_s]
        admitted = [log for log in logs if log.refused is None]
        missing = sum(max(log.utterances_sent - len(log.finals), 0) for log in admitted)
        behind = missing > 0 or any(x > SILENCE_MS / 1000 + 2.0 for x in device_latency)
        observed = server_metrics(f"http://127.0.0.1:{port}")
        lags = event_lags(logs, streams)
    finally:
        server.terminate()
        server.wait(60)
    p95 = pct(server_latency, 95)
    lag_p95 = pct(lags["all"], 95)
    slips = [t - k * FRAME_S for log in logs for k, t in enumerate(log.sent_at)]
    return {
        "sessions": sessions,
        "batching": batching,
        "backend": backend,
        "partials": args.partials,
        "frontends": args.frontends,
        "utterances": len(finals),
        "refused_sessions": sessions - len(admitted),
        "missing_finals": missing,
        "errors": sorted({e for log in logs for e in log.errors}),
        "endpoint_to_final_ms": {
            q: round(pct(server_latency, q) * 1000, 1) if server_latency else None for q in (50, 95, 99)
        },
        "device_end_of_speech_to_final_ms": {
            q: round(pct(device_latency, q) * 1000, 1) if device_latency else None for q in (50, 95, 99)
        },
        "partial_lag_ms": {
            q: round(pct(partial_lag, q) * 1000, 1) if partial_lag else None for q in (50, 95)
        },
        "fell_behind": behind,
        "meets_target": bool(p95 is not None and p95 <= 0.5 and not behind),
        "batch_size_mean": round(observed["batch_size_mean"], 2),
        "batches": int(observed["batches"]),
        "final_batch_ms_mean": round(observed["final_batch_ms_mean"], 1),
        "partial_batch_ms_mean": round(observed["partial_batch_ms_mean"], 1),
        "final_queue_wait_ms_mean": round(observed["final_queue_wait_ms_mean"], 1),
        "partials_sent": int(observed["partials_sent"]),
        "partials_shed": int(observed["partials_shed"]),
        "partials_stale": int(observed["partials_stale"]),
        "speculative_finals_used": int(observed["speculative_used"]),
        "speculative_finals_discarded": int(observed["speculative_discarded"]),
        "client_cpu_percent": round((client_cpu1 - client_cpu0) / wall * 100, 1),
        "model_workers": args.workers,
        "audio_s_per_wall_s": round(sum(f["duration_ms"] for f in finals) / 1000 / wall, 2),
        "server_cpu_percent": round((cpu1 - cpu0) / wall * 100, 1),
        "server_cpu_ms_per_stream_s": round((cpu1 - cpu0) / wall / sessions * 1000, 3),
        "server_rss_mib": round(rss, 1),
        "wall_s": round(wall, 1),
        "event_lag_ms": {
            kind: {q: round(pct(v, q) * 1000, 1) if v else None for q in (50, 95, 99)}
            for kind, v in lags.items()
        },
        "send_slip_p95_ms": round(pct(slips, 95) * 1000, 1) if slips else None,
        "lag_target_ms": args.lag_target_ms,
        "holds_lag_target": bool(
            lag_p95 is not None
            and lag_p95 * 1000 <= args.lag_target_ms
            and missing == 0
            and len(admitted) == sessions
            and not any(log.errors for log in logs)
        ),
        **({"stages": stages} if stages is not None else {}),
    }


PROFILE_MARGIN_S = 3.0


def event_lags(logs: list[DeviceLog], streams: list[tuple[bytes, int]]) -> dict[str, list[float]]:
    """Each final's and partial's lag behind a zero-cost server (tools/stream_lag.py), seconds."""
    lags: dict[str, list[float]] = {"final": [], "partial": [], "all": []}
    for log, (pcm, _) in zip(logs, streams, strict=True):
        for kind, end_ms, reason, arrival in log.timeline:
            lag = stream_lag.event_lag(
                kind,
                end_ms,
                reason,
                arrival,
                log.sent_at,
                delay_frames=ENDPOINT_DELAY_FRAMES,
                chunk_samples=CHUNK_SAMPLES,
                total_samples=len(pcm) // 2,
            )
            if lag is not None:
                lags[kind].append(lag)
                lags["all"].append(lag)
    return lags


BATCHING_NAMES = {True: "on", False: "off", None: "default"}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | sessions | batching | partials | finals | p50 / p95 / p99 endpoint→final (ms)"
        " | device end-of-speech→final p95 (ms) | partial lag p95 (ms) | behind | mean batch"
        " | final queue wait / final batch / partial batch, mean (ms) | partials sent / shed"
        " | audio s / s | server CPU | RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e, d, p = r["endpoint_to_final_ms"], r["device_end_of_speech_to_final_ms"], r["partial_lag_ms"]
        lines.append(
            f"| {r.get('backend', 'torch')} | {r['sessions']}"
            f" | {BATCHING_NAMES[r['batching']]}"
            f" | {r['partials']} | {r['utterances']}"
            f"{' (' + str(r['refused_sessions']) + ' refused)' if r.get('refused_sessions') else ''}"
            f" | {e[50]} / {e[95]} / {e[99]} | {d[95]} | {p[95]} | {'yes' if r['fell_behind'] else 'no'}"
            f" | {r['batch_size_mean']} | {r['final_queue_wait_ms_mean']} / {r['final_batch_ms_mean']}"
            f" / {r['partial_batch_ms_mean']}"
            f" | {r['partials_sent']} / {r['partials_shed']}"
            f" | {r['audio_s_per_wall_s']} | {r['server_cpu_percent']}%"
            f" | {r['server_rss_mib']} |"
        )
    return "\n".join(lines)


def lag_markdown(rows: list[dict[str, Any]]) -> str:
    """The front-end view: event lag per N, server CPU per stream, whether N is held."""
    lines = [
        "| sessions | finals | partials sent | event lag p50 / p95 / p99 (ms) | final lag p95 | partial lag"
        " p95 | send slip p95 | server CPU | CPU ms per stream-second | client CPU | holds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, f, p = (r["event_lag_ms"][k] for k in ("all", "final", "partial"))
        lines.append(
            f"| {r['sessions']} | {r['utterances']} | {r['partials_sent']} | {a[50]} / {a[95]} / {a[99]}"
            f" | {f[95]} | {p[95]} | {r['send_slip_p95_ms']} | {r['server_cpu_percent']}%"
            f" | {r['server_cpu_ms_per_stream_s']} | {r['client_cpu_percent']}%"
            f" | {'yes' if r['holds_lag_target'] else 'no'} |"
        )
    held = [r["sessions"] for r in rows if r["holds_lag_target"]]
    lines.append("")
    lines.append(
        f"Largest N holding p95 event lag <= {rows[0]['lag_target_ms']:g} ms with every final: "
        f"{max(held) if held else 'none'}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", required=True, help="model dir or id; 'instant': the bench harness (bench_server.py)"
    )
    parser.add_argument(
        "--instant-batch-ms", type=float, default=0.0, help="--model instant: model time per batch"
    )
    parser.add_argument("--lag-target-ms", type=float, default=50.0, help="p95 event lag N must hold")
    parser.add_argument("--ramp-s", type=float, default=0.0, help="spread the devices' connects over this")
    parser.add_argument("--server-cpus", type=cpu_list, default=None, help="pin the server, e.g. 0")
    parser.add_argument("--client-cpus", type=cpu_list, default=None, help="pin the load generator")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the server; raw stacks here")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--clips", type=Path, default=None, help="clip pool .npz (tools/gpu/save_clips.py)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=["auto", "torch", "onnx"],
        default=["auto"],
        help="encoder runtimes to compare (auto: the server's default)",
    )
    parser.add_argument("--sessions", nargs="+", type=int, default=[4, 8, 16])
    parser.add_argument(
        "--batching",
        nargs="+",
        choices=["on", "off", "default"],
        default=["default"],
        help="on: --max-batch; off: 1; default: the server's own choice for its backend",
    )
    parser.add_argument("--partials", choices=["on", "off"], default="on")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="model workers (default: the server's)")
    parser.add_argument(
        "--frontends", type=int, default=None, help="front-end processes (default: the server's own choice)"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of audio per device")
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="split the devices over this many load-generator processes (hundreds of streams)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.profile and args.frontends and args.frontends > 1:
        parser.error("--profile samples one server process: use it with --frontends 1")
    if args.client_cpus:
        os.sched_setaffinity(0, args.client_cpus)  # the load generator's processes inherit it
    # Hundreds of sockets on each side of one machine: lift the soft limit on open files.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        stage_profile.check_available()

    pool = load_pool(args.clips)
    rows: list[dict[str, Any]] = []
    for backend in args.backends:
        for batching in args.batching:
            for sessions in args.sessions:
                row = run_one(args, pool, sessions, {"on": True, "off": False}.get(batching), backend)
                rows.append(row)
                print(json.dumps(row), flush=True)
                write_report(args, rows)  # after every row: a run cut short keeps what it measured
    print()
    print(markdown(rows))
    print()
    print(lag_markdown(rows))
    for row in rows:
        if "stages" in row:
            print()
            print(f"{row['sessions']} sessions:")
            print(stage_profile.markdown(row["stages"]))


def write_report(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    if not args.out:
        return
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPU cores",
        "server_cpus": sorted(args.server_cpus) if args.server_cpus else None,
        "client_cpus": sorted(args.client_cpus) if args.client_cpus else None,
        "client_processes": args.client_processes,
        "ramp_s": args.ramp_s,
        "model": args.model,
        "device": args.device,
        "precision": args.precision,
        "duration_s": args.duration,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
