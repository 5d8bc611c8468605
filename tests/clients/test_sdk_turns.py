"""The SDK with semantic turns, against a scripted server that speaks the contract
(tests/clients/turn_server.py): ``turn_detection`` goes out in the config message, and the turn's
events come back typed, in order, the final with the turn model's confidence."""

from __future__ import annotations

import emostt_client as ec

from tests.clients.turn_server import (
    EAGER_CONFIDENCES,
    EAGER_TEXT,
    END_OF_TURN_CONFIDENCE,
    FINAL_TEXT,
    TURN_TYPES,
    turn_server,
)

SILENCE = b"\x00\x00" * 1600  # 100 ms at 16 kHz: the server plays its turn at the first audio


async def test_the_sdk_sends_turn_detection_and_types_the_turns_events() -> None:
    async with turn_server() as server:
        turns = ec.TurnDetection("semantic", eagerness="high")
        async with ec.connect(
            server.url, "sdk-turns", config={"language": "en"}, turn_detection=turns
        ) as stream:
            config = await server.wait_for_config()
            await stream.send(SILENCE)
            events: list[ec.Event] = []
            while not events or not isinstance(events[-1], ec.Final):
                events.append(await stream.recv(timeout=10))
            await stream.configure(turn_detection={"type": "silence"})  # a dict works too
    assert config == {
        "type": "config",
        "language": "en",
        "turn_detection": {"type": "semantic", "eagerness": "high"},
    }
    assert server.configs[1] == {"type": "config", "turn_detection": {"type": "silence"}}
    turn = [e for e in events if not isinstance(e, (ec.Ready, ec.ConfigUpdated))]
    assert [e.raw["type"] for e in turn if not isinstance(e, ec.Reconnected)] == TURN_TYPES
    eager = [e for e in turn if isinstance(e, ec.EagerEndOfTurn)]
    assert [(e.utterance_id, e.text, e.confidence) for e in eager] == [
        ("u1", EAGER_TEXT, EAGER_CONFIDENCES[0]),
        ("u1", FINAL_TEXT, EAGER_CONFIDENCES[1]),
    ]
    assert [e.utterance_id for e in turn if isinstance(e, ec.TurnResumed)] == ["u1"]
    final = turn[-1]
    assert isinstance(final, ec.Final) and final.text == FINAL_TEXT
    assert final.end_of_turn_confidence == END_OF_TURN_CONFIDENCE and final.end_reason == "turn_model"
    # The effective config the server answered with, as the SDK reports it.
    [answer] = [e for e in events if isinstance(e, ec.ConfigUpdated)]
    assert answer.config["turn_detection"] == {"type": "semantic", "eagerness": "high"}
