"""livekit-plugins-emostt's keyterms with the real livekit-agents framework against a real server
with the demo model (tests/clients/keyterms.py): ``STT(keyterms=...)`` goes out in each stream's
config message and biases the decoding ("door" comes back only with the keyterm), the session
reports it (``SpeechStream.session_config``), ``STT.update_options(keyterms=...)`` replaces it on the
open stream, finals carry ``metadata["keyterms_matched"]``, and ``recognize()`` sends them over REST."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
from livekit.agents import stt
from livekit.plugins import emostt

from emostt.inference.engine import Engine
from tests.clients.keyterms import KEYTERM, OTHER, half_heard, keyterm_server
from tests.integration.server import Server
from tests.livekit.test_plugin import DEADLINE_S, Events, frames, http

EV = stt.SpeechEventType


@pytest.fixture(scope="module")
def server(demo_engine: Engine) -> Iterator[Server]:
    with keyterm_server(demo_engine) as srv:
        yield srv


async def utterance(stream: emostt.SpeechStream, events: Events) -> stt.SpeechData:
    """The clip as LiveKit's 16 kHz frames, then ``flush()`` (``finalize`` right after it): its final."""
    for frame in frames(half_heard(), rate=16000):
        stream.push_frame(frame)
    stream.flush()
    return (await events.next(EV.FINAL_TRANSCRIPT)).alternatives[0]


def test_keyterms_bias_the_stream_and_update_options_replaces_them(server: Server) -> None:
    async def scenario() -> tuple[stt.SpeechData, stt.SpeechData, stt.SpeechData, list[dict[str, object]]]:
        async with http():
            plain_stream = emostt.STT(url=f"ws://{server.base}", device_id="lk-plain").stream()
            greedy = await utterance(plain_stream, Events(plain_stream))
            await plain_stream.aclose()

            plugin = emostt.STT(url=f"ws://{server.base}", device_id="lk-keyterms", keyterms=[KEYTERM])
            stream = plugin.stream()
            events = Events(stream)
            biased = await utterance(stream, events)
            reported = [dict(stream.session_config)]
            plugin.update_options(keyterms=[OTHER])  # the STT's options, and its open streams'
            after = await utterance(stream, events)
            reported.append(dict(stream.session_config))
            stream.end_input()
            await events.reader
            await stream.aclose()
            return greedy, biased, after, reported

    greedy, biased, after, reported = asyncio.run(asyncio.wait_for(scenario(), 2 * DEADLINE_S))
    assert greedy.metadata is not None and "keyterms_matched" not in greedy.metadata
    assert KEYTERM not in greedy.text
    assert biased.metadata is not None and biased.metadata["keyterms_matched"] == [KEYTERM]
    assert KEYTERM in biased.text
    assert after.metadata is not None and after.metadata["keyterms_matched"] == [OTHER]
    # the session's effective config, as the server answered each config message
    assert [config["keyterms"] for config in reported] == [[KEYTERM], [OTHER]]


def test_recognize_sends_keyterms_over_rest(server: Server) -> None:
    async def scenario() -> tuple[stt.SpeechEvent, stt.SpeechEvent]:
        async with http():
            buffer = frames(np.asarray(half_heard()), rate=16000, frame_ms=20)
            plain = await emostt.STT(url=f"ws://{server.base}").recognize(buffer)
            keyed = await emostt.STT(url=f"ws://{server.base}", keyterms=[KEYTERM]).recognize(buffer)
            return plain, keyed

    plain, keyed = asyncio.run(asyncio.wait_for(scenario(), DEADLINE_S))
    assert KEYTERM not in plain.alternatives[0].text
    assert KEYTERM in keyed.alternatives[0].text


def test_bad_keyterms_raise_before_anything_changes() -> None:
    plugin = emostt.STT(url="ws://127.0.0.1:9", keyterms=[KEYTERM])
    for bad in ("alone", ["x" * 65], ["a"] * 101):
        with pytest.raises(ValueError, match="keyterm"):
            emostt.STT(url="ws://127.0.0.1:9", keyterms=bad)
        with pytest.raises(ValueError, match="keyterm"):
            plugin.update_options(language="en", keyterms=bad)
    assert plugin._opts.keyterms == [KEYTERM] and plugin._opts.language == "auto"
    assert plugin._opts.config_message()["keyterms"] == [KEYTERM]
    plugin.update_options(keyterms=[])
    assert plugin._opts.config_message()["keyterms"] == []  # sent: clears the session's list
    assert "keyterms" not in emostt.STT(url="ws://127.0.0.1:9")._opts.config_message()
