"""Session events to OpenAI Realtime events: append-only deltas, item order, the event mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from emostt.transport.openai_realtime import CLIENT_EVENTS
from emostt.transport.realtime_config import RealtimeRequestError, RealtimeView
from emostt.transport.realtime_events import Translator, stable_prefix
from emostt.vocabulary.session_config import SessionConfig

CONFIG = SessionConfig(sample_rate=24_000).model_dump()
SCORES = {"label": "neutral", "scores": {"neutral": 0.8, "happy": 0.2}}


def translator(manual: bool = False, beta: bool = False) -> Translator:
    return Translator("s1", RealtimeView(id="sess_s1", beta=beta, manual_turns=manual))


def final(utterance_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "final",
        "utterance_id": utterance_id,
        "text": text,
        "confidence": 0.9,
        "language": {"label": "en", "scores": {"en": 1.0}},
        "emotion": SCORES,
        "event": {"label": "speech", "scores": {"speech": 1.0}},
        "duration_ms": 1200,
        "gated": False,
        "gate_reasons": [],
        "degraded": False,
        "end_reason": "silence",
        "audio_start_ms": 0,
        "audio_end_ms": 1200,
        "latency_ms": 3.0,
        "mood": SCORES,
        "session_id": "s1",
        "seq": 9,
    }


def run(t: Translator, utterance_id: str, partials: list[str], text: str) -> list[dict[str, Any]]:
    out = t.translate({"type": "speech_started", "utterance_id": utterance_id, "audio_start_ms": 0})
    for partial in partials:
        out += t.translate({"type": "partial", "utterance_id": utterance_id, "text": partial})
    out += t.translate({"type": "speech_ended", "utterance_id": utterance_id, "audio_end_ms": 1200})
    return out + t.translate(final(utterance_id, text))


def deltas(events: list[dict[str, Any]], item_id: str | None = None) -> list[str]:
    return [
        e["delta"]
        for e in events
        if e["type"].endswith(".delta") and (item_id is None or e["item_id"] == item_id)
    ]


def test_stable_prefix_waits_for_agreement_and_a_word_boundary() -> None:
    assert stable_prefix("turn the", "turn off lights") == "turn"
    assert stable_prefix("turn off lights", "turn off the lights") == "turn off"
    assert stable_prefix("turn lefts", "turn left now") == "turn"  # "left" vs "lefts": not agreed
    assert stable_prefix("no", "no") == ""  # the newest word is never stable
    assert stable_prefix("Turn left.", "Turn left. What") == "Turn left"  # a final period is a guess
    assert stable_prefix("I don", "I don't know") == "I"  # words are not split at apostrophes
    assert stable_prefix("打开门", "打开门吧") == "打开门"  # unspaced scripts: per character


@given(st.text("ab .,'好", max_size=12), st.text("ab .,'好", max_size=12))
def test_stable_prefix_is_agreed_text_ending_a_word(previous: str, current: str) -> None:
    stable = stable_prefix(previous, current)
    assert current.startswith(stable) and previous.startswith(stable)
    assert len(stable) < len(current) or stable == ""
    assert not stable[-1:].isspace()


def test_deltas_add_up_to_the_final_when_it_extends_them() -> None:
    t = translator()
    events = run(t, "u1", ["no", "turn the", "turn off lights", "turn off the lights"], "turn off the lights")
    assert deltas(events) == ["turn", " off", " the lights"]
    assert "".join(deltas(events)) == events[-1]["transcript"]
    kinds = [e["type"].rsplit(".", 1)[-1] for e in events]
    assert kinds == ["speech_started", "delta", "delta", "speech_stopped", "committed", "delta", "completed"]


def test_a_final_that_revises_sent_text_is_authoritative() -> None:
    t = translator()
    events = run(t, "u1", ["turn left and", "turn left and stop"], "turn right")
    # Nothing after it: the final cannot be expressed as a delta.
    assert deltas(events) == ["turn left and"]
    assert events[-1]["transcript"] == "turn right"


@given(st.lists(st.sampled_from(["turn", "turn left", "turn left now", "tur", "turn lift", ""]), max_size=6))
def test_deltas_never_retract(partials: list[str]) -> None:
    t = translator()
    sent = ""
    for event in run(t, "u1", partials, "turn left now please"):
        if event["type"].endswith(".delta"):
            assert event["delta"]
            sent += event["delta"]
    assert "turn left now please".startswith(sent) or sent == ""


def test_completed_carries_openai_fields_and_ours() -> None:
    events = run(translator(), "u1", [], "turn left")
    completed = events[-1]
    assert completed["type"] == "conversation.item.input_audio_transcription.completed"
    assert completed["item_id"] == "item_s1_u1" and completed["content_index"] == 0
    assert completed["usage"] == {"type": "duration", "seconds": 1.2}
    assert completed["languages"] == [{"code": "en"}]
    assert completed["emotion"] == SCORES and completed["mood"] == SCORES and completed["confidence"] == 0.9
    assert not {"text", "utterance_id", "seq", "session_id"} & set(completed)
    assert len({e["event_id"] for e in events}) == len(events)


def test_manual_turns_announce_no_speech_and_chain_items() -> None:
    t = translator(manual=True)
    first = run(t, "u1", [], "turn left")
    second = run(t, "u2", [], "go forward")
    assert [e["type"] for e in first] == [
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert first[0]["previous_item_id"] is None and second[0]["previous_item_id"] == "item_s1_u1"


def test_deltas_of_a_later_item_wait_for_the_earlier_one_to_complete() -> None:
    t = translator()
    out = t.translate({"type": "speech_started", "utterance_id": "u1", "audio_start_ms": 0})
    out += t.translate({"type": "speech_ended", "utterance_id": "u1", "audio_end_ms": 900})
    out += t.translate({"type": "speech_started", "utterance_id": "u2", "audio_start_ms": 1500})
    for text in ("go", "go forward", "go forward now"):
        out += t.translate({"type": "partial", "utterance_id": "u2", "text": text})
    assert deltas(out) == []  # u1 has not completed: clients keep one running interim text
    out = t.translate(final("u1", "turn left"))
    assert [(e["type"].rsplit(".", 1)[-1], e["item_id"]) for e in out] == [
        ("delta", "item_s1_u1"),
        ("completed", "item_s1_u1"),
        ("delta", "item_s1_u2"),
    ]
    assert out[-1]["delta"] == "go forward"


def test_failed_utterance_and_session_errors() -> None:
    t = translator()
    t.translate({"type": "speech_started", "utterance_id": "u1", "audio_start_ms": 0})
    failed = t.translate(
        {"type": "error", "code": "out_of_memory", "message": "m", "retryable": True, "utterance_id": "u1"}
    )[0]
    assert failed["type"] == "conversation.item.input_audio_transcription.failed"
    assert failed["item_id"] == "item_s1_u1" and failed["content_index"] == 0
    assert failed["error"]["type"] == "server_error" and failed["error"]["code"] == "out_of_memory"
    refused = t.translate({"type": "error", "code": "unauthorized", "message": "bad key", "retryable": False})
    assert refused[0]["error"] | {} == {
        "type": "invalid_request_error",
        "code": "invalid_api_key",
        "message": "bad key",
        "param": None,
        "event_id": None,
        "retryable": False,
    }
    request = RealtimeRequestError("nope", param="session.type", event_id="evt_1")
    assert t.request_error(request)["error"]["event_id"] == "evt_1"


def test_cleared_closes_an_announced_turn() -> None:
    t = translator()
    t.translate({"type": "speech_started", "utterance_id": "u1", "audio_start_ms": 0})
    assert [e["type"] for e in t.cleared("u1", 640)] == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.cleared",
    ]
    assert [e["type"] for e in t.cleared(None, 700)] == ["input_audio_buffer.cleared"]


def test_session_events_mirror_the_shape_in_use() -> None:
    ready = {"type": "ready", "device_id": "robot-1", "model": {"name": "demo"}, "config": CONFIG}
    created = translator().translate(ready)[0]
    assert created["type"] == "session.created"
    assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24_000}
    assert created["session"]["emostt"]["device_id"] == "robot-1"
    beta = translator(beta=True).translate({"type": "config", "config": CONFIG})[0]
    assert beta["type"] == "transcription_session.updated"
    assert beta["session"]["input_audio_format"] == "pcm16"
    assert beta["session"]["turn_detection"]["type"] == "server_vad"
    assert translator().translate({"type": "emotion_changed", "utterance_id": "u1"}) == []


def test_the_docs_name_every_event_and_error_code() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "openai.md").read_text()
    t = translator()
    events = [
        *t.translate({"type": "ready", "device_id": "d", "model": None, "config": CONFIG}),
        *t.translate({"type": "config", "config": CONFIG}),
        *run(t, "u1", ["turn left", "turn left now"], "turn left now"),
        *t.translate({"type": "speech_started", "utterance_id": "u2", "audio_start_ms": 0}),
        *t.translate(
            {
                "type": "error",
                "code": "out_of_memory",
                "message": "m",
                "retryable": True,
                "utterance_id": "u2",
            }
        ),
        *t.cleared(None, 0),
        t.request_error(RealtimeRequestError("x", openai_code="input_audio_buffer_commit_empty")),
    ]
    for kind in {e["type"] for e in events}:
        assert f"`{kind}`" in docs, kind
    for code in ("invalid_json", "invalid_value", "input_audio_buffer_commit_empty", "invalid_api_key"):
        assert f"`{code}`" in docs, code
    for name in CLIENT_EVENTS:
        assert f"`{name}`" in docs or f"`.{name.rsplit('.', 1)[1]}`" in docs, name
