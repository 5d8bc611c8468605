"""The Python SDK's keyterms against a real server with the demo model (tests/clients/keyterms.py):
``connect(keyterms=...)`` goes out in the config message, the server echoes it and biases the
decoding ("door" comes back only with the keyterm), ``configure(keyterms=...)`` replaces the list
mid-stream, finals carry a typed ``keyterms_matched``; ``transcribe_file`` and the CLI take them too."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import emostt_client as ec
import pytest
import soundfile as sf
from emostt_client import sync

from emostt.inference.engine import Engine
from tests.clients.keyterms import KEYTERM, OTHER, RATE, half_heard, half_heard_pcm, keyterm_server
from tests.integration.server import Server
from tests.sdk import next_of


@pytest.fixture(scope="module")
def server(demo_engine: Engine) -> Iterator[Server]:
    with keyterm_server(demo_engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keyterms") / "open_the_door.wav"
    sf.write(path, half_heard(), RATE, subtype="PCM_16")
    return path


async def utterance(stream: ec.Stream) -> ec.Final:
    """The clip, ended by ``finalize`` right after it: its final."""
    await stream.send(half_heard_pcm())
    await stream.finalize()
    final, _ = await next_of(stream, ec.Final)
    return final


async def test_keyterms_bias_the_result_and_configure_replaces_them_mid_stream(server: Server) -> None:
    url = f"ws://{server.base}"
    async with ec.connect(url, "sdk-plain") as plain:
        greedy = await utterance(plain)
    assert KEYTERM not in greedy.text and greedy.keyterms_matched is None

    async with ec.connect(url, "sdk-keyterms", keyterms=[f"  {KEYTERM} "]) as stream:
        answer, _ = await next_of(stream, ec.ConfigUpdated)  # the answer to the config message
        assert answer.config["keyterms"] == [KEYTERM]
        biased = await utterance(stream)
        await stream.configure(keyterms=[OTHER])
        replaced, _ = await next_of(stream, ec.ConfigUpdated)
        assert replaced.config["keyterms"] == [OTHER]
        after = await utterance(stream)
        await stream.close()
    assert KEYTERM in biased.text and biased.keyterms_matched == (KEYTERM,)
    assert after.keyterms_matched == (OTHER,)
    assert biased.raw["keyterms_matched"] == [KEYTERM]  # typed from the server's field


def test_transcribe_file_and_the_cli_take_keyterms(server: Server, wav: Path) -> None:
    url = f"ws://{server.base}"
    [final] = sync.transcribe_file(url, wav, device_id="sdk-file", keyterms=[KEYTERM], timeout=60)
    assert KEYTERM in final.text and final.keyterms_matched == (KEYTERM,)
    cli = [sys.executable, "-m", "emostt_client", "file", url, str(wav), "--fast", "--json"]
    result = subprocess.run(
        [*cli, "--keyterm", KEYTERM, "--keyterm", "Ada Lovelace"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["config"]["keyterms"] for e in events if e["type"] == "config"] == [[KEYTERM, "Ada Lovelace"]]
    [cli_final] = [e for e in events if e["type"] == "final"]
    assert cli_final["keyterms_matched"] == [KEYTERM]


async def test_keyterms_the_server_would_refuse_fail_before_anything_is_sent(server: Server) -> None:
    url = f"ws://{server.base}"
    for bad in ("alone", ["x" * 65], [" "], ["a"] * 101, [3]):
        with pytest.raises(ValueError, match="keyterm"):
            ec.connect(url, "sdk-bad", keyterms=bad)  # type: ignore[arg-type]
    async with ec.connect(url, "sdk-bad", keyterms=[KEYTERM]) as stream:
        with pytest.raises(ValueError, match="at most 100 keyterms"):
            await stream.configure(keyterms=["a"] * 101)
        await stream.configure(keyterms=[])  # clears them
        cleared, _ = await next_of(stream, ec.ConfigUpdated)
        while cleared.config["keyterms"]:  # the answer to the connect's config came first
            cleared, _ = await next_of(stream, ec.ConfigUpdated)
        await stream.close()
    assert await asyncio.wait_for(stream.finals(), 10) == []
