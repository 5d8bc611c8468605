"""A streaming session for LiveKit Agents: one emostt session per connection, reopened by the
framework's retry loop (``conn_options``) after a close the protocol core retries. The events it
reads are turned into speech events by ``transcripts.TranscriptStream``."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
from emostt_client.protocol import Error, Ready, build_url, parse_message
from livekit.agents import (
    APIConnectionError,
    APIConnectOptions,
    APIStatusError,
    APITimeoutError,
    utils,
)
from livekit.rtc import AudioFrame, AudioResampler

from .errors import close_error
from .log import logger
from .models import SUPPORTED_SAMPLE_RATES
from .options import OptionsUpdate, STTOptions, UpdatableOptions
from .transcripts import TranscriptStream

if TYPE_CHECKING:
    from .stt import STT

__all__ = ["SpeechStream"]

_MAX_EVENT_BYTES = 4 * 1024 * 1024


class SpeechStream(UpdatableOptions, TranscriptStream):
    """One emostt session per connection; the framework's retry loop (``conn_options``) reconnects
    after a close the protocol core retries for a stream that outlives sessions (1001, 1006, 1011,
    1012, 1013, and a 1000 the plugin did not ask for). Audio pushed while disconnected waits in
    the input channel and goes to the next session."""

    def __init__(self, *, stt: STT, opts: STTOptions, conn_options: APIConnectOptions) -> None:
        super().__init__(stt=stt, opts=opts, conn_options=conn_options)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._last_sent = time.monotonic()
        self._native_resampler: tuple[int, AudioResampler] | None = None  # native mode, unsupported rates
        self._update_tasks: set[asyncio.Task[None]] = set()

    @property
    def session_id(self) -> str:
        """The current connection's emostt session id (empty before the first ``ready``)."""
        return self._session_id

    @property
    def session_config(self) -> dict[str, Any]:
        """The session's effective config as the server last reported it (``ready``, then the
        answer to each ``config`` message): ``keyterms``, ``turn_detection``, ``vad``…"""
        return self._session_config

    def _apply_update(self, update: OptionsUpdate) -> None:
        """``update_options``: this stream's options, sent at once as a ``config`` message."""
        update.apply(self._opts)
        ws = self._ws
        if ws is not None and not ws.closed:  # the next connection sends the new config anyway
            task = asyncio.create_task(self._send_json(ws, self._opts.config_message()))
            self._update_tasks.add(task)
            task.add_done_callback(self._update_tasks.discard)

    async def _send_json(self, ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any]) -> None:
        try:
            await ws.send_str(json.dumps(message))
            self._last_sent = time.monotonic()
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            logger.warning("could not send a config update to emostt", exc_info=True)

    async def aclose(self) -> None:
        for task in list(self._update_tasks):
            await utils.aio.gracefully_cancel(task)
        await super().aclose()

    async def _run(self) -> None:
        self._end_utterance()  # one left open across a reconnect would fuse with the next
        rate = self._opts.sample_rate or _session_rate(self._pushed_sr)
        ws = await self._connect(rate)
        self._ws = ws
        closing = False
        try:
            await ws.send_str(json.dumps(self._opts.config_message()))
            self._last_sent = time.monotonic()

            async def send_task() -> None:
                nonlocal closing
                buffer = bytearray()
                chunk_bytes = rate * self._opts.chunk_ms // 1000 * 2
                first_audio = True

                async def handle(data: AudioFrame | SpeechStream._FlushSentinel) -> None:
                    nonlocal chunk_bytes, first_audio
                    if isinstance(data, AudioFrame):
                        pcm, frame_rate = self._mono_pcm(data)
                        if first_audio:
                            first_audio = False
                            if frame_rate != rate:  # native mode: the first frame tells the rate
                                await self._send(
                                    ws, json.dumps({"type": "config", "sample_rate": frame_rate})
                                )
                                chunk_bytes = frame_rate * self._opts.chunk_ms // 1000 * 2
                            self.start_time = time.time()  # the session's audio clock starts here
                        buffer.extend(pcm)
                        while len(buffer) >= chunk_bytes:
                            await self._send_audio(ws, bytes(buffer[:chunk_bytes]), chunk_bytes)
                            del buffer[:chunk_bytes]
                    else:  # flush: end the current utterance now
                        if buffer:
                            await self._send_audio(ws, bytes(buffer), chunk_bytes)
                            buffer.clear()
                        await self._send(ws, '{"type": "finalize"}')

                try:
                    # what waited while (re)connecting first, then the live input
                    for data in self._trimmed_backlog():
                        await handle(data)
                    async for data in self._input_ch:
                        await handle(data)
                    if buffer:
                        await self._send_audio(ws, bytes(buffer), chunk_bytes)
                    closing = True  # every final still pending comes before the server's close
                    await self._send(ws, '{"type": "close"}')
                except (aiohttp.ClientError, ConnectionError, RuntimeError) as e:
                    if closing:
                        return
                    # the receiver has the close code and the server's error event: let it tell
                    await asyncio.wait({receiver}, timeout=2.0)
                    raise APIConnectionError("emostt connection lost while sending") from e

            async def recv_task() -> None:
                last_error: Error | None = None
                while True:
                    msg = await ws.receive()
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        event = parse_message(msg.data)
                        if isinstance(event, Error) and event.utterance_id is None:
                            last_error = event  # a session error: the close that follows explains it
                        self._handle_event(event)
                    elif msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED,
                    ):
                        if closing:  # a close the plugin asked for: the end, never retried
                            return
                        raise close_error(ws.close_code, last_error, "emostt closed the session")
                    elif msg.type == aiohttp.WSMsgType.ERROR:
                        if closing:
                            return
                        raise APIConnectionError("emostt connection lost") from ws.exception()

            async def keepalive_task() -> None:
                interval = self._opts.keepalive_interval
                while not closing:
                    idle = time.monotonic() - self._last_sent
                    if idle >= interval:
                        try:
                            await self._send(ws, '{"type": "keepalive"}')
                        except (aiohttp.ClientError, ConnectionError, RuntimeError):
                            return  # the receiver reports the loss
                        idle = 0.0
                    await asyncio.sleep(interval - idle)

            receiver = asyncio.create_task(recv_task(), name="emostt.recv")
            tasks = {
                receiver,
                asyncio.create_task(send_task(), name="emostt.send"),
                asyncio.create_task(keepalive_task(), name="emostt.keepalive"),
            }
            try:
                while not receiver.done():
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    for task in sorted(done, key=lambda t: t is not receiver):  # its error first
                        task.result()  # an exception ends this attempt
                    tasks -= done
            finally:
                await utils.aio.gracefully_cancel(*tasks)
        finally:
            self._ws = None
            self._report_usage()
            self._end_utterance()
            await ws.close()

    async def _connect(self, rate: int) -> aiohttp.ClientWebSocketResponse:
        url = build_url(self._emostt._ws_base, self._opts.device_id, rate)
        timeout = self._conn_options.timeout
        started = time.perf_counter()
        try:
            ws = await asyncio.wait_for(
                self._emostt._ensure_session().ws_connect(
                    url, headers=self._emostt._headers(), heartbeat=30.0, max_msg_size=_MAX_EVENT_BYTES
                ),
                timeout,
            )
        except asyncio.TimeoutError:
            raise APITimeoutError(f"could not connect to emostt within {timeout} s") from None
        except aiohttp.WSServerHandshakeError as e:
            # a refusal at the HTTP level (a proxy, a wrong path): 4xx are final, 5xx retried
            raise APIStatusError(f"emostt refused the WebSocket ({e.status})", status_code=e.status) from None
        except (aiohttp.ClientError, OSError) as e:
            raise APIConnectionError(f"could not connect to emostt ({type(e).__name__})") from e
        try:
            ready = await self._handshake(ws, timeout)
        except BaseException:
            await ws.close()
            raise
        self._session_id = ready.session_id
        self._session_config = dict(ready.config)
        if ready.model_name:
            self._emostt._model_name = ready.model_name
        self._report_connection_acquired(time.perf_counter() - started, False)
        logger.debug("emostt session opened", extra={"session_id": self._session_id, "sample_rate": rate})
        return ws

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse, timeout: float) -> Ready:
        """``ready``, or the refusal (one ``error`` event, then the close code) as an APIError."""
        error: Error | None = None
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = await asyncio.wait_for(ws.receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise APITimeoutError("no ready event from emostt") from None
            if msg.type == aiohttp.WSMsgType.TEXT:
                event = parse_message(msg.data)
                if isinstance(event, Ready):
                    return event
                if isinstance(event, Error):
                    error = event
                continue
            if msg.type == aiohttp.WSMsgType.ERROR:
                raise APIConnectionError("emostt connection lost during the handshake") from ws.exception()
            raise close_error(ws.close_code, error, "emostt refused the session")

    def _trimmed_backlog(self) -> list[AudioFrame | SpeechStream._FlushSentinel]:
        """What is queued in the input channel now, less its oldest audio past ``max_backlog_s``."""
        backlog = [self._input_ch.recv_nowait() for _ in range(self._input_ch.qsize())]
        limit = self._opts.max_backlog_s
        total = sum(d.duration for d in backlog if isinstance(d, AudioFrame))
        if limit is None or total <= limit:
            return backlog
        kept, seconds = 0, 0.0
        for data in reversed(backlog):
            if isinstance(data, AudioFrame):
                if seconds + data.duration > limit:
                    break
                seconds += data.duration
            kept += 1
        logger.warning(
            "dropping %.1f s of audio queued while connecting to emostt (max_backlog_s=%s)",
            total - seconds,
            limit,
            extra={"session_id": self._session_id},
        )
        return backlog[len(backlog) - kept :]

    def _mono_pcm(self, frame: AudioFrame) -> tuple[bytes, int]:
        """The frame as mono PCM16 at a rate the server takes (native mode resamples only rates it
        does not take)."""
        if frame.num_channels > 1:
            samples = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
            mono = samples.mean(axis=1).astype(np.int16)
            frame = AudioFrame(mono.tobytes(), frame.sample_rate, 1, len(mono))
        if frame.sample_rate in SUPPORTED_SAMPLE_RATES:
            return frame.data.tobytes(), frame.sample_rate
        if self._native_resampler is None or self._native_resampler[0] != frame.sample_rate:
            self._native_resampler = (frame.sample_rate, AudioResampler(frame.sample_rate, 16000))
        out = self._native_resampler[1].push(frame)
        return b"".join(f.data.tobytes() for f in out), 16000

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
        await ws.send_str(text)
        self._last_sent = time.monotonic()

    async def _send_audio(self, ws: aiohttp.ClientWebSocketResponse, pcm: bytes, chunk_bytes: int) -> None:
        await ws.send_bytes(pcm)
        self._last_sent = time.monotonic()
        bytes_per_s = chunk_bytes * 1000 / self._opts.chunk_ms
        self._count_audio(len(pcm) / bytes_per_s)


def _session_rate(pushed: int) -> int:
    """Native mode: the rate the frames pushed so far have, if the server takes it."""
    return pushed if pushed in SUPPORTED_SAMPLE_RATES else 16000
