"""emostt speech-to-text for LiveKit Agents: streaming over emostt's WebSocket protocol
(docs/protocol.md), files over its OpenAI-compatible REST endpoint (docs/openai.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp
import numpy as np
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APIStatusError,
    APITimeoutError,
    LanguageCode,
    stt,
    utils,
)
from livekit.agents.types import NOT_GIVEN, NotGivenOr, TimedString
from livekit.agents.utils import AudioBuffer, is_given
from livekit.rtc import AudioFrame, AudioResampler, combine_audio_frames

from .log import logger
from .models import SUPPORTED_SAMPLE_RATES, EmotionChangedEvent, EmotionContext

__all__ = ["STT", "SpeechStream"]

_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_LANGUAGES = frozenset({"zh", "en", "yue", "ja", "ko"})
# 1001 going away, 1006 no close frame (network loss, a killed server), 1011 internal error,
# 1012 restarting (a drain), 1013 overloaded / not ready. 1008 (policy: auth, limits, a bad config)
# and the rest would fail again. A 1000 the client did not ask for (idle_timeout, session_too_long)
# is retried too: an agent's stream lives as long as its session.
_RETRYABLE_CLOSES = frozenset({1000, 1001, 1006, 1011, 1012, 1013})
_CLOSE_ABNORMAL = 1006
_MAX_EVENT_BYTES = 4 * 1024 * 1024
_USAGE_REPORT_S = 5.0

STTEvents = Literal["emotion_changed"]


@dataclass
class STTOptions:
    language: str  # the server's hint: auto zh en yue ja ko
    interim_results: bool
    word_timestamps: bool
    use_itn: bool
    known_emotion_only: bool
    sample_rate: int | None
    chunk_ms: int
    keepalive_interval: float
    drop_gated: bool
    device_id: str
    max_backlog_s: float | None
    session_config: dict[str, Any] = field(default_factory=dict)

    def config_message(self) -> dict[str, Any]:
        # a final for every utterance, gated or not, so that END_OF_SPEECH always comes: the
        # plugin's drop_gated does the dropping (server-side defaults may turn drop_gated on)
        gating = {**self.session_config.get("gating", {}), "drop_gated": False}
        return {
            **self.session_config,
            "gating": gating,
            "type": "config",
            "language": self.language,
            "use_itn": self.use_itn,
            "interim_results": self.interim_results,
            "word_timestamps": self.word_timestamps,
            "known_emotion_only": self.known_emotion_only,
        }


class STT(stt.STT[STTEvents]):
    def __init__(
        self,
        *,
        url: NotGivenOr[str] = NOT_GIVEN,
        token: NotGivenOr[str | None] = NOT_GIVEN,
        device_id: str = "livekit-agent",
        language: str = "auto",
        interim_results: bool = True,
        word_timestamps: bool = False,
        use_itn: bool = True,
        known_emotion_only: bool = False,
        sample_rate: int | None = 16000,
        chunk_ms: int = 50,
        keepalive_interval: float = 5.0,
        drop_gated: bool = False,
        max_backlog_s: float | None = 3.0,
        session_config: Mapping[str, Any] | None = None,
        http_session: aiohttp.ClientSession | None = None,
    ) -> None:
        """emostt: streaming speech-to-text with the speaker's emotion, language and audio event.

        Args:
            url: the server, ``ws(s)://`` or ``http(s)://HOST[:PORT][/prefix]`` (default
                ``$EMOSTT_URL``, else ``ws://localhost:8000``). Both the WebSocket
                (``/ws/stt/<device_id>``) and ``recognize()``'s REST endpoint
                (``/v1/audio/transcriptions``) are derived from it.
            token: the API token (``Authorization: Bearer``); default ``$EMOSTT_TOKEN``; None for
                a server with no tokens configured.
            device_id: the device the sessions are opened for (the token must be valid for it).
            language: a hint, ``auto`` to detect; ISO codes and names map to SenseVoice's
                ``zh en yue ja ko``, any other language means ``auto``.
            interim_results: ask the server for ``partial`` events (INTERIM_TRANSCRIPT).
            word_timestamps: ``words`` in finals (SpeechData.words; aligned_transcript="word").
            use_itn: inverse text normalization and punctuation.
            known_emotion_only: never answer ``unknown`` emotion.
            sample_rate: the rate sent to the server; frames at another rate are resampled to it
                by the framework. None sends each stream's frames at their own rate (passed on as
                ``?sample_rate=``; rates the server does not take are resampled to 16 kHz).
            chunk_ms: audio is re-chunked into messages of this many milliseconds (20-500).
            keepalive_interval: seconds without any message after which a ``keepalive`` is sent
                (the server closes idle sessions after ``idle_timeout_s``, 60 s by default).
            drop_gated: do not forward finals the server marked ``gated`` (no speech, non-speech
                events, below its gating thresholds) as FINAL_TRANSCRIPT; END_OF_SPEECH still ends
                the utterance. Off by default: gated finals with text are forwarded, with
                ``metadata["gated"]`` and ``metadata["gate_reasons"]``.
            max_backlog_s: audio that waited in the stream while it reconnected is sent at once; only
                the newest this many seconds of it are kept (None: all). emostt refuses audio that
                arrives faster than ``burst_audio_s`` (5 s) ahead of real time with a fatal
                ``rate_limited`` (1008), and a stale backlog would be transcribed late anyway.
            session_config: more session config sent with the ``config`` message (``vad``,
                ``gating``, ``mood``, ``partial_interval_ms``; docs/protocol.md).
            http_session: an aiohttp session to use (default: the job's shared one).
        """
        super().__init__(
            capabilities=stt.STTCapabilities(
                streaming=True,
                interim_results=interim_results,
                aligned_transcript="word" if word_timestamps else False,
                offline_recognize=True,
                # flush() sends `finalize`: the utterance's final comes at once instead of after
                # the server's own end-of-speech silence.
                manual_flush=True,
            )
        )
        resolved_url = url if is_given(url) else os.environ.get("EMOSTT_URL", "ws://localhost:8000")
        self._ws_base, self._http_base = _base_urls(resolved_url)
        self._token = token if is_given(token) else os.environ.get("EMOSTT_TOKEN")
        if not _DEVICE_ID.fullmatch(device_id):
            raise ValueError(
                f"invalid device_id {device_id!r}: 1-64 of A-Z a-z 0-9 . _ : -, "
                "starting with a letter or digit"
            )
        if sample_rate is not None and sample_rate not in SUPPORTED_SAMPLE_RATES:
            raise ValueError(
                f"sample_rate must be one of {SUPPORTED_SAMPLE_RATES} or None, not {sample_rate}"
            )
        if not 20 <= chunk_ms <= 500:
            raise ValueError("chunk_ms must be within 20-500")
        if keepalive_interval <= 0:
            raise ValueError("keepalive_interval must be > 0")
        if max_backlog_s is not None and max_backlog_s < 0:
            raise ValueError("max_backlog_s must be >= 0 or None")
        self._opts = STTOptions(
            language=_server_language(language),
            interim_results=interim_results,
            word_timestamps=word_timestamps,
            use_itn=use_itn,
            known_emotion_only=known_emotion_only,
            sample_rate=sample_rate,
            chunk_ms=chunk_ms,
            keepalive_interval=keepalive_interval,
            drop_gated=drop_gated,
            device_id=device_id,
            max_backlog_s=max_backlog_s,
            session_config=_checked_session_config(session_config),
        )
        self._session = http_session
        self._model_name = "emostt"
        self._streams = weakref.WeakSet[SpeechStream]()

    @property
    def model(self) -> str:
        """The model the server runs (from its ``ready`` event), ``emostt`` until a stream connects."""
        return self._model_name

    @property
    def provider(self) -> str:
        return "emostt"

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = utils.http_context.http_session()
        return self._session

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "livekit-plugins-emostt"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _ws_url(self, device_id: str, sample_rate: int) -> str:
        return f"{self._ws_base}/ws/stt/{quote(device_id, safe='')}?{urlencode({'sample_rate': sample_rate})}"

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> SpeechStream:
        opts = dataclasses.replace(self._opts, session_config=dict(self._opts.session_config))
        if is_given(language):
            opts.language = _server_language(language)
        stream = SpeechStream(stt=self, opts=opts, conn_options=conn_options)
        self._streams.add(stream)
        return stream

    def update_options(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        interim_results: NotGivenOr[bool] = NOT_GIVEN,
        word_timestamps: NotGivenOr[bool] = NOT_GIVEN,
        session_config: NotGivenOr[Mapping[str, Any]] = NOT_GIVEN,
    ) -> None:
        """Change options for new streams and, with a ``config`` message, for the open ones."""
        _apply_options(self._opts, language, interim_results, word_timestamps, session_config)
        for stream in self._streams:
            stream.update_options(
                language=language,
                interim_results=interim_results,
                word_timestamps=word_timestamps,
                session_config=session_config,
            )

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        """One file through ``POST /v1/audio/transcriptions`` (verbose_json)."""
        frame = combine_audio_frames(buffer)
        hint = _server_language(language) if is_given(language) else self._opts.language
        form = aiohttp.FormData()
        form.add_field("file", frame.to_wav_bytes(), filename="audio.wav", content_type="audio/wav")
        form.add_field("model", "emostt")  # any name is accepted: the server has one model
        form.add_field("response_format", "verbose_json")
        form.add_field("timestamp_granularities[]", "segment")
        if self._opts.word_timestamps:
            form.add_field("timestamp_granularities[]", "word")
        if hint != "auto":
            form.add_field("language", hint)
        timeout = aiohttp.ClientTimeout(total=30 + 2 * frame.duration, sock_connect=conn_options.timeout)
        try:
            async with self._ensure_session().post(
                f"{self._http_base}/v1/audio/transcriptions",
                data=form,
                headers=self._headers(),
                timeout=timeout,
            ) as res:
                body = await res.read()
                if res.status != 200:
                    raise _http_error(res.status, body, res.headers.get("x-request-id"))
                data = json.loads(body)
        except APIError:
            raise
        except asyncio.TimeoutError as e:
            raise APITimeoutError("emostt transcription request timed out") from e
        except (aiohttp.ClientError, OSError) as e:
            raise APIConnectionError("emostt transcription request failed") from e
        return _verbose_json_event(data, hint)


class SpeechStream(stt.SpeechStream):
    """One emostt session per connection; the framework's retry loop (``conn_options``) reconnects
    after a retryable close (1011/1012/1013, a network loss). Audio pushed while disconnected waits
    in the input channel and goes to the next session."""

    def __init__(self, *, stt: STT, opts: STTOptions, conn_options: APIConnectOptions) -> None:
        super().__init__(
            stt=stt,
            conn_options=conn_options,
            sample_rate=opts.sample_rate if opts.sample_rate is not None else NOT_GIVEN,
        )
        self._emostt = stt
        self._opts = opts
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session_id = ""
        # utterances started and not yet ended by their final or error, in order: one span of
        # START_OF_SPEECH .. END_OF_SPEECH covers them all (a final can come after the next
        # utterance's speech_started when the model is busy)
        self._open: list[str] = []
        self._language = LanguageCode(opts.language if opts.language != "auto" else "")
        self._last_sent = time.monotonic()
        self._unreported_audio_s = 0.0
        self._native_resampler: tuple[int, AudioResampler] | None = None  # native mode, unsupported rates
        self._update_tasks: set[asyncio.Task[None]] = set()

    @property
    def session_id(self) -> str:
        """The current connection's emostt session id (empty before the first ``ready``)."""
        return self._session_id

    def update_options(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        interim_results: NotGivenOr[bool] = NOT_GIVEN,
        word_timestamps: NotGivenOr[bool] = NOT_GIVEN,
        session_config: NotGivenOr[Mapping[str, Any]] = NOT_GIVEN,
    ) -> None:
        _apply_options(self._opts, language, interim_results, word_timestamps, session_config)
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
                last_error: dict[str, Any] | None = None
                while True:
                    msg = await ws.receive()
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        event = json.loads(msg.data)
                        if event.get("type") == "error" and "utterance_id" not in event:
                            last_error = event
                        self._handle_event(event)
                    elif msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED,
                    ):
                        if closing:
                            return
                        raise _close_error(ws.close_code, last_error, "emostt closed the session")
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
        url = self._emostt._ws_url(self._opts.device_id, rate)
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
        self._session_id = str(ready.get("session_id", ""))
        model = ready.get("model") or {}
        if isinstance(model, dict) and model.get("name"):
            self._emostt._model_name = str(model["name"])
        self._report_connection_acquired(time.perf_counter() - started, False)
        logger.debug("emostt session opened", extra={"session_id": self._session_id, "sample_rate": rate})
        return ws

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse, timeout: float) -> dict[str, Any]:
        """``ready``, or the refusal (one ``error`` event, then the close code) as an APIError."""
        error: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = await asyncio.wait_for(ws.receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise APITimeoutError("no ready event from emostt") from None
            if msg.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(msg.data)
                if event.get("type") == "ready":
                    return dict(event)
                if event.get("type") == "error":
                    error = event
                continue
            if msg.type == aiohttp.WSMsgType.ERROR:
                raise APIConnectionError("emostt connection lost during the handshake") from ws.exception()
            raise _close_error(ws.close_code, error, "emostt refused the session")

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
        rate_bytes = chunk_bytes * 1000 / self._opts.chunk_ms  # bytes per second
        self._unreported_audio_s += len(pcm) / rate_bytes
        if self._unreported_audio_s >= _USAGE_REPORT_S:
            self._report_usage()

    def _report_usage(self) -> None:
        if self._unreported_audio_s <= 0:
            return
        self._event_ch.send_nowait(
            stt.SpeechEvent(
                type=stt.SpeechEventType.RECOGNITION_USAGE,
                request_id=self._session_id,
                recognition_usage=stt.RecognitionUsage(audio_duration=self._unreported_audio_s),
            )
        )
        self._unreported_audio_s = 0.0

    def _request_id(self, event: Mapping[str, Any]) -> str:
        return f"{self._session_id}:{event.get('utterance_id', '')}"

    def _start_utterance(self, event: Mapping[str, Any]) -> None:
        utterance_id = str(event.get("utterance_id", ""))
        if utterance_id in self._open:
            return
        if not self._open:
            start_ms = event.get("audio_start_ms")
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.START_OF_SPEECH,
                    request_id=self._request_id(event),
                    speech_start_time=self.start_time + start_ms / 1000
                    if isinstance(start_ms, (int, float))
                    else None,
                )
            )
        self._open.append(utterance_id)

    def _finish_utterance(self, utterance_id: str) -> None:
        """Its final or error came: it ends, and so do earlier ones (finals come in utterance order)."""
        if not self._open:
            return
        number = _utterance_number(utterance_id)
        self._open = [
            u
            for u in self._open
            if u != utterance_id and (number is None or (_utterance_number(u) or 0) > number)
        ]
        if not self._open:
            self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH))

    def _end_utterance(self) -> None:
        """The connection ended: whatever was open ends without a final."""
        if self._open:
            self._open.clear()
            self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH))

    def _handle_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "speech_started":
            self._start_utterance(event)
        elif kind == "partial":
            current = not self._open or self._open[-1] == event.get("utterance_id")
            if self._opts.interim_results and event.get("text") and current:
                self._start_utterance(event)
                self._event_ch.send_nowait(
                    stt.SpeechEvent(
                        type=stt.SpeechEventType.INTERIM_TRANSCRIPT,
                        request_id=self._request_id(event),
                        alternatives=[
                            stt.SpeechData(
                                language=self._language,
                                text=str(event["text"]),
                                start_time=_seconds(event.get("audio_start_ms")) + self.start_time_offset,
                                end_time=_seconds(event.get("audio_end_ms")) + self.start_time_offset,
                            )
                        ],
                    )
                )
        elif kind == "final":
            self._on_final(event)
        elif kind == "emotion_changed":
            self._emostt.emit(
                "emotion_changed",
                EmotionChangedEvent(
                    from_label=str(event.get("from", "")),
                    to_label=str(event.get("to", "")),
                    utterance_id=str(event.get("utterance_id", "")),
                    scores=dict(event.get("scores") or {}),
                    request_id=self._request_id(event),
                ),
            )
        elif kind == "error":
            code = event.get("code")
            if code == "invalid_config":  # only our own config message can cause one
                raise APIStatusError(
                    f"emostt refused the session config: {event.get('message')}",
                    status_code=1008,
                    body=event,
                    retryable=False,
                )
            logger.warning(
                "emostt error: %s: %s", code, event.get("message"), extra={"session_id": self._session_id}
            )
            if "utterance_id" in event:  # this utterance ends with the error instead of a final
                self._finish_utterance(str(event["utterance_id"]))
        elif kind not in ("ready", "config"):
            logger.debug("unhandled emostt event %s", kind)

    def _on_final(self, event: dict[str, Any]) -> None:
        data = _speech_data(event, self.start_time_offset, self._language)
        if data.language in _LANGUAGES:  # not nospeech: partials get the last spoken language
            self._language = data.language
        context = EmotionContext.from_metadata(data.metadata)
        if context is not None:
            self.context = context
        forward = bool(data.text) and not (self._opts.drop_gated and event.get("gated"))
        if forward:
            if not self._open:  # no speech_started seen for it
                self._start_utterance(event)
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                    request_id=self._request_id(event),
                    alternatives=[data],
                )
            )
        self._report_usage()
        self._finish_utterance(str(event.get("utterance_id", "")))


def _speech_data(event: Mapping[str, Any], offset: float, fallback: LanguageCode) -> stt.SpeechData:
    language = event.get("language") or {}
    label = language.get("label") if isinstance(language, dict) else None
    words = event.get("words")
    return stt.SpeechData(
        language=LanguageCode(label) if label else fallback,
        text=str(event.get("text") or ""),
        start_time=_seconds(event.get("audio_start_ms")) + offset,
        end_time=_seconds(event.get("audio_end_ms")) + offset,
        confidence=float(event.get("confidence") or 0.0),
        words=[
            TimedString(
                str(w.get("word", "")),
                start_time=_seconds(w.get("start_ms")) + offset,
                end_time=_seconds(w.get("end_ms")) + offset,
                confidence=float(w["confidence"]) if w.get("confidence") is not None else NOT_GIVEN,
                start_time_offset=offset,
            )
            for w in words
        ]
        if isinstance(words, list) and words
        else None,
        metadata=_metadata(event),
    )


_METADATA_FIELDS = (
    "emotion",
    "language",
    "event",
    "mood",
    "gated",
    "gate_reasons",
    "degraded",
    "end_reason",
    "duration_ms",
    "latency_ms",
    "utterance_id",
    "session_id",
)


def _metadata(event: Mapping[str, Any]) -> dict[str, Any]:
    """emostt's fields that SpeechData has no slot for: ``emotion``, ``language`` and ``event`` as
    ``{label, scores}``, ``mood``, ``gated``, ``gate_reasons``… (absent ones are left out)."""
    return {key: event[key] for key in _METADATA_FIELDS if key in event}


def _verbose_json_event(data: Mapping[str, Any], hint: str) -> stt.SpeechEvent:
    segments = [s for s in data.get("segments") or [] if isinstance(s, dict)]
    detected = data.get("detected_language")
    label = detected.get("label") if isinstance(detected, dict) else None
    if not label:
        label = data.get("language") if data.get("language") not in (None, "unknown") else None
    if not label and hint != "auto":
        label = hint
    words = data.get("words")
    speech = stt.SpeechData(
        language=LanguageCode(str(label) if label else ""),
        text=str(data.get("text") or ""),
        start_time=float(segments[0].get("start", 0.0)) if segments else 0.0,
        end_time=float(segments[-1].get("end", 0.0)) if segments else 0.0,
        confidence=float(data.get("confidence") or 0.0),
        words=[
            TimedString(str(w.get("word", "")), start_time=float(w["start"]), end_time=float(w["end"]))
            for w in words
            if isinstance(w, dict) and "start" in w and "end" in w
        ]
        if isinstance(words, list) and words
        else None,
        metadata={
            "emotion": data.get("emotion"),
            "language": detected,
            "event": data.get("event"),
            "degraded": data.get("degraded"),
            "duration": data.get("duration"),
            "segments": segments,
        },
    )
    return stt.SpeechEvent(type=stt.SpeechEventType.FINAL_TRANSCRIPT, alternatives=[speech])


def _utterance_number(utterance_id: str) -> int | None:
    """``u12`` -> 12 (a session's utterances are u1, u2, … in order)."""
    return int(utterance_id[1:]) if utterance_id[:1] == "u" and utterance_id[1:].isdigit() else None


def _seconds(ms: object) -> float:
    return float(ms) / 1000 if isinstance(ms, (int, float)) else 0.0


def _session_rate(pushed: int) -> int:
    """Native mode: the rate the frames pushed so far have, if the server takes it."""
    return pushed if pushed in SUPPORTED_SAMPLE_RATES else 16000


def _server_language(language: str) -> str:
    if not language or language.strip().lower() == "auto":
        return "auto"
    base = LanguageCode(language).language
    if base in _LANGUAGES:
        return base
    logger.warning("emostt (SenseVoice) has no %r hint; detecting the language instead", language)
    return "auto"


def _apply_options(
    opts: STTOptions,
    language: NotGivenOr[str],
    interim_results: NotGivenOr[bool],
    word_timestamps: NotGivenOr[bool],
    session_config: NotGivenOr[Mapping[str, Any]],
) -> None:
    """Set on ``opts`` the options given to ``update_options`` (the STT's and a stream's alike)."""
    if is_given(language):
        opts.language = _server_language(language)
    if is_given(interim_results):
        opts.interim_results = interim_results
    if is_given(word_timestamps):
        opts.word_timestamps = word_timestamps
    if is_given(session_config):
        opts.session_config = _checked_session_config(session_config)


def _checked_session_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    config = dict(config or {})
    if "sample_rate" in config or "type" in config:
        raise ValueError("session_config may not set 'type' or 'sample_rate' (use sample_rate=)")
    if not isinstance(config.get("gating", {}), Mapping):
        raise ValueError("session_config['gating'] must be a mapping")
    if config.get("gating", {}).get("drop_gated"):
        raise ValueError("use drop_gated=True rather than session_config gating.drop_gated")
    return config


def _base_urls(url: str) -> tuple[str, str]:
    """``ws(s)://`` or ``http(s)://HOST[:PORT][/prefix]`` -> (WebSocket base, HTTP base)."""
    parts = urlsplit(url)
    schemes = {
        "ws": ("ws", "http"),
        "http": ("ws", "http"),
        "wss": ("wss", "https"),
        "https": ("wss", "https"),
    }
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"not a ws://, wss://, http:// or https:// URL: {url!r}")
    path = parts.path.rstrip("/")
    for suffix in ("/ws/stt", "/v1"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    ws_scheme, http_scheme = schemes[parts.scheme]
    return (
        urlunsplit((ws_scheme, parts.netloc, path, "", "")),
        urlunsplit((http_scheme, parts.netloc, path, "", "")),
    )


def _close_error(code: int | None, error: Mapping[str, Any] | None, what: str) -> APIError:
    code = code if code is not None else _CLOSE_ABNORMAL
    detail = f"{error.get('code')}: {error.get('message')}" if error else "no error event"
    message = f"{what} (close {code}, {detail})"
    if code == _CLOSE_ABNORMAL:
        return APIConnectionError(message)
    retryable = code in _RETRYABLE_CLOSES
    if error is not None and error.get("code") in ("unauthorized", "invalid_device_id", "origin_not_allowed"):
        retryable = False
    return APIStatusError(message, status_code=code, body=dict(error) if error else None, retryable=retryable)


def _http_error(status: int, body: bytes, request_id: str | None) -> APIStatusError:
    message = f"emostt answered {status}"
    parsed: object = None
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            message = f"{message}: {parsed['error'].get('message')}"
    except ValueError:
        parsed = body[:200].decode(errors="replace")
    # 4xx but 408/429 are final (APIStatusError decides); 5xx and 429 are retried
    return APIStatusError(message, status_code=status, request_id=request_id, body=parsed)
