"""The web client's keyterms (clients/web/emostt.js, run in Node) against a real server with the
demo model (tests/clients/keyterms.py): ``keyterms`` goes out in the config message sent with each
``ready`` and biases the decoding ("door" comes back only with the keyterm), the server echoes it,
``configure({keyterms})`` replaces the list mid-session, and finals carry ``keyterms_matched``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from emostt.inference.engine import Engine
from tests.clients.keyterms import KEYTERM, OTHER, half_heard_pcm, keyterm_server
from tests.clients.test_web_close_codes import node
from tests.integration.server import Server


@pytest.fixture(scope="module")
def server(demo_engine: Engine) -> Iterator[Server]:
    with keyterm_server(demo_engine) as srv:
        yield srv


async def test_the_web_clients_keyterms_bias_the_result_and_configure_replaces_them(
    server: Server, tmp_path: Path
) -> None:
    clip = tmp_path / "open_the_door.pcm"
    clip.write_bytes(half_heard_pcm())
    process = await asyncio.create_subprocess_exec(
        *node("keyterms", f"ws://{server.base}", str(clip), KEYTERM, OTHER),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, (out, err)
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert [e["type"] for e in events] == ["plain_final", "config", "final", "config", "final", "closed"]
    greedy, answered, biased, replaced, after, closed = (e["detail"] for e in events)
    assert KEYTERM not in greedy["text"] and "keyterms_matched" not in greedy
    assert answered["config"]["keyterms"] == [KEYTERM]
    assert KEYTERM in biased["text"] and biased["keyterms_matched"] == [KEYTERM]
    assert replaced["config"]["keyterms"] == [OTHER]
    assert after["keyterms_matched"] == [OTHER]
    assert closed["code"] == 1000
