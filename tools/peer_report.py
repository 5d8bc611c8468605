"""tools/bench_peers.py's report: text agreement, the must-shows, the markdown table; and the
machine facts it records (busy CPU, revision)."""

from __future__ import annotations

import contextlib
import hashlib
import statistics
import subprocess
from itertools import combinations
from pathlib import Path
from typing import Any

PEERS = ("sherpa-onnx", "funasr-onnx")
CELLS = ("2s_b1", "2s_b4", "2s_b16", "10s_b1", "10s_b4", "10s_b16")
GIB = 1024.0
# The must-shows (issue 24): throughput >= the best peer's in every cell and >= 1.1x at batch
# 16; a single 2 s call's median <= sherpa-onnx's; emostt serve: peak RSS <= 1 GiB, steady
# RSS <= 1.2x sherpa-onnx's, start to ready <= 5 s.
BATCH16_RATIO = 1.1
STEADY_RATIO = 1.2
READY_S = 5.0


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (every core, every process: /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / 100  # USER_HZ


def git_revision() -> str:
    """HEAD, and a digest of the service's files that differ from it."""

    def git(*words: str) -> str:
        return subprocess.run(["git", *words], capture_output=True, text=True, check=False).stdout

    head = git("rev-parse", "--short", "HEAD").strip()
    changed = git("ls-files", "-m", "-o", "--exclude-standard", "service").split()
    if not changed:
        return str(head)
    digest = hashlib.sha1()
    for name in sorted(changed):
        with contextlib.suppress(OSError):
            digest.update(name.encode() + Path(name).read_bytes())
    return f"{head} + {len(changed)} changed service files (sha1 {digest.hexdigest()[:12]})"


def text_agreement(texts: dict[str, dict[int, list[str]]]) -> dict[str, dict[str, Any]]:
    """For each pair of engines: how many clips (of each length) decode to the same text."""
    out = {}
    for a, b in combinations(sorted(texts), 2):
        same = {f"{s}s": sum(x == y for x, y in zip(texts[a][s], texts[b][s], strict=True)) for s in texts[a]}
        out[f"{a} = {b}"] = {**same, "of": len(texts[a][next(iter(texts[a]))])}
    return out


def best_peer(engines: dict[str, Any], cell: str) -> tuple[str, float]:
    peers = [(p, engines[p]["cells"][cell]["x_real_time"]) for p in PEERS if p in engines]
    return max(peers, key=lambda item: item[1])


def verdicts(report: dict[str, Any]) -> dict[str, Any]:
    engines = report["engines"]
    out: dict[str, Any] = {}
    if "emostt" not in engines or not any(p in engines for p in PEERS):
        return out
    ratios = {}
    for cell in CELLS:
        peer, peer_x = best_peer(engines, cell)
        ratios[cell] = {
            "best_peer": peer,
            "ratio": round(engines["emostt"]["cells"][cell]["x_real_time"] / peer_x, 2),
        }
    out["throughput_every_cell_at_least_best_peer"] = {
        "met": all(r["ratio"] >= 1.0 for r in ratios.values()),
        "ratios": ratios,
    }
    out["throughput_batch16_at_least_1.1x"] = {
        "met": all(ratios[c]["ratio"] >= BATCH16_RATIO for c in ("2s_b16", "10s_b16")),
        "ratios": {c: ratios[c]["ratio"] for c in ("2s_b16", "10s_b16")},
    }
    if "sherpa-onnx" in engines:
        ours = engines["emostt"]["latency_2s_ms"]["median"]
        theirs = engines["sherpa-onnx"]["latency_2s_ms"]["median"]
        out["latency_2s_median_at_most_sherpa"] = {
            "met": ours <= theirs,
            "emostt_ms": ours,
            "sherpa_ms": theirs,
        }
    serve = report.get("serve") or []
    if serve:
        peak = max(run["peak_rss_mib"] for run in serve)
        steady = max(run["steady_rss_mib"] for run in serve)
        ready = statistics.median(run["start_to_ready_s"] for run in serve)
        out["serve_peak_rss_at_most_1_gib"] = {"met": peak <= GIB, "peak_rss_mib": peak}
        if "sherpa-onnx" in engines:
            sherpa = engines["sherpa-onnx"]["steady_rss_mib"]
            out["serve_steady_rss_at_most_1.2x_sherpa"] = {
                "met": steady <= STEADY_RATIO * sherpa,
                "serve_steady_rss_mib": steady,
                "sherpa_steady_rss_mib": sherpa,
                "ratio": round(steady / sherpa, 2),
            }
        out["serve_start_to_ready_at_most_5_s"] = {
            "met": ready <= READY_S,
            "median_s": ready,
            "runs_s": [run["start_to_ready_s"] for run in serve],
        }
    return out


def markdown(report: dict[str, Any]) -> str:
    engines = report["engines"]
    head = "| engine | " + " | ".join(c.replace("s_b", " s, batch ") for c in CELLS)
    head += " | 2 s call, median (p90) ms | peak RSS MiB | RSS after 16 x 10 s MiB |"
    lines = [head, "|" + "---|" * (len(CELLS) + 4)]
    for name, e in engines.items():
        cells = " | ".join(f"{e['cells'][c]['x_real_time']:.1f}" for c in CELLS)
        lat = e["latency_2s_ms"]
        lines.append(
            f"| {name} | {cells} | {lat['median']:.0f} ({lat['p90']:.0f}) | {e['peak_rss_mib']:.0f} "
            f"| {e['steady_rss_mib']:.0f} |"
        )
    throughput = report.get("must_show", {}).get("throughput_every_cell_at_least_best_peer")
    if throughput:
        ratios = " | ".join(f"{throughput['ratios'][c]['ratio']:.2f}" for c in CELLS)
        lines.append(f"| emostt / best peer | {ratios} | | | |")
    for run in report.get("serve", []):
        lines.append("")
        lines.append(
            f"`emostt serve`: ready in {run['start_to_ready_s']} s, peak RSS {run['peak_rss_mib']:.0f} MiB, "
            f"{run['steady_rss_mib']:.0f} MiB after 16 x 10 s over REST ({run['run_16x10s_wall_s']} s)"
        )
    lines.append("")
    for name, verdict in report.get("must_show", {}).items():
        lines.append(f"- {name}: {'met' if verdict['met'] else 'NOT met'} {verdict}")
    return "\n".join(lines)
