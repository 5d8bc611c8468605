"""The LiveKit plugin's reconnect rule, through the real livekit-agents retry loop: the protocol
core's for a stream that outlives sessions. 1008 is never retried; 1012/1013/1006 are, and so is
a 1000 the server chose (a session limit: an agent's stream outlives it); a 1000 the plugin
asked for (``end_input``) is the end."""

from __future__ import annotations

import asyncio

import pytest
from emostt_client.protocol import reconnects_after
from livekit.agents import APIConnectOptions, APIError, APIStatusError, stt, utils
from livekit.plugins import emostt

from tests.clients.closing_server import closing_server

OPTIONS = APIConnectOptions(max_retry=3, retry_interval=0.05, timeout=5.0)
# close code -> whether the plugin's stream opens a new session after it
EXPECTED = {1008: False, 1012: True, 1013: True, 1006: True, 1000: True}


def test_the_table_is_the_cores() -> None:
    for code, retried in EXPECTED.items():
        assert reconnects_after(code, requested=False, outlives_sessions=True) is retried, code


async def read_all(stream: stt.RecognizeStream) -> None:
    async for _ in stream:
        pass


@pytest.mark.parametrize("code", [1012, 1013, 1006, 1000])
async def test_retried(code: int) -> None:
    errors: list[stt.STTError] = []
    async with closing_server(code) as server, utils.http_context.open():
        plugin = emostt.STT(url=server.url, device_id="lk-1")
        plugin.on("error", errors.append)
        stream = plugin.stream(conn_options=OPTIONS)
        reader = asyncio.create_task(read_all(stream))
        await server.wait_for_connections(2)
        stream.end_input()  # sends close: the server's 1000 that follows is the end
        await asyncio.wait_for(reader, 10)
        await stream.aclose()
    assert server.connections == 2 and server.client_closes == 1
    [error] = errors
    assert error.recoverable, error
    if code != 1006:
        assert isinstance(error.error, APIStatusError) and error.error.status_code == code


async def test_1008_is_never_retried() -> None:
    errors: list[stt.STTError] = []
    async with closing_server(1008) as server, utils.http_context.open():
        plugin = emostt.STT(url=server.url, device_id="lk-2")
        plugin.on("error", errors.append)
        stream = plugin.stream(conn_options=OPTIONS)
        with pytest.raises(APIError) as raised:
            await asyncio.wait_for(read_all(stream), 10)
        await stream.aclose()
    assert isinstance(raised.value, APIStatusError) and raised.value.status_code == 1008
    assert not raised.value.retryable and isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "rate_limited"
    assert server.connections == 1 and [e.recoverable for e in errors] == [False]
