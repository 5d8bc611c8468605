"""pipecat-emostt's keyterms in real Pipecat pipelines against a real server with the demo model
(tests/clients/keyterms.py): ``Settings(keyterms=...)`` goes out on connect and biases the decoding
("door" comes back only with the keyterm), the server's answer is the service's session config
(``on_session_config``), an ``STTUpdateSettingsFrame`` replaces the list on the open session, and
each ``TranscriptionFrame``'s ``result`` carries ``keyterms_matched``.

Pipecat mode: a ``VADUserStoppedSpeakingFrame`` right after the clip (what Pipecat's VAD sends at
the end of speech) makes the service send ``finalize``, so the utterance ends where the clip does."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    STTUpdateSettingsFrame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat_emostt import EmosttSTTService

from emostt.inference.engine import Engine
from tests.clients.keyterms import KEYTERM, OTHER, half_heard, keyterm_server
from tests.integration.server import Server
from tests.pipecat.harness import Run, audio_frames, pipeline, result_of


@pytest.fixture(scope="module")
def server(demo_engine: Engine) -> Iterator[Server]:
    with keyterm_server(demo_engine) as srv:
        yield srv


class Configs:
    """The session configs the service reports (``on_session_config``), and a wait for one."""

    def __init__(self, service: EmosttSTTService) -> None:
        self.seen: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()

        @service.event_handler("on_session_config")
        async def on_session_config(_service: EmosttSTTService, config: dict[str, Any]) -> None:
            async with self._changed:
                self.seen.append(config)
                self._changed.notify_all()

    async def wait_for_keyterms(self, keyterms: list[str], timeout: float = 30.0) -> None:
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: bool(self.seen) and self.seen[-1]["keyterms"] == keyterms),
                timeout,
            )


async def utterance(run: Run, count: int) -> TranscriptionFrame:
    """The clip, then the end of speech Pipecat's VAD would send: the ``count``-th final's frame."""
    await run.worker.queue_frames([*audio_frames(half_heard()), VADUserStoppedSpeakingFrame()])
    return (await run.collector.wait_for(TranscriptionFrame, count))[count - 1]


async def test_keyterms_bias_the_result_and_a_settings_update_replaces_them(server: Server) -> None:
    url = f"ws://{server.base}"
    async with pipeline(EmosttSTTService(url=url, device_id="pc-plain")) as run:
        greedy = result_of(await utterance(run, 1))
    assert KEYTERM not in greedy["text"] and "keyterms_matched" not in greedy

    settings = EmosttSTTService.Settings(keyterms=[KEYTERM])
    stt = EmosttSTTService(url=url, device_id="pc-keyterms", settings=settings)
    configs = Configs(stt)
    async with pipeline(stt) as run:
        assert stt.session_config["keyterms"] == [KEYTERM]  # the answer to the connect's config
        biased = result_of(await utterance(run, 1))
        await run.worker.queue_frame(
            STTUpdateSettingsFrame(delta=EmosttSTTService.Settings(keyterms=[OTHER]))
        )
        await configs.wait_for_keyterms([OTHER])
        after = result_of(await utterance(run, 2))
    assert KEYTERM in biased["text"] and biased["keyterms_matched"] == [KEYTERM]
    assert after["keyterms_matched"] == [OTHER]
    assert [c["keyterms"] for c in configs.seen] == [[KEYTERM], [OTHER]]
    assert run.errors == []


class Errors(FrameProcessor):
    """Records the ErrorFrames that travel upstream past it."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[ErrorFrame] = []
        self.arrived = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, ErrorFrame):
            self.frames.append(frame)
            self.arrived.set()
        await self.push_frame(frame, direction)


async def test_bad_keyterms_are_refused_by_the_service_and_the_session_keeps_its_own(
    server: Server,
) -> None:
    bad = EmosttSTTService.Settings(keyterms="alone")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keyterm"):  # a string, not a list of them
        EmosttSTTService(url=f"ws://{server.base}", device_id="pc-bad", settings=bad)
    settings = EmosttSTTService.Settings(keyterms=[KEYTERM])
    stt = EmosttSTTService(url=f"ws://{server.base}", device_id="pc-bad", settings=settings)
    errors = Errors()
    async with pipeline(errors, stt) as run:
        await run.worker.queue_frame(
            STTUpdateSettingsFrame(delta=EmosttSTTService.Settings(keyterms=["x" * 65]))
        )
        await asyncio.wait_for(errors.arrived.wait(), 30)
        biased = result_of(await utterance(run, 1))
    [error] = errors.frames
    assert "keyterms not updated" in error.error and stt.is_usable
    assert biased["keyterms_matched"] == [KEYTERM]  # the session kept its list
    assert stt.session_config["keyterms"] == [KEYTERM]
