"""emostt speech-to-text for Pipecat: text plus emotion, language, event and mood per utterance.

Speaks emostt's streaming protocol (docs/protocol.md): ``ws(s)://HOST/ws/stt/<device_id>?sample_rate=N``,
PCM16 binary frames in, JSON events out. Built on Pipecat's ``WebsocketSTTService``, whose receive
loop does the reconnecting, in three layers: ``events.EmosttEventFrames`` (events to frames),
``connection.EmosttConnection`` (the connection) and, here, the service's own API.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Final

from emostt_client.protocol import (
    RETRYABLE_CLOSE_CODES,
    TurnDetectionLike,
    build_url,
    is_semantic,
    keyterms_list,
    turn_detection_config,
)
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    STTMetadataFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.services.settings import STTSettings
from pipecat.services.stt_latency import DEFAULT_TTFS_P99
from pipecat.transcriptions.language import Language
from pipecat.turns.user_stop import EagerMatchPolicy
from pipecat.utils.errors import ErrorCategory
from pipecat.utils.types import NOT_GIVEN, is_given
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from pipecat_emostt.connection import EmosttConnection
from pipecat_emostt.errors import EmosttRefusedError
from pipecat_emostt.languages import emostt_language_to_language, language_to_emostt_language
from pipecat_emostt.settings import EmosttSTTSettings, session_config

__all__ = [
    "RETRYABLE_CLOSE_CODES",
    "EmosttRefusedError",
    "EmosttSTTService",
    "EmosttSTTSettings",
    "emostt_language_to_language",
    "language_to_emostt_language",
]

# Binary frames are kept well under the server's max_message_bytes (256 KiB by default).
_MAX_AUDIO_MESSAGE_BYTES: Final = 64 * 1024


class EmosttSTTService(EmosttConnection):
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

    - ``True`` (Pipecat mode, the default without semantic turns): Pipecat's VAD and turn
      strategies own the turn. A ``VADUserStoppedSpeakingFrame`` sends ``{"type": "finalize"}``,
      so the utterance's final (marked ``finalized``) follows at once instead of after emostt's
      own end-of-speech silence. emostt's VAD still cuts utterances at its silences; no turn
      frames come from here.
    - ``False`` (emostt mode): emostt's VAD owns the turn. ``speech_started`` proposes a turn
      start (``ProposedUserStartedSpeakingFrame``) and each final, after its
      ``TranscriptionFrame``, a turn stop; the service recommends
      ``ExternalUserTurnStrategies`` to the user aggregator. Use no local VAD-based turn
      strategy alongside it.

    Semantic turns (``turn_detection={"type": "semantic", "eagerness": "auto"}``): emostt's turn
    model owns the turn (emostt mode, the default then): a final comes at the end of the turn,
    not at a pause within it, with ``result["end_of_turn_confidence"]``. With
    ``enable_eager_end_of_turn=True``, an ``eager_end_of_turn`` is an ``EagerTranscriptionFrame``
    (``result["confidence"]``) and ``turn_resumed`` an ``EagerEndOfTurnCancelFrame``, and the
    service recommends Pipecat's ``EagerUserTurnStrategies``: a reply is generated on the eager
    end of turn and kept if the final confirms it, as with Deepgram Flux.

    Errors and reconnection: a refused handshake or a close with 1008 (bad token, device id or
    config, rate limits) is reported as a permanent ``ErrorFrame`` (its ``category``:
    ``AUTHENTICATION``, ``INVALID_REQUEST``…) and leaves the service unusable, with no retry;
    the pipeline worker's ``processor_unusable_policy`` decides what the pipeline does. A drain
    (1012), overload (1013), 1011, 1001 or a lost network (1006) is retried by the base class's
    reconnect loop (``reconnect_attempts`` attempts, ``reconnect_backoff_min_wait`` ..
    ``reconnect_backoff_max_wait`` seconds apart); audio that arrives meanwhile is dropped. So
    is a 1000 the service did not ask for (``idle_timeout``, ``session_too_long``): the protocol
    core's exception for a stream that outlives sessions (``emostt_client.protocol``).

    Event handlers (besides the base's ``on_connected``, ``on_disconnected``,
    ``on_connection_error``): ``on_final(service, event)`` for every final, gated or not,
    ``on_emotion_changed(service, event)``, ``on_eager_end_of_turn(service, event)``,
    ``on_turn_resumed(service, event)`` and ``on_session_config(service, config)``: the session's
    effective config whenever the server reports it (when a session opens, and after each
    settings update, e.g. the ``keyterms`` in force).

    Keyterms (``Settings(keyterms=[...])``, as Deepgram's ``keyterm``): emostt biases decoding
    towards them; each final's ``keyterms_matched`` (in ``result``) lists those its text holds.
    An ``STTUpdateSettingsFrame`` replaces them live from the next utterance. A list emostt would
    refuse is a ``ValueError`` here, and an ``ErrorFrame`` (``APPLICATION``) for an update, which
    then leaves the keyterms as they were.
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
        vad_force_turn_endpoint: bool | None = None,
        should_interrupt: bool = True,
        turn_detection: TurnDetectionLike | None = None,
        enable_eager_end_of_turn: bool = False,
        eager_match_policy: EagerMatchPolicy | None = None,
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
            vad_force_turn_endpoint: Who owns the turn (see the class docstring). Default:
                Pipecat (``True``), or emostt (``False``) with semantic ``turn_detection``, which
                ``True`` contradicts (Pipecat's VAD would end turns at every pause).
            should_interrupt: In emostt mode (``vad_force_turn_endpoint=False``), whether the
                recommended turn strategies interrupt the bot when speech starts.
            turn_detection: The session's ``turn_detection``: ``None`` (the server's default,
                silence), ``{"type": "semantic", "eagerness": "low|medium|high|auto", ...}`` or
                an ``emostt_client.TurnDetection``.
            enable_eager_end_of_turn: With semantic turns, push each ``eager_end_of_turn`` as
                an ``EagerTranscriptionFrame`` and recommend ``EagerUserTurnStrategies``
                (off by default, as in Pipecat: each one costs an LLM inference).
            eager_match_policy: Pipecat's policy for keeping a reply generated on an eager end
                of turn when the final comes (default: ``NormalizedMatch``).
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
            keyterms=None,
        )
        if settings is not None:
            default_settings.apply_update(settings)
        session_config(default_settings, "auto")  # bad keyterms fail here, not at the first connect

        build_url(url, device_id, 16000)  # a bad URL or device id fails here, not at the first connect
        turns = turn_detection_config(turn_detection) if turn_detection is not None else None
        semantic = is_semantic(turns)
        if vad_force_turn_endpoint and semantic:
            raise ValueError("semantic turn_detection: emostt owns the turn (vad_force_turn_endpoint=False)")
        if enable_eager_end_of_turn and not semantic:
            raise ValueError("enable_eager_end_of_turn needs turn_detection of type semantic")
        pipecat_owns_turn = not semantic if vad_force_turn_endpoint is None else vad_force_turn_endpoint
        super().__init__(
            url=url,
            token=token,
            handshake_timeout=handshake_timeout,
            finals_timeout=finals_timeout,
            reconnect_attempts=reconnect_attempts,
            device_id=device_id,
            vad_force_turn_endpoint=pipecat_owns_turn,
            turn_detection=turns,
            enable_eager_end_of_turn=enable_eager_end_of_turn,
            eager_match_policy=eager_match_policy,
            emit_gated_finals=emit_gated_finals,
            sample_rate=sample_rate,
            ttfs_p99_latency=ttfs_p99_latency,
            keepalive_timeout=keepalive_timeout,
            keepalive_interval=keepalive_interval,
            settings=default_settings,
            **kwargs,
        )
        self._should_interrupt = should_interrupt

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
        """In emostt mode, recommend the turn strategies that resolve our proposals: Pipecat's
        external ones, or its eager ones with ``enable_eager_end_of_turn``."""
        frame = super().service_metadata_frame()
        if not self._vad_force_turn_endpoint:
            frame.user_turn_strategies = self.recommended_user_turn_strategies(
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
        keyterms = delta.keyterms if isinstance(delta, EmosttSTTSettings) else None
        if isinstance(delta, EmosttSTTSettings) and is_given(keyterms) and keyterms is not None:
            try:
                delta.keyterms = keyterms_list(keyterms)
            except ValueError as e:  # the session keeps its keyterms, as emostt does with a bad list
                await self.push_error(
                    error_msg=f"keyterms not updated: {e}", category=ErrorCategory.APPLICATION
                )
                delta.keyterms = NOT_GIVEN
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
