"""The outbound schema and docs/protocol.md agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from emostt.inference.engine import Distribution, TranscriptionResult
from emostt.streaming import events

PROTOCOL = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


@pytest.mark.parametrize("code", sorted(events.ERROR_CODES))
def test_every_error_code_is_documented(code: str) -> None:
    assert f"`{code}`" in PROTOCOL


def test_undocumented_codes_cannot_be_sent() -> None:
    with pytest.raises(AssertionError, match="undocumented"):
        events.error("boom", "x", False)


def test_final_event_fields_are_documented() -> None:
    dist = Distribution("x", {"x": 1.0})
    final = events.final(
        "u1",
        TranscriptionResult("hi", dist, dist, dist, 0.9, 1000, raw_text="<|en|>hi"),
        gate_reasons=[],
        degraded=False,
        end_reason="silence",
        audio_start_ms=0,
        audio_end_ms=1000,
        latency_ms=12.34,
    )
    assert "raw_text" not in final and final["latency_ms"] == 12.3
    for field in final:
        assert f"`{field}" in PROTOCOL, field
