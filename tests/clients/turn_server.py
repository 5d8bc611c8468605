"""A real WebSocket server that speaks the turn-detection part of emostt's protocol
(docs/protocol.md, "Turns") from a script, for the clients' tests with their real frameworks: it
records each ``config`` message a client sends (and answers it, as the server does), and at the
first audio it receives plays one semantic turn:

    speech_started u1, partial, eager_end_of_turn (0.42), turn_resumed, partial,
    eager_end_of_turn (0.61), final (end_of_turn_confidence 0.93, end_reason "turn_model")

The session then stays open until the client sends ``close`` (answered with 1000).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from tests.clients.closing_server import _subprotocol

EAGER_TEXT = "turn left"
FINAL_TEXT = "turn left please"
EAGER_CONFIDENCES = (0.42, 0.61)
END_OF_TURN_CONFIDENCE = 0.93
SCORED = {"label": "neutral", "scores": {"neutral": 1.0}}

# The events of the turn, in order (session_id and seq are added as they are sent).
TURN: list[dict[str, Any]] = [
    {"type": "speech_started", "utterance_id": "u1", "audio_start_ms": 100},
    {"type": "partial", "utterance_id": "u1", "text": EAGER_TEXT, "audio_start_ms": 100, "audio_end_ms": 700},
    {
        "type": "eager_end_of_turn",
        "utterance_id": "u1",
        "text": EAGER_TEXT,
        "confidence": EAGER_CONFIDENCES[0],
    },
    {"type": "turn_resumed", "utterance_id": "u1"},
    {
        "type": "partial",
        "utterance_id": "u1",
        "text": FINAL_TEXT,
        "audio_start_ms": 100,
        "audio_end_ms": 1300,
    },
    {
        "type": "eager_end_of_turn",
        "utterance_id": "u1",
        "text": FINAL_TEXT,
        "confidence": EAGER_CONFIDENCES[1],
    },
    {
        "type": "final",
        "utterance_id": "u1",
        "text": FINAL_TEXT,
        "confidence": 0.9,
        "language": {"label": "en", "scores": {"en": 1.0}},
        "emotion": SCORED,
        "event": {"label": "speech", "scores": {"speech": 1.0}},
        "gated": False,
        "gate_reasons": [],
        "degraded": False,
        "end_reason": "turn_model",
        "duration_ms": 1200,
        "audio_start_ms": 100,
        "audio_end_ms": 1300,
        "latency_ms": 12.0,
        "end_of_turn_confidence": END_OF_TURN_CONFIDENCE,
    },
]
TURN_TYPES = [event["type"] for event in TURN]


class TurnServer:
    """``url``: the base URL the clients are given; ``configs``: every ``config`` message received."""

    def __init__(self, gap_s: float = 0.05) -> None:
        self.gap_s = gap_s  # between the turn's events, so a framework's queues keep their order
        self.configs: list[dict[str, Any]] = []
        self.turns_played = 0
        self.client_closes = 0
        self.url = ""

    async def wait_for_config(self, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.configs:
            assert time.monotonic() < deadline, "no config message"
            await asyncio.sleep(0.01)
        return self.configs[0]

    async def _session(self, ws: ServerConnection) -> None:
        seq = 0
        config: dict[str, Any] = {"turn_detection": {"type": "silence"}}
        player: asyncio.Task[None] | None = None

        async def send(event: dict[str, Any]) -> None:
            nonlocal seq
            seq += 1
            await ws.send(json.dumps({**event, "session_id": "s1", "seq": seq}))

        async def play() -> None:
            for event in TURN:
                await send(event)
                await asyncio.sleep(self.gap_s)
            self.turns_played += 1

        ready = {
            "device_id": "device",
            "sample_rate": 16000,
            "model": {"name": "turn-server", "revision": "0"},
        }
        await send({"type": "ready", **ready, "config": config})
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    if player is None:
                        player = asyncio.create_task(play())
                    continue
                body = json.loads(message)
                if body.get("type") == "config":
                    self.configs.append(body)
                    config.update({k: v for k, v in body.items() if k != "type"})
                    await send({"type": "config", "config": config})
                elif body.get("type") == "close":
                    self.client_closes += 1
                    if player is not None:
                        await player  # the turn's events come before the close, as finals do
                    await ws.close(1000)
                    return
        finally:
            if player is not None and not player.done():
                player.cancel()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[TurnServer]:
        async with serve(self._session, "127.0.0.1", 0, select_subprotocol=_subprotocol) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}"
            yield self


@asynccontextmanager
async def turn_server(gap_s: float = 0.05) -> AsyncIterator[TurnServer]:
    async with TurnServer(gap_s).running() as server:
        yield server
