"""The web client's reconnect rule (clients/web/emostt.js, run in Node): the protocol core's for a
stream opened for one session, as the SDK's. 1008 is never retried, 1012/1013/1006 are, and a
1000 the server chose (a session limit) ends the stream with ``closed``."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from emostt_client.protocol import reconnects_after

from tests.clients.closing_server import closing_server

ROOT = Path(__file__).resolve().parents[2]
WEB_CLIENT = ROOT / "clients" / "web" / "emostt.js"
RUNNER = Path(__file__).with_name("web_client.mjs")
# close code -> whether the web client opens a new session after it
EXPECTED = {1008: False, 1012: True, 1013: True, 1006: True, 1000: False}


def node(*args: str) -> list[str]:
    """The command that runs the web client in Node (whose WebSocket is still flagged in Node 20)."""
    executable = shutil.which("node")
    if executable is None:
        pytest.fail("node is required for the web client's tests (apt-get install nodejs)")
    return [executable, "--experimental-websocket", "--no-warnings", str(RUNNER), WEB_CLIENT.as_uri(), *args]


async def run_client(server_url: str) -> list[dict[str, Any]]:
    """The web client's events, from connecting to ``server_url`` until its stream is closed."""
    process = await asyncio.create_subprocess_exec(
        *node("connect", server_url), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, (out, err)
    return [json.loads(line) for line in out.decode().splitlines()]


def test_the_table_is_the_cores() -> None:
    for code, retried in EXPECTED.items():
        assert reconnects_after(code, requested=False) is retried, code


@pytest.mark.parametrize("code", [1012, 1013, 1006])
async def test_retried(code: int) -> None:
    async with closing_server(code) as server:
        events = await run_client(server.url)
        assert server.connections == 2 and server.client_closes == 1
    assert [e["detail"]["code"] for e in events if e["type"] == "reconnecting"] == [code]
    readies = 1 if code == 1013 else 2  # 1013 refused the first connection, before its ready
    assert [e["type"] for e in events if e["type"] in ("ready", "closed")] == ["ready"] * readies + ["closed"]
    assert events[-1]["detail"]["code"] == 1000  # after stop()


@pytest.mark.parametrize(("code", "error"), [(1008, "rate_limited"), (1000, "idle_timeout")])
async def test_not_retried(code: int, error: str) -> None:
    async with closing_server(code) as server:
        events = await run_client(server.url)
        assert server.connections == 1
    assert not [e for e in events if e["type"] == "reconnecting"]
    closed = events[-1]
    assert closed["type"] == "closed" and closed["detail"]["code"] == code
    assert closed["detail"]["error"]["code"] == error
