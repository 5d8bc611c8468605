"""Reconnection against real servers: a drained and restarted server (1012), the connection limit
(1013), a cut network (1006); and the closes that must not be retried (1008)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager

import emostt_client as ec
import numpy as np
import pytest
from websockets.asyncio.client import connect as ws_connect

from emostt.inference.engine import Engine
from tests.integration.server import free_port, running_server, server_on_port, service_settings
from tests.sdk import FAST_RETRY, SAMPLE, base_url, metric, next_of

REJECTED = "emostt_rejected_connections_total"


async def enter(cm: AbstractContextManager[object]) -> object:
    return await asyncio.to_thread(cm.__enter__)


async def leave(cm: AbstractContextManager[object]) -> None:
    await asyncio.to_thread(cm.__exit__, None, None, None)


async def turn_left_once_more(stream: ec.Stream) -> None:
    await stream.send_file(SAMPLE, realtime=False)
    await stream.close()
    assert [f.text for f in await stream.finals()] == ["turn left"]
    assert stream.close_code == 1000


async def test_drained_server_1012_reconnects_to_its_restart(demo_engine: Engine) -> None:
    port = free_port()
    settings = service_settings(session_defaults={}, drain_timeout_s=5.0)
    first = server_on_port(port, settings, demo_engine)
    old = await enter(first)
    async with ec.connect(f"ws://127.0.0.1:{port}", "robot-1", reconnect=FAST_RETRY) as stream:
        ready, _ = await next_of(stream, ec.Ready)
        old.should_exit = True  # type: ignore[attr-defined]  # SIGTERM: drain (1012), then stop
        await leave(first)  # the client keeps retrying meanwhile (1012 refusals, then no listener)
        second = server_on_port(port, settings, demo_engine)
        await enter(second)
        try:
            reconnected, _ = await next_of(stream, ec.Reconnected)
            assert reconnected.close_code == 1012 and reconnected.attempt >= 1
            assert reconnected.lost_utterance_ids == ()
            again, _ = await next_of(stream, ec.Ready)
            assert again.session_id != ready.session_id
            await turn_left_once_more(stream)
        finally:
            await leave(second)


async def test_connection_limit_1013_is_retried_until_a_slot_frees(demo_engine: Engine) -> None:
    settings = service_settings(session_defaults={}, max_connections=1)
    with running_server(settings, demo_engine) as srv:
        before = metric(REJECTED, reason="too_many_connections")
        async with ws_connect(srv.ws_url("holder")) as holder:
            await holder.recv()  # ready: the only slot is taken
            opening = asyncio.ensure_future(ec.connect(base_url(srv), "robot-2", reconnect=FAST_RETRY).open())
            deadline = time.monotonic() + 30
            while metric(REJECTED, reason="too_many_connections") - before < 2:  # refused, and retried
                assert time.monotonic() < deadline and not opening.done()
                await asyncio.sleep(0.02)
        stream = await asyncio.wait_for(opening, 30)  # the holder left: the next attempt gets in
        await turn_left_once_more(stream)


class CuttableProxy:
    """A TCP proxy whose connections can be cut (a network loss: no close frame, 1006)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        self.server.close()


@pytest.fixture
def port_of_server(demo_engine: Engine) -> Iterator[int]:
    with running_server(service_settings(session_defaults={}), demo_engine) as srv:
        yield int(srv.base.rsplit(":", 1)[1])


async def test_network_loss_reconnects_and_names_the_lost_utterance(port_of_server: int) -> None:
    proxy = CuttableProxy(port_of_server)
    port = await proxy.start()
    audio, _ = ec.read_audio(SAMPLE)
    try:
        async with ec.connect(f"ws://127.0.0.1:{port}", "robot-3", reconnect=FAST_RETRY) as stream:
            await stream.send(audio[:12000])  # speech and no silence after it: the utterance stays open
            await next_of(stream, ec.SpeechStarted)
            proxy.cut()
            reconnected, seen = await next_of(stream, ec.Reconnected)
            assert reconnected.close_code == 1006 and reconnected.lost_utterance_ids == ("u1",)
            assert not [e for e in seen if isinstance(e, ec.Final)]
            await next_of(stream, ec.Ready)
            await turn_left_once_more(stream)
    finally:
        await proxy.close()


async def test_wrong_token_1008_raises_auth_error_after_one_attempt(demo_engine: Engine) -> None:
    settings = service_settings(session_defaults={}, auth_tokens={"right-token": "*"})
    with running_server(settings, demo_engine) as srv:
        for token in ("wrong-token", None):
            before = metric(REJECTED, reason="unauthorized")
            with pytest.raises(ec.AuthError) as raised:
                await ec.connect(base_url(srv), "robot-4", token=token, reconnect=FAST_RETRY).open()
            assert raised.value.close_code == 1008 and raised.value.attempts == 1
            assert raised.value.error is not None and raised.value.error.code == "unauthorized"
            assert metric(REJECTED, reason="unauthorized") - before == 1  # the server saw one attempt
        async with ec.connect(base_url(srv), "robot-4", token="right-token") as stream:
            assert stream.ready is not None


async def test_rate_limit_1008_mid_session_is_raised_not_retried(demo_engine: Engine) -> None:
    settings = service_settings(session_defaults={}, max_realtime_factor=1.0, burst_audio_s=0.5)
    with running_server(settings, demo_engine) as srv:
        before = metric(REJECTED, reason="rate_limited")
        stream = await ec.connect(base_url(srv), "robot-5", reconnect=FAST_RETRY)
        await stream.send(np.zeros(32000, dtype=np.float32))  # 2 s at once
        events: list[ec.Event] = []
        with pytest.raises(ec.ServerClosedError) as raised:
            async for event in stream:
                events.append(event)
        assert not isinstance(raised.value, ec.AuthError)
        assert raised.value.close_code == 1008 and raised.value.error is not None
        assert raised.value.error.code == "rate_limited"
        assert not [e for e in events if isinstance(e, ec.Reconnected)]
        with pytest.raises(ec.ServerClosedError):
            await stream.send(b"\0\0")
        await stream.close()  # the failure was raised already: closing is quiet
        assert metric(REJECTED, reason="rate_limited") - before == 1


async def test_fast_pacing_stays_inside_the_default_rate_limit(demo_engine: Engine) -> None:
    # The server's defaults (2x real time after a 5 s burst, 128 queued messages); 6 s of audio.
    settings = service_settings(
        session_defaults={}, max_realtime_factor=2.0, burst_audio_s=5.0, receive_queue_size=128
    )
    audio, rate = ec.read_audio(SAMPLE)
    gap = np.zeros(rate, dtype=np.float32)
    clip = np.concatenate([audio, gap, audio, gap, audio])
    with running_server(settings, demo_engine) as srv:
        no_retry = ec.ReconnectPolicy(max_attempts=0)
        async with ec.connect(base_url(srv), "robot-6", reconnect=no_retry) as stream:
            started = time.monotonic()
            sent = await stream.send_audio(clip, rate, realtime=False)
            elapsed = time.monotonic() - started
            await stream.close()
            finals = await stream.finals()
    assert sent == pytest.approx(len(clip) / rate + 1.0, abs=0.01)  # and the trailing silence
    # Paced as FAST says: the first 4 s at once, the rest at 1.8x real time.
    assert (sent - ec.FAST.burst_s) / ec.FAST.speed - 0.15 <= elapsed < sent / 1.5
    assert [f.text for f in finals] == ["turn left"] * 3 and stream.close_code == 1000


async def test_attempts_are_bounded_when_nobody_listens() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    with pytest.raises(ec.ConnectionFailedError) as raised:
        policy = ec.ReconnectPolicy(max_attempts=2, initial_delay=0.01)
        await ec.connect(url, "robot-7", reconnect=policy).open()
    assert raised.value.attempts == 3 and raised.value.close_code == 1006
    with pytest.raises(ec.ConnectionFailedError) as raised:
        await ec.connect(url, "robot-7", reconnect=ec.ReconnectPolicy(max_attempts=0)).open()
    assert raised.value.attempts == 1


async def test_a_server_1000_ends_the_stream_without_reconnecting(demo_engine: Engine) -> None:
    settings = service_settings(session_defaults={}, idle_timeout_s=0.3)
    with running_server(settings, demo_engine) as srv:
        async with ec.connect(base_url(srv), "robot-8", reconnect=FAST_RETRY) as stream:
            events = [event async for event in stream]  # ends when the server closes the idle session
            assert [type(e) for e in events] == [ec.Ready, ec.Error]
            assert isinstance(events[-1], ec.Error) and events[-1].code == "idle_timeout"
            assert stream.close_code == 1000
            with pytest.raises(ec.StreamClosedError):
                await stream.send(b"\0\0")
