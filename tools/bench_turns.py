#!/usr/bin/env python
"""Turn-taking benchmark: silence and semantic turn detection side by side, on real servers.

The set (tools/turn_set.py; ``--tts`` picks its speech, espeak-ng by default, or pico, piper or
both of those: natural): turns of 1-3 phrases in several voices and four speeds; inside
a turn, fragments said with continuation intonation ("I'd like to order a,") are followed by
300-1,500 ms pauses; every turn ends in "." or "?"; 3 s of room noise between turns. Each policy
streams the whole set in real time (100 ms PCM frames) over /ws/stt to its own ``emostt serve``
(127.0.0.1, a free port), all policies at once, each from another turn of the set so that their
pauses do not fall together; a policy is the session's ``config`` message:
``silence-N`` sets ``vad.silence_duration_ms`` N; ``semantic-E[:T][@P]`` sets ``turn_detection``
``{"type": "semantic", "eagerness": E, "threshold": T, "max_silence_ms": --max-silence-ms}``
(and ``"min_pause_ms": P``, the pause at which the model is first asked; 200 by default).

Per policy:

- false cut-in rate: turns in which a final was sent before the turn's speech ended (its
  ``audio_end_ms`` more than 250 ms before the end of the turn's last phrase: at a pause);
  also per mid-turn pause;
- turn-end latency p50/p95, client side: from when the turn's last speech sample was sent (the
  send time of its 100 ms frame plus the sample's position in it) to the arrival of the final
  that covers the turn's end;
- turn-model calls per turn (``emostt_turn_calls_total``) and CPU per model call (the CPU time
  of the server's ``emostt-turn`` thread, found with py-spy, over ``emostt_turn_batch_size_count``).

Then the load part (``--load-model``, e.g. the full random model): one server, one stream of the
whole set with the ``--load-policy``, then ``--load-sessions`` streams at once (each ``--load-turns``
turns from another start): every stream admitted, and p95 turn-end latency against the single
stream's p95 + 300 ms.

    .venv/bin/emostt model make-random /tmp/sv-full --size full
    .venv/bin/python tools/bench_turns.py --model demo --load-model /tmp/sv-full \\
        --out docs/bench/turns-$(date +%F).json --plot docs/turns-latency-vs-cutin.png

Bounded: every stream lasts its audio plus ``--drain-s``; at most ``MAX_STREAMS`` streams at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_stream
import reliability
import turn_set

FRAME_S = 0.1
CHUNK = int(turn_set.SAMPLE_RATE * FRAME_S)
CUT_IN_MARGIN_S = 0.25  # a final ending this long before the turn's speech ends is a cut-in
MAX_STREAMS = 64
TURN_THREAD = "emostt-turn"


@dataclass(frozen=True)
class Policy:
    name: str
    config: dict[str, Any]  # the session's config message, less its type

    @property
    def semantic(self) -> bool:
        return "turn_detection" in self.config


def silence_policy(ms: int) -> Policy:
    return Policy(f"silence-{ms}", {"vad": {"silence_duration_ms": ms}})


def semantic_policy(spec: str, max_silence_ms: int) -> Policy:
    """``E``, ``E:T``, ``E@P`` or ``E:T@P``: an eagerness (low, medium, high), optionally its own
    threshold and its own minimum pause (ms)."""
    head, _, pause = spec.partition("@")
    eagerness, _, threshold = head.partition(":")
    turn: dict[str, Any] = {"type": "semantic", "eagerness": eagerness, "max_silence_ms": max_silence_ms}
    if threshold:
        turn["threshold"] = float(threshold)
    if pause:
        turn["min_pause_ms"] = int(pause)
    # The name is also the stream's device id, where "@" is not allowed.
    name = f"semantic-{head}" + (f"-pause{pause}" if pause else "")
    return Policy(name, {"turn_detection": turn})


def parse_policy(spec: str, max_silence_ms: int) -> Policy:
    """``silence-N``, or a semantic ``E`` / ``E:T``."""
    if spec.startswith("silence-"):
        return silence_policy(int(spec.removeprefix("silence-")))
    return semantic_policy(spec, max_silence_ms)


@dataclass
class StreamLog:
    refused: str | None = None
    config_error: str | None = None
    effective_turn: dict[str, Any] | None = None
    sent_at: list[float] = field(default_factory=list)  # frame k's send time, s after start
    finals: list[tuple[dict[str, Any], float]] = field(default_factory=list)  # (event, arrival s)
    eager: int = 0
    resumed: int = 0
    errors: list[str] = field(default_factory=list)


async def stream(url: str, pcm: bytes, policy: Policy, log: StreamLog, drain_s: float) -> None:
    """One session: config, the audio paced to real time, close; every event with its arrival."""
    step = CHUNK * 2
    async with connect(url, max_size=None, open_timeout=30) as ws:
        first = orjson.loads(await ws.recv())
        if first["type"] != "ready":
            log.refused = first.get("code", first["type"])
            return
        await ws.send(orjson.dumps({"type": "config", **policy.config}).decode())
        async with asyncio.timeout(30):
            while True:
                event = orjson.loads(await ws.recv())
                if event["type"] == "error":
                    log.config_error = event.get("code")
                elif event["type"] == "config":
                    log.effective_turn = event["config"].get("turn_detection")
                    break
        started = time.perf_counter()

        async def sender() -> None:
            for k, i in enumerate(range(0, len(pcm), step)):
                await asyncio.sleep(max(started + k * FRAME_S - time.perf_counter(), 0))
                log.sent_at.append(time.perf_counter() - started)
                await ws.send(pcm[i : i + step])
            await ws.send('{"type": "close"}')

        task = asyncio.create_task(sender())
        try:
            async with asyncio.timeout(len(pcm) / 2 / turn_set.SAMPLE_RATE + drain_s):
                async for raw in ws:
                    event = orjson.loads(raw)
                    now = time.perf_counter() - started
                    kind = event["type"]
                    if kind == "final":
                        log.finals.append((event, now))
                    elif kind == "eager_end_of_turn":
                        log.eager += 1
                    elif kind == "turn_resumed":
                        log.resumed += 1
                    elif kind == "error":
                        log.errors.append(event.get("code", "?"))
        except (ConnectionClosed, TimeoutError) as exc:
            log.errors.append(type(exc).__name__)
        task.cancel()
        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            await task


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (every core, every process: /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / 100  # USER_HZ


def run_streams(jobs: list[tuple[str, bytes, Policy, StreamLog]], drain_s: float) -> dict[str, float]:
    """Every job's stream at once; what the machine did meanwhile (the 2 cores are shared: other
    people's work shows up as ``machine_busy_percent`` above ours)."""
    if len(jobs) > MAX_STREAMS:
        raise SystemExit(f"at most {MAX_STREAMS} streams at once")

    async def everyone() -> None:
        await asyncio.gather(*(stream(url, pcm, p, log, drain_s) for url, pcm, p, log in jobs))

    busy0, client0, t0 = busy_cpu_s(), time.process_time(), time.perf_counter()
    asyncio.run(everyone())
    wall = time.perf_counter() - t0
    return {
        "wall_s": round(wall, 1),
        "machine_busy_percent": round((busy_cpu_s() - busy0) / wall * 100, 1),
        "client_cpu_percent": round((time.process_time() - client0) / wall * 100, 1),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


def others_cpu(machine: dict[str, float], servers_cpu_percent: float) -> dict[str, float]:
    """``machine`` with the CPU of everything but this benchmark (client and servers)."""
    ours = machine["client_cpu_percent"] + servers_cpu_percent
    return {**machine, "other_processes_cpu_percent": round(machine["machine_busy_percent"] - ours, 1)}


# ------------------------------------------------------------------------------------ scoring


def score(turns: list[turn_set.Turn], log: StreamLog) -> dict[str, Any]:
    """Cut-ins and turn-end latencies of one stream."""
    rate = turn_set.SAMPLE_RATE
    cut_turns: set[int] = set()
    cut_finals = 0
    latencies: list[float] = []
    end_reasons: dict[str, int] = {}
    ended: set[int] = set()
    extra = 0
    starts = [t.start / rate for t in turns]
    for event, arrival in log.finals:
        end_s = event["audio_end_ms"] / 1000
        k = max((i for i, s in enumerate(starts) if s - 0.5 <= end_s), default=None)
        if k is None:
            extra += 1
            continue
        turn = turns[k]
        if end_s < turn.end / rate - CUT_IN_MARGIN_S:
            cut_turns.add(k)
            cut_finals += 1
        elif k not in ended:
            ended.add(k)
            frame = min(turn.end // CHUNK, len(log.sent_at) - 1)
            spoken = log.sent_at[frame] + turn.end / rate - frame * FRAME_S
            latencies.append(arrival - spoken)
            reason = str(event.get("end_reason"))
            end_reasons[reason] = end_reasons.get(reason, 0) + 1
        else:
            extra += 1
    return {
        "cut_turns": len(cut_turns),
        "cut_finals": cut_finals,
        "latencies": latencies,
        "end_reasons": end_reasons,
        "missed_turn_ends": len(turns) - len(ended),
        "extra_finals": extra,
        "server_latency_ms": [e["latency_ms"] for e, _ in log.finals if e.get("latency_ms") is not None],
    }


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000) if values else None


def summarize(policy: Policy, scored: list[dict[str, Any]], n_turns: int, pauses: int) -> dict[str, Any]:
    lat = [x for s in scored for x in s["latencies"]]
    server = [x / 1000 for s in scored for x in s["server_latency_ms"]]
    reasons: dict[str, int] = {}
    for s in scored:
        for key, value in s["end_reasons"].items():
            reasons[key] = reasons.get(key, 0) + value
    cut = sum(s["cut_turns"] for s in scored)
    return {
        "policy": policy.name,
        "config": policy.config,
        "turns": n_turns,
        "false_cut_in_turns": cut,
        "false_cut_in_rate": round(cut / n_turns, 3) if n_turns else None,
        "cut_in_finals_per_mid_turn_pause": round(sum(s["cut_finals"] for s in scored) / pauses, 3)
        if pauses
        else None,
        "turn_end_latency_ms": {"p50": pct(lat, 50), "p95": pct(lat, 95), "max": pct(lat, 100)},
        "turn_end_reasons": reasons,
        "missed_turn_ends": sum(s["missed_turn_ends"] for s in scored),
        "extra_finals": sum(s["extra_finals"] for s in scored),
        "server_endpoint_to_final_ms_p95": pct(server, 95),
    }


# ------------------------------------------------------------------------- server-side figures


def turn_thread(pid: int) -> int | None:
    """The OS thread id of the server's turn thread (py-spy reads Python's thread names)."""
    spy = stage_py_spy()
    if spy is None:
        return None
    out = subprocess.run(
        [spy, "dump", "--pid", str(pid), "--json"], capture_output=True, text=True, timeout=60
    )
    with contextlib.suppress(ValueError):
        for thread in json.loads(out.stdout or "[]"):
            if thread.get("thread_name") == TURN_THREAD:
                return int(thread["os_thread_id"])
    return None


def stage_py_spy() -> str | None:
    import stage_profile

    return stage_profile.py_spy()


def thread_cpu_s(pid: int, tid: int | None) -> float | None:
    if tid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / 100  # SC_CLK_TCK is 100 on Linux


@dataclass
class Probe:
    """Server counters before a policy's streams; ``delta`` after them."""

    server: reliability.Server
    tid: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    thread_cpu: float | None = None
    cpu: float = 0.0
    wall: float = 0.0

    def start(self) -> Probe:
        self.tid = turn_thread(self.server.pid)
        self.metrics = self.server.metrics()
        self.thread_cpu = thread_cpu_s(self.server.pid, self.tid)
        self.cpu, _ = bench_stream.tree_usage(self.server.pid)
        self.wall = time.perf_counter()
        return self

    def delta(self, n_turns: int) -> dict[str, Any]:
        after = self.server.metrics()
        cpu, rss = bench_stream.tree_usage(self.server.pid)
        thread_cpu = thread_cpu_s(self.server.pid, self.tid)

        def d(name: str) -> float:
            return after.get(name, 0.0) - self.metrics.get(name, 0.0)

        requests = sum(d(f'emostt_turn_calls_total{{outcome="{o}"}}') for o in ("ok", "failed", "refused"))
        batches = d("emostt_turn_batch_size_count")
        turn_cpu = None if thread_cpu is None or self.thread_cpu is None else thread_cpu - self.thread_cpu
        wall = time.perf_counter() - self.wall
        return {
            "turn_model_requests_per_turn": round(requests / n_turns, 2),
            "turn_model_requests_refused_or_failed": int(
                d('emostt_turn_calls_total{outcome="failed"}')
                + d('emostt_turn_calls_total{outcome="refused"}')
            ),
            "turn_model_calls": int(batches),
            "turn_model_cpu_ms_per_call": round(turn_cpu / batches * 1000, 1)
            if batches and turn_cpu
            else None,
            "turn_model_wait_ms_per_request": round(
                d("emostt_turn_model_seconds_sum") / d("emostt_turn_model_seconds_count") * 1000, 1
            )
            if d("emostt_turn_model_seconds_count")
            else None,
            "server_cpu_percent": round((cpu - self.cpu) / wall * 100, 1),
            "server_rss_mib": round(rss, 1),
        }


def server_args(args: argparse.Namespace, model: str) -> argparse.Namespace:
    return argparse.Namespace(
        model=model,
        env=[*args.env, "EMOSTT_MAX_CONNECTIONS=256"],
        work_dir=args.work_dir,
        backend=args.backend,
        device=None,
        precision=None,
    )


# ------------------------------------------------------------------------------------- phases


def run_policies(
    args: argparse.Namespace, full: turn_set.TurnSet, policies: list[Policy]
) -> list[dict[str, Any]]:
    """Every policy at once, each on its own server (its own turn thread and counters)."""
    n = len(full.turns)
    servers = []
    try:
        for policy in policies:
            servers.append(reliability.Server(server_args(args, args.model), policy.name).start())
        sets = [turn_set.rotated(full, i * n // len(policies), n) for i in range(len(policies))]
        logs = [StreamLog() for _ in policies]
        probes = [Probe(s).start() for s in servers]
        jobs = [
            (s.ws(f"turns-{p.name}"), ts.pcm16(), p, log)
            for s, ts, p, log in zip(servers, sets, policies, logs, strict=True)
        ]
        machine = run_streams(jobs, args.drain_s)
        rows = []
        pauses = sum(len(t.pauses_ms) for t in full.turns)
        for policy, ts, log, probe, server in zip(policies, sets, logs, probes, servers, strict=True):
            row = summarize(policy, [score(ts.turns, log)], n, pauses)
            row.update(probe.delta(n))
            row.update(stream_notes(log))
            row["backend"] = serving_backend(server, 0)
            rows.append(row)
        machine = others_cpu(machine, sum(r["server_cpu_percent"] for r in rows))
        for row in rows:
            row["machine"] = machine
        return rows
    finally:
        for s in servers:
            s.stop()


def stream_notes(log: StreamLog) -> dict[str, Any]:
    slips = [t - k * FRAME_S for k, t in enumerate(log.sent_at)]
    return {
        "effective_turn_detection": log.effective_turn,
        "config_error": log.config_error,
        "refused": log.refused,
        "eager_end_of_turn": log.eager,
        "turn_resumed": log.resumed,
        "errors": sorted(set(log.errors)),
        "send_slip_p95_ms": pct(slips, 95),
    }


def serving_backend(server: reliability.Server, timeout_s: float) -> str:
    """The encoder backend the server ends up with: a model without a cached ONNX export is served
    by torch while a niced child exports it, which would take CPU from the measurement; wait for
    the switch (or the failure) first, up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        backend, exporting = "unknown", False
        for line in server.stderr_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                message = str(record.get("message", ""))
                if message.startswith("engine: torch-free"):  # served from an export: no torch
                    backend, exporting = "onnx", False
                elif record.get("message") == "model loaded":
                    backend = record.get("backend", backend)
                    exporting = record.get("onnx_export") == "exporting"
                elif message.startswith("switched to the ONNX encoder"):
                    backend, exporting = "onnx", False
                elif message.startswith("ONNX export failed"):
                    exporting = False
        if backend != "unknown" and not exporting:
            return backend
        if time.monotonic() > deadline:
            return f"{backend} (ONNX export still running)"
        time.sleep(2)


def run_load(args: argparse.Namespace, full: turn_set.TurnSet, policy: Policy) -> dict[str, Any]:
    """One stream, then ``--load-sessions`` at once, on one server with ``--load-model``."""
    server = reliability.Server(server_args(args, args.load_model), "turns-load").start()
    try:
        backend = serving_backend(server, args.export_wait_s)
        n = len(full.turns)
        pauses = sum(len(t.pauses_ms) for t in full.turns)
        log = StreamLog()
        probe = Probe(server).start()
        machine = run_streams([(server.ws("turns-single"), full.pcm16(), policy, log)], args.drain_s)
        single = summarize(policy, [score(full.turns, log)], n, pauses)
        single.update(probe.delta(n))
        single["machine"] = others_cpu(machine, single["server_cpu_percent"])
        single.update(stream_notes(log))
        count = args.load_sessions
        sets = [turn_set.rotated(full, i * n // count, args.load_turns) for i in range(count)]
        logs = [StreamLog() for _ in range(count)]
        probe = Probe(server).start()
        jobs = [
            (server.ws(f"turns-{i}"), ts.pcm16(), policy, lg)
            for i, (ts, lg) in enumerate(zip(sets, logs, strict=True))
        ]
        machine = run_streams(jobs, args.drain_s)
        # Scored over the admitted streams: a refused stream has no turns to score.
        admitted = [(ts, lg) for ts, lg in zip(sets, logs, strict=True) if lg.refused is None]
        turns = sum(len(ts.turns) for ts, _ in admitted)
        pauses_many = sum(len(t.pauses_ms) for ts, _ in admitted for t in ts.turns)
        many = summarize(policy, [score(ts.turns, lg) for ts, lg in admitted], turns, pauses_many)
        many.update(probe.delta(max(turns, 1)))
        many["machine"] = others_cpu(machine, many["server_cpu_percent"])
        many["sessions"] = count
        many["admitted"] = len(admitted)
        many["refusals"] = sorted({lg.refused for lg in logs if lg.refused})
        many["errors"] = sorted({e for lg in logs for e in lg.errors})
        many["semantic_in_force"] = sum(
            bool(lg.effective_turn and lg.effective_turn.get("type") == "semantic") for lg in logs
        )
        many["server_means_since_start"] = bench_stream.server_metrics(server.base)
        many["send_slip_p95_ms"] = pct([t - k * FRAME_S for lg in logs for k, t in enumerate(lg.sent_at)], 95)
        return {
            "model": args.load_model,
            "backend": backend,
            "policy": policy.name,
            "single": single,
            "many": many,
        }
    finally:
        server.stop()


# ------------------------------------------------------------------------------------ verdicts


def verdicts(rows: list[dict[str, Any]], load: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = next((r for r in rows if r["policy"] == "silence-800"), None)
    semantic = [r for r in rows if r["policy"].startswith("semantic") and r["turn_end_latency_ms"]["p50"]]
    if base and semantic:
        fair = [r for r in semantic if r["false_cut_in_rate"] <= base["false_cut_in_rate"]]
        best = min(fair, key=lambda r: r["turn_end_latency_ms"]["p50"], default=None)
        limit = base["turn_end_latency_ms"]["p50"] / 2
        out["semantic_half_latency_at_silence_800_cut_in"] = {
            "silence_800": {
                "cut_in": base["false_cut_in_rate"],
                "p50_ms": base["turn_end_latency_ms"]["p50"],
            },
            "best_semantic_at_or_below_its_cut_in": best
            and {
                "policy": best["policy"],
                "cut_in": best["false_cut_in_rate"],
                "p50_ms": best["turn_end_latency_ms"]["p50"],
            },
            "p50_limit_ms": limit,
            "holds": bool(best and best["turn_end_latency_ms"]["p50"] <= limit),
        }
    if load:
        many, single = load["many"], load["single"]
        p95, base95 = many["turn_end_latency_ms"]["p95"], single["turn_end_latency_ms"]["p95"]
        out["load"] = {
            "sessions": many["sessions"],
            "admitted": many["admitted"],
            "semantic_in_force": many["semantic_in_force"],
            "p95_ms": p95,
            "single_p95_ms": base95,
            "limit_ms": base95 + 300 if base95 is not None else None,
            "holds": bool(
                many["admitted"] == many["sessions"]
                and many["semantic_in_force"] == many["sessions"]
                and p95 is not None
                and base95 is not None
                and p95 <= base95 + 300
            ),
        }
    return out


# ------------------------------------------------------------------------------------- output


def markdown(rows: list[dict[str, Any]], load: dict[str, Any] | None) -> str:
    lines = [
        "| policy | false cut-in (turns) | cut-ins per mid-turn pause | turn-end p50 / p95 (ms)"
        " | turn ends by | model requests per turn | CPU per model call | server CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    labelled = [(r["policy"], r) for r in rows]
    if load:
        labelled += [
            ("load: 1 stream", load["single"]),
            (f"load: {load['many']['sessions']} streams", load["many"]),
        ]
    for label, r in labelled:
        lat = r["turn_end_latency_ms"]
        cpu = r["turn_model_cpu_ms_per_call"]
        lines.append(
            f"| {label} | {r['false_cut_in_rate']:.0%} ({r['false_cut_in_turns']}/{r['turns']})"
            f" | {r['cut_in_finals_per_mid_turn_pause']:.2f} | {lat['p50']} / {lat['p95']}"
            f" | {', '.join(f'{k} {v}' for k, v in sorted(r['turn_end_reasons'].items()))}"
            f" | {r['turn_model_requests_per_turn']} | {f'{cpu:.0f} ms' if cpu else '-'}"
            f" | {r['server_cpu_percent']}% |"
        )
    return "\n".join(lines)


EAGERNESS_THRESHOLD = {"low": 0.7, "medium": 0.5, "high": 0.3, "auto": 0.5}  # docs/protocol.md


def point_label(row: dict[str, Any]) -> str:
    """A point's label on the plot: the silence (ms) or the semantic threshold."""
    turn = row["config"].get("turn_detection")
    if turn is None:
        return str(row["config"]["vad"]["silence_duration_ms"])
    label = f"{turn.get('threshold') or EAGERNESS_THRESHOLD[turn['eagerness']]:g}"
    return label + (f" @{turn['min_pause_ms']}" if "min_pause_ms" in turn else "")


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for family, colour in (("silence", "tab:blue"), ("semantic", "tab:orange")):
        pts = sorted(
            (
                r["false_cut_in_rate"] * 100,
                r["turn_end_latency_ms"]["p50"],
                r["turn_end_latency_ms"]["p95"],
                r,
            )
            for r in rows
            if r["policy"].startswith(family) and r["turn_end_latency_ms"]["p50"] is not None
        )
        if not pts:
            continue
        xs = [p[0] for p in pts]
        what = "silence ms" if family == "silence" else "threshold"
        ax.plot(xs, [p[1] for p in pts], "o-", color=colour, label=f"{family} ({what}): p50")
        ax.plot(xs, [p[2] for p in pts], "o--", color=colour, mfc="none", alpha=0.6, label=f"{family}: p95")
        placed: list[tuple[float, float, int]] = []
        for x, y, _, r in pts:
            # Nearly coinciding points get their labels stacked instead of overprinted.
            taken = {slot for px, py, slot in placed if abs(x - px) < 3 and abs(y - py) < 60}
            slot = min(set(range(len(taken) + 1)) - taken)
            placed.append((x, y, slot))
            ax.annotate(
                point_label(r),
                (x, y),
                textcoords="offset points",
                xytext=(0, 7 + 10 * slot) if family == "semantic" else (6, -12),
                ha="center" if family == "semantic" else "left",
                fontsize=8,
                color=colour,
            )
    base = next((r for r in rows if r["policy"] == "silence-800"), None)
    if base is not None and base["turn_end_latency_ms"]["p50"] is not None:
        x, y = base["false_cut_in_rate"] * 100, base["turn_end_latency_ms"]["p50"] / 2
        ax.fill_between(
            [0, x], 0, y, color="tab:green", alpha=0.12, label="cut-in ≤ silence-800's, p50 ≤ half its"
        )
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("false cut-in rate (% of turns with a final sent inside the turn)")
    ax.set_ylabel("turn-end latency, end of speech → final (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def git_revision() -> str:
    """HEAD, and a digest of the service's files that differ from it (the server under test)."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    changed = subprocess.run(
        ["git", "ls-files", "-m", "-o", "--exclude-standard", "service"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if not changed:
        return head.stdout.strip()
    digest = hashlib.sha1()
    for name in sorted(changed):
        with contextlib.suppress(OSError):
            digest.update(name.encode() + Path(name).read_bytes())
    return f"{head.stdout.strip()} + {len(changed)} changed service files (sha1 {digest.hexdigest()[:12]})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo", help="the policies' servers' model")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--turns", type=int, default=48, help="turns in the set (1-120)")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--tts", default="espeak", choices=turn_set.TTS, help="the set's speech")
    parser.add_argument("--silence", nargs="*", type=int, default=[300, 500, 800, 1200])
    parser.add_argument(
        "--semantic",
        nargs="*",
        default=["high", "medium", "medium:0.6", "low", "low:0.85", "low:0.95"],
        help="E, E:T, E@P or E:T@P (P: its minimum pause, ms)",
    )
    parser.add_argument("--max-silence-ms", type=int, default=2000, help="semantic policies' longest wait")
    parser.add_argument("--load-model", default=None, help="model of the load part (skipped without)")
    parser.add_argument(
        "--load-policy", default="medium", help="the load part's policy: E or E:T (semantic), or silence-N"
    )
    parser.add_argument("--load-sessions", type=int, default=16)
    parser.add_argument("--load-turns", type=int, default=24, help="turns per stream in the load part")
    parser.add_argument(
        "--export-wait-s", type=float, default=900.0, help="wait this long for the load model's ONNX export"
    )
    parser.add_argument("--skip-policies", action="store_true", help="the load part only")
    parser.add_argument("--drain-s", type=float, default=30.0, help="wait for finals after the audio")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the servers")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench-turns"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--replot", type=Path, default=None, help="only draw --plot from this JSON report")
    args = parser.parse_args()
    if args.replot:
        saved = json.loads(args.replot.read_text())
        plot(saved["policies"], args.plot or parser.error("--replot needs --plot"), plot_title(saved))
        return
    if not 1 <= args.turns <= 120:
        parser.error("--turns: 1-120")
    if args.max_silence_ms >= 3000:
        parser.error("--max-silence-ms must stay under the 3 s between turns")
    policies = [silence_policy(ms) for ms in args.silence]
    policies += [semantic_policy(s, args.max_silence_ms) for s in args.semantic]
    full = turn_set.build(args.turns, args.seed, tts=args.tts)
    print(json.dumps(full.summary()), flush=True)
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": reliability.machine_info(),
        "command": shlex.join(["python", *sys.argv]),
        "revision": git_revision(),
        "model": args.model,
        "set": {
            **full.summary(),
            "seed": args.seed,
            "tts": args.tts,
            "turn_list": [t.describe() for t in full.turns],
        },
        "max_silence_ms": args.max_silence_ms,
    }
    rows: list[dict[str, Any]] = []
    if not args.skip_policies:
        t0 = time.perf_counter()
        rows = run_policies(args, full, policies)
        report["policies_wall_s"] = round(time.perf_counter() - t0)
        write(args, report, rows, None)
    load = None
    if args.load_model:
        t0 = time.perf_counter()
        load = run_load(args, full, parse_policy(args.load_policy, args.max_silence_ms))
        load["wall_s"] = round(time.perf_counter() - t0)
    write(args, report, rows, load)
    print(markdown(rows, load))
    print(json.dumps(verdicts(rows, load), indent=2))
    if args.plot and rows:
        plot(rows, args.plot, plot_title(report))


def plot_title(report: dict[str, Any]) -> str:
    return (
        f"{report['set']['turns']} {report['set'].get('tts', 'espeak')} turns, model {report['model']}, "
        f"{report['date']}\n"
        f"every policy at once, each on its own server; semantic: max silence {report['max_silence_ms']} ms"
    )


def write(args: argparse.Namespace, report: dict[str, Any], rows: list[dict[str, Any]], load: Any) -> None:
    if args.out is None:
        return
    report = {**report, "policies": rows, "load": load, "must_show": verdicts(rows, load)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
