#!/usr/bin/env python
"""Keyterms with one model: no harm, help, decode cost and 16 real-time streams, in one run.

    python tools/bench_keyterms.py --model demo --out docs/bench/keyterms-$(date +%F).json

Parts (``--parts``, all by default), each through the production code:

- **harm**: the held-out speech clips (tools/demo_data.py: voices and speeds unseen in training),
  decoded without keyterms and with 20 unrelated keyterms per clip: the demo's other words and
  phrases that share no word (in CJK, no character) with what the clip says, so the model knows
  them and they compete, drawn ``--draws`` times per clip (the clips that change differ by
  several from draw to draw; the verdict takes the mean); and with 20 words the model never heard.
  Exact-text accuracy of each.
- **help**: each clip with its own words as keyterms (a CJK phrase is one term) hidden among
  ``--distractors`` unrelated ones, shuffled. Keyterm recall: the share of those spoken terms
  that come out exactly (a word among the text's words; a CJK term inside its text), without and
  with the keyterms, over every clip and over the clips greedy decoding gets wrong; how many of
  those the keyterms fix (exact text) and how many right ones they break. Both parts decode one
  encoder pass per clip each way (``results_from_logits``).
- **cost**: tools/bench_keyterms_decode.py's cost: the post-encoder step per 5 s utterance with
  0/10/100 keyterms on both engines' paths (torch, and the torch-free engine's numpy), pinned to
  one core, in this thread's CPU time; and what a batch of 16 requests without keyterms pays for
  the feature (the keyed check) and for its decode metric.
- **streams**: one ``emostt serve`` (``--model``, the CPU defaults: int8, ONNX, partials on, 500
  ms endpointing) and ``--sessions`` real-time devices of tools/bench_stream.py, in rounds that
  alternate ``none`` (no keyterms), ``keyterms`` (100 per session: the model's own words and
  phrases first, so the beam has work, then words it never heard) and ``mixed`` (every other
  session with them), with the same audio in each mode of a repeat. Client side: endpoint→final
  (a final's arrival minus when a zero-cost server could have sent it, tools/stream_lag.py) and
  speech end→final, p50/p95; the server's ``latency_ms`` and its ``emostt_decode_seconds`` by mode.

The machine may be shared: every timed part records its load (1-minute load average, the whole
machine's busy CPU from /proc/stat, this benchmark's own CPU); compare within one run. The
must-shows are decided from the figures and printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import time
import timeit
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from emostt.inference.ctc_batch import record_decodes
from emostt.inference.engine import TranscriptionRequest
from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_keyterms_decode as decode_cost
import bench_stream
import demo_data
from bench_engine import machine
from bench_turns import busy_cpu_s
from eval_demo_model import normalise
from reliability import parse_metrics

PARTS = ("harm", "help", "cost", "streams")
STREAM_MODES = ("none", "keyterms", "mixed")
UNRELATED = 20
STREAM_KEYTERMS = 100
COST_KEYTERMS = (0, 10, 100)
MAX_HARM_POINTS = 1.0
MAX_P95_MS = 10.0
COUNTS = ("missing_finals", "refused", "finals_with_matches")


@contextlib.contextmanager
def load(into: dict[str, Any], server_pid: int | None = None) -> Iterator[None]:
    """What the machine did during the block: ``into["load"]``."""
    busy, own, wall = busy_cpu_s(), bench_stream.client_cpu_seconds(), time.perf_counter()
    server = bench_stream.tree_usage(server_pid)[0] if server_pid else 0.0
    start_avg = os.getloadavg()[0]
    yield
    wall = time.perf_counter() - wall
    busy = (busy_cpu_s() - busy) / wall * 100
    own = (bench_stream.client_cpu_seconds() - own) / wall * 100
    server = (bench_stream.tree_usage(server_pid)[0] - server) / wall * 100 if server_pid else 0.0
    into["load"] = {
        "wall_s": round(wall, 1),
        "load_average_1m": [round(start_avg, 2), round(os.getloadavg()[0], 2)],
        "machine_busy_percent": round(busy, 1),
        "benchmark_cpu_percent": round(own + server, 1),
        "other_processes_cpu_percent": round(busy - own - server, 1),
    }


# ------------------------------------------------------------------------------ harm and help


def unrelated_terms(text: str) -> list[str]:
    """The demo's words and phrases that share no word (CJK: no character) with ``text``."""
    phrases = [p for p, _ in demo_data.PHRASES]
    words = sorted({w for p, lang in demo_data.PHRASES if lang == "en" for w in p.split()})
    said = set(normalise(text))
    return sorted({t for t in phrases + words if not set(normalise(t)) & said})


def recall(text: str, hypothesis: str) -> tuple[int, int]:
    """(spoken keyterms, of them transcribed exactly): the clip's own terms (words_of) in ``hypothesis``."""
    terms = decode_cost.words_of(text)
    if text.isascii():
        return len(terms), sum((Counter(terms) & Counter(normalise(hypothesis))).values())
    written = "".join(normalise(hypothesis))
    return len(terms), sum("".join(t.split()) in written for t in terms)


def quality(engine: SenseVoiceEngine, distractors: int, draws: int) -> dict[str, Any]:
    clips = [c for c in demo_data.generate("heldout") if c.text]
    harm = [f"unrelated-{d}" for d in range(draws)] + ["unseen"]
    right = dict.fromkeys(["none", "own", *harm], 0)
    changed = dict.fromkeys(harm, 0)
    broke = dict.fromkeys([*harm, "own"], 0)
    spoken = {"all": 0, "greedy_wrong": 0}
    recalled = {(k, m): 0 for k in spoken for m in ("none", "keyterms")}
    examples: list[dict[str, Any]] = []
    for i, clip in enumerate(clips):
        rng = np.random.default_rng(i)
        pool = unrelated_terms(clip.text)
        own = decode_cost.words_of(clip.text)
        mixed = own + [str(t) for t in rng.choice(pool, distractors, replace=False)]
        lists = {"own": tuple(mixed[k] for k in rng.permutation(len(mixed)))}
        for d in range(draws):
            lists[f"unrelated-{d}"] = tuple(str(t) for t in rng.choice(pool, UNRELATED, replace=False))
        lists["unseen"] = decode_cost.UNSEEN[:UNRELATED]
        with torch.inference_mode():
            logp = torch.from_numpy(engine.log_probs([TranscriptionRequest(clip.audio)])[0])
            requests = [TranscriptionRequest(clip.audio)]
            requests += [TranscriptionRequest(clip.audio, keyterms=t) for t in lists.values()]
            results = engine.results_from_logits(
                requests, logp[None].expand(len(requests), -1, -1), torch.tensor([len(logp)] * len(requests))
            )
        by = dict(zip(("none", *lists), results, strict=True))
        ok = {k: normalise(r.text) == normalise(clip.text) for k, r in by.items()}
        for k in right:
            right[k] += ok[k]
        for k in broke:
            broke[k] += ok["none"] and not ok[k]
        for k in changed:
            changed[k] += by[k].text != by["none"].text
            if by[k].text != by["none"].text and len(examples) < 20:
                said = {"said": clip.text, "greedy": by["none"].text, "keyterms": by[k].text}
                examples.append({**said, "matched": by[k].keyterms_matched, "list": k})
        terms, _ = recall(clip.text, "")
        for group in ["all"] if ok["none"] else ["all", "greedy_wrong"]:
            spoken[group] += terms
            for mode, result in (("none", by["none"]), ("keyterms", by["own"])):
                recalled[(group, mode)] += recall(clip.text, result.text)[1]
    n = len(clips)
    percent = {k: round(100 * v / n, 2) for k, v in right.items()}
    lost = [percent["none"] - percent[f"unrelated-{d}"] for d in range(draws)]
    wrong = n - right["none"]
    fixed = right["own"] - (right["none"] - broke["own"])
    return {
        "harm": {
            "speech_clips": n,
            "unrelated_keyterms": UNRELATED,
            "draws": draws,
            "exact_text_percent": {k: percent[k] for k in ("none", *harm)},
            "changed_clips": changed,
            "broke_right_clips": {k: broke[k] for k in harm},
            "points_lost_mean": round(float(np.mean(lost)), 2),
            "points_lost_range": [round(min(lost), 2), round(max(lost), 2)],
            "points_lost_unseen": round(percent["none"] - percent["unseen"], 2),
            "changes": examples,
            "met": abs(float(np.mean(lost))) <= MAX_HARM_POINTS,
        },
        "help": {
            "speech_clips": n,
            "distractors": distractors,
            "spoken_keyterms": spoken,
            "recall_percent": {
                f"{g}_{m}": round(100 * recalled[(g, m)] / max(spoken[g], 1), 1) for g, m in recalled
            },
            "exact_text_percent": {"none": percent["none"], "keyterms": percent["own"]},
            "greedy_wrong_clips": wrong,
            "fixed": fixed,
            "broke": broke["own"],
            "met": recalled[("all", "keyterms")] > recalled[("all", "none")] and 3 * fixed >= wrong,
        },
    }


# ------------------------------------------------------------------------------------- cost


def cost(engine: SenseVoiceEngine, args: argparse.Namespace) -> dict[str, Any]:
    """tools/bench_keyterms_decode.py's cost on one core, then the no-keyterm batch's overheads."""
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    try:
        with load(out):
            options = argparse.Namespace(
                utterances=args.utterances, repeats=args.repeats, vocab=args.vocab, keyterms=COST_KEYTERMS
            )
            out.update(decode_cost.cost(engine, options))
            request = TranscriptionRequest(decode_cost.utterances(1)[0])
            result = engine.transcribe([request])[0]
            results, own = [result] * 16, [1e-3] * 16
            reps = 20000
            metric = timeit.timeit(lambda: record_decodes(results, 1e-3, 0.0, own), number=reps) / reps
    finally:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, cores)
    rows = {(r["path"], r["keyterms"]): r for r in out["rows"]}
    greedy_us = rows[("torch", 0)]["cpu_p50_ms"] * 16 * 1e3  # a batch of 16 decoded greedily
    out["decode_metric_us_per_batch_of_16"] = round(metric * 1e6, 3)
    out["no_keyterm_check_share_of_greedy_decode"] = out["no_keyterm_check_us_per_batch_of_16"] / greedy_us
    out["decode_metric_share_of_greedy_decode"] = metric * 1e6 / greedy_us
    paths = sorted({path for path, _ in rows})
    out["ratio_to_greedy"] = {
        f"{path}/{count}": {q: round(rows[(path, count)][f"cpu_{q}_ms"] / rows[(path, 0)][f"cpu_{q}_ms"], 2)
            for q in ("p50", "p95")}
        for path in paths
        for count in COST_KEYTERMS[1:]
    }  # fmt: skip
    out["met"] = {path: rows[(path, 100)]["cpu_p95_ms"] <= MAX_P95_MS for path in paths}
    return out


# ---------------------------------------------------------------------------------- streams


def percentiles(values: list[float]) -> dict[str, Any]:
    """p50/p95 in ms, and how many values."""
    return {
        "n": len(values),
        **{f"p{q}": round(float(np.percentile(values, q)) * 1e3, 1) if values else None for q in (50, 95)},
    }


def stream_round(
    args: argparse.Namespace, server: Any, port: int, pool: list[np.ndarray], mode: str, repeat: int
) -> dict[str, Any]:
    n = args.sessions
    rng = random.Random(repeat)
    streams = [bench_stream.make_stream(pool, args.duration, rng) for _ in range(n)]
    keyed = [mode == "keyterms" or (mode == "mixed" and i % 2 == 0) for i in range(n)]
    terms = list(decode_cost.keyterm_list(STREAM_KEYTERMS))
    configs: list[dict[str, Any] | None] = [{"keyterms": terms} if k else None for k in keyed]
    logs = [bench_stream.DeviceLog() for _ in range(n)]
    urls = [f"ws://127.0.0.1:{port}/ws/stt/keyterms-{mode}-{repeat}-{i}" for i in range(n)]
    delays = [args.ramp_s * i / n for i in range(n)]
    before = parse_metrics(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
    row: dict[str, Any] = {"mode": mode, "repeat": repeat}
    with load(row, server.pid):
        bench_stream.run_devices(urls, streams, logs, delays, configs)
    after = parse_metrics(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    row["decode_ms_mean"] = {
        m: round(delta(f'emostt_decode_seconds_sum{{mode="{m}"}}') / count * 1e3, 3)
        for m in ("greedy", "keyterms")
        if (count := delta(f'emostt_decode_seconds_count{{mode="{m}"}}'))
    }
    row["keyterm_matches"] = int(delta("emostt_keyterm_matches_total"))
    for group, members in (("keyterms", True), ("none", False)):
        which = [i for i in range(n) if keyed[i] == members]
        if not which:
            continue
        picked = [logs[i] for i in which]
        lags = bench_stream.event_lags(picked, [streams[i] for i in which])["final"]
        row[group] = {
            "sessions": len(which),
            "refused": sum(log.refused is not None for log in picked),
            "missing_finals": sum(max(log.utterances_sent - len(log.finals), 0) for log in picked),
            "errors": sorted({e for log in picked for e in log.errors}),
            "finals_with_matches": sum(bool(f.get("keyterms_matched")) for log in picked for f in log.finals),
            "endpoint_to_final_s": lags,
            "speech_end_to_final_s": [x for log in picked for x in log.device_latency_s],
            "server_latency_s": [f["latency_ms"] / 1e3 for log in picked for f in log.finals],
        }
    print(json.dumps({k: v for k, v in row.items() if k not in ("keyterms", "none")}), flush=True)
    return row


def difference(values: list[float], baseline: list[float], q: int, draws: int = 2000) -> dict[str, Any]:
    """The q-th percentile of ``values`` minus the baseline's, ms, with its 95 % bootstrap interval;
    ``measurable``: the interval lies above 0 (slower beyond the run's own noise)."""
    if not values or not baseline:
        return {"ms": None, "ci95": None, "measurable": None}
    rng = np.random.default_rng(q)
    a, b = np.asarray(values), np.asarray(baseline)
    boot = np.percentile(a[rng.integers(0, len(a), (draws, len(a)))], q, axis=1) - np.percentile(
        b[rng.integers(0, len(b), (draws, len(b)))], q, axis=1
    )
    low, high = np.percentile(boot, [2.5, 97.5]) * 1e3
    diff = (np.percentile(a, q) - np.percentile(b, q)) * 1e3
    return {
        "ms": round(float(diff), 1),
        "ci95": [round(float(low), 1), round(float(high), 1)],
        "measurable": bool(low > 0),
    }


def summarize_streams(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Latencies pooled per (mode, sessions' group), and the differences that matter."""
    pooled: dict[str, dict[str, Any]] = {}
    for r in rounds:
        for group in ("none", "keyterms"):
            if group not in r:
                continue
            key = f"{r['mode']}/{group}"
            entry = pooled.setdefault(key, dict.fromkeys(("rounds", *COUNTS), 0))
            entry["rounds"] += 1
            for field in COUNTS:
                entry[field] += r[group][field]
            for kind in ("endpoint_to_final_s", "speech_end_to_final_s", "server_latency_s"):
                entry.setdefault(kind, []).extend(r[group][kind])
                r[group][kind.removesuffix("_s") + "_ms"] = percentiles(r[group].pop(kind))
    summary = {
        key: {
            **{k: v for k, v in e.items() if not k.endswith("_s")},
            **{k.removesuffix("_s") + "_ms": percentiles(v) for k, v in e.items() if k.endswith("_s")},
        }
        for key, e in pooled.items()
    }
    # Against rounds where nobody has keyterms: sessions without them beside sessions with them
    # (what sessions without keyterms pay), and sessions with them (what keyterms cost a stream).
    for key, name in (
        ("mixed/none", "without_keyterms_beside_keyed"),
        ("keyterms/keyterms", "with_keyterms"),
    ):
        if "none/none" in pooled and key in pooled:
            summary[name] = {
                f"{kind.removesuffix('_s')}_ms_p{q}": difference(
                    pooled[key][kind], pooled["none/none"][kind], q
                )
                for kind in ("endpoint_to_final_s", "speech_end_to_final_s")
                for q in (50, 95)
            }
    if "without_keyterms_beside_keyed" in summary:
        paid = [d["measurable"] for d in summary["without_keyterms_beside_keyed"].values()]
        summary["met"] = not any(paid) and None not in paid
    return summary


def streams(args: argparse.Namespace) -> dict[str, Any]:
    server_args = argparse.Namespace(
        model=args.model, device="cpu", precision="auto", partials="on", workers=None, frontends=None,
        server_cpus=None, max_batch=32, instant_batch_ms=0.0,
    )  # fmt: skip
    pool = bench_stream.load_pool(None)
    port = bench_stream.free_port()
    server = bench_stream.start_server(server_args, port, None, args.backend)
    rounds = []
    try:
        engine = "torch" if "libtorch" in Path(f"/proc/{server.pid}/maps").read_text() else "torch-free"
        for repeat in range(args.stream_repeats):
            modes = STREAM_MODES if repeat % 2 == 0 else STREAM_MODES[::-1]
            rounds += [stream_round(args, server, port, pool, mode, repeat) for mode in modes]
    finally:
        server.terminate()
        server.wait(60)
    return {
        "sessions": args.sessions,
        "duration_s": args.duration,
        "keyterms_per_session": STREAM_KEYTERMS,
        "backend": args.backend,
        "precision": "auto (int8 on the CPU)",
        "engine": engine,
        "summary": summarize_streams(rounds),
        "rounds": rounds,
    }


# ------------------------------------------------------------------------------------ report


def markdown(report: dict[str, Any]) -> str:
    lines = []
    if "harm" in report:
        h = report["harm"]
        lines.append(
            f"no harm: exact text {h['exact_text_percent']} of {h['speech_clips']} clips, "
            f"{h['points_lost_mean']} points lost on average with {h['unrelated_keyterms']} unrelated: "
            f"{'met' if h['met'] else 'NOT met'}"
        )
    if "help" in report:
        h = report["help"]
        lines.append(
            f"help: recall {h['recall_percent']}, fixed {h['fixed']} of {h['greedy_wrong_clips']} "
            f"greedy-wrong, broke {h['broke']}: {'met' if h['met'] else 'NOT met'}"
        )
    if "cost" in report:
        c = report["cost"]
        for r in c["rows"]:
            lines.append(
                f"cost {r['path']}: {r['keyterms']} keyterms,"
                f" CPU p50 {r['cpu_p50_ms']} ms, p95 {r['cpu_p95_ms']} ms"
            )
        for path, met in c["met"].items():
            lines.append(f"cost {path}: 100 keyterms p95 <= {MAX_P95_MS} ms: {'met' if met else 'NOT met'}")
    if "streams" in report:
        summary = report["streams"]["summary"]
        for key, e in summary.items():
            lines.append(f"streams {key}: {json.dumps(e)}")
        if "met" in summary:
            verdict = "met" if summary["met"] else "NOT met"
            lines.append(f"streams: sessions without keyterms pay nothing measurable: {verdict}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo", help="model dir or id (default: the bundled demo)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument(
        "--distractors", type=int, default=10, help="help: unrelated terms beside the right ones"
    )
    parser.add_argument("--draws", type=int, default=5, help="harm: unrelated lists drawn per clip")
    parser.add_argument("--utterances", type=int, default=20, help="cost: 5 s utterances")
    parser.add_argument("--repeats", type=int, default=20, help="cost: runs per utterance")
    parser.add_argument("--vocab", type=int, default=25055, help="cost: logits widened to this many tokens")
    parser.add_argument("--sessions", type=int, default=16, help="streams: devices per round")
    parser.add_argument("--duration", type=float, default=30.0, help="streams: seconds of audio per device")
    parser.add_argument("--stream-repeats", type=int, default=2, help="streams: rounds of each mode")
    parser.add_argument("--ramp-s", type=float, default=2.0, help="streams: spread the connects over this")
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="onnx")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.distractors < 10:
        parser.error("--distractors: at least 10")
    # A terminated run still stops its server (the finally blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine(),
        "model": args.model,
        "parts": args.parts,
    }
    engine = SenseVoiceEngine.load(args.model, EngineOptions(device="cpu", precision="fp32", threads=1))
    report["revision"] = engine.info.revision
    if {"harm", "help"} & set(args.parts):
        found = quality(engine, args.distractors, args.draws)
        report.update({k: v for k, v in found.items() if k in args.parts})
    if "cost" in args.parts:
        report["cost"] = cost(engine, args)
    if "streams" in args.parts:
        report["streams"] = streams(args)
    print(markdown(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
