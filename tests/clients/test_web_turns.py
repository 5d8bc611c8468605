"""The web client (clients/web/emostt.js, run in Node) with semantic turns, against a scripted
server that speaks the contract (tests/clients/turn_server.py): ``turnDetection`` goes out in the
config message (merged into ``config``), and ``eager_end_of_turn``, ``turn_resumed`` and the final
with its ``end_of_turn_confidence`` are dispatched as the client's events."""

from __future__ import annotations

import asyncio
import json

from tests.clients.test_web_close_codes import node
from tests.clients.turn_server import (
    EAGER_CONFIDENCES,
    END_OF_TURN_CONFIDENCE,
    FINAL_TEXT,
    TURN_TYPES,
    turn_server,
)


async def test_the_web_client_sends_turn_detection_and_dispatches_the_turns_events() -> None:
    async with turn_server() as server:
        process = await asyncio.create_subprocess_exec(
            *node("turns", server.url), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, (out, err)
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert server.configs == [
        {"type": "config", "language": "en", "turn_detection": {"type": "semantic", "eagerness": "low"}}
    ]
    assert server.client_closes == 1  # stop() after the final
    types = [e["type"] for e in events]
    assert types[:2] == ["ready", "config"] and types[-1] == "closed"
    assert types[2:-1] == TURN_TYPES
    eager = [e["detail"] for e in events if e["type"] == "eager_end_of_turn"]
    assert [e["confidence"] for e in eager] == list(EAGER_CONFIDENCES)
    [final] = [e["detail"] for e in events if e["type"] == "final"]
    assert final["text"] == FINAL_TEXT and final["end_of_turn_confidence"] == END_OF_TURN_CONFIDENCE
    assert events[-1]["detail"]["code"] == 1000
