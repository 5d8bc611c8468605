#!/usr/bin/env python
"""The ``quick`` step's record (tools/gpu/run_gpu_checklist.sh OUT quick): one JSON file,
rewritten after every part, so a window cut short keeps what each finished part measured.

    quick_summary.py init SUMMARY --budget 480 --mode cuda --settings JSON [--env ENV_JSON]
    quick_summary.py part SUMMARY NAME STATUS ELAPSED_S LIMIT_S REASON [FILE ...]
    quick_summary.py best-batch ENGINE_JSON DEFAULT
    quick_summary.py table SUMMARY

``part`` reads the part's result files (a JUnit XML, a bench_engine or bench_stream JSON) for
a one-line headline, stores it with the status and timing, and prints the line.
Standard library only: it runs before and beside everything else on the GPU machine.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ANCHOR_X_REALTIME = 10_000  # engine throughput the GPU path is measured against (docs/engine.md)


def load(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def save(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def load_average() -> float | None:
    """The 1-minute load average: on a shared machine, what else ran beside the part."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def tests_headline(xml_path: Path, log_path: Path | None) -> str:
    if xml_path.is_file():
        root = ET.parse(xml_path).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        if suite is not None:
            total = int(suite.get("tests", 0))
            failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skipped = int(suite.get("skipped", 0))
            reasons = sorted(
                {re.split(r": run | \(", s.get("message") or "")[0] for s in suite.iter("skipped")} - {""}
            )
            worst = [c.get("name", "") for c in suite.iter("testcase") if c.find("failure") is not None]
            text = f"{total - failed - skipped} passed, {failed} failed, {skipped} skipped"
            if worst:
                text += f" (failed: {', '.join(worst)})"
            if reasons:
                text += f" (skipped: {'; '.join(reasons)})"
            return text
    # No XML (the run was cut short): count the verbose lines pytest printed as it went.
    if log_path is not None and log_path.is_file():
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if "tests/gpu/" in ln]
        counts = {w: sum(f" {w}" in ln for ln in lines) for w in ("PASSED", "FAILED", "SKIPPED", "ERROR")}
        return "cut short; so far " + ", ".join(f"{n} {w.lower()}" for w, n in counts.items())
    return "no result"


def engine_headline(path: Path) -> str:
    if not path.is_file():
        return "no result"
    rows = load(path)["rows"]
    parts = []
    for row in rows:
        label = row["precision"].split(" ")[0]
        speed = f"{row['x_realtime']:,.0f}x" if "x_realtime" in row else row.get("error", "?")
        parts.append(f"{label} b{row['batch']} {speed}")
    best = max((r["x_realtime"] for r in rows if "x_realtime" in r), default=None)
    text = ", ".join(parts) or "no rows"
    if best is not None:
        share = best / ANCHOR_X_REALTIME
        text += f"; best {best:,.0f}x RT = {share:.3f} of the {ANCHOR_X_REALTIME:,}x anchor"
    return text


def stream_headline(path: Path) -> str:
    if not path.is_file():
        return "no result (a run writes its row when it ends)"
    texts = []
    for r in load(path)["rows"]:
        e, lag = r["endpoint_to_final_ms"], r["event_lag_ms"]["all"]
        texts.append(
            f"N={r['sessions']}: {r['utterances']} finals, {r['missing_finals']} missing,"
            f" {r['refused_sessions']} refused, endpoint->final p50/p95 {e['50']}/{e['95']} ms,"
            f" event lag p95 {lag['95']} ms, mean batch {r['batch_size_mean']},"
            f" {r['audio_s_per_wall_s']} audio s/s, server CPU {r['server_cpu_percent']}%,"
            f" {'FELL BEHIND' if r['fell_behind'] else 'kept up'}"
            f"{', errors ' + ','.join(r['errors']) if r['errors'] else ''}"
        )
    return "; ".join(texts) or "no rows"


def headline(name: str, files: list[Path]) -> str:
    if not files:
        return ""
    if name == "tests":
        return tests_headline(files[0], files[1] if len(files) > 1 else None)
    if name.startswith("engine"):
        return engine_headline(files[0])
    if name.startswith("streams"):
        return stream_headline(files[0])
    return ""


def cmd_init(args: argparse.Namespace) -> None:
    env = load(args.env) if args.env and args.env.is_file() else None
    save(
        args.summary,
        {
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "budget_s": args.budget,
            "mode": args.mode,
            "settings": json.loads(args.settings),
            "env": env,
            "parts": [],
        },
    )


def cmd_part(args: argparse.Namespace) -> None:
    data = load(args.summary)
    files = [Path(f) for f in args.files]
    line = headline(args.name, files)
    data["parts"].append(
        {
            "part": args.name,
            "status": args.status,
            "elapsed_s": args.elapsed,
            "limit_s": args.limit,
            "reason": args.reason or None,
            "headline": line or None,
            "files": [f.name for f in files if f.is_file()],
            "loadavg_1m_at_end": load_average(),
        }
    )
    data["elapsed_s"] = round(sum(p["elapsed_s"] for p in data["parts"]), 1)
    save(args.summary, data)
    reason = f" ({args.reason})" if args.reason else ""
    print(f"QUICK {args.name}: {args.status}{reason}, {args.elapsed} s" + (f" | {line}" if line else ""))


def cmd_best_batch(args: argparse.Namespace) -> None:
    best = args.default
    if args.engine.is_file():
        rows = [r for r in load(args.engine)["rows"] if "x_realtime" in r]
        if rows:
            best = max(rows, key=lambda r: r["x_realtime"])["batch"]
    print(best)


def cmd_table(args: argparse.Namespace) -> None:
    data = load(args.summary)
    print(f"\nquick: mode {data['mode']}, budget {data['budget_s']} s")
    print("| part | status | seconds | headline |\n|---|---|---|---|")
    for p in data["parts"]:
        status = p["status"] + (f" ({p['reason']})" if p["reason"] else "")
        print(f"| {p['part']} | {status} | {p['elapsed_s']} | {p['headline'] or ''} |")
    print(f"| total | | {data.get('elapsed_s', 0)} | |")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init")
    init.add_argument("summary", type=Path)
    init.add_argument("--budget", type=int, required=True)
    init.add_argument("--mode", required=True)
    init.add_argument("--settings", default="{}")
    init.add_argument("--env", type=Path, default=None)
    init.set_defaults(run=cmd_init)
    part = sub.add_parser("part")
    part.add_argument("summary", type=Path)
    part.add_argument("name")
    part.add_argument("status")
    part.add_argument("elapsed", type=float)
    part.add_argument("limit", type=int)
    part.add_argument("reason")
    part.add_argument("files", nargs="*")
    part.set_defaults(run=cmd_part)
    best = sub.add_parser("best-batch")
    best.add_argument("engine", type=Path)
    best.add_argument("default", type=int)
    best.set_defaults(run=cmd_best_batch)
    table = sub.add_parser("table")
    table.add_argument("summary", type=Path)
    table.set_defaults(run=cmd_table)
    args = parser.parse_args()
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
