"""emostt speech-to-text for LiveKit Agents: streaming over emostt's WebSocket protocol
(docs/protocol.md), files over its OpenAI-compatible REST endpoint (docs/openai.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import aiohttp
from emostt_client.protocol import TurnDetectionLike, check_device_id, keyterms_list, turn_detection_config
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APITimeoutError,
    stt,
    utils,
)
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer, is_given
from livekit.rtc import combine_audio_frames

from .errors import http_error
from .models import SUPPORTED_SAMPLE_RATES
from .options import (
    OptionsUpdate,
    STTOptions,
    UpdatableOptions,
    base_urls,
    checked_session_config,
    server_language,
)
from .stream import SpeechStream
from .transcripts import verbose_json_event

__all__ = ["STT", "SpeechStream"]

STTEvents = Literal["emotion_changed"]


class STT(UpdatableOptions, stt.STT[STTEvents]):
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
        turn_detection: TurnDetectionLike | None = None,
        keyterms: Sequence[str] | None = None,
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
            turn_detection: how emostt ends a turn: None for the server's default (silence);
                ``{"type": "semantic", "eagerness": "auto"}`` (or ``emostt_client.TurnDetection``)
                for its turn model. Each final is then followed by END_OF_SPEECH at the turn's end
                (not at a mid-turn pause: use ``turn_detection="stt"`` in the AgentSession), with
                ``metadata["end_of_turn_confidence"]``, and an eager end of turn is a
                PREFLIGHT_TRANSCRIPT for LiveKit's preemptive generation.
            keyterms: words and short phrases (names, products, commands; up to 100 of 1-64
                characters) emostt biases decoding towards, in streams and ``recognize()``. Each
                final's ``metadata["keyterms_matched"]`` lists those its text holds.
                ``update_options(keyterms=[...])`` replaces them from the next utterance.
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
        self._ws_base, self._http_base = base_urls(resolved_url)
        self._token = token if is_given(token) else os.environ.get("EMOSTT_TOKEN")
        check_device_id(device_id)
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
            language=server_language(language),
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
            session_config=checked_session_config(session_config),
            turn_detection=turn_detection_config(turn_detection) if turn_detection is not None else None,
            keyterms=keyterms_list(keyterms) if keyterms is not None else None,
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

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> SpeechStream:
        opts = dataclasses.replace(
            self._opts,
            session_config=dict(self._opts.session_config),
            keyterms=list(self._opts.keyterms) if self._opts.keyterms is not None else None,
        )
        if is_given(language):
            opts.language = server_language(language)
        stream = SpeechStream(stt=self, opts=opts, conn_options=conn_options)
        self._streams.add(stream)
        return stream

    def _apply_update(self, update: OptionsUpdate) -> None:
        """``update_options``: for new streams and, with a ``config`` message, for the open ones."""
        update.apply(self._opts)
        for stream in self._streams:
            stream._apply_update(update)

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        """One file through ``POST /v1/audio/transcriptions`` (verbose_json)."""
        frame = combine_audio_frames(buffer)
        hint = server_language(language) if is_given(language) else self._opts.language
        form = aiohttp.FormData()
        form.add_field("file", frame.to_wav_bytes(), filename="audio.wav", content_type="audio/wav")
        form.add_field("model", "emostt")  # any name is accepted: the server has one model
        form.add_field("response_format", "verbose_json")
        form.add_field("timestamp_granularities[]", "segment")
        if self._opts.word_timestamps:
            form.add_field("timestamp_granularities[]", "word")
        if hint != "auto":
            form.add_field("language", hint)
        for term in self._opts.keyterms or ():
            form.add_field("keyterms", term)
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
                    raise http_error(res.status, body, res.headers.get("x-request-id"))
                data = json.loads(body)
        except APIError:
            raise
        except asyncio.TimeoutError as e:
            raise APITimeoutError("emostt transcription request timed out") from e
        except (aiohttp.ClientError, OSError) as e:
            raise APIConnectionError("emostt transcription request failed") from e
        return verbose_json_event(data, hint)
