#!/usr/bin/env python
"""emostt's CPU engine side by side with sherpa-onnx and funasr-onnx, on the same weights.

    pip install sherpa-onnx==2.0.1 librosa jieba && pip install --no-deps funasr-onnx==0.4.3
    emostt model make-random /tmp/sv-full --size full
    python tools/bench_peers.py --model /tmp/sv-full --out docs/bench/peers-$(date +%F).json

The peers, pinned: sherpa-onnx 2.0.1 (C++ with its own ONNX Runtime, Python bindings) and
funasr-onnx 0.4.3 (Python, on the installed onnxruntime). funasr-onnx declares numpy<=1.26.4,
which would downgrade the environment's numpy; its SenseVoice path runs on numpy 2, hence
``--no-deps`` after its other requirements. Neither is a dependency of emostt.

What runs (``--work`` keeps the files; each is made once):

1. ``MODEL`` copied with ``frontend_conf.dither: 0`` (links to its weights; only config.yaml
   differs): dither off in every engine, so equal graphs give equal text;
2. emostt's export of it (``emostt model export``: signed int8 weights); funasr's own export
   (funasr-onnx's graph: unsigned int8 weights) and sherpa-onnx's (its own script adapted; per
   tensor, unsigned), both by tools/peer_export.py; ``funasr-onnx-signed`` is funasr-onnx on
   emostt's graph (the engines compared on one graph; not a peer as it ships);
3. 16 espeak-ng clips of exactly 2 s and 16 of 10 s (English sentences, 8 voices), the same
   float32 samples for every engine;
4. each engine in its own process (tools/peer_engines.py; RSS is its own), ``--threads`` (2)
   threads each, emostt as ``emostt serve`` runs its model side on this machine (its default
   worker plan; tools/peer_engines.py); cells: 2 s and 10 s clips x batch 1, 4, 16 (a batch: B
   clips in one call; for emostt, B finals submitted at once). ``--reps`` repetitions; each
   starts every engine afresh, in an order rotated per repetition (on a shared machine a
   process's speed was seen to depend on when it loaded), warms it up on a 2 s and a 10 s
   clip, and runs every cell on every engine in turn; throughput is audio seconds per wall
   second of the median repetition; single 2 s calls: ``--latency-calls`` per engine per
   repetition, interleaved the same way; every call starts ``SETTLE_S`` after the one before
   (the peers' ONNX Runtime threads spin on after a call);
5. memory: each engine's peak RSS (VmHWM over its life: load included; the highest of the
   repetitions) and its RSS 2 s after its 16 x 10 s call (the median);
6. text: each clip decoded alone by each engine, rich tags removed; the pairs compared;
7. the real ``emostt serve --model EXPORT``: spawn to ``/readyz`` 200, then 16 POST
   ``/v1/audio/transcriptions`` of the 10 s clips at once (``EMOSTT_MAX_FILE_REQUESTS=16`` so
   none waits for admission), its peak RSS (VmHWM) and its RSS 2 s after. ``--serve-runs``.

The machine may be shared: each repetition records the whole machine's busy CPU (/proc/stat)
and the engines' own; ratios within one repetition are fair, absolute numbers move with load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_report
from bench_stream import tree_usage
from peer_clips import make_clips
from peer_engines import ENGINES
from peer_export import FUNASR_ONNX_GRAPH, SHERPA_MODEL, funasr_onnx_dir
from peer_report import busy_cpu_s, git_revision
from peer_serve import serve_once
from reliability import machine_info, proc_status_kib

TOOLS = Path(__file__).resolve().parent
CELLS = [(2, 1), (2, 4), (2, 16), (10, 1), (10, 4), (10, 16)]
STEADY_WAIT_S = 2.0  # an engine's RSS is read this long after its 16 x 10 s call
# Every call starts this long after the previous engine's call ended: ONNX Runtime's default pool
# threads (the peers') spin on after a call, and would hold a core the next engine's call needs.
SETTLE_S = 0.25


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for package in ("emostt", "onnxruntime", "sherpa-onnx", "funasr-onnx", "numpy", "kaldi-native-fbank"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = "not installed"
    return out


# ------------------------------------------------------------------------------------ files


def dither_free_copy(model: Path, out: Path) -> Path:
    """``model`` with ``frontend_conf.dither: 0``: the other files linked, config.yaml rewritten."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    for item in model.iterdir():
        if item.name == "config.yaml" or not item.is_file():
            continue
        link = out / item.name
        if not link.exists():
            link.symlink_to(item.resolve())
    config = yaml.safe_load((model / "config.yaml").read_text())
    config.setdefault("frontend_conf", {})["dither"] = 0.0
    text = yaml.safe_dump(config, sort_keys=False)
    if not (out / "config.yaml").is_file() or (out / "config.yaml").read_text() != text:
        (out / "config.yaml").write_text(text)
    return out


def prepare(args: argparse.Namespace) -> dict[str, Path]:
    work: Path = args.work
    model = dither_free_copy(args.model, work / "model")
    dirs = {
        "emostt": work / "emostt",
        "sherpa-onnx": work / "sherpa-onnx",
        "funasr-onnx": work / "funasr-onnx",
        "funasr-onnx-signed": work / "funasr-onnx-signed",
    }
    if not (dirs["emostt"] / "emostt-onnx-model.json").is_file():
        print("exporting for emostt ...", file=sys.stderr)
        run = [sys.executable, "-m", "emostt", "model", "export", str(model), str(dirs["emostt"])]
        subprocess.run(run, check=True)
    if not (dirs["sherpa-onnx"] / SHERPA_MODEL).is_file():
        print("exporting for sherpa-onnx ...", file=sys.stderr)
        run = [sys.executable, str(TOOLS / "peer_export.py"), "sherpa", str(model), str(dirs["sherpa-onnx"])]
        subprocess.run(run, check=True)
    funasr_export = work / "funasr-export"
    if not (funasr_export / FUNASR_ONNX_GRAPH).is_file():
        print("exporting for funasr-onnx ...", file=sys.stderr)
        run = [sys.executable, str(TOOLS / "peer_export.py"), "funasr", str(model), str(funasr_export)]
        subprocess.run(run, check=True)
    funasr_onnx_dir(model, funasr_export / FUNASR_ONNX_GRAPH, dirs["funasr-onnx"])
    funasr_onnx_dir(model, dirs["emostt"] / FUNASR_ONNX_GRAPH, dirs["funasr-onnx-signed"])
    dirs["emostt-engine"] = dirs["emostt"]
    return dirs


# ---------------------------------------------------------------------------------- engines


class Child:
    """One engine process (tools/peer_engines.py) and its answers."""

    def __init__(
        self, engine: str, directory: Path, clips: Path, threads: int, log: Path, env: dict[str, str]
    ) -> None:
        self.engine = engine
        cmd = [sys.executable, str(TOOLS / "peer_engines.py"), engine, "--clips", str(clips)]
        cmd += ["--dir", str(directory), "--threads", str(threads)]
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            env={**os.environ, **env},
        )
        self.ready = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.engine} exited ({self.proc.wait()}); see {self._log.name}")
        return dict(json.loads(line))

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def status_mib(self, key: str) -> float:
        return round(proc_status_kib(self.proc.pid, key) / 1024, 1)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, BrokenPipeError, ValueError):
            self.ask(op="quit")
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def run_engines(args: argparse.Namespace, dirs: dict[str, Path], clips: Path) -> dict[str, Any]:
    """Every repetition starts every engine afresh, in an order rotated per repetition (on a shared
    machine a process's speed can depend on when it loaded), and runs every cell on every engine
    in that order, then the single calls."""
    rows = [(e, e, {}) for e in args.engines]
    rows += [(name, "emostt", env) for name, env in args.variant]
    names = [name for name, _, _ in rows]
    specs = {name: (engine, env) for name, engine, env in rows}
    walls: dict[str, dict[str, list[float]]] = {e: {cell_key(*c): [] for c in CELLS} for e in names}
    cpus: dict[str, dict[str, list[float]]] = {e: {cell_key(*c): [] for c in CELLS} for e in names}
    latency: dict[str, list[float]] = {e: [] for e in names}
    steady: dict[str, list[float]] = {e: [] for e in names}
    peaks: dict[str, list[float]] = {e: [] for e in names}
    loaded: dict[str, list[float]] = {e: [] for e in names}
    loads = []
    texts: dict[str, dict[int, list[str]]] = {}
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        children: dict[str, Child] = {}
        try:
            for name in order:
                engine, env = specs[name]
                log = args.work / f"{name}.log"
                children[name] = Child(engine, dirs[engine], clips, args.threads, log, env)
                loaded[name].append(children[name].ready["load_s"])
            busy, began = busy_cpu_s(), time.perf_counter()
            own = {e: tree_usage(c.proc.pid)[0] for e, c in children.items()}
            for seconds, batch in CELLS:
                for name in order:
                    time.sleep(SETTLE_S)
                    answer = children[name].ask(op="run", seconds=seconds, batch=batch)
                    walls[name][cell_key(seconds, batch)].append(answer["wall_s"])
                    cpus[name][cell_key(seconds, batch)].append(answer["cpu_s"])
                    if (seconds, batch) == (10, 16):
                        time.sleep(STEADY_WAIT_S)
                        steady[name].append(children[name].status_mib("VmRSS"))
            for _ in range(args.latency_calls):
                for name in order:
                    time.sleep(SETTLE_S)
                    latency[name].append(children[name].ask(op="run", seconds=2, batch=1)["wall_s"])
            loads.append(repetition_load(busy, began, own, children))
            print(f"repetition {rep + 1}/{args.reps}: {loads[-1]}", file=sys.stderr)
            for name, child in children.items():
                peaks[name].append(child.status_mib("VmHWM"))
            if rep == args.reps - 1:
                texts = {
                    e: {s: c.ask(op="texts", seconds=s)["texts"] for s in (2, 10)}
                    for e, c in children.items()
                }
        finally:
            for child in children.values():
                child.close()
    return {
        "engines": {
            e: engine_summary(walls[e], cpus[e], latency[e], steady[e], peaks[e], loaded[e]) for e in names
        },
        "texts": texts,
        "load_per_repetition": loads,
    }


def cell_key(seconds: int, batch: int) -> str:
    return f"{seconds}s_b{batch}"


def repetition_load(
    busy: float, began: float, own: dict[str, float], children: dict[str, Child]
) -> dict[str, float]:
    wall = time.perf_counter() - began
    machine = (busy_cpu_s() - busy) / wall * 100
    engines = sum(tree_usage(c.proc.pid)[0] - own[e] for e, c in children.items()) / wall * 100
    return {
        "wall_s": round(wall, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "machine_busy_percent": round(machine, 1),
        "engines_cpu_percent": round(engines, 1),
        "other_processes_cpu_percent": round(machine - engines, 1),
    }


def engine_summary(
    walls: dict[str, list[float]],
    cpus: dict[str, list[float]],
    latency: list[float],
    steady: list[float],
    peaks: list[float],
    load_s: list[float],
) -> dict[str, Any]:
    cells = {}
    for key, values in walls.items():
        seconds, batch = (int(x) for x in key.rstrip("s").replace("s_b", " ").split())
        audio = seconds * batch
        cells[key] = {
            "x_real_time": round(audio / statistics.median(values), 2),
            "x_real_time_per_repetition": [round(audio / w, 2) for w in values],
            "cpu_s_per_audio_s": round(statistics.median(cpus[key]) / audio, 4),
        }
    return {
        "cells": cells,
        "latency_2s_ms": {
            "median": round(statistics.median(latency) * 1000, 1),
            "p90": round(float(np.percentile(latency, 90)) * 1000, 1),
            "calls": len(latency),
        },
        "load_s": statistics.median(load_s),
        "load_s_per_repetition": load_s,
        "peak_rss_mib": max(peaks),
        "peak_rss_mib_per_repetition": peaks,
        "steady_rss_mib": statistics.median(steady),
        "steady_rss_mib_per_repetition": steady,
    }


# ------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="a SenseVoice model dir (make-random)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/emostt-peers"))
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--latency-calls", type=int, default=4)
    parser.add_argument("--serve-runs", type=int, default=3, help="0: skip the emostt serve part")
    parser.add_argument(
        "--variant",
        type=variant,
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="one more emostt row, its model side with these EMOSTT_* settings (repeatable)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    dirs = prepare(args)
    clips_path = args.work / "clips.npz"
    clips = make_clips(clips_path)
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "revision": git_revision(),
        "machine": machine_info(),
        "versions": versions(),
        "model": str(args.model),
        "threads": args.threads,
        "reps": args.reps,
        "graphs_mib": {e: round(graph_size(d) / 2**20, 1) for e, d in dirs.items()},
    }
    report["variants"] = {name: env for name, env in args.variant}
    report.update(run_engines(args, dirs, clips_path))
    report["serve"] = [serve_once(dirs["emostt"], clips, args.work) for _ in range(args.serve_runs)]
    report["text_agreement"] = peer_report.text_agreement(report["texts"])
    report["must_show"] = peer_report.verdicts(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(peer_report.markdown(report))


def variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, pairs = text.partition(":")
    env = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
    if not name or not all(key.startswith("EMOSTT_") for key in env):
        raise argparse.ArgumentTypeError(f"expected NAME:EMOSTT_KEY=VALUE[,...], got {text!r}")
    return f"emostt {name}", env


def graph_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.onnx"))


if __name__ == "__main__":
    main()
