"""The LiveKit plugin with semantic turns, through the real livekit-agents ``SpeechStream`` against a
scripted server that speaks the contract (tests/clients/turn_server.py): ``turn_detection`` goes
out in the config message; each ``eager_end_of_turn`` is a PREFLIGHT_TRANSCRIPT (what LiveKit's
preemptive generation starts on), ``turn_resumed`` leaves the span open, and the final is a
FINAL_TRANSCRIPT followed by END_OF_SPEECH (the turn's end), the confidence in their metadata."""

from __future__ import annotations

import asyncio

import pytest
from livekit.agents import APIConnectOptions, stt, utils
from livekit.plugins import emostt
from livekit.rtc import AudioFrame

from tests.clients.turn_server import (
    EAGER_CONFIDENCES,
    EAGER_TEXT,
    END_OF_TURN_CONFIDENCE,
    FINAL_TEXT,
    turn_server,
)

EV = stt.SpeechEventType
OPTIONS = APIConnectOptions(max_retry=0, retry_interval=0.05, timeout=5.0)
SILENCE = AudioFrame(b"\x00\x00" * 1600, 16000, 1, 1600)  # 100 ms: the server plays its turn


async def test_eager_end_of_turn_is_a_preflight_and_the_final_ends_the_turn() -> None:
    async with turn_server() as server, utils.http_context.open():
        plugin = emostt.STT(
            url=server.url, device_id="lk-turns", turn_detection={"type": "semantic", "eagerness": "auto"}
        )
        stream = plugin.stream(conn_options=OPTIONS)
        stream.push_frame(SILENCE)
        events: list[stt.SpeechEvent] = []
        async with asyncio.timeout(10):
            async for event in stream:
                events.append(event)
                if event.type == EV.END_OF_SPEECH:
                    break
        stream.end_input()
        await stream.aclose()
    config = server.configs[0]
    assert config["turn_detection"] == {"type": "semantic", "eagerness": "auto"}
    kinds = [e.type for e in events if e.type != EV.RECOGNITION_USAGE]
    assert kinds == [
        EV.START_OF_SPEECH,
        EV.INTERIM_TRANSCRIPT,
        EV.PREFLIGHT_TRANSCRIPT,
        EV.INTERIM_TRANSCRIPT,  # the turn resumed: this interim moves past the preflight's text
        EV.PREFLIGHT_TRANSCRIPT,
        EV.FINAL_TRANSCRIPT,
        EV.END_OF_SPEECH,  # once, at the turn's end: not at the pause after the first preflight
    ]
    preflights = [e.alternatives[0] for e in events if e.type == EV.PREFLIGHT_TRANSCRIPT]
    assert [p.text for p in preflights] == [EAGER_TEXT, FINAL_TEXT]
    assert [p.metadata and p.metadata["end_of_turn_confidence"] for p in preflights] == list(
        EAGER_CONFIDENCES
    )
    assert all(p.end_time > p.start_time for p in preflights)  # the partial's times
    [final] = [e for e in events if e.type == EV.FINAL_TRANSCRIPT]
    data = final.alternatives[0]
    assert data.text == FINAL_TEXT and data.metadata is not None
    assert data.metadata["end_of_turn_confidence"] == END_OF_TURN_CONFIDENCE
    assert data.metadata["end_reason"] == "turn_model"
    end = events[-1]
    assert end.request_id == final.request_id and end.request_id.endswith(":u1")
    assert end.speech_end_time is not None and end.speech_end_time > stream.start_time


async def test_turn_detection_is_checked_and_kept_out_of_session_config() -> None:
    with pytest.raises(ValueError, match="eagerness"):
        emostt.STT(url="ws://localhost:1", turn_detection={"type": "semantic", "eagerness": "soon"})
    with pytest.raises(ValueError, match="turn_detection="):
        emostt.STT(url="ws://localhost:1", session_config={"turn_detection": {"type": "semantic"}})
    plugin = emostt.STT(url="ws://localhost:1")
    assert "turn_detection" not in plugin._opts.config_message()  # the server's default
    plugin.update_options(turn_detection={"type": "semantic"})
    assert plugin._opts.config_message()["turn_detection"] == {"type": "semantic"}
