"""Clients that vanish without a close frame, in every state of every protocol: the session ends,
its utterances end (counted), and its slot, gauges and limits are released within the protocol
ping timeout, so a new client is admitted even at the connection limit.

A client "vanishes" three ways: TCP RST (the socket closed with SO_LINGER 0: a crashed process or
a dropped mobile connection); silence (the socket stays open but nothing is read or answered: a
network that went away, detectable only by the server's pings); and, for the send-queue state,
silence after the server's sends have filled the socket buffers.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import soxr
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from emostt.audio import read_audio_file
from emostt.config import Settings
from emostt.inference.engine import Engine
from emostt.vocabulary import SAMPLE_RATE
from tests.integration.faults import GatedEngine
from tests.integration.server import Server, pcm16, running_server, service_settings

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "turn_left.wav"
PING_S = 2.0  # interval and timeout: a silent client is dropped within about 4 s
LIMIT = 50
OUTCOMES = ("final", "error", "client_gone", "dropped_gated", "discarded")


def utterances_counted() -> float:
    """Every utterance outcome counted so far (each started utterance ends in exactly one)."""
    return sum(REGISTRY.get_sample_value("emostt_utterances_total", {"outcome": o}) or 0.0 for o in OUTCOMES)


class SessionLog(logging.Handler):
    """The ``session closed`` lines: how many utterances each session started."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0
        self.closed = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "session closed":
            self.closed += 1
            self.started += int(getattr(record, "utterances", 0))


@pytest.fixture
def session_log() -> Iterator[SessionLog]:
    handler = SessionLog()
    logger = logging.getLogger("emostt.transport.runtime")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def settings(**overrides: object) -> Settings:
    return service_settings(
        ws_ping_interval_s=PING_S,
        ws_ping_timeout_s=PING_S,
        max_connections=LIMIT,
        # Admission by measured capacity is not under test: 50 sessions at once on a busy 2-core
        # machine must all be admitted, so that every one of them can vanish.
        target_utilization=1.0,
        session_demand_prior=0.05,
        overload_wait_s=30.0,
        session_defaults={"vad": {"silence_duration_ms": 400}},
        **overrides,
    )


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    audio = read_audio_file(SAMPLE)
    noise = (np.random.default_rng(0).standard_normal(SAMPLE_RATE // 2) * 10 ** (-65 / 20)).astype(np.float32)
    return np.concatenate([noise, audio, noise, noise])


def reset(ws: ClientConnection) -> None:
    """Vanish with a TCP RST: no close frame, no FIN."""
    if not ws.transport.is_closing():
        sock = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


def go_silent(ws: ClientConnection) -> None:
    """Vanish without a trace: the socket stays open, nothing is read, no ping is answered."""
    ws.transport.pause_reading()


async def released(server: Server, within_s: float) -> float:
    """Seconds until the server counts no session (fails after ``within_s``)."""
    state = server.uvicorn_server.config.app.state.emostt
    started = time.monotonic()
    while state.connections or server.get("/readyz").json()["sessions"]:
        assert time.monotonic() - started < within_s, f"{len(state.connections)} sessions still held"
        await asyncio.sleep(0.05)
    assert REGISTRY.get_sample_value("emostt_active_sessions") == 0
    return time.monotonic() - started


async def admitted(server: Server) -> None:
    """A new client at the connection limit's worth of earlier clients still gets a session."""
    async with connect(f"ws://{server.base}/ws/stt/after") as ws:
        assert orjson.loads(await ws.recv())["type"] == "ready"


async def realtime_commit_then_vanish(server: Server, pcm: bytes, delay_s: float) -> None:
    ws = await connect(f"ws://{server.base}/v1/realtime?intent=transcription", ping_interval=None)
    assert orjson.loads(await ws.recv())["type"] == "session.created"
    try:
        for i in range(0, len(pcm), 4800):
            chunk = base64.b64encode(pcm[i : i + 4800]).decode()
            await ws.send(orjson.dumps({"type": "input_audio_buffer.append", "audio": chunk}).decode())
        await ws.send('{"type": "input_audio_buffer.commit"}')
    except ConnectionClosed:
        return  # the server dropped it first (a pong late on a loaded machine): gone all the same
    await asyncio.sleep(delay_s)
    reset(ws)


async def test_realtime_clients_that_commit_and_reset_leave_nothing_held(
    demo_engine: Engine, speech: np.ndarray, session_log: SessionLog
) -> None:
    pcm = pcm16(soxr.resample(speech, SAMPLE_RATE, 24_000).astype(np.float32))
    before = utterances_counted()
    with running_server(settings(), demo_engine) as server:
        # 0.3 s after the commit its transcript is being decoded and sent: the state in which
        # sessions leaked before (the session's consumer lost its cancellation).
        await asyncio.gather(*(realtime_commit_then_vanish(server, pcm, 0.3) for _ in range(LIMIT)))
        await released(server, within_s=2 * PING_S + 5.0)
        await admitted(server)
    assert session_log.closed == LIMIT + 1
    # A reset discards what the server had not read yet, so a few commits may never arrive.
    assert session_log.started >= LIMIT // 2
    assert utterances_counted() - before == session_log.started, "every utterance ended and was counted"


async def stt_client(server: Server, device: str) -> ClientConnection:
    ws = await connect(f"ws://{server.base}/ws/stt/{device}", ping_interval=None, max_size=None)
    assert orjson.loads(await ws.recv())["type"] == "ready"
    return ws


async def send_audio(ws: ClientConnection, audio: np.ndarray) -> None:
    data = pcm16(audio)
    for i in range(0, len(data), 3200):
        await ws.send(data[i : i + 3200])


async def until_event(ws: ClientConnection, kind: str) -> None:
    while orjson.loads(await ws.recv())["type"] != kind:
        pass


Vanish = Callable[[ClientConnection], None]
State = Callable[[ClientConnection, np.ndarray], Awaitable[None]]


async def mid_utterance(ws: ClientConnection, speech: np.ndarray) -> None:
    await send_audio(ws, speech[: len(speech) // 2])
    await until_event(ws, "speech_started")


async def final_in_flight(ws: ClientConnection, speech: np.ndarray) -> None:
    await send_audio(ws, speech)
    await until_event(ws, "speech_started")
    await ws.send('{"type": "finalize"}')  # the final is decoded and sent to a client that is gone


STATES: dict[str, State] = {"mid_utterance": mid_utterance, "final_in_flight": final_in_flight}
VANISHING: dict[str, Vanish] = {"reset": reset, "silent": go_silent}


@pytest.mark.parametrize("vanish", VANISHING, ids=str)
@pytest.mark.parametrize("state", STATES, ids=str)
async def test_stt_clients_that_vanish_in_each_state_leave_nothing_held(
    demo_engine: Engine, speech: np.ndarray, session_log: SessionLog, state: str, vanish: str
) -> None:
    before = utterances_counted()
    with running_server(settings(), demo_engine) as server:
        clients = [await stt_client(server, f"dev-{i}") for i in range(8)]
        await asyncio.gather(*(STATES[state](ws, speech) for ws in clients))
        for ws in clients:
            VANISHING[vanish](ws)
        await released(server, within_s=2 * PING_S + 5.0)
        await admitted(server)
        for ws in clients:
            ws.transport.abort()
    assert session_log.started >= 8
    assert utterances_counted() - before == session_log.started


async def test_a_client_that_vanishes_while_its_utterance_is_being_decoded(
    demo_engine: Engine, speech: np.ndarray, session_log: SessionLog
) -> None:
    gated = GatedEngine(demo_engine)
    before = utterances_counted()
    with running_server(settings(speculative_finals=False), gated) as server:
        try:
            ws = await stt_client(server, "decoding")
            await final_in_flight(ws, speech)
            assert await asyncio.to_thread(gated.entered.wait, 30), "the final reached the model"
            reset(ws)
            # The model is still busy with this client's final: its session is released anyway.
            await released(server, within_s=2 * PING_S + 5.0)
        finally:
            gated.release.set()
    assert utterances_counted() - before == session_log.started == 1


async def test_a_client_that_stops_reading_with_a_full_send_queue_is_dropped_by_pings(
    demo_engine: Engine, session_log: SessionLog
) -> None:
    # The send timeout is long: only the protocol pings can notice this client in time.
    with running_server(settings(send_timeout_s=120.0), demo_engine) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a few events
        sock.connect(("127.0.0.1", int(server.base.rsplit(":", 1)[1])))
        ws = await connect(f"ws://{server.base}/ws/stt/full", sock=sock, ping_interval=None)
        assert orjson.loads(await ws.recv())["type"] == "ready"
        go_silent(ws)
        # Every config message is answered with the whole config: the server's sends back up.
        config = orjson.dumps({"type": "config", "use_itn": True}).decode()
        for _ in range(2000):
            await ws.send(config)
        state = server.uvicorn_server.config.app.state.emostt
        assert state.connections, "the session was open while its sends backed up"
        await released(server, within_s=2 * PING_S + 5.0)
        ws.transport.abort()
    assert session_log.closed == 1
