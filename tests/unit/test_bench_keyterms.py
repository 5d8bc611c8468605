"""tools/bench_keyterms.py's scoring: unrelated keyterms, keyterm recall, the stream rounds' summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import bench_keyterms


def test_unrelated_terms_share_no_word_or_character_with_what_was_said() -> None:
    english = bench_keyterms.unrelated_terms("turn on the lights")
    assert "turn off the lights" not in english and "turn" not in english and "the" not in english
    assert "off" in english and "good night" in english and "你好" in english
    chinese = bench_keyterms.unrelated_terms("早上好")
    assert "你好" not in chinese and "早晨" not in chinese  # a character in common
    assert "再见" in chinese and "good morning" in chinese
    assert len(english) >= bench_keyterms.UNRELATED and len(chinese) >= bench_keyterms.UNRELATED


def test_recall_counts_the_clips_own_terms_written_exactly() -> None:
    assert bench_keyterms.recall("leave me alone", "leave me alone") == (3, 3)
    assert bench_keyterms.recall("leave me alone", "leave me") == (3, 2)
    assert bench_keyterms.recall("leave me alone", "Leave me a loan") == (3, 2)
    assert bench_keyterms.recall("pick it up", "pick up it up") == (3, 3)
    assert bench_keyterms.recall("go go", "go") == (2, 1)  # each spoken word once
    # A CJK phrase is one term, found inside the text whatever its spacing.
    assert bench_keyterms.recall("早上好", "早上好") == (1, 1)
    assert bench_keyterms.recall("早上好", "早上") == (1, 0)
    assert bench_keyterms.recall("이리 와", "이리와") == (1, 1)


def stream_round(mode: str, none_s: list[float] | None, keyed_s: list[float] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"mode": mode}
    for group, latencies in (("none", none_s), ("keyterms", keyed_s)):
        if latencies is not None:
            row[group] = {
                "missing_finals": 0,
                "refused": 0,
                "finals_with_matches": len(latencies) if group == "keyterms" else 0,
                "endpoint_to_final_s": list(latencies),
                "speech_end_to_final_s": [x + 0.4 for x in latencies],
                "server_latency_s": [0.0] * len(latencies),
            }
    return row


def test_stream_rounds_pool_by_mode_and_group_and_judge_what_sessions_pay() -> None:
    rng = np.random.default_rng(0)
    base = list(rng.uniform(0.005, 0.015, 200))
    same = list(rng.uniform(0.005, 0.015, 200))
    slower = [x + 0.02 for x in same]
    rounds = [
        stream_round("none", base[:100], None),
        stream_round("keyterms", None, slower[:100]),
        stream_round("mixed", same[:50], slower[:50]),
        stream_round("none", base[100:], None),
        stream_round("keyterms", None, slower[100:]),
        stream_round("mixed", same[50:100], slower[50:100]),
    ]
    summary = bench_keyterms.summarize_streams(rounds)
    assert summary["none/none"]["rounds"] == 2 and summary["none/none"]["endpoint_to_final_ms"]["n"] == 200
    assert summary["mixed/keyterms"]["finals_with_matches"] == 100
    assert rounds[0]["none"]["endpoint_to_final_ms"]["n"] == 100  # each round keeps its percentiles
    beside = summary["without_keyterms_beside_keyed"]["endpoint_to_final_ms_p50"]
    assert not beside["measurable"] and beside["ci95"][0] <= beside["ms"] <= beside["ci95"][1]
    keyed = summary["with_keyterms"]["speech_end_to_final_ms_p95"]
    assert keyed["measurable"] and 15 < keyed["ms"] < 25
    assert summary["met"] is True
