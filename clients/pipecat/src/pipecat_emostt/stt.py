"""emostt speech-to-text for Pipecat: text plus emotion, language, event and mood per utterance.

Speaks emostt's streaming protocol (docs/protocol.md): ``ws(s)://HOST/ws/stt/<device_id>?sample_rate=N``,
PCM16 binary frames in, JSON events out. Built on Pipecat's ``WebsocketSTTService``, whose receive
loop does the reconnecting.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterimTranscriptionFrame,
    ProposedUserStartedSpeakingFrame,
    ProposedUserStoppedSpeakingFrame,
    STTMetadataFrame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.services.settings import STTSettings
from pipecat.services.stt_latency import DEFAULT_TTFS_P99
from pipecat.services.stt_service import WebsocketSTTService
from pipecat.services.websocket_service import ReportErrorCallback
from pipecat.transcriptions.language import Language
from pipecat.turns.user_turn_strategies import ExternalUserTurnStrategies
from pipecat.utils.errors import ErrorCategory
from pipecat.utils.time import time_now_iso8601
from pipecat.utils.tracing.service_decorators import traced_stt
from pipecat.utils.types import NOT_GIVEN, NotGiven, is_given
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.protocol import State

from pipecat_emostt.frames import EmotionChangedFrame

__all__ = [
    "RETRYABLE_CLOSE_CODES",
    "EmosttRefusedError",
    "EmosttSTTService",
    "EmosttSTTSettings",
    "emostt_language_to_language",
    "language_to_emostt_language",
]

# SenseVoice's languages (emostt's ``language`` hint and ``final.language.label``).
_LANGUAGES: Final = {
    "zh": Language.ZH,
    "en": Language.EN,
    "yue": Language.YUE,
    "ja": Language.JA,
    "ko": Language.KO,
}
# Closes after which another connection may work (docs/protocol.md, close codes): 1001 going
# away, 1006 no close frame (network loss, a killed server), 1011 internal error, 1012 restart
# (drain), 1013 try again later. 1000 (idle_timeout, session_too_long) is reconnected as well,
# by the base class: the pipeline still wants transcripts. Anything else (1008 policy, 1009 too
# big, ...) would only be refused again: the service reports it as permanent and stops.
RETRYABLE_CLOSE_CODES: Final = frozenset({1001, 1006, 1011, 1012, 1013})
# Handshake and session error codes -> Pipecat's error categories. AUTHENTICATION,
# AUTHORIZATION and INVALID_REQUEST are permanent: the service becomes unusable.
_CATEGORIES: Final = {
    "unauthorized": ErrorCategory.AUTHENTICATION,
    "origin_not_allowed": ErrorCategory.AUTHORIZATION,
    "invalid_device_id": ErrorCategory.INVALID_REQUEST,
    "invalid_config": ErrorCategory.INVALID_REQUEST,
    "too_many_connections": ErrorCategory.RATE_LIMIT,
    "rate_limited": ErrorCategory.RATE_LIMIT,
    "too_fast": ErrorCategory.RATE_LIMIT,
    "overloaded": ErrorCategory.SERVER,
    "not_ready": ErrorCategory.SERVER,
    "shutting_down": ErrorCategory.SERVER,
    "internal_error": ErrorCategory.SERVER,
    "inference_failed": ErrorCategory.SERVER,
    "out_of_memory": ErrorCategory.SERVER,
    "vad_failed": ErrorCategory.SERVER,
}
# Session errors that precede the server's close: the close decides what happens next.
_CLOSING_ERRORS: Final = frozenset(
    {"idle_timeout", "session_too_long", "rate_limited", "too_fast", "stalled_reader", "shutting_down"}
)
_DEVICE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# Binary frames are kept well under the server's max_message_bytes (256 KiB by default).
_MAX_AUDIO_MESSAGE_BYTES: Final = 64 * 1024


def language_to_emostt_language(language: Language | str) -> str | None:
    """Pipecat ``Language`` -> emostt's language hint (``zh en yue ja ko``), or ``None``.

    Regional variants map to their base language; Hong Kong Chinese (``zh-HK``) and every
    ``yue`` variant to Cantonese. ``None``: SenseVoice does not know the language (the service
    then sends ``auto``, automatic detection).
    """
    code = str(language.value if isinstance(language, Language) else language).lower()
    if code in ("auto", ""):
        return "auto"
    if code == "zh-hk" or code.startswith("yue"):
        return "yue"
    base = code.split("-")[0]
    if base == "cmn":
        return "zh"
    return base if base in _LANGUAGES else None


def emostt_language_to_language(label: str | None) -> Language | None:
    """A final's ``language.label`` -> Pipecat ``Language`` (``None`` for ``nospeech``, ``unknown``…)."""
    return _LANGUAGES.get(label or "")


@dataclass
class EmosttSTTSettings(STTSettings):
    """Runtime-updatable settings of :class:`EmosttSTTService`: emostt's session config.

    Each field is a field of the session config (docs/protocol.md, "Session config"); ``None``
    leaves the server's default. They are sent in a ``config`` message when a connection
    opens and, when changed by an ``STTUpdateSettingsFrame``, live on the open session (no
    reconnect). ``extra`` is sent as is (fields this version does not name).

    Parameters:
        language: The language hint: a ``Language`` (``ZH``, ``EN``, ``YUE``, ``JA``, ``KO`` and
            their variants) or one of ``auto zh en yue ja ko``. Default ``auto`` (detect).
        use_itn: Inverse text normalization and punctuation (server default: on).
        interim_results: Send ``partial`` events, pushed as ``InterimTranscriptionFrame``.
        partial_interval_ms: Re-decode the growing utterance every this much speech.
        word_timestamps: ``words`` in finals.
        known_emotion_only: Never answer ``unknown`` emotion.
        vad: ``{threshold, silence_duration_ms, prefix_padding_ms, min_speech_ms,
            max_utterance_ms}``, merged field by field.
        gating: ``{min_confidence, min_emotion_score, min_language_score, gate_nospeech,
            gate_non_speech_events}`` (``drop_gated`` is always sent as ``False``: every
            utterance ends in a final; the service's ``emit_gated_finals`` decides what it pushes).
        mood: ``{enabled, half_life_s, min_margin, min_updates}``.
    """

    use_itn: bool | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    interim_results: bool | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    partial_interval_ms: int | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    word_timestamps: bool | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    known_emotion_only: bool | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    vad: dict[str, Any] | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    gating: dict[str, Any] | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    mood: dict[str, Any] | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)


_CONFIG_FIELDS: Final = (
    "use_itn",
    "interim_results",
    "partial_interval_ms",
    "word_timestamps",
    "known_emotion_only",
    "vad",
    "gating",
    "mood",
)


class EmosttRefusedError(ConnectionError):
    """The server refused the session: its ``error`` event (and the close code that followed)."""

    def __init__(self, event: Mapping[str, Any], close_code: int | None = None) -> None:
        self.code = str(event.get("code", "unknown"))
        self.retryable = bool(event.get("retryable", False))
        self.close_code = close_code
        self.event = dict(event)
        super().__init__(f"{self.code}: {event.get('message', '')}".rstrip(": "))

    @property
    def permanent(self) -> bool:
        """Retrying cannot help: not retryable, or closed with a non-retryable code (1008 policy)."""
        if self.close_code is not None and self.close_code not in RETRYABLE_CLOSE_CODES:
            return True
        return not self.retryable

    @property
    def category(self) -> ErrorCategory:
        return _CATEGORIES.get(self.code, ErrorCategory.UNKNOWN)


class EmosttSTTService(WebsocketSTTService):
    """Streaming STT on an emostt server, with emotion, language, event and mood per utterance.

    Frames pushed downstream:

    - ``InterimTranscriptionFrame`` for each ``partial`` (``result``: the partial event).
    - ``TranscriptionFrame`` for each ``final`` with text (``result``: the whole final event:
      ``emotion {label, scores}``, ``mood {label, scores}``, ``language``, ``event``,
      ``confidence``, ``gated``, ``audio_start_ms``…; ``language``: the detected language as
      a Pipecat ``Language``; ``user_id``: the device id). Gated finals (see
      ``emit_gated_finals``) and finals with no text are not pushed.
    - :class:`~pipecat_emostt.EmotionChangedFrame` after the final that changed the mood.

    Turn detection (``vad_force_turn_endpoint``), as in Pipecat's Soniox and AssemblyAI services:

    - ``True`` (default, Pipecat mode): Pipecat's VAD and turn strategies own the turn. A
      ``VADUserStoppedSpeakingFrame`` sends ``{"type": "finalize"}``, so the utterance's final
      (marked ``finalized``) follows at once instead of after emostt's own end-of-speech
      silence. emostt's VAD still cuts utterances at its silences; no turn frames come from here.
    - ``False`` (emostt mode): emostt's VAD owns the turn. ``speech_started`` proposes a turn
      start (``ProposedUserStartedSpeakingFrame``) and each final, after its
      ``TranscriptionFrame``, a turn stop; the service recommends
      ``ExternalUserTurnStrategies`` to the user aggregator. Use no local VAD-based turn
      strategy alongside it.

    Errors and reconnection: a refused handshake or a close with 1008 (bad token, device id or
    config, rate limits) is reported as a permanent ``ErrorFrame`` (its ``category``:
    ``AUTHENTICATION``, ``INVALID_REQUEST``…) and leaves the service unusable, with no retry;
    the pipeline worker's ``processor_unusable_policy`` decides what the pipeline does. A drain
    (1012), overload (1013), 1011 or a lost network is retried by the base class's reconnect
    loop (``reconnect_attempts`` attempts, ``reconnect_backoff_min_wait`` ..
    ``reconnect_backoff_max_wait`` seconds apart); audio that arrives meanwhile is dropped.

    Event handlers (besides the base's ``on_connected``, ``on_disconnected``,
    ``on_connection_error``): ``on_final(service, event)`` for every final, gated or not, and
    ``on_emotion_changed(service, event)``.
    """

    Settings = EmosttSTTSettings
    _settings: EmosttSTTSettings

    def __init__(
        self,
        *,
        url: str,
        device_id: str,
        token: str | None = None,
        sample_rate: int | None = None,
        vad_force_turn_endpoint: bool = True,
        should_interrupt: bool = True,
        emit_gated_finals: bool = False,
        handshake_timeout: float = 10.0,
        finals_timeout: float = 5.0,
        reconnect_attempts: int = 5,
        keepalive_timeout: float | None = 20.0,
        keepalive_interval: float = 5.0,
        settings: EmosttSTTSettings | None = None,
        ttfs_p99_latency: float | None = DEFAULT_TTFS_P99,
        **kwargs: Any,
    ) -> None:
        """Initialize the service.

        Args:
            url: The server, ``ws(s)://host[:port][/prefix]`` (``http(s)://`` is accepted); the
                service adds ``/ws/stt/<device_id>?sample_rate=N``.
            device_id: The device the session streams as (1–64 of ``A-Z a-z 0-9 . _ : -``);
                also the ``user_id`` of the transcription frames.
            token: Sent as ``Authorization: Bearer``; ``None`` for an open server.
            sample_rate: Input rate (8000, 16000, 22050, 24000, 32000, 44100 or 48000; the
                server resamples); default: the pipeline's ``audio_in_sample_rate``.
            vad_force_turn_endpoint: Who owns the turn (see the class docstring).
            should_interrupt: In emostt mode (``vad_force_turn_endpoint=False``), whether the
                recommended turn strategies interrupt the bot when speech starts.
            emit_gated_finals: Push finals the server marked ``gated`` (low confidence,
                no speech, laughter… see the session's ``gating``) as ``TranscriptionFrame``
                too, when they have text. Default: only ``on_final`` sees them.
            handshake_timeout: Seconds to wait for ``ready`` (and the ``config`` answer).
            finals_timeout: On ``EndFrame``, seconds to wait for the finals of the open
                utterance after ``{"type": "close"}`` before disconnecting.
            reconnect_attempts: Connection attempts per reconnect before the service gives
                up (a permanent error); the base class's default is 3.
            keepalive_timeout: Seconds without audio after which ``{"type": "keepalive"}`` is
                sent (the server closes idle sessions after 60 s by default); ``None``: never.
            keepalive_interval: Seconds between idle checks.
            settings: The session config (:class:`EmosttSTTSettings`).
            ttfs_p99_latency: Speech end to final, P99, in seconds, for Pipecat's turn
                strategies. Not benchmarked for emostt: Pipecat's default (1.0 s); measure
                your deployment and pass it.
            **kwargs: For ``WebsocketSTTService``: ``reconnect_backoff_min_wait``,
                ``reconnect_backoff_max_wait``, ``ws_close_timeout``, ``name``…
        """
        default_settings = self.Settings(
            model=None,
            language="auto",
            use_itn=None,
            interim_results=None,
            partial_interval_ms=None,
            word_timestamps=None,
            known_emotion_only=None,
            vad=None,
            gating=None,
            mood=None,
        )
        if settings is not None:
            default_settings.apply_update(settings)

        super().__init__(
            sample_rate=sample_rate,
            ttfs_p99_latency=ttfs_p99_latency,
            keepalive_timeout=keepalive_timeout,
            keepalive_interval=keepalive_interval,
            settings=default_settings,
            **kwargs,
        )
        self._base_url = url
        self._device_id = device_id
        self._token = token
        self._vad_force_turn_endpoint = vad_force_turn_endpoint
        self._should_interrupt = should_interrupt
        self._emit_gated_finals = emit_gated_finals
        self._handshake_timeout = handshake_timeout
        self._finals_timeout = finals_timeout
        self._reconnect_attempts = max(1, reconnect_attempts)
        self._session_url(16000)  # a bad URL or device id fails here, not at the first connect

        self._receive_task: asyncio.Task[None] | None = None
        self._receive_ended = asyncio.Event()
        self._ready: dict[str, Any] | None = None
        self._effective_config: dict[str, Any] = {}
        self._last_error: dict[str, Any] | None = None
        # Utterances announced by speech_started that have no final or error yet.
        self._open_utterances: set[str] = set()
        self._turn_open = False

        self._register_event_handler("on_final")
        self._register_event_handler("on_emotion_changed")

    # -- public state ---------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        """The device id the service streams as (and the frames' ``user_id``)."""
        return self._device_id

    @property
    def session(self) -> dict[str, Any] | None:
        """The open session's ``ready`` event (``session_id``, ``model``, ``config``…), or ``None``."""
        return self._ready

    @property
    def session_config(self) -> dict[str, Any]:
        """The session's effective config, as the server last reported it."""
        return self._effective_config

    def can_generate_metrics(self) -> bool:
        """Whether the service reports metrics (TTFB, usage): yes."""
        return True

    @property
    def supports_ttfs(self) -> bool:
        """Speech end -> final is meaningful only when Pipecat decides the speech end."""
        return self._vad_force_turn_endpoint

    def service_metadata_frame(self) -> STTMetadataFrame:
        """In emostt mode, recommend the external turn strategies that resolve our proposals."""
        frame = super().service_metadata_frame()
        if not self._vad_force_turn_endpoint:
            frame.user_turn_strategies = ExternalUserTurnStrategies(
                enable_interruptions=self._should_interrupt
            )
        return frame

    def language_to_service_language(self, language: Language) -> str | None:
        """``Language`` -> ``zh en yue ja ko`` (``None``: unknown to SenseVoice; ``auto`` is sent)."""
        return language_to_emostt_language(language)

    # -- lifecycle ------------------------------------------------------------------------

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Set the sample rate up and connect (the pipeline starts once ``ready`` came)."""
        await super().setup(setup)
        await self._connect()

    async def stop(self, frame: EndFrame) -> None:
        """End the session gracefully: the open utterance's final is pushed before the EndFrame."""
        await self._close_session()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        """Disconnect at once (no finals)."""
        await super().cancel(frame)
        await self._disconnect()

    async def _update_settings(self, delta: STTSettings) -> dict[str, Any]:  # type: ignore[override]
        """Apply a settings delta: sent live as a ``config`` message, or used by the next connection."""
        changed = await super()._update_settings(delta)
        if not changed:
            return changed
        if "model" in changed:
            self._warn_unhandled_updated_settings({"model"})
        if self._is_open():
            names = set(changed) - {"model"}
            config = {k: v for k, v in self._session_config().items() if k in names}
            if config:
                await self._send_json({"type": "config", **config})
        else:
            # Not connected (perhaps refused for the old settings): try again with these.
            await self._request_reconnect()
        return changed

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Finalize the utterance when Pipecat's VAD says the user stopped (Pipecat mode)."""
        await super().process_frame(frame, direction)
        if (
            isinstance(frame, VADUserStoppedSpeakingFrame)
            and self._vad_force_turn_endpoint
            and self._is_open()
            and await self._send_json({"type": "finalize"})
        ):
            self.request_finalize()

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        """Send PCM16 audio (results arrive through the receive loop)."""
        websocket = self._websocket
        if websocket is not None and self._ready is not None and websocket.state is State.OPEN:
            try:
                for start in range(0, len(audio), _MAX_AUDIO_MESSAGE_BYTES):
                    await websocket.send(audio[start : start + _MAX_AUDIO_MESSAGE_BYTES])
            except ConnectionClosed as e:
                # The receive loop sees the same close and reconnects (or reports it).
                logger.debug(f"{self}: audio not sent, the connection closed: {e}")
        yield None

    # -- connection (WebsocketService hooks) ----------------------------------------------

    async def _connect(self) -> None:
        await super()._connect()
        await self._connect_websocket()
        # Started even when the connection failed: with no socket the receive loop goes
        # straight to the base class's reconnect path (which gives up on permanent errors).
        if self._receive_task is None:
            self._receive_task = self.create_task(self._receive_task_handler(self._report_error))

    async def _disconnect(self) -> None:
        await super()._disconnect()
        if self._receive_task is not None:
            await self.cancel_task(self._receive_task)
            self._receive_task = None
        await self._disconnect_websocket()

    async def _connect_websocket(self) -> None:
        """One connection attempt: open, wait for ``ready``, send the config, wait for its answer.

        A refusal (the server's ``error`` event and close) or a timeout is a failed attempt; a
        refusal that retrying cannot fix is reported as permanent, which stops the reconnect loop.
        """
        if self._websocket is not None and self._websocket.state is State.OPEN:
            return
        url = self._session_url(self.sample_rate)
        websocket: ClientConnection | None = None
        try:
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            websocket = await self._websocket_connect(
                url, additional_headers=headers, open_timeout=self._handshake_timeout
            )
            self._ready = None
            await self._handshake(websocket)
        except EmosttRefusedError as e:
            await self._abandon(websocket)
            await self.push_error(
                error_msg=f"emostt refused the session: {e}"
                + (f" (close {e.close_code})" if e.close_code is not None else ""),
                exception=e,
                category=e.category,
                force_treat_as_permanent=e.permanent,
            )
            await self._call_event_handler("on_connection_error", str(e))
            return
        except Exception as e:
            await self._abandon(websocket)
            await self.push_error(error_msg=f"Unable to connect to emostt at {url}: {e}", exception=e)
            await self._call_event_handler("on_connection_error", str(e))
            return
        self._websocket = websocket
        self._receive_ended = asyncio.Event()
        self._last_error = None
        logger.debug(f"{self}: connected, session {self._ready and self._ready.get('session_id')}")
        await self._call_event_handler("on_connected")

    async def _handshake(self, websocket: ClientConnection) -> None:
        async with asyncio.timeout(self._handshake_timeout):
            event = await self._recv_event(websocket)
            if event.get("type") == "error":
                raise EmosttRefusedError(event, await self._close_code(websocket))
            if event.get("type") != "ready":
                raise ConnectionError(f"expected ready, got {event.get('type')!r}")
            self._ready = event
            self._effective_config = dict(event.get("config") or {})
            config = self._session_config()
            await websocket.send(json.dumps({"type": "config", **config}))
            while True:
                event = await self._recv_event(websocket)
                if event.get("type") == "config":
                    self._effective_config = dict(event.get("config") or {})
                    return
                if event.get("type") == "error":
                    # invalid_config: the session would go on without our config; every
                    # reconnect would be refused the same way. A refusal, and permanent.
                    raise EmosttRefusedError({**event, "retryable": False}, None)

    async def _disconnect_websocket(self) -> None:
        try:
            if self._websocket is not None:
                await self._websocket.close()
        except Exception as e:
            logger.debug(f"{self}: error closing the websocket: {e}")
        finally:
            self._websocket = None
            self._ready = None
            await self._call_event_handler("on_disconnected")

    async def _try_reconnect(
        self, max_retries: int = 3, report_error: ReportErrorCallback | None = None
    ) -> bool:
        # The base class's reconnect loop, with the attempts this service was given.
        return await super()._try_reconnect(max_retries=self._reconnect_attempts, report_error=report_error)

    async def _receive_messages(self) -> None:
        websocket = self._websocket
        if websocket is None or self._ready is None:
            raise ConnectionError(f"{self} is not connected to emostt")
        try:
            async for message in websocket:
                if isinstance(message, bytes):
                    continue
                try:
                    event = json.loads(message)
                except json.JSONDecodeError:
                    logger.warning(f"{self}: not JSON: {message[:200]!r}")
                    continue
                try:
                    await self._handle_event(event)
                except Exception as e:
                    await self.push_error(
                        error_msg=f"error handling {event.get('type')!r}: {e}",
                        exception=e,
                        category=ErrorCategory.UNKNOWN,
                    )
        except ConnectionClosedError as e:
            code = e.rcvd.code if e.rcvd is not None else None
            if code is not None and code not in RETRYABLE_CLOSE_CODES and not self._disconnecting:
                error = self._last_error or {"code": "closed", "message": e.rcvd.reason if e.rcvd else ""}
                refusal = EmosttRefusedError({**error, "retryable": False}, code)
                await self.push_error(
                    error_msg=f"emostt closed the session (close {code}): {refusal}",
                    exception=refusal,
                    category=refusal.category,
                    force_treat_as_permanent=True,
                )
            raise
        finally:
            self._ready = None
            self._receive_ended.set()
            if not self._disconnecting:
                await self._end_open_utterances()

    async def _send_keepalive(self, silence: bytes) -> None:
        await self._send_json({"type": "keepalive"})

    def _is_keepalive_ready(self) -> bool:
        return self._is_open()

    # -- events ---------------------------------------------------------------------------

    async def _handle_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "speech_started":
            await self._on_speech_started(event)
        elif kind == "partial":
            await self._on_partial(event)
        elif kind == "final":
            await self._on_final(event)
        elif kind == "emotion_changed":
            await self._on_emotion_changed(event)
        elif kind == "config":
            self._effective_config = dict(event.get("config") or {})
        elif kind == "error":
            await self._on_error(event)
        else:
            logger.trace(f"{self}: unhandled event {event}")

    async def _on_speech_started(self, event: dict[str, Any]) -> None:
        self._open_utterances.add(str(event.get("utterance_id")))
        if not self._vad_force_turn_endpoint and not self._turn_open:
            self._turn_open = True
            await self.broadcast_frame(ProposedUserStartedSpeakingFrame)

    async def _on_partial(self, event: dict[str, Any]) -> None:
        text = str(event.get("text") or "")
        if text.strip():
            await self.push_frame(
                InterimTranscriptionFrame(
                    text, self._device_id, time_now_iso8601(), self._language_hint(), result=event
                )
            )

    async def _on_final(self, event: dict[str, Any]) -> None:
        self._open_utterances.discard(str(event.get("utterance_id")))
        await self._call_event_handler("on_final", event)
        text = str(event.get("text") or "")
        language = emostt_language_to_language((event.get("language") or {}).get("label"))
        from_finalize = event.get("end_reason") == "finalize"
        if text.strip() and (self._emit_gated_finals or not event.get("gated")):
            if from_finalize:
                self.confirm_finalize()
            # Usage before the transcription, so tracing attaches it to the span the frame closes.
            await self.emit_stt_usage_metrics()
            await self.push_frame(
                TranscriptionFrame(
                    text,
                    self._device_id,
                    time_now_iso8601(),
                    language,
                    result=event,
                    finalized=not self._vad_force_turn_endpoint,
                )
            )
            await self._handle_transcription(text, True, language)
        elif from_finalize:
            # Nothing to push for the finalize we asked for: report TTFB now, not at the timeout.
            await self.stop_ttfb_metrics()
            await self._cancel_ttfb_timeout()
        await self._maybe_end_turn()

    async def _on_emotion_changed(self, event: dict[str, Any]) -> None:
        await self._call_event_handler("on_emotion_changed", event)
        await self.push_frame(
            EmotionChangedFrame(
                from_label=str(event.get("from")),
                to_label=str(event.get("to")),
                utterance_id=str(event.get("utterance_id")),
                scores=dict(event.get("scores") or {}),
                user_id=self._device_id,
                result=event,
            )
        )

    async def _on_error(self, event: dict[str, Any]) -> None:
        code = str(event.get("code"))
        message = f"emostt error {code}: {event.get('message', '')}"
        if code in _CLOSING_ERRORS:
            # The close that follows decides: reconnect (1000, 1012) or a permanent error (1008).
            self._last_error = event
            logger.warning(f"{self}: {message}")
            return
        if event.get("utterance_id") is not None:
            self._open_utterances.discard(str(event["utterance_id"]))
            message += f" (utterance {event['utterance_id']}, retryable: {event.get('retryable')})"
        # invalid_config here answers an STTUpdateSettingsFrame: the stored settings would be
        # refused by every new session too, so it is permanent (new settings make it usable again).
        await self.push_error(error_msg=message, category=_CATEGORIES.get(code, ErrorCategory.UNKNOWN))
        await self._maybe_end_turn()

    async def _maybe_end_turn(self) -> None:
        if not self._vad_force_turn_endpoint and self._turn_open and not self._open_utterances:
            self._turn_open = False
            await self.broadcast_frame(ProposedUserStoppedSpeakingFrame)

    async def _end_open_utterances(self) -> None:
        """The connection ended with utterances still open: they get no final from this session."""
        if self._open_utterances:
            logger.warning(f"{self}: connection lost before the final of {sorted(self._open_utterances)}")
            self._open_utterances.clear()
        await self._maybe_end_turn()

    @traced_stt
    async def _handle_transcription(
        self, transcript: str, is_final: bool, language: Language | None = None
    ) -> None:
        """Tracing hook (the decorator records the transcript)."""

    # -- helpers --------------------------------------------------------------------------

    async def _close_session(self) -> None:
        """Send ``close`` and wait (``finals_timeout``) for the server's finals and its 1000."""
        if not self._is_open() or self._receive_task is None:
            return
        self._disconnecting = True  # the close that follows is ours: no reconnect
        if await self._send_json({"type": "close"}):
            try:
                await asyncio.wait_for(self._receive_ended.wait(), self._finals_timeout)
            except TimeoutError:
                logger.warning(f"{self}: no close from the server within {self._finals_timeout}s")

    def _is_open(self) -> bool:
        return self._websocket is not None and self._ready is not None and self._websocket.state is State.OPEN

    async def _send_json(self, message: dict[str, Any]) -> bool:
        websocket = self._websocket
        if websocket is None or websocket.state is not State.OPEN:
            return False
        try:
            await websocket.send(json.dumps(message))
        except ConnectionClosed as e:
            logger.debug(f"{self}: {message.get('type')} not sent, the connection closed: {e}")
            return False
        return True

    def _language_code(self) -> str:
        language = self._settings.language
        if not is_given(language) or language is None:
            return "auto"
        code = language_to_emostt_language(language)
        if code is None:
            logger.warning(f"{self}: emostt does not know language {language!r}; detecting it (auto)")
            return "auto"
        return code

    def _language_hint(self) -> Language | None:
        return _LANGUAGES.get(self._language_code())

    def _session_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"language": self._language_code()}
        for name in _CONFIG_FIELDS:
            value = getattr(self._settings, name)
            if is_given(value) and value is not None:
                config[name] = value
        config.update(self._settings.extra)
        # Every utterance must end in a final (or an error), or an emostt-mode turn would never
        # close: gated finals are always sent, and ``emit_gated_finals`` decides what is pushed.
        config["gating"] = {**(config.get("gating") or {}), "drop_gated": False}
        return config

    def _session_url(self, sample_rate: int) -> str:
        parts = urlsplit(self._base_url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        if scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError(f"not a ws://, wss://, http:// or https:// URL: {self._base_url!r}")
        if not _DEVICE_ID.fullmatch(self._device_id):
            raise ValueError(
                f"invalid device_id {self._device_id!r}: 1-64 of A-Z a-z 0-9 . _ : -, "
                "starting with a letter or digit"
            )
        path = parts.path.rstrip("/")
        if not path.endswith("/ws/stt"):
            path += "/ws/stt"
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "sample_rate"]
        query.append(("sample_rate", str(sample_rate)))
        return urlunsplit(
            (scheme, parts.netloc, f"{path}/{quote(self._device_id, safe='')}", urlencode(query), "")
        )

    @staticmethod
    async def _recv_event(websocket: ClientConnection) -> dict[str, Any]:
        while True:
            try:
                message = await websocket.recv()
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd is not None else None
                raise ConnectionError(f"the server closed the connection ({code}) before ready") from e
            if isinstance(message, str):
                event = json.loads(message)
                if isinstance(event, dict):
                    return event

    @staticmethod
    async def _close_code(websocket: ClientConnection) -> int | None:
        """The close code that follows a refusal (the server closes right after its error)."""
        try:
            await websocket.recv()
        except ConnectionClosed as e:
            return e.rcvd.code if e.rcvd is not None else None
        return None

    async def _abandon(self, websocket: ClientConnection | None) -> None:
        self._ready = None
        if websocket is not None:
            try:
                await websocket.close()
            except Exception as e:
                logger.debug(f"{self}: error closing a failed connection: {e}")
