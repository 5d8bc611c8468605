#!/usr/bin/env python
"""Reliability suite: malformed input, connection churn, overload and a soak, each against a real
``emostt serve`` process on 127.0.0.1 (not part of CI; see docs/RELIABILITY.md).

    python tools/reliability.py fuzz     --model demo --messages 10000 --connections 30
    python tools/reliability.py churn    --model demo --cycles 1000
    python tools/reliability.py overload --model /tmp/sv-full --capacity 8 --duration 120
    python tools/reliability.py soak     --model /tmp/sv-full --sessions 4 --duration 1800
    python tools/reliability.py files    --model demo --files 4 --minutes 59 --content noise-floor
    python tools/reliability.py hostile  --model demo   (tools/reliability_hostile.py)

Every subcommand starts its own server on a free port, captures the server's stdout and stderr
to files, writes a JSON result (``--out``), prints a markdown summary and exits 1 when one of
its criteria fails (2 when the run could not be set up). Speech is espeak-ng phrases from the
held-out voices of tools/demo_data.py, streamed in 100 ms frames paced to real time
(tools/bench_stream.py's streams). Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import platform
import queue
import random
import shlex
import string
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_stream
import demo_data

FRAME_S = bench_stream.FRAME_S
FRAME_BYTES = int(16000 * FRAME_S) * 2
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024
HOST = "127.0.0.1"

# Speech clips, filled before any load-generator process is forked (children inherit it).
_POOL: list[np.ndarray] = []


# --------------------------------------------------------------------------------------------
# Machine, server process, metrics


def machine_info() -> dict[str, Any]:
    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "ram_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def fd_count(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def parse_metrics(text: str) -> dict[str, float]:
    """Every sample as ``name`` or ``name{label="value",...}`` (histogram buckets left out)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "le" in sample.labels:
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return values


def by_label(values: dict[str, float], name: str) -> dict[str, float]:
    """``{label value: sample}`` of a counter with one label, e.g. errors by code."""
    out = {}
    for key, value in values.items():
        if key.startswith(name + "{") and value:
            out[key[len(name) + 1 : -1].split("=", 1)[1].strip('"')] = value
    return out


def traceback_kind(line: str) -> str:
    """``logger: message | exception`` of a JSON log line holding a traceback (else the line)."""
    try:
        record = orjson.loads(line)
        last = str(record.get("exc", "")).strip().splitlines()[-1]
        return f"{record.get('logger')}: {record.get('message')} | {last}"[:300]
    except (orjson.JSONDecodeError, AttributeError, IndexError):
        return line[:300]


class Server:
    """One ``emostt serve`` process on a free port of 127.0.0.1, output captured to files."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        self.port = bench_stream.free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.env = {"EMOSTT_LOG_JSON": "true", **parse_env(args.env)}
        args.work_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.stderr_path = args.work_dir / f"{name}-{stamp}-server-stderr.log"
        self.stdout_path = args.work_dir / f"{name}-{stamp}-server-stdout.log"
        self.cmd = [sys.executable, "-m", "emostt", "serve", "--model", args.model]
        self.cmd += ["--host", HOST, "--port", str(self.port)]
        for flag in ("backend", "device", "precision"):
            if getattr(args, flag):
                self.cmd += [f"--{flag}", getattr(args, flag)]
        self.max_message_bytes = int(self.env.get("EMOSTT_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES))
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self._files: list[Any] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ws(self, device: str, query: str = "") -> str:
        return f"ws://{HOST}:{self.port}/ws/stt/{device}{query}"

    def start(self, timeout_s: float = 900.0, poll_s: float = 0.5) -> Server:
        out = self.stdout_path.open("wb")
        err = self.stderr_path.open("wb")
        self._files = [out, err]
        self.proc = subprocess.Popen(self.cmd, env={**os.environ, **self.env}, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.stderr_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return self
            time.sleep(poll_s)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout_s:.0f} s; see {self.stderr_path}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> dict[str, float]:
        return parse_metrics(httpx.get(f"{self.base}/metrics", timeout=10).text)

    def final_check(self) -> tuple[bool, int | str, dict[str, float]]:
        """(process alive, /healthz status, metrics) at the end of a run; never raises."""
        alive = self.alive()
        try:
            health: int | str = httpx.get(f"{self.base}/healthz", timeout=10).status_code
            return alive, health, self.metrics()
        except httpx.HTTPError as exc:
            return alive, type(exc).__name__, {}

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")

    def settle(self, timeout_s: float = 60.0) -> float | None:
        """Wait until the active-sessions gauge reads 0; seconds waited, or None on timeout."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            with contextlib.suppress(httpx.HTTPError):
                if self.metrics().get("emostt_active_sessions", 0.0) == 0.0:
                    return round(time.monotonic() - t0, 2)
            time.sleep(0.25)
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None:
            self.exit_code = self.proc.returncode
        for f in self._files:
            f.close()

    def output_scan(self) -> dict[str, Any]:
        """Tracebacks and error-level log lines in the server's output."""
        result: dict[str, Any] = {"stderr_path": str(self.stderr_path), "stdout_path": str(self.stdout_path)}
        tracebacks: list[str] = []
        kinds: Counter[str] = Counter()
        errors = 0
        for path in (self.stderr_path, self.stdout_path):
            with contextlib.suppress(OSError):
                for line in path.read_text(errors="replace").splitlines():
                    if "Traceback" in line:
                        tracebacks.append(line)
                        kinds[traceback_kind(line)] += 1
                    if '"level":"error"' in line or '"level":"critical"' in line:
                        errors += 1
        result["traceback_lines"] = len(tracebacks)
        result["traceback_kinds"] = dict(kinds.most_common())
        result["error_log_lines"] = errors
        result["traceback_samples"] = [t[:3000] for t in tracebacks[:5]]
        return result

    def describe(self) -> dict[str, Any]:
        return {
            "command": shlex.join(self.cmd),
            "env": {k: ("[redacted]" if "TOKEN" in k.upper() else v) for k, v in self.env.items()},
            "port": self.port,
            "exit_code": self.exit_code,
        }


# --------------------------------------------------------------------------------------------
# Speech streams with per-utterance bookkeeping


def speech_pool() -> list[np.ndarray]:
    return [c.audio * 0.9 for c in demo_data.generate("heldout", limit=160) if c.text]


@dataclass
class StreamLog:
    """What one simulated device saw, over one or more connections."""

    name: str
    connections: list[dict[str, Any]] = field(default_factory=list)
    utterances_sent: int = 0
    # utterance key (connection index : utterance_id) -> finals + errors received for it
    terminals: dict[str, int] = field(default_factory=dict)
    terminal_without_start: int = 0
    finals: int = 0
    finals_with_text: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    device_latency_s: list[float] = field(default_factory=list)
    server_latency_s: list[float] = field(default_factory=list)

    def on_event(self, conn: int, event: dict[str, Any], elapsed: float) -> None:
        kind = event.get("type")
        key = f"{conn}:{event.get('utterance_id')}"
        if kind == "speech_started":
            self.terminals.setdefault(key, 0)
        elif kind == "final":
            self.finals += 1
            if str(event.get("text", "")).strip():
                self.finals_with_text += 1
            self.device_latency_s.append(elapsed - float(event.get("audio_end_ms", 0)) / 1000)
            self.server_latency_s.append(float(event.get("latency_ms", 0)) / 1000)
            self._terminal(key)
        elif kind == "error":
            code = str(event.get("code"))
            self.errors[code] = self.errors.get(code, 0) + 1
            if event.get("utterance_id") is not None:
                self._terminal(key)

    def _terminal(self, key: str) -> None:
        if key not in self.terminals:
            self.terminal_without_start += 1
            self.terminals[key] = 0
        self.terminals[key] += 1

    @property
    def started(self) -> int:
        return len(self.terminals)

    @property
    def unterminated(self) -> int:
        return sum(1 for n in self.terminals.values() if n == 0)

    @property
    def duplicated(self) -> int:
        return sum(1 for n in self.terminals.values() if n > 1)


async def _wait_close(ws: ClientConnection, timeout_s: float) -> bool:
    """Read until the server closes (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    with contextlib.suppress(ConnectionClosed):
        while (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                return False
    return ws.close_code is not None


async def speech_connection(
    url: str,
    chunks: Iterator[tuple[bytes, int]],
    log: StreamLog,
    *,
    open_timeout: float = 30.0,
    close_timeout: float = 60.0,
) -> dict[str, Any]:
    """One connection: wait for ``ready`` (or record the refusal), stream the chunks in real time,
    send ``close``, read every event until the server closes. Returns the connection record."""
    index = len(log.connections)
    record: dict[str, Any] = {"admitted": False, "refusal": None, "close_code": None, "close_reason": ""}
    log.connections.append(record)
    record["t_connect"] = time.time()
    try:
        ws = await asyncio.wait_for(
            connect(url, max_size=None, ping_interval=None, open_timeout=open_timeout, close_timeout=10),
            open_timeout + 5,
        )
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        record["connect_error"] = f"{type(exc).__name__}: {exc}"[:200]
        return record
    try:
        try:
            first = orjson.loads(await asyncio.wait_for(ws.recv(), open_timeout))
        except ConnectionClosed:
            record["close_code"], record["close_reason"] = ws.close_code, ws.close_reason
            record["no_first_event"] = True
            return record
        except TimeoutError:
            record["no_first_event"] = True
            return record
        if first.get("type") != "ready":
            record["refusal"] = str(first.get("code")) if first.get("type") == "error" else str(first)
            record["refusal_closed"] = await _wait_close(ws, 10.0)
            record["close_code"], record["close_reason"] = ws.close_code, ws.close_reason
            return record
        record["admitted"] = True
        started = time.perf_counter()
        frames_sent = 0

        async def sender() -> None:
            nonlocal frames_sent
            with contextlib.suppress(ConnectionClosed):
                for pcm, utterances in chunks:
                    for i in range(0, len(pcm), FRAME_BYTES):
                        # Absolute schedule: a slow send never makes the device drift behind real time.
                        await asyncio.sleep(max(started + frames_sent * FRAME_S - time.perf_counter(), 0))
                        await ws.send(pcm[i : i + FRAME_BYTES])
                        frames_sent += 1
                    log.utterances_sent += utterances
                await ws.send('{"type": "close"}')

        async def receiver() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for raw in ws:
                    log.on_event(index, orjson.loads(raw), time.perf_counter() - started)

        send_task = asyncio.create_task(sender())
        recv_task = asyncio.create_task(receiver())
        done, _ = await asyncio.wait({send_task, recv_task}, return_when=asyncio.FIRST_COMPLETED)
        if recv_task in done and not send_task.done():
            record["closed_while_sending"] = True
            send_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await send_task
        else:
            await send_task
            try:
                await asyncio.wait_for(recv_task, close_timeout)
            except TimeoutError:
                record["hung"] = True
        record["close_code"], record["close_reason"] = ws.close_code, ws.close_reason
        record["audio_s"] = round(frames_sent * FRAME_S, 1)
        return record
    finally:
        record["t_end"] = time.time()
        if ws.close_code is None:
            ws.transport.abort()


def latency_summary(values: list[float]) -> dict[str, float | int | None]:
    def q(p: float) -> float | None:
        v = bench_stream.pct(values, p)
        return None if v is None else round(v * 1000, 1)

    return {
        "n": len(values),
        "p50_ms": q(50),
        "p95_ms": q(95),
        "p99_ms": q(99),
        "max_ms": round(max(values) * 1000, 1) if values else None,
    }


def merge_counts(dicts: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(sorted(total.items()))


def close_codes(logs: list[StreamLog], admitted_only: bool = True) -> dict[str, int]:
    codes: Counter[str] = Counter()
    for log in logs:
        for c in log.connections:
            if c["admitted"] or not admitted_only:
                codes[str(c["close_code"])] += 1
    return dict(sorted(codes.items()))


def stream_totals(logs: list[StreamLog]) -> dict[str, Any]:
    device = [x for log in logs for x in log.device_latency_s]
    server = [x for log in logs for x in log.server_latency_s]
    return {
        "utterances_sent": sum(log.utterances_sent for log in logs),
        "utterances_started": sum(log.started for log in logs),
        "finals": sum(log.finals for log in logs),
        "finals_with_text": sum(log.finals_with_text for log in logs),
        "errors_by_code": merge_counts([log.errors for log in logs]),
        "unterminated_utterances": sum(log.unterminated for log in logs),
        "duplicated_terminals": sum(log.duplicated for log in logs),
        "terminal_without_speech_started": sum(log.terminal_without_start for log in logs),
        "speech_end_to_final": latency_summary(device),
        "endpoint_to_final_server": latency_summary(server),
        "hung_connections": sum(1 for log in logs for c in log.connections if c.get("hung")),
    }


# Load generator processes: one event loop drives a few hundred streams at most.

_ASYNC_PARTS: dict[str, Callable[[list[Any]], Coroutine[Any, Any, list[StreamLog]]]] = {}


def _run_part(payload: tuple[str, list[Any]]) -> list[StreamLog]:
    name, items = payload
    return asyncio.run(_ASYNC_PARTS[name](items))


async def run_parts(name: str, items: list[Any], processes: int) -> list[StreamLog]:
    """Run ``_ASYNC_PARTS[name]`` over ``items`` in this loop, or split over forked processes."""
    processes = max(min(processes, len(items)), 1)
    if processes == 1:
        return await _ASYNC_PARTS[name](items)
    parts = [list(range(k, len(items), processes)) for k in range(processes)]
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        done = await asyncio.gather(
            *(loop.run_in_executor(pool, _run_part, (name, [items[i] for i in part])) for part in parts)
        )
    logs: list[StreamLog | None] = [None] * len(items)
    for part, part_logs in zip(parts, done, strict=True):
        for i, log in zip(part, part_logs, strict=True):
            logs[i] = log
    return [log for log in logs if log is not None]


# --------------------------------------------------------------------------------------------
# Reporting


@dataclass
class Criterion:
    name: str
    value: Any
    limit: str
    ok: bool


def finish(
    args: argparse.Namespace,
    test: str,
    server: Server,
    criteria: list[Criterion],
    result: dict[str, Any],
    figures: list[tuple[str, Any]],
) -> int:
    scan = server.output_scan()
    criteria = [
        *criteria,
        Criterion(
            "tracebacks in server output", scan["traceback_lines"], "= 0", scan["traceback_lines"] == 0
        ),
    ]
    passed = all(c.ok for c in criteria)
    if scan["traceback_kinds"]:
        figures = [*figures, ("server tracebacks by kind", scan["traceback_kinds"])]
    report = {
        "test": test,
        "passed": passed,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine_info(),
        "model": args.model,
        "server": {**server.describe(), **scan},
        "criteria": [asdict(c) for c in criteria],
        **result,
    }
    out = args.out or args.work_dir / f"{test}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    lines = [
        f"## {test}: {'PASS' if passed else 'FAIL'}",
        "",
        f"model `{args.model}`; {report['machine']['nproc']} cores, {report['machine']['cpu_model']};"
        f" result {out}; server output {scan['stderr_path']}",
        "",
        "| criterion | value | limit | pass |",
        "|---|---|---|---|",
        *(f"| {c.name} | {c.value} | {c.limit} | {'yes' if c.ok else '**NO**'} |" for c in criteria),
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in figures),
    ]
    print("\n".join(lines), flush=True)
    return 0 if passed else 1


def ms(summary: dict[str, Any], key: str = "p95_ms") -> str:
    return "n/a" if summary.get(key) is None else f"{summary[key]:.0f} ms"


# --------------------------------------------------------------------------------------------
# fuzz

UNICODE_RANGES = [
    (0x20, 0x7E),
    (0x00, 0x1F),
    (0xA0, 0x24F),
    (0x300, 0x36F),  # combining marks
    (0x200B, 0x200F),  # zero-width, direction marks
    (0x202A, 0x202E),  # bidi overrides
    (0x4E00, 0x4FFF),
    (0xAC00, 0xACFF),
    (0xFFF0, 0xFFFF),
    (0x1F300, 0x1F6FF),
    (0xE0000, 0xE007F),  # tags
    (0x10FF00, 0x10FFFF),
]


def unicode_junk(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        lo, hi = rng.choice(UNICODE_RANGES)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def nested(rng: random.Random, depth: int) -> str:
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}"), ('{"type":', "}"), ('{"vad":', "}")])
    return opener * depth + rng.choice(["1", "null", '"x"', "{}", "[]"]) + closer * depth


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


BAD_CONFIGS: list[Callable[[random.Random], dict[str, Any]]] = [
    lambda r: {"partial_interval_ms": r.choice([0, 99, 10_001, -5, 1e30, "fast", None, [], {}, True, 600.5])},
    lambda r: {"vad": {"threshold": r.choice([0, 1, 1.5, -1, "x", None, 1e308, [0.5]])}},
    lambda r: {"vad": {"silence_duration_ms": r.choice([-1, 10_001, 1e9, "500ms", 0.5])}},
    lambda r: {"vad": {"max_utterance_ms": r.choice([999, 30_001, 0, -30_000])}},
    lambda r: {"vad": {"prefix_padding_ms": 2_001, "min_speech_ms": -1}},
    lambda r: {"vad": r.choice(["fast", [1, 2], 5, None, True])},
    lambda r: {"vad": {"bogus": 1}},
    lambda r: {"gating": {"min_confidence": r.choice([2, -0.1, "high", None])}},
    lambda r: {"gating": r.choice([[1], "x", 0, {"nope": True}])},
    lambda r: {"language": r.choice(["xx", 5, None, "", "EN", unicode_junk(r, 8), ["en"]])},
    lambda r: {"sample_rate": r.choice([12_345, 0, -16_000, 1e9, "abc", None, 16_000.5])},
    lambda r: {"use_itn": r.choice(["maybe", 2, None, [], {}])},
    lambda r: {"interim_results": r.choice(["perhaps", 3.5, {"x": 1}])},
    lambda r: {"word_timestamps": r.choice([[True], "nope"])},
    lambda r: {r.choice(["unknown_field", "Sample_Rate", "", "type2", unicode_junk(r, 5)]): 1},
    lambda r: {"config": {"language": "en"}},
]

VALID_CONFIGS: list[dict[str, Any]] = [
    {"language": "en"},
    {"interim_results": False},
    {"interim_results": True, "partial_interval_ms": 100},
    {"word_timestamps": True},
    {"known_emotion_only": True},
    {"vad": {"silence_duration_ms": 0}},
    {"vad": {"threshold": 0.05, "min_speech_ms": 0}},
    {"vad": {"max_utterance_ms": 1000}},
    {"gating": {"min_confidence": 1.0, "drop_gated": True}},
    {"use_itn": False},
]


# Message kinds and their relative weights.
FUZZ_WEIGHTS = [
    ("invalid_json", 10),
    ("non_object", 6),
    ("unknown_type", 8),
    ("bad_hex", 8),
    ("bad_base64", 8),
    ("bad_config", 14),
    ("huge_number", 5),
    ("nested_junk", 5),
    ("empty_text", 3),
    ("binary_noise", 10),
    ("unicode_junk", 6),
    ("valid", 6),
    ("finalize", 3),
    ("sample_rate_after_audio", 2),
    ("big_allowed", 0.5),
    ("oversize", 0.5),
    ("invalid_utf8_text", 0.3),
    ("close_message", 1),
]
FUZZ_KINDS = [k for k, _ in FUZZ_WEIGHTS]


def fuzz_message(
    rng: random.Random, audio_sent: bool, max_bytes: int, skip: frozenset[str] = frozenset()
) -> tuple[str, str | bytes, str | None]:
    """(kind, payload, expected close) for one random message."""
    kinds = [(k, w) for k, w in FUZZ_WEIGHTS if k not in skip]
    kind = rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
    if kind == "invalid_json":
        payload: str | bytes = rng.choice(
            [
                '{"type": "audio"',
                "{,}",
                "nul",
                "{'type': 'config'}",
                '{"type": "config", "vad": {"threshold": 0.5,}}',
                "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 200))),
                '{"audio": "00ff"} trailing',
                "NaN",
                '{"a": Infinity}',
                '"unterminated',
            ]
        )
    elif kind == "non_object":
        payload = rng.choice(
            ["[]", "1", '"str"', "null", "true", "-0.0", '[{"type": "close"}]', '[{"audio": "0000"}]', "1e5"]
        )
    elif kind == "unknown_type":
        payload = dumps(
            {
                "type": rng.choice(
                    ["foo", "Audio", "CONFIG", "", 123, None, ["config"], {"type": "close"}, True, 1.5]
                )
            }
            if rng.random() < 0.85
            else rng.choice([{}, {"data": "AAAA"}, {"Type": "close"}])
        )
    elif kind == "bad_hex":
        payload = dumps(
            {
                "audio": rng.choice(
                    [
                        "zz" * rng.randint(1, 50),
                        "abc",
                        "0" * (2 * rng.randint(0, 50) + 1),
                        "00 11 2",
                        123,
                        None,
                        ["00"],
                        {"hex": "00"},
                        True,
                        "\u00e9\u00e9",
                    ]
                )
            }
        )
    elif kind == "bad_base64":
        payload = dumps(
            {
                "type": "audio",
                **rng.choice(
                    [
                        {"data": "!!!!"},
                        {"data": "abc"},
                        {"data": "AAAA===="},
                        {"data": "A"},
                        {"data": "AA AA"},
                        {"data": 5},
                        {"data": None},
                        {"data": ["AAAA"]},
                        {},
                        {"data": "\u00ff\u00fe"},
                    ]
                ),
            }
        )
    elif kind == "bad_config":
        payload = dumps({"type": "config", **rng.choice(BAD_CONFIGS)(rng)})
    elif kind == "huge_number":
        payload = rng.choice(
            [
                '{"type": "config", "partial_interval_ms": ' + "9" * rng.randint(20, 400) + "}",
                '{"type": "config", "vad": {"threshold": 1e400}}',
                '{"type": "config", "partial_interval_ms": 1e308}',
                '{"type": "config", "sample_rate": -1e308}',
                '{"type": "config", "vad": {"silence_duration_ms": 18446744073709551616}}',
                '{"type": 1e999}',
                '{"audio": 1e308}',
            ]
        )
    elif kind == "nested_junk":
        depth = rng.choice([2, 10, 100, 1000, 1025, 5000])
        payload = rng.choice([nested(rng, depth), '{"type": "config", "gating": ' + nested(rng, depth) + "}"])
    elif kind == "empty_text":
        payload = rng.choice(["", " ", "\n", "\t\r\n"])
    elif kind == "binary_noise":
        size = rng.choice([1, 2, 3, 7, 31, 511, 1023, 3199, 3200, 3201, rng.randint(1, 20_000)])
        payload = rng.randbytes(size)
    elif kind == "unicode_junk":
        junk = unicode_junk(rng, rng.randint(1, 200))
        payload = rng.choice(
            [
                junk,
                dumps({"type": junk}),
                dumps({"type": "config", "language": junk}),
                dumps({"audio": junk}),
                dumps({junk: junk}),
                dumps({"type": "audio", "data": junk}),
            ]
        )
    elif kind == "valid":
        pcm = rng.randbytes(2 * rng.randint(1, 800))
        if rng.random() < 0.4:
            kind = "valid_audio"
            payload = rng.choice(
                [
                    dumps({"audio": pcm.hex()}),
                    dumps({"type": "audio", "data": base64.b64encode(pcm).decode()}),
                ]
            )
        else:
            kind = "valid_control"
            payload = rng.choice(
                [
                    '{"type": "keepalive"}',
                    dumps({"type": "config", **rng.choice(VALID_CONFIGS)}),
                    dumps({"type": "keepalive", "extra": [1, 2, {"x": None}]}),
                ]
            )
    elif kind == "finalize":
        payload = '{"type": "finalize"}'
    elif kind == "sample_rate_after_audio":
        kind = kind if audio_sent else "sample_rate_before_audio"
        payload = dumps({"type": "config", "sample_rate": rng.choice([8000, 48_000, 22_050])})
    elif kind == "big_allowed":
        payload = dumps({"type": "keepalive", "pad": "x" * rng.randint(max_bytes // 2, max_bytes - 1000)})
    elif kind == "oversize":
        extra = rng.randint(1, 4096)
        payload = (
            rng.randbytes(max_bytes + extra)
            if rng.random() < 0.5
            else dumps({"type": "keepalive", "pad": "y" * (max_bytes + extra)})
        )
        return kind, payload, "1009"
    elif kind == "invalid_utf8_text":
        return kind, rng.choice([b"\xff\xfe\xfd", b'{"type": "\xc3\x28"}', b"\xed\xa0\x80"]), "1007"
    else:  # close_message
        return kind, '{"type": "close"}', "1000"
    return kind, payload, None


@dataclass
class FuzzStats:
    sent: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    server_closes: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    expectations: dict[str, Counter[str]] = field(default_factory=dict)
    connections: int = 0
    connect_errors: Counter[str] = field(default_factory=Counter)
    client_closes: Counter[str] = field(default_factory=Counter)
    close_1011_reasons: list[str] = field(default_factory=list)
    hung: int = 0
    unparsable_events: int = 0
    open_now: int = 0
    max_open: int = 0
    handshake_variants: Counter[str] = field(default_factory=Counter)


def handshake_variant(rng: random.Random, slot: int) -> tuple[str, str, str]:
    """(variant, device id, query string) for a fuzz connection."""
    roll = rng.random()
    if roll < 0.90:
        return "plain", f"fuzz-{slot}", ""
    if roll < 0.93:
        rate = rng.choice([8000, 22_050, 24_000, 32_000, 44_100, 48_000])
        return "sample_rate", f"fuzz-{slot}", f"?sample_rate={rate}"
    if roll < 0.96:
        bad = rng.choice(["abc", "0", "-16000", "1e9", "", "12345", "16000.0"])
        return "bad_sample_rate", f"fuzz-{slot}", f"?sample_rate={bad}"
    if roll < 0.98:
        return "bad_device_id", rng.choice(["-bad", "a" * 65, "bad%20id", "_x", "%C3%A9t%C3%A9"]), ""
    return (
        "junk_token",
        f"fuzz-{slot}",
        "?token=" + "".join(rng.choice(string.ascii_letters) for _ in range(20)),
    )


async def fuzz_slot(
    slot: int,
    server: Server,
    rng: random.Random,
    budget: dict[str, Any],
    stats: FuzzStats,
) -> None:
    """One connection slot: connect, send random messages, reconnect whenever closed, until the
    shared message budget is spent or the deadline passes."""
    while budget["left"] > 0 and time.monotonic() < budget["deadline"]:
        variant, device, query = handshake_variant(rng, slot)
        stats.handshake_variants[variant] += 1
        try:
            ws = await asyncio.wait_for(
                connect(server.ws(device, query), max_size=None, ping_interval=None, open_timeout=10),
                15,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            stats.connect_errors[type(exc).__name__] += 1
            await asyncio.sleep(0.2)
            continue
        stats.connections += 1
        initiator = "server"
        admitted = False
        try:
            try:
                first = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            except (ConnectionClosed, TimeoutError):
                stats.connect_errors["no_first_event"] += 1
                continue
            if first.get("type") != "ready":
                stats.refusals[f"{first.get('code')}/{variant}"] += 1
                await _wait_close(ws, 10)
                await asyncio.sleep(1.0)  # a refused client backs off
                continue
            admitted = True
            stats.open_now += 1
            stats.max_open = max(stats.max_open, stats.open_now)

            async def reader(ws: ClientConnection = ws) -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for raw in ws:
                        try:
                            event = orjson.loads(raw)
                        except orjson.JSONDecodeError:
                            stats.unparsable_events += 1
                            continue
                        stats.events[str(event.get("type"))] += 1
                        if event.get("type") == "error":
                            stats.errors[str(event.get("code"))] += 1

            reading = asyncio.create_task(reader())
            audio_sent = False
            expected: tuple[str, str] | None = None
            for _ in range(rng.randint(20, 400)):
                if budget["left"] <= 0 or time.monotonic() >= budget["deadline"] or reading.done():
                    break
                budget["left"] -= 1
                index = budget["total"] - budget["left"]
                if budget["rate"] > 0:
                    await asyncio.sleep(max(budget["t0"] + index / budget["rate"] - time.monotonic(), 0))
                kind, payload, expect = fuzz_message(
                    rng, audio_sent, server.max_message_bytes, budget["skip"]
                )
                stats.sent[kind] += 1
                if expect is not None:
                    expected = (kind, expect)
                try:
                    if isinstance(payload, bytes) and kind == "invalid_utf8_text":
                        await ws.send(payload, text=True)
                    else:
                        await ws.send(payload)
                except ConnectionClosed:
                    break
                audio_sent = audio_sent or kind in ("binary_noise", "valid_audio")
                if expect is not None:
                    break
            if expected is None and not reading.done():
                # End the connection one of three ways; the server must cope with each.
                how = rng.choice(["close_frame", "tcp_drop", "close_message"])
                if how == "close_message":
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send('{"type": "close"}')
                    stats.sent["close_message"] += 1
                    expected = ("close_message", "1000")
                else:
                    initiator = "client"
                    stats.client_closes[how] += 1
                    if how == "tcp_drop":
                        ws.transport.abort()
                    else:
                        with contextlib.suppress(ConnectionClosed, TimeoutError):
                            await asyncio.wait_for(ws.close(), 15)
            try:
                await asyncio.wait_for(reading, 30)
            except TimeoutError:
                stats.hung += 1
                reading.cancel()
            if expected is not None:
                kind, expect = expected
                got = str(ws.close_code)
                stats.expectations.setdefault(kind, Counter())["ok" if got == expect else f"got_{got}"] += 1
        finally:
            stats.open_now -= admitted
            if ws.close_code is None:
                ws.transport.abort()
            if initiator == "server" and ws.close_code is not None:
                stats.server_closes[str(ws.close_code)] += 1
                if ws.close_code == 1011:
                    stats.close_1011_reasons.append(str(ws.close_reason))


async def fuzz_all(server: Server, args: argparse.Namespace, stats: FuzzStats) -> dict[str, Any]:
    budget = {
        "left": args.messages,
        "total": args.messages,
        "deadline": time.monotonic() + args.timeout,
        "rate": args.rate,
        "t0": time.monotonic(),
        "skip": frozenset(args.skip),
    }
    health: Counter[str] = Counter()
    done = asyncio.Event()

    async def watch_health() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while not done.is_set() and time.monotonic() < budget["deadline"] + 60:
                try:
                    health[str((await client.get(f"{server.base}/healthz")).status_code)] += 1
                except httpx.HTTPError as exc:
                    health[type(exc).__name__] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.5)

    watcher = asyncio.create_task(watch_health())
    t0 = time.monotonic()
    await asyncio.gather(
        *(
            fuzz_slot(slot, server, random.Random(args.seed * 1000 + slot), budget, stats)
            for slot in range(args.connections)
        )
    )
    wall = time.monotonic() - t0
    done.set()
    await watcher
    return {"wall_s": round(wall, 1), "healthz": dict(health), "messages_left": budget["left"]}


def _neighbour_main(url: str, seed: int, min_s: float, max_s: float, stop: Any, results: Any) -> None:
    rng = random.Random(seed)
    t0 = time.monotonic()

    def chunks() -> Iterator[tuple[bytes, int]]:
        while time.monotonic() - t0 < max_s:
            yield bench_stream.make_stream(_POOL, 10.0, rng)
            if stop.is_set() and time.monotonic() - t0 >= min_s:
                return

    log = StreamLog("neighbour")
    asyncio.run(speech_connection(url, chunks(), log, close_timeout=60))
    results.put(log)


def cmd_fuzz(args: argparse.Namespace) -> int:
    _POOL[:] = speech_pool()
    server = Server(args, "fuzz").start()
    try:
        context = multiprocessing.get_context("fork")
        stop, results = context.Event(), context.Queue()
        neighbour = context.Process(
            target=_neighbour_main,
            args=(server.ws("neighbour"), args.seed, args.neighbour_min_s, args.timeout + 60, stop, results),
        )
        neighbour.start()
        time.sleep(1.0)  # the neighbour is streaming before the junk starts
        stats = FuzzStats()
        run = asyncio.run(fuzz_all(server, args, stats))
        stop.set()
        try:
            log: StreamLog = results.get(timeout=args.neighbour_min_s + 120)
        except queue.Empty:  # the neighbour hung
            log = StreamLog("neighbour", connections=[{"admitted": False, "hung": True}])
        neighbour.join(30)
        if neighbour.is_alive():
            neighbour.kill()
        alive, healthz_end, metrics = server.final_check()
    finally:
        server.stop()
    totals = stream_totals([log])
    neighbour_close = log.connections[0].get("close_code") if log.connections else None
    finals_needed = totals["finals_with_text"] if args.model == "demo" else totals["finals"]
    closes_1011 = stats.server_closes.get("1011", 0) + (1 if neighbour_close == 1011 else 0)
    healthz_bad = sum(n for code, n in run["healthz"].items() if code != "200") + (healthz_end != 200)
    oversize = stats.expectations.get("oversize", Counter())
    oversize_bad = sum(n for k, n in oversize.items() if k != "ok")
    criteria = [
        Criterion(
            "messages sent", sum(stats.sent.values()), f">= {args.messages}", run["messages_left"] <= 0
        ),
        Criterion("closes with 1011", closes_1011, "= 0", closes_1011 == 0),
        Criterion("/healthz answers not 200", healthz_bad, "= 0", healthz_bad == 0),
        Criterion("server alive at end", alive, "yes", alive),
        Criterion("oversize messages not closed with 1009", oversize_bad, "= 0", oversize_bad == 0),
        Criterion(
            "neighbour finals" + (" with text" if args.model == "demo" else ""),
            f"{finals_needed} / {totals['utterances_sent']} utterances sent",
            ">= utterances sent",
            totals["utterances_sent"] > 0 and finals_needed >= totals["utterances_sent"],
        ),
        Criterion(
            "neighbour utterances without exactly one final/error",
            totals["unterminated_utterances"] + totals["duplicated_terminals"],
            "= 0",
            totals["unterminated_utterances"] + totals["duplicated_terminals"] == 0,
        ),
        Criterion("neighbour session ended normally", neighbour_close, "1000", neighbour_close == 1000),
    ]
    result = {
        "parameters": {
            "messages": args.messages,
            "connections": args.connections,
            "rate_per_s": args.rate,
            "skipped_kinds": args.skip,
            "seed": args.seed,
            "max_message_bytes": server.max_message_bytes,
        },
        "fuzz": {
            **run,
            "messages_by_kind": dict(sorted(stats.sent.items())),
            "connections_opened": stats.connections,
            "max_concurrent_admitted": stats.max_open,
            "handshake_variants": dict(stats.handshake_variants),
            "refused_handshakes": dict(stats.refusals),
            "connect_errors": dict(stats.connect_errors),
            "events_by_type": dict(sorted(stats.events.items())),
            "errors_by_code": dict(sorted(stats.errors.items())),
            "server_close_codes": dict(sorted(stats.server_closes.items())),
            "close_1011_reasons": stats.close_1011_reasons[:20],
            "client_closes": dict(stats.client_closes),
            "expected_closes": {k: dict(v) for k, v in stats.expectations.items()},
            "hung_connections": stats.hung,
            "unparsable_events": stats.unparsable_events,
        },
        "neighbour": {**totals, "connection": log.connections},
        "server_errors_total": by_label(metrics, "emostt_errors_total"),
        "server_rejected_connections": by_label(metrics, "emostt_rejected_connections_total"),
    }
    figures = [
        (
            "messages / connections opened / wall",
            f"{sum(stats.sent.values())} / {stats.connections} / {run['wall_s']} s",
        ),
        ("fuzz connections admitted at once, max", f"{stats.max_open} of {args.connections}"),
        ("error events by code", dict(sorted(stats.errors.items()))),
        ("server close codes", dict(sorted(stats.server_closes.items()))),
        ("expected closes", {k: dict(v) for k, v in stats.expectations.items()}),
        ("refused handshakes", dict(stats.refusals)),
        (
            "neighbour utterances sent / finals / with text",
            f"{totals['utterances_sent']} / {totals['finals']} / {totals['finals_with_text']}",
        ),
        ("neighbour endpoint→final p95 (server)", ms(totals["endpoint_to_final_server"])),
        (
            "neighbour speech-end→final p50 / p95 (device)",
            f"{ms(totals['speech_end_to_final'], 'p50_ms')} / {ms(totals['speech_end_to_final'])}",
        ),
        ("neighbour errors", totals["errors_by_code"]),
        ("hung connections", stats.hung),
    ]
    return finish(args, "fuzz", server, criteria, result, figures)


# --------------------------------------------------------------------------------------------
# churn

CHURN_KINDS = [
    ("audio_close_frame", 3),  # a little audio, then a WebSocket close frame
    ("audio_tcp_drop", 2),  # a little audio, then the TCP connection dropped (no close frame)
    ("audio_close_message", 2),  # a little audio, then {"type": "close"}
    ("speech_close_frame_mid", 2),  # speech, close frame once speech_started arrived
    ("speech_tcp_drop_mid", 2),  # speech, TCP dropped once speech_started arrived
    ("speech_full", 1),  # a whole utterance, its final, then {"type": "close"}
]


def silence_pcm(rng: random.Random, seconds: float) -> bytes:
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 30, int(16000 * seconds))
    return noise.astype("<i2").tobytes()


def to_pcm(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


async def churn_cycle(server: Server, rng: random.Random, stats: dict[str, Any]) -> None:
    kinds = [(k, w) for k, w in CHURN_KINDS if k in stats["allowed"]]
    kind = rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
    stats["kinds"][kind] += 1
    try:
        ws = await asyncio.wait_for(
            connect(server.ws(f"churn-{rng.randrange(10_000)}"), ping_interval=None, open_timeout=10), 15
        )
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        stats["connect_errors"][type(exc).__name__] += 1
        return
    started = False
    try:
        try:
            first = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        except (ConnectionClosed, TimeoutError):
            stats["no_ready"] += 1
            return
        if first.get("type") != "ready":
            stats["refused"][str(first.get("code"))] += 1
            return
        if kind.startswith("audio_"):
            await ws.send(silence_pcm(rng, rng.uniform(0.1, 1.0)))
        else:
            clip = _POOL[rng.randrange(len(_POOL))]
            head = np.zeros(4800, dtype=np.float32)
            if kind == "speech_full":
                tail = np.zeros(int(16000 * 1.0), dtype=np.float32)
                pcm = to_pcm(np.concatenate([head, clip, tail]))
            else:
                pcm = to_pcm(np.concatenate([head, clip[: int(len(clip) * rng.uniform(0.5, 0.9))]]))
            for i in range(0, len(pcm), FRAME_BYTES):
                await ws.send(pcm[i : i + FRAME_BYTES])
            # Close mid-utterance: wait until the server says the utterance started.
            deadline = time.monotonic() + 5
            want = "final" if kind == "speech_full" else "speech_started"
            with contextlib.suppress(TimeoutError, ConnectionClosed):
                while time.monotonic() < deadline:
                    event = orjson.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
                    if event.get("type") == want:
                        started = True
                        break
            stats["speech_waited_ok" if started else "speech_wait_timeout"] += 1
        if kind.endswith("tcp_drop") or kind.endswith("tcp_drop_mid"):
            ws.transport.abort()
        elif kind.endswith("close_message") or kind == "speech_full":
            await ws.send('{"type": "close"}')
            closed = await _wait_close(ws, 30)
            stats["server_close_codes"][str(ws.close_code) if closed else "none"] += 1
            if ws.close_code == 1011:
                stats["close_1011_reasons"].append(str(ws.close_reason))
        else:
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await asyncio.wait_for(ws.close(), 15)
        stats["completed"] += 1
    except ConnectionClosed:
        stats["server_close_codes"][str(ws.close_code)] += 1
        stats["closed_early"] += 1
    finally:
        if ws.close_code is None:
            ws.transport.abort()


async def churn_cycles(
    server: Server, rng: random.Random, count: int, parallel: int, stats: dict[str, Any], deadline: float
) -> None:
    left = [count]

    async def worker(seed: int) -> None:
        local = random.Random(seed)
        while left[0] > 0 and time.monotonic() < deadline:
            left[0] -= 1
            await churn_cycle(server, local, stats)

    await asyncio.gather(*(worker(rng.randrange(2**32)) for _ in range(parallel)))
    stats["not_run"] += left[0]


def resources(server: Server) -> dict[str, Any]:
    return {"t": round(time.time(), 1), "rss_kib": server.rss_kib(), "fds": fd_count(server.pid)}


def cmd_churn(args: argparse.Namespace) -> int:
    _POOL[:] = speech_pool()
    server = Server(args, "churn").start()
    rng = random.Random(args.seed)
    stats: dict[str, Any] = {
        "allowed": set(args.kinds),
        "kinds": Counter(),
        "connect_errors": Counter(),
        "refused": Counter(),
        "server_close_codes": Counter(),
        "close_1011_reasons": [],
        "no_ready": 0,
        "completed": 0,
        "closed_early": 0,
        "speech_waited_ok": 0,
        "speech_wait_timeout": 0,
        "not_run": 0,
    }
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.timeout
    try:
        initial = resources(server)
        asyncio.run(churn_cycles(server, rng, args.warmup, args.parallel, stats, deadline))
        settle_base = server.settle()
        time.sleep(args.settle_s)
        baseline = resources(server)
        samples.append({"cycles": args.warmup, **baseline})
        t0 = time.monotonic()
        done = 0
        while done < args.cycles and time.monotonic() < deadline:
            n = min(args.sample_every, args.cycles - done)
            asyncio.run(churn_cycles(server, rng, n, args.parallel, stats, deadline))
            done += n
            samples.append({"cycles": args.warmup + done, **resources(server)})
        wall = time.monotonic() - t0
        settle_end = server.settle()
        time.sleep(args.settle_s)
        end = resources(server)
        samples.append({"cycles": args.warmup + done, "settled": True, **end})
        alive, healthz, metrics = server.final_check()
    finally:
        server.stop()
    growth = (end["rss_kib"] - baseline["rss_kib"]) / baseline["rss_kib"] * 100
    fd_delta = end["fds"] - baseline["fds"]
    closes_1011 = stats["server_close_codes"].get("1011", 0)
    total_run = args.warmup + done
    # An `overloaded` refusal is admission control doing its job (the churn load can exceed the
    # measured capacity on a small machine); it is reported, not counted as a failed cycle.
    shed = stats["refused"].get("overloaded", 0)
    other_refusals = sum(n for code, n in stats["refused"].items() if code != "overloaded")
    failed_cycles = stats["no_ready"] + other_refusals + sum(stats["connect_errors"].values())
    criteria = [
        Criterion("cycles run", total_run, f"= {args.warmup + args.cycles}", done >= args.cycles),
        Criterion(
            "RSS growth over post-warm-up baseline",
            f"{growth:+.2f} %",
            f"< {args.max_rss_growth} %",
            growth < args.max_rss_growth,
        ),
        Criterion(
            "open fds vs baseline",
            f"{fd_delta:+d}",
            f"within ±{args.fd_tolerance}",
            abs(fd_delta) <= args.fd_tolerance,
        ),
        Criterion("sessions settled to 0 at end", settle_end is not None, "yes", settle_end is not None),
        Criterion("cycles without ready (other than `overloaded`)", failed_cycles, "= 0", failed_cycles == 0),
        Criterion("closes with 1011", closes_1011, "= 0", closes_1011 == 0),
        Criterion("server alive, /healthz 200", f"{alive}, {healthz}", "yes, 200", alive and healthz == 200),
    ]
    result = {
        "parameters": {
            "cycles": args.cycles,
            "warmup": args.warmup,
            "parallel": args.parallel,
            "kinds": args.kinds,
            "seed": args.seed,
        },
        "wall_s": round(wall, 1),
        "cycles_per_s": round(done / wall, 1) if wall else None,
        "initial": initial,
        "baseline": baseline,
        "end": end,
        "rss_growth_percent": round(growth, 3),
        "fd_delta": fd_delta,
        "settle_s": {"baseline": settle_base, "end": settle_end},
        "samples": samples,
        "cycles_by_kind": dict(stats["kinds"]),
        "outcomes": {
            k: (dict(v) if isinstance(v, Counter) else v)
            for k, v in stats.items()
            if k not in ("kinds", "allowed")
        },
        "server_errors_total": by_label(metrics, "emostt_errors_total"),
        "server_utterances_total": by_label(metrics, "emostt_utterances_total"),
    }
    figures = [
        (
            "cycles measured (+ warm-up) / wall",
            f"{done} (+ {args.warmup}) / {wall:.1f} s, {args.parallel} at a time",
        ),
        (
            "RSS MiB: start / baseline / end",
            f"{initial['rss_kib'] / 1024:.1f} / {baseline['rss_kib'] / 1024:.1f}"
            f" / {end['rss_kib'] / 1024:.1f}",
        ),
        ("fds: start / baseline / end", f"{initial['fds']} / {baseline['fds']} / {end['fds']}"),
        ("cycles by kind", dict(stats["kinds"])),
        ("cycles refused `overloaded` by admission control", shed),
        ("server close codes (client waited for them)", dict(stats["server_close_codes"])),
        (
            "speech cycles: utterance seen / not seen",
            f"{stats['speech_waited_ok']} / {stats['speech_wait_timeout']}",
        ),
    ]
    return finish(args, "churn", server, criteria, result, figures)


# --------------------------------------------------------------------------------------------
# overload


async def _overload_streams(items: list[tuple[str, int, float]]) -> list[StreamLog]:
    async def one(url: str, seed: int, duration: float) -> StreamLog:
        log = StreamLog(url.rsplit("/", 1)[1])
        stream = bench_stream.make_stream(_POOL, duration, random.Random(seed))
        await speech_connection(url, iter([stream]), log, open_timeout=30, close_timeout=60)
        return log

    return list(await asyncio.gather(*(one(*item) for item in items)))


_ASYNC_PARTS["overload"] = _overload_streams


async def try_session(server: Server) -> tuple[bool, str]:
    """Open one session: (admitted, first event type or error code)."""
    try:
        async with connect(server.ws("probe"), ping_interval=None, open_timeout=5, close_timeout=5) as ws:
            event = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            if event.get("type") == "ready":
                await ws.send('{"type": "close"}')
                await _wait_close(ws, 5)
                return True, "ready"
            await _wait_close(ws, 5)
            return False, f"{event.get('code')}/{ws.close_code}"
    except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
        return False, type(exc).__name__


async def overload_run(server: Server, args: argparse.Namespace, streams: int) -> dict[str, Any]:
    timeline: list[dict[str, Any]] = []
    sampling = asyncio.Event()
    t0 = time.time()

    async def sample() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while not sampling.is_set():
                row: dict[str, Any] = {"t": round(time.time() - t0, 1)}
                try:
                    ready = await client.get(f"{server.base}/readyz")
                    row["readyz"] = ready.status_code
                    with contextlib.suppress(ValueError):
                        body = ready.json()
                        row["readyz_body"] = {
                            k: body.get(k)
                            for k in (
                                "ready",
                                "sessions",
                                "capacity_sessions",
                                "queue_depth",
                                "full",
                                "reason",
                                "status",
                            )
                            if k in body
                        }
                    values = parse_metrics((await client.get(f"{server.base}/metrics")).text)
                    row["capacity"] = values.get("emostt_capacity_sessions")
                    row["active"] = values.get("emostt_active_sessions")
                    row["queue_depth"] = values.get("emostt_batcher_queue_depth")
                except httpx.HTTPError as exc:
                    row["error"] = type(exc).__name__
                timeline.append(row)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sampling.wait(), 1.0)

    sampler = asyncio.create_task(sample())
    items = [(server.ws(f"load-{i}"), args.seed * 1000 + i, args.duration) for i in range(streams)]
    burst_start = time.time() - t0
    logs = await run_parts("overload", items, args.client_processes)
    burst_end = time.time() - t0
    # Recovery: a new session every 0.5 s until one is admitted.
    attempts: list[dict[str, Any]] = []
    recovered_at = None
    r0 = time.monotonic()
    while time.monotonic() - r0 < args.recovery_timeout:
        tick = time.monotonic()
        readyz: int | str
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                readyz = (await client.get(f"{server.base}/readyz")).status_code
        except httpx.HTTPError as exc:
            readyz = type(exc).__name__
        admitted, what = await try_session(server)
        attempts.append(
            {"t": round(time.monotonic() - r0, 2), "readyz": readyz, "admitted": admitted, "answer": what}
        )
        if admitted:
            recovered_at = round(time.monotonic() - r0, 2)
            break
        await asyncio.sleep(max(0.5 - (time.monotonic() - tick), 0))
    await asyncio.sleep(2)
    sampling.set()
    await sampler
    return {
        "logs": logs,
        "timeline": timeline,
        "burst": {"start_s": round(burst_start, 1), "end_s": round(burst_end, 1)},
        "recovery_attempts": attempts,
        "recovery_s": recovered_at,
    }


def cmd_overload(args: argparse.Namespace) -> int:
    _POOL[:] = speech_pool()
    server = Server(args, "overload").start()
    try:
        # Warm-up: a few short streams, then the capacity gauge if the server exports one.
        warm = asyncio.run(
            _overload_streams(
                [(server.ws(f"warmup-{i}"), 10_000 + i, 6.0) for i in range(args.warmup_streams)]
            )
        )
        server.settle()
        gauge = server.metrics().get("emostt_capacity_sessions")
        capacity = args.capacity or (max(int(gauge), 1) if gauge is not None else None)
        if not capacity:
            print(
                "overload: the server exports no emostt_capacity_sessions gauge; pass --capacity N",
                file=sys.stderr,
            )
            return 2
        streams = round(args.factor * capacity)
        run = asyncio.run(overload_run(server, args, streams))
        alive, healthz, metrics = server.final_check()
    finally:
        server.stop()
    logs: list[StreamLog] = run.pop("logs")
    records = [log.connections[0] for log in logs]
    admitted = [log for log, r in zip(logs, records, strict=True) if r["admitted"]]
    refused = [r for r in records if not r["admitted"]]
    refusal_ok = [
        r
        for r in refused
        if r["refusal"] in ("overloaded", "too_many_connections") and r.get("close_code") == 1013
    ]
    refused_bad = len(refused) - len(refusal_ok)
    totals = stream_totals(admitted)
    p95 = totals["speech_end_to_final"]["p95_ms"]
    admitted_closes = close_codes(admitted)
    closes_1011 = sum(1 for r in records if r.get("close_code") == 1011)
    bad_utterances = totals["unterminated_utterances"] + totals["duplicated_terminals"]
    cut_off = sum(1 for r in records if r["admitted"] and r.get("close_code") != 1000)
    criteria = [
        Criterion("admitted streams", f"{len(admitted)} of {streams}", ">= 1", len(admitted) >= 1),
        Criterion(
            "admitted speech-end→final p95",
            "n/a" if p95 is None else f"{p95:.0f} ms",
            f"<= {args.max_p95_s * 1000:.0f} ms",
            p95 is not None and p95 <= args.max_p95_s * 1000,
        ),
        Criterion("utterances without exactly one final/error", bad_utterances, "= 0", bad_utterances == 0),
        Criterion("refused streams without error event + 1013", refused_bad, "= 0", refused_bad == 0),
        Criterion(
            "recovery: new session admitted after burst",
            "never" if run["recovery_s"] is None else f"{run['recovery_s']} s",
            f"<= {args.max_recovery_s} s",
            run["recovery_s"] is not None and run["recovery_s"] <= args.max_recovery_s,
        ),
        Criterion("closes with 1011", closes_1011, "= 0", closes_1011 == 0),
        Criterion(
            "admitted streams not closed within 60 s of close",
            totals["hung_connections"],
            "= 0",
            totals["hung_connections"] == 0,
        ),
        Criterion("server alive, /healthz 200", f"{alive}, {healthz}", "yes, 200", alive and healthz == 200),
    ]
    refusal_codes = Counter(f"{r['refusal']}/{r.get('close_code')}" for r in refused)
    result = {
        "parameters": {
            "capacity": capacity,
            "capacity_source": "--capacity" if args.capacity else "emostt_capacity_sessions",
            "capacity_gauge_after_warmup": gauge,
            "factor": args.factor,
            "streams": streams,
            "duration_s": args.duration,
            "client_processes": args.client_processes,
            "seed": args.seed,
        },
        "warmup": stream_totals(warm),
        "admitted": len(admitted),
        "refused": len(refused),
        "refusals_by_code_and_close": dict(refusal_codes),
        "admitted_close_codes": admitted_closes,
        "admitted_cut_off": cut_off,
        "admitted_totals": totals,
        "streams": [
            {
                "name": log.name,
                **{k: v for k, v in r.items() if k not in ("t_connect", "t_end")},
                "utterances_sent": log.utterances_sent,
                "finals": log.finals,
                "errors": log.errors,
                "unterminated": log.unterminated,
                "speech_end_to_final_p95_ms": latency_summary(log.device_latency_s)["p95_ms"],
            }
            for log, r in zip(logs, records, strict=True)
        ],
        **run,
        "server_errors_total": by_label(metrics, "emostt_errors_total"),
        "server_rejected_connections": by_label(metrics, "emostt_rejected_connections_total"),
    }
    readyz_codes = Counter(str(row.get("readyz", row.get("error"))) for row in run["timeline"])
    figures = [
        (
            "capacity N (source) / streams opened",
            f"{capacity} ({result['parameters']['capacity_source']}) / {streams}",
        ),
        ("admitted / refused", f"{len(admitted)} / {len(refused)}"),
        ("refusals (code/close)", dict(refusal_codes)),
        ("admitted close codes", admitted_closes),
        (
            "admitted utterances sent / started / finals / errors",
            f"{totals['utterances_sent']} / {totals['utterances_started']} / {totals['finals']}"
            f" / {totals['errors_by_code']}",
        ),
        (
            "speech-end→final p50 / p95 / p99",
            f"{ms(totals['speech_end_to_final'], 'p50_ms')} / {ms(totals['speech_end_to_final'])}"
            f" / {ms(totals['speech_end_to_final'], 'p99_ms')}",
        ),
        ("server endpoint→final p95", ms(totals["endpoint_to_final_server"])),
        ("recovery attempts", len(run["recovery_attempts"])),
        ("/readyz answers over the run", dict(readyz_codes)),
        ("active sessions max", max((row.get("active") or 0 for row in run["timeline"]), default=0)),
    ]
    return finish(args, "overload", server, criteria, result, figures)


# --------------------------------------------------------------------------------------------
# soak


async def _soak_sessions(items: list[tuple[str, int, float, float, float]]) -> list[StreamLog]:
    async def one(url: str, seed: int, deadline: float, seg_min: float, seg_max: float) -> StreamLog:
        rng = random.Random(seed)
        log = StreamLog(url.rsplit("/", 1)[1])
        # Bounded: at most one connection per second of the run, and never past the deadline.
        for _ in range(int(deadline - time.time()) + 1):
            left = deadline - time.time()
            if left < 5:
                break
            seconds = min(rng.uniform(seg_min, seg_max), left - 3)
            stream = bench_stream.make_stream(_POOL, seconds, rng)
            record = await speech_connection(url, iter([stream]), log, open_timeout=30, close_timeout=60)
            if not record["admitted"] or record.get("close_code") != 1000:
                await asyncio.sleep(1.0)  # refused or cut off: reconnect after a pause
        return log

    return list(await asyncio.gather(*(one(*item) for item in items)))


_ASYNC_PARTS["soak"] = _soak_sessions


async def soak_run(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    samples: list[dict[str, Any]] = []
    stop = asyncio.Event()
    t0 = time.time()

    async def sample() -> None:
        cpu0, _ = bench_stream.proc_usage(server.pid)
        last = (time.monotonic(), cpu0)
        async with httpx.AsyncClient(timeout=5) as client:
            while not stop.is_set():
                row: dict[str, Any] = {"t": round(time.time() - t0, 1)}
                with contextlib.suppress(OSError, KeyError):
                    cpu, rss = bench_stream.proc_usage(server.pid)
                    now = time.monotonic()
                    row["rss_mib"] = round(rss, 1)
                    row["cpu_percent"] = round((cpu - last[1]) / max(now - last[0], 1e-6) * 100, 1)
                    row["fds"] = fd_count(server.pid)
                    last = (now, cpu)
                try:
                    row["healthz"] = (await client.get(f"{server.base}/healthz")).status_code
                    values = parse_metrics((await client.get(f"{server.base}/metrics")).text)
                    row["active"] = values.get("emostt_active_sessions")
                except httpx.HTTPError as exc:
                    row["error"] = type(exc).__name__
                samples.append(row)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.sample_s)

    sampler = asyncio.create_task(sample())
    deadline = time.time() + args.duration
    items = [
        (server.ws(f"soak-{i}"), args.seed * 1000 + i, deadline, args.segment_min_s, args.segment_max_s)
        for i in range(args.sessions)
    ]
    logs = await run_parts("soak", items, args.client_processes)
    stop.set()
    await sampler
    return {"logs": logs, "rss_samples": samples, "wall_s": round(time.time() - t0, 1)}


def quarter_means(samples: list[dict[str, Any]], duration: float) -> list[float | None]:
    means: list[float | None] = []
    for q in range(4):
        values = [
            s["rss_mib"]
            for s in samples
            if "rss_mib" in s and q * duration / 4 <= s["t"] < (q + 1) * duration / 4
        ]
        means.append(round(float(np.mean(values)), 1) if values else None)
    return means


def cmd_soak(args: argparse.Namespace) -> int:
    _POOL[:] = speech_pool()
    server = Server(args, "soak").start()
    try:
        run = asyncio.run(soak_run(server, args))
        alive, healthz_end, metrics = server.final_check()
    finally:
        server.stop()
    logs: list[StreamLog] = run.pop("logs")
    totals = stream_totals(logs)
    means = quarter_means(run["rss_samples"], args.duration)
    q2, q4 = means[1], means[3]
    drift = None if not q2 or not q4 else (q4 - q2) / q2 * 100
    closes = close_codes(logs, admitted_only=False)
    closes_1011 = closes.get("1011", 0)
    bad_utterances = totals["unterminated_utterances"] + totals["duplicated_terminals"]
    healthz_bad = sum(1 for s in run["rss_samples"] if s.get("healthz") != 200) + (healthz_end != 200)
    refusals = Counter(str(c["refusal"]) for log in logs for c in log.connections if c["refusal"])
    criteria = [
        Criterion(
            "RSS last-quarter mean vs second-quarter mean",
            "n/a" if drift is None else f"{drift:+.2f} %",
            f"within ±{args.max_rss_drift} %",
            drift is not None and abs(drift) <= args.max_rss_drift,
        ),
        Criterion("utterances without exactly one final/error", bad_utterances, "= 0", bad_utterances == 0),
        Criterion("closes with 1011", closes_1011, "= 0", closes_1011 == 0),
        Criterion("utterances finalised", totals["finals"], ">= 1", totals["finals"] >= 1),
        Criterion(
            "connections not closed within 60 s of close",
            totals["hung_connections"],
            "= 0",
            totals["hung_connections"] == 0,
        ),
        Criterion(
            "server alive, /healthz 200 throughout",
            f"{alive}, {healthz_bad} bad samples",
            "yes, 0",
            alive and healthz_bad == 0,
        ),
    ]
    result = {
        "parameters": {
            "sessions": args.sessions,
            "duration_s": args.duration,
            "segment_s": [args.segment_min_s, args.segment_max_s],
            "sample_s": args.sample_s,
            "client_processes": args.client_processes,
            "seed": args.seed,
        },
        **totals,
        "connections": sum(len(log.connections) for log in logs),
        "close_codes": closes,
        "refusals": dict(refusals),
        "rss_quarter_means_mib": means,
        "rss_drift_percent": None if drift is None else round(drift, 3),
        "wall_s": run["wall_s"],
        "rss_samples": run["rss_samples"],
        "server_errors_total": by_label(metrics, "emostt_errors_total"),
        "server_utterances_total": by_label(metrics, "emostt_utterances_total"),
    }
    figures = [
        (
            "sessions / duration / connections",
            f"{args.sessions} / {args.duration:.0f} s / {result['connections']}",
        ),
        (
            "utterances sent / started / finals",
            f"{totals['utterances_sent']} / {totals['utterances_started']} / {totals['finals']}",
        ),
        ("errors by code", totals["errors_by_code"]),
        ("close codes", closes),
        ("refusals", dict(refusals)),
        (
            "speech-end→final p50 / p95",
            f"{ms(totals['speech_end_to_final'], 'p50_ms')} / {ms(totals['speech_end_to_final'])}",
        ),
        (
            "server endpoint→final p50 / p95",
            f"{ms(totals['endpoint_to_final_server'], 'p50_ms')} / {ms(totals['endpoint_to_final_server'])}",
        ),
        ("RSS quarter means (MiB)", means),
    ]
    return finish(args, "soak", server, criteria, result, figures)


# --------------------------------------------------------------------------------------------
# files: large uploads at once; the server's RSS comes back


def piped_flac(audio: np.ndarray, rate: int, stated: bool = False) -> bytes:
    """A FLAC as a piped encoder writes it: STREAMINFO's total samples (and MD5) 0, "unknown"
    (``stated``: as a file encoder writes it, the length known)."""
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="FLAC")
    if stated:
        return buffer.getvalue()
    data = bytearray(buffer.getvalue())
    word = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = word.to_bytes(8, "big")
    data[26:42] = bytes(16)
    return bytes(data)


def file_audio(content: str, minutes: float, seed: int) -> np.ndarray:
    """16 kHz int16: ``silence`` (digital zeros, the issue's 178 KB hour) or ``noise-floor`` (1 LSB
    of noise for 1/8 s of every second: a real recording's size, so the file is transcribed)."""
    seconds = int(minutes * 60)
    audio = np.zeros((seconds, 16_000), dtype=np.int16)
    if content == "noise-floor":
        rng = np.random.default_rng(seed)
        audio[:, :2000] = rng.integers(-1, 2, size=(seconds, 2000), dtype=np.int16)
    return audio.reshape(-1)


def cmd_files(args: argparse.Namespace) -> int:
    import psutil

    data = piped_flac(file_audio(args.content, args.minutes, args.seed), 16_000, args.length == "stated")
    server = Server(args, "files").start()
    url = f"{server.base}/v1/audio/transcriptions"

    def post(body: bytes) -> dict[str, Any]:
        started = time.perf_counter()
        response = httpx.post(
            url, files={"file": ("audio.flac", body)}, data={"model": "whisper-1"}, timeout=args.timeout
        )
        error = response.json().get("error") if response.status_code != 200 else None
        return {
            "status": response.status_code,
            "code": error["code"] if error else None,
            "elapsed_s": round(time.perf_counter() - started, 2),
        }

    try:
        process = psutil.Process(server.pid)
        warm = post(piped_flac(file_audio("silence", 0.05, args.seed), 16_000))  # first-request costs
        time.sleep(args.settle_s)
        start_rss, start_cpu = process.memory_info().rss, sum(process.cpu_times()[:2])
        peak, started = start_rss, time.perf_counter()
        with ThreadPoolExecutor(args.files) as pool:
            futures = [pool.submit(post, data) for _ in range(args.files)]
            while not all(f.done() for f in futures) and time.perf_counter() - started < args.timeout:
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.05)
            answers = [f.result() for f in futures]
        wall = time.perf_counter() - started
        cpu = sum(process.cpu_times()[:2]) - start_cpu
        time.sleep(args.settle_s)
        end_rss = process.memory_info().rss
        alive, healthz, _ = server.final_check()
    finally:
        server.stop()
    growth = (end_rss - start_rss) / start_rss * 100
    expected = {"silence": (400, "audio_too_compressed"), "noise-floor": (200, None)}[args.content]
    unexpected = [a for a in answers if (a["status"], a["code"]) != expected]
    mb = 1e6
    criteria = [
        Criterion(
            "RSS after vs before",
            f"{growth:+.1f} %",
            f"within ±{args.max_rss_growth} %",
            abs(growth) <= args.max_rss_growth,
        ),
        Criterion(f"answers other than {expected}", len(unexpected), "= 0", not unexpected),
        Criterion("server alive, /healthz 200", f"{alive}, {healthz}", "yes, 200", alive and healthz == 200),
    ]
    result = {
        "parameters": {
            "files": args.files,
            "minutes": args.minutes,
            "content": args.content,
            "length": args.length,
        },
        "file_bytes": len(data),
        "warm": warm,
        "answers": answers,
        "rss_mb": {"start": round(start_rss / mb), "peak": round(peak / mb), "end": round(end_rss / mb)},
        "server_cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
    }
    figures = [
        (
            "files at once",
            f"{args.files} x {args.minutes:g} min {args.content} ({args.length} length), {len(data)} bytes",
        ),
        ("answers", Counter(f"{a['status']} {a['code'] or ''}".strip() for a in answers)),
        ("RSS start / peak / end (MB)", f"{start_rss / mb:.0f} / {peak / mb:.0f} / {end_rss / mb:.0f}"),
        ("server CPU / wall", f"{cpu:.1f} s / {wall:.1f} s"),
    ]
    return finish(args, "files", server, criteria, result, figures)


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default="demo", help="model for `emostt serve --model` (default: demo)")
    common.add_argument("--backend", default=None, help="`emostt serve --backend` (default: the server's)")
    common.add_argument("--device", default=None, help="`emostt serve --device` (default: the server's)")
    common.add_argument("--precision", default=None, help="`emostt serve --precision`")
    common.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="server setting (EMOSTT_*); repeatable",
    )
    common.add_argument("--seed", type=int, default=1)
    common.add_argument("--out", type=Path, default=None, help="JSON result (default: WORK_DIR/<test>.json)")
    common.add_argument(
        "--work-dir", type=Path, default=Path("/tmp/emostt-reliability"), help="server output and results"
    )
    sub = parser.add_subparsers(dest="test", required=True)

    fuzz = sub.add_parser("fuzz", parents=[common], help="malformed messages next to a real speech session")
    fuzz.add_argument("--messages", type=int, default=10_000)
    fuzz.add_argument("--connections", type=int, default=30)
    fuzz.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="messages per second over all connections (0: as fast as possible)",
    )
    fuzz.add_argument(
        "--neighbour-min-s", type=float, default=30.0, help="the neighbour streams at least this long"
    )
    fuzz.add_argument("--timeout", type=float, default=1200.0, help="give up sending after this long")
    fuzz.add_argument(
        "--skip", nargs="*", default=[], choices=FUZZ_KINDS, metavar="KIND", help="message kinds not to send"
    )
    fuzz.set_defaults(func=cmd_fuzz)

    churn = sub.add_parser("churn", parents=[common], help="connect/close cycles; RSS and fds come back")
    churn.add_argument("--cycles", type=int, default=1000)
    churn.add_argument("--warmup", type=int, default=50, help="cycles before the baseline is taken")
    churn.add_argument("--parallel", type=int, default=4, help="cycles in flight at once")
    churn.add_argument("--sample-every", type=int, default=100, help="cycles between RSS/fd samples")
    churn.add_argument(
        "--settle-s", type=float, default=2.0, help="pause after sessions reach 0, before measuring"
    )
    churn.add_argument("--max-rss-growth", type=float, default=5.0, help="percent")
    churn.add_argument("--fd-tolerance", type=int, default=2)
    churn.add_argument(
        "--kinds",
        nargs="+",
        default=[k for k, _ in CHURN_KINDS],
        choices=[k for k, _ in CHURN_KINDS],
        metavar="KIND",
        help="cycle kinds to mix (default: all): " + ", ".join(k for k, _ in CHURN_KINDS),
    )
    churn.add_argument("--timeout", type=float, default=1800.0)
    churn.set_defaults(func=cmd_churn)

    over = sub.add_parser(
        "overload", parents=[common], help="2.5x capacity at once; refusals, latency, recovery"
    )
    over.add_argument(
        "--capacity",
        type=int,
        default=None,
        help="streams the machine serves (default: the server's emostt_capacity_sessions gauge)",
    )
    over.add_argument("--factor", type=float, default=2.5, help="streams opened = round(factor x capacity)")
    over.add_argument("--duration", type=float, default=120.0, help="seconds of audio per stream")
    over.add_argument("--warmup-streams", type=int, default=2)
    over.add_argument("--max-p95-s", type=float, default=1.5, help="admitted speech-end→final p95 limit")
    over.add_argument("--max-recovery-s", type=float, default=5.0)
    over.add_argument("--recovery-timeout", type=float, default=60.0, help="stop trying after this long")
    over.add_argument("--client-processes", type=int, default=1)
    over.set_defaults(func=cmd_overload)

    soak = sub.add_parser("soak", parents=[common], help="hours-scale real-time streams; RSS stays flat")
    soak.add_argument("--sessions", type=int, default=4)
    soak.add_argument("--duration", type=float, default=1800.0)
    soak.add_argument(
        "--segment-min-s", type=float, default=60.0, help="each connection streams this long at least"
    )
    soak.add_argument("--segment-max-s", type=float, default=300.0, help="… and at most, then reconnects")
    soak.add_argument("--sample-s", type=float, default=10.0, help="RSS sampling period")
    soak.add_argument("--max-rss-drift", type=float, default=5.0, help="percent")
    soak.add_argument("--client-processes", type=int, default=1)
    soak.set_defaults(func=cmd_soak)

    import reliability_hostile  # imports this module: loaded once the parsers above exist

    reliability_hostile.add_parser(sub, common)

    files = sub.add_parser("files", parents=[common], help="large FLACs at once; RSS comes back")
    files.add_argument("--files", type=int, default=4, help="uploads at once")
    files.add_argument("--minutes", type=float, default=59.0, help="audio per file")
    files.add_argument(
        "--content",
        choices=["silence", "noise-floor"],
        default="silence",
        help="silence: refused for its size (1 s per 100 bytes); noise-floor: transcribed in full",
    )
    files.add_argument(
        "--length", choices=["unknown", "stated"], default="unknown", help="the FLAC header's length"
    )
    files.add_argument("--settle-s", type=float, default=2.0, help="pause before each RSS reading")
    files.add_argument("--max-rss-growth", type=float, default=10.0, help="percent")
    files.add_argument("--timeout", type=float, default=1800.0)
    files.set_defaults(func=cmd_files)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except RuntimeError as exc:  # the server did not start
        print(f"reliability: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
