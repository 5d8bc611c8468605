"""Where a streaming server's CPU goes, by stage: py-spy samples of the server process.

py-spy (``pip install py-spy``, a binary wheel) reads the server's Python stacks from outside
the process with ``--threads`` at ``rate_hz``. Each sample is put in one stage by its stack
(``classify``). The kernel tells exactly how much CPU each thread used over the same window
(/proc/PID/task/TID/stat, user + system); py-spy tells how a thread's CPU divides between
stages:

- a thread other than the event loop's: its CPU split by the shares of its working samples
  (samples waiting on a lock, condition or queue are left out: py-spy's idle detection is
  approximate);
- the event loop's thread (MainThread): each sample with a Python frame above the loop is
  running code, so it counts 1/rate seconds for its stage; what is left of the thread's CPU
  is the loop's own native work (uvloop's socket I/O, callbacks, timers), counted as
  ``event_loop``. Samples showing only ``Runner.run`` (polling, or working in C) are not
  counted directly;
- threads py-spy never saw (native helper threads) are ``other``.

py-spy pauses the server for each sample by default (tens of microseconds, ``rate_hz``
times a second): with ``--nonblocking`` it does not, but then the loop thread's samples
came back mostly truncated to ``Runner.run`` (measured here), hiding its stages.

``cpu_percent`` is percent of one core; ``cpu_us_per_stream_s`` CPU microseconds per second
of one stream. py-spy's own count (samples / rate / window) is reported beside the kernel's.

Stages (the innermost frame of the service decides, so library code counts for the
service code that called it):

- ``ws_receive``: WebSocket frames in (uvicorn's protocol, the websockets library), the
  receive loop and message decoding (transport/runtime.py ``_receive``, connection.py
  ``decode_stt``, protocol.py)
- ``resample``: PCM16 to float and resampling (streaming/framing.py, audio.py, soxr)
- ``vad``: Silero VAD (streaming/vad.py): the VAD thread's ONNX batches and the sessions'
  requests
- ``segmentation``: the session's per-frame work (streaming/session.py audio path,
  segmenter.py): endpointing, utterance audio, partial and speculative-final decisions
- ``batching``: the batcher and its model workers (batching/, policy/retry.py,
  supervision.py), the session awaiting results
- ``engine``: the engine's own time (the instant engine's is ~0; a model's is all of it)
- ``events``: building and sending events (streaming/events.py, mood.py, gating,
  finals.py, transport/connection.py ``emit``, orjson, the WebSocket send path)
- ``metrics_logging``: prometheus_client, logging
- ``event_loop``: the event loop itself with no service frame: scheduling, timers, and
  uvloop's native socket I/O (samples whose innermost frame is ``asyncio.Runner.run``)
- ``other``: anything else (start-up, HTTP, garbage collection seen from Python)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGES = (
    "ws_receive",
    "resample",
    "vad",
    "segmentation",
    "batching",
    "engine",
    "events",
    "metrics_logging",
    "event_loop",
    "other",
)

# (stage, file pattern, function pattern): service frames, matched innermost first. py-spy
# names methods Class.method: function patterns match the name after the last dot.
SERVICE_RULES: tuple[tuple[str, str, str], ...] = (
    (
        "ws_receive",
        r"transport/(ws|runtime|connection)\.py",
        r"(^|\.)(_receive|decode_stt|decode|stt_endpoint)$",
    ),
    ("ws_receive", r"streaming/protocol\.py", r""),
    ("events", r"transport/connection\.py", r"(^|\.)(emit|_send_locked|outbound|error|close)$"),
    ("events", r"streaming/(events|mood|finals)\.py", r""),
    ("events", r"policy/gating\.py", r""),
    ("events", r"streaming/session\.py", r"(^|\.)(_emit|_send_final|_send_error)$"),
    ("resample", r"streaming/framing\.py", r""),
    ("resample", r"emostt/audio\.py", r""),
    ("vad", r"streaming/vad\.py", r""),
    ("segmentation", r"streaming/segmenter\.py", r""),
    ("batching", r"streaming/session\.py", r"(^|\.)(_deliver_final|_submit_final|_spawn)$"),
    ("batching", r"streaming/partials\.py", r""),
    ("segmentation", r"streaming/(session|utterance)\.py", r""),
    ("engine", r"inference/", r""),
    ("batching", r"(batching/|policy/retry\.py|supervision\.py)", r""),
    ("metrics_logging", r"observability/", r""),
    ("ws_receive", r"transport/", r""),
)
# Frames of libraries, matched innermost first when no service frame is on the stack.
LIBRARY_RULES: tuple[tuple[str, str], ...] = (
    ("metrics_logging", r"(prometheus_client/|logging/)"),
    ("ws_receive", r"(uvicorn/protocols/websockets|websockets/|starlette/websockets)"),
    ("event_loop", r"(asyncio/|uvloop|selectors\.py)"),
)

# Samples of the event loop's thread inside uvloop's C code: see the module doc.
NATIVE_LOOP = "event_loop_native"
# Samples of a thread waiting for work: left out of its CPU split.
IDLE = "idle"
IDLE_FUNCTIONS = frozenset({"Condition.wait", "Event.wait", "Queue.get", "Thread.join", "sleep"})
THREAD_DEFAULT_STAGE = {"emostt-vad": "vad", "emostt-model": "batching"}
LOOP_THREAD = "MainThread"

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    function: str
    file: str


_THREAD = re.compile(r"^thread \((?P<tid>\d+)\)(?:: (?P<name>.*))?$")


def parse_line(line: str) -> tuple[str, int, list[Frame], int] | None:
    """One line of py-spy's raw output (``--threads``): thread name, OS thread id, frames
    outermost first, sample count."""
    stack, _, count = line.rstrip().rpartition(" ")
    if not stack or not count.isdigit():
        return None
    parts = stack.split(";")
    head = _THREAD.match(parts[0])
    thread, tid = (head["name"] or "", int(head["tid"])) if head else ("", 0)
    frames = []
    for part in parts[1:] if parts[0].startswith(("thread", "process")) else parts:
        match = _FRAME.match(part)
        if match:
            frames.append(Frame(match["function"], match["file"]))
    return thread, tid, frames, int(count)


def classify(thread: str, frames: list[Frame]) -> str:
    """The stage one sample belongs to (see the module doc)."""
    if frames and frames[-1].function in IDLE_FUNCTIONS and thread != LOOP_THREAD:
        return IDLE
    if thread.startswith("emostt-vad"):
        return "vad"
    for frame in reversed(frames):
        for stage, file_pattern, function_pattern in SERVICE_RULES:
            if re.search(file_pattern, frame.file) and re.search(function_pattern, frame.function):
                return stage
    if thread.startswith("emostt-model"):
        return "batching"
    if frames and frames[-1].function == "Runner.run":
        return NATIVE_LOOP  # in uvloop's C code (socket I/O, callbacks, timers) or polling
    # Library frames above the loop's runner (every loop-thread stack starts with it).
    runner = max((i for i, f in enumerate(frames) if f.function == "Runner.run"), default=-1)
    for frame in reversed(frames[runner + 1 :]):
        for stage, file_pattern in LIBRARY_RULES:
            if re.search(file_pattern, frame.file):
                return stage
    return "other"


@dataclass
class ThreadSamples:
    name: str
    stages: Counter[str]


def thread_samples(lines: list[str]) -> dict[int, ThreadSamples]:
    """Sample counts by OS thread id, then by stage."""
    threads: dict[int, ThreadSamples] = {}
    for line in lines:
        parsed = parse_line(line)
        if parsed is not None:
            name, tid, frames, count = parsed
            entry = threads.setdefault(tid, ThreadSamples(name, Counter()))
            entry.stages[classify(name, frames)] += count
    return threads


def stage_cpu(
    samples: dict[int, ThreadSamples], thread_cpu: dict[int, float], rate_hz: float
) -> dict[str, float]:
    """CPU seconds per stage: each thread's exact CPU divided by its samples (module doc)."""
    cpu: Counter[str] = Counter()
    for tid, used in thread_cpu.items():
        entry = samples.get(tid)
        counts = Counter(entry.stages) if entry else Counter()
        counts.pop(IDLE, None)
        if not counts:
            name = entry.name if entry else ""
            stage = next((v for k, v in THREAD_DEFAULT_STAGE.items() if name.startswith(k)), "other")
            cpu[stage] += used
            continue
        if entry is not None and entry.name == LOOP_THREAD:
            counts.pop(NATIVE_LOOP, None)
            seen = {stage: n / rate_hz for stage, n in counts.items()}
            scale = min(1.0, used / sum(seen.values())) if seen else 1.0
            for stage, seconds in seen.items():
                cpu[stage] += seconds * scale
            cpu["event_loop"] += max(used - sum(seen.values()), 0.0)
            continue
        counts["event_loop"] += counts.pop(NATIVE_LOOP, 0)
        total = sum(counts.values())
        for stage, n in counts.items():
            cpu[stage] += used * n / total
    return dict(cpu)


def summarize(
    samples: dict[int, ThreadSamples],
    thread_cpu: dict[int, float],
    rate_hz: float,
    window_s: float,
    sessions: int,
) -> dict[str, Any]:
    """CPU per stage over ``window_s``: percent of one core, and per stream-second."""
    cpu = stage_cpu(samples, thread_cpu, rate_hz)
    total_cpu = sum(thread_cpu.values())
    total_samples = sum(sum(t.stages.values()) for t in samples.values())
    per_stage = {}
    for stage in STAGES:
        seconds = cpu.get(stage, 0.0)
        per_stage[stage] = {
            "share_percent": round(100 * seconds / total_cpu, 1) if total_cpu else 0.0,
            "cpu_percent": round(100 * seconds / window_s, 1),
            "cpu_us_per_stream_s": round(seconds / window_s / sessions * 1e6, 1),
        }
    threads = {
        f"{entry.name or 'thread'} ({tid})": round(100 * thread_cpu.get(tid, 0.0) / window_s, 1)
        for tid, entry in samples.items()
    }
    return {
        "sampler": f"py-spy at {rate_hz:g} Hz over {window_s:.1f} s",
        "window_cpu_percent": round(100 * total_cpu / window_s, 1),
        "sampled_cpu_percent": round(100 * total_samples / rate_hz / window_s, 1),
        "thread_cpu_percent": threads,
        "stages": per_stage,
    }


def markdown(summary: dict[str, Any]) -> str:
    threads = ", ".join(
        f"{name} {cpu}% (system {summary.get('thread_system_cpu_percent', {}).get(name, '?')}%)"
        for name, cpu in summary["thread_cpu_percent"].items()
    )
    lines = [
        f"CPU by stage ({summary['sampler']}): server {summary['window_cpu_percent']}% of a core"
        f" (/proc) over the window; py-spy counted {summary['sampled_cpu_percent']}%",
        f"threads, % of a core: {threads}; not sampled (other): "
        f"{summary.get('unsampled_threads_cpu_percent') or 'none'}",
        "",
        "| stage | share of server CPU | % of a core | CPU µs per stream-second |",
        "|---|---|---|---|",
    ]
    ranked = sorted(summary["stages"].items(), key=lambda kv: -kv[1]["cpu_percent"])
    for stage, s in ranked:
        lines.append(f"| {stage} | {s['share_percent']}% | {s['cpu_percent']} | {s['cpu_us_per_stream_s']} |")
    return "\n".join(lines)


def py_spy() -> str | None:
    """py-spy next to this Python (a venv's bin), else on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def check_available() -> None:
    if py_spy() is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")


class Recorder:
    """Runs py-spy on ``pid`` for ``duration_s``, starting ``start_in_s`` from now, in the
    background; ``result`` waits for it and classifies what it sampled."""

    def __init__(
        self,
        pid: int,
        out: Path,
        *,
        start_in_s: float,
        duration_s: float,
        rate_hz: int,
        nonblocking: bool = False,
    ) -> None:
        self.out = out
        self.nonblocking = nonblocking
        self.rate_hz = rate_hz
        self.duration_s = duration_s
        self.error: str | None = None
        self.thread_cpu: dict[int, float] = {}
        self.thread_system: dict[int, float] = {}  # the kernel's part (system time)
        self.thread_names: dict[int, str] = {}
        self.window_s = duration_s
        self._thread = threading.Thread(target=self._run, args=(pid, start_in_s), daemon=True)
        self._thread.start()

    def _run(self, pid: int, start_in_s: float) -> None:
        time.sleep(start_in_s)
        command = [
            py_spy() or "py-spy",
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(self.rate_hz),
            "--duration",
            str(round(self.duration_s)),
            "--format",
            "raw",
            "--threads",
            *(["--nonblocking"] if self.nonblocking else []),
            "--output",
            str(self.out),
        ]
        cpu0, t0 = threads_cpu_s(pid), time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        cpu1, self.window_s = threads_cpu_s(pid), time.perf_counter() - t0
        zero = (0.0, 0.0)
        self.thread_cpu = {tid: sum(cpu1[tid]) - sum(cpu0.get(tid, zero)) for tid in cpu1}
        self.thread_system = {tid: cpu1[tid][1] - cpu0.get(tid, zero)[1] for tid in cpu1}
        self.thread_names = thread_names(pid)
        if done.returncode != 0:
            self.error = (done.stderr or done.stdout).strip()[-500:]

    def result(self, sessions: int) -> dict[str, Any]:
        self._thread.join(self.duration_s + 120)
        if self.error is not None or not self.out.exists():
            return {"error": self.error or "py-spy wrote nothing"}
        samples = thread_samples(self.out.read_text().splitlines())
        summary = summarize(samples, self.thread_cpu, self.rate_hz, self.window_s, sessions)
        # Threads py-spy never saw run Python (counted as "other"), by their OS name.
        unseen: Counter[str] = Counter()
        for tid, seconds in self.thread_cpu.items():
            if tid not in samples and seconds > 0:
                unseen[self.thread_names.get(tid, str(tid))] += 100 * seconds / self.window_s
        summary["unsampled_threads_cpu_percent"] = {k: round(v, 1) for k, v in unseen.most_common()}
        system = {tid: 100 * seconds / self.window_s for tid, seconds in self.thread_system.items()}
        summary["thread_system_cpu_percent"] = {
            f"{entry.name or 'thread'} ({tid})": round(system.get(tid, 0.0), 1)
            for tid, entry in samples.items()
        }
        return summary


def thread_names(pid: int) -> dict[int, str]:
    names = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names[int(task.name)] = (task / "comm").read_text().strip()
        except OSError:
            continue
    return names


def threads_cpu_s(pid: int) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds of each thread of a process (/proc/PID/task/TID/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) / ticks, int(fields[12]) / ticks)
    return out
