"""The SDK's reconnect rule, the protocol core's for a stream opened for one session: 1008 is never
retried, 1012/1013/1006 are, and a 1000 the server chose (a session limit) ends the stream."""

from __future__ import annotations

import emostt_client as ec
import pytest
from emostt_client.protocol import reconnects_after

from tests.clients.closing_server import closing_server

RETRY = ec.ReconnectPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05)
# close code -> whether the SDK opens a new session after it
EXPECTED = {1008: False, 1012: True, 1013: True, 1006: True, 1000: False}


def test_the_table_is_the_cores() -> None:
    for code, retried in EXPECTED.items():
        assert reconnects_after(code, requested=False) is retried, code


@pytest.mark.parametrize("code", [1012, 1013, 1006])
async def test_retried(code: int) -> None:
    async with closing_server(code) as server:
        stream = await ec.connect(server.url, "sdk-1", reconnect=RETRY)
        if code != 1013:  # 1013 refuses the first connection: open() itself retried it
            reconnected = await _next_reconnected(stream)
            assert reconnected.close_code == code
        assert server.connections == 2 and stream.ready is not None
        await stream.close()
        assert stream.close_code == 1000 and server.client_closes == 1


async def test_1008_is_never_retried() -> None:
    async with closing_server(1008) as server:
        stream = await ec.connect(server.url, "sdk-2", reconnect=RETRY)
        with pytest.raises(ec.ServerClosedError) as raised:
            async for _ in stream:
                pass
        assert raised.value.close_code == 1008 and raised.value.error is not None
        assert raised.value.error.code == "rate_limited"
        assert server.connections == 1


async def test_a_1000_the_server_chose_ends_the_stream() -> None:
    async with closing_server(1000) as server:
        stream = await ec.connect(server.url, "sdk-3", reconnect=RETRY)
        events = [event async for event in stream]
        assert isinstance(events[-1], ec.Error) and events[-1].code == "idle_timeout"
        assert not [e for e in events if isinstance(e, ec.Reconnected)]
        assert stream.close_code == 1000 and server.connections == 1


async def _next_reconnected(stream: ec.Stream) -> ec.Reconnected:
    while not isinstance(event := await stream.recv(timeout=10), ec.Reconnected):
        pass
    return event
