"""The Pipecat service's reconnect rule, in a real Pipecat pipeline (its ``WebsocketSTTService``
receive loop does the reconnecting): the protocol core's for a stream that outlives sessions.
1008 is never retried (a permanent error); 1012/1013/1006 are, and so is a 1000 the server chose
(a session limit: the pipeline still wants transcripts); the 1000 after the service's own
``close`` (at ``EndFrame``) is the end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from emostt_client.protocol import reconnects_after
from pipecat.pipeline.worker import ProcessorUnusablePolicy
from pipecat_emostt import EmosttSTTService

from tests.clients.closing_server import closing_server
from tests.pipecat.harness import pipeline

FAST_RETRY: dict[str, Any] = {
    "reconnect_attempts": 5,
    "reconnect_backoff_min_wait": 0.05,
    "reconnect_backoff_max_wait": 0.1,
}
# close code -> whether the service opens a new session after it
EXPECTED = {1008: False, 1012: True, 1013: True, 1006: True, 1000: True}


def test_the_table_is_the_cores() -> None:
    for code, retried in EXPECTED.items():
        assert reconnects_after(code, requested=False, outlives_sessions=True) is retried, code


@pytest.mark.parametrize("code", [1012, 1013, 1006, 1000])
async def test_retried(code: int) -> None:
    async with closing_server(code) as server:
        stt = EmosttSTTService(url=server.url, device_id="pc-1", **FAST_RETRY)
        sessions = asyncio.Queue[None]()

        @stt.event_handler("on_connected")
        async def on_connected(_stt: EmosttSTTService) -> None:
            sessions.put_nowait(None)

        async with pipeline(stt) as run:
            await server.wait_for_connections(2)
            # The second session is open on the service's side too (its handshake done), so the
            # EndFrame below closes it with the service's own close, not mid-handshake.
            # (A refusal at the handshake, as 1013 is here, never made a session.)
            for _ in range(1 if server.fault.at_handshake else 2):
                await asyncio.wait_for(sessions.get(), 10)
            assert stt.is_usable
        # EndFrame: the service sends close, and the server's 1000 that follows is the end
        assert server.connections == 2 and server.client_closes == 1
    assert not [e for e in run.errors if e.category is None or e.category.is_permanent], run.errors


async def test_1008_is_never_retried() -> None:
    async with closing_server(1008) as server:
        stt = EmosttSTTService(url=server.url, device_id="pc-2", **FAST_RETRY)
        async with pipeline(stt, processor_unusable_policy=ProcessorUnusablePolicy.END) as run:
            await asyncio.wait_for(asyncio.shield(run.done), 10)  # the pipeline ends itself
        assert server.connections == 1
    [error] = run.errors
    assert error.processor is stt and not stt.is_usable
    assert "1008" in error.error and "rate_limited" in error.error
