"""emostt's events as Pipecat frames: the layer of ``EmosttSTTService`` that turns each typed
server event (the protocol core's, ``emostt_client.protocol``) into transcription, turn and
emotion frames, and emostt's errors into error frames.

Semantic turns (``turn_detection``), as Pipecat's Deepgram Flux service does them, through its
``EagerEndOfTurnSTTServiceMixin``: ``eager_end_of_turn`` -> ``EagerTranscriptionFrame`` (with
``enable_eager_end_of_turn``), ``turn_resumed`` -> ``EagerEndOfTurnCancelFrame``, and the final ->
``TranscriptionFrame`` (finalized) then ``ProposedUserStoppedSpeakingFrame``, which the user
aggregator's turn strategies resolve into ``UserStoppedSpeakingFrame``."""

from __future__ import annotations

from typing import Any

from emostt_client.protocol import (
    CLOSING_ERROR_CODES,
    ConfigUpdated,
    EagerEndOfTurn,
    EmotionChanged,
    Error,
    Final,
    Partial,
    ServerEvent,
    SpeechStarted,
    TurnResumed,
)
from loguru import logger
from pipecat.frames.frames import (
    InterimTranscriptionFrame,
    ProposedUserStartedSpeakingFrame,
    ProposedUserStoppedSpeakingFrame,
    TranscriptionFrame,
)
from pipecat.services.stt_service import WebsocketSTTService
from pipecat.transcriptions.language import Language
from pipecat.turns.eager_end_of_turn_mixin import EagerEndOfTurnSTTServiceMixin
from pipecat.utils.time import time_now_iso8601
from pipecat.utils.tracing.service_decorators import traced_stt
from pipecat.utils.types import is_given

from pipecat_emostt.errors import category_of
from pipecat_emostt.frames import EmotionChangedFrame
from pipecat_emostt.languages import LANGUAGES, language_to_emostt_language
from pipecat_emostt.settings import EmosttSTTSettings

__all__ = ["EmosttEventFrames"]


class EmosttEventFrames(EagerEndOfTurnSTTServiceMixin, WebsocketSTTService):
    """Turns the events of the open session into frames; ``EmosttConnection`` feeds them in."""

    _settings: EmosttSTTSettings

    def __init__(
        self, *, device_id: str, vad_force_turn_endpoint: bool, emit_gated_finals: bool, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._device_id = device_id
        self._vad_force_turn_endpoint = vad_force_turn_endpoint
        self._emit_gated_finals = emit_gated_finals
        self._effective_config: dict[str, Any] = {}
        # The last session error that announces the server's close (the close decides what next).
        self._last_error: Error | None = None
        # Utterances announced by speech_started that have no final or error yet.
        self._open_utterances: set[str] = set()
        self._turn_open = False
        self._register_event_handler("on_final")
        self._register_event_handler("on_emotion_changed")
        self._register_event_handler("on_eager_end_of_turn")
        self._register_event_handler("on_turn_resumed")
        self._register_event_handler("on_session_config")

    async def _handle_event(self, event: ServerEvent) -> None:
        if isinstance(event, SpeechStarted):
            await self._on_speech_started(event)
        elif isinstance(event, Partial):
            await self._on_partial(event)
        elif isinstance(event, EagerEndOfTurn):
            await self._on_eager_end_of_turn(event)
        elif isinstance(event, TurnResumed):
            await self._call_event_handler("on_turn_resumed", dict(event.raw))
            await self._cancel_eager_end_of_turn()
        elif isinstance(event, Final):
            await self._on_final(event)
        elif isinstance(event, EmotionChanged):
            await self._on_emotion_changed(event)
        elif isinstance(event, ConfigUpdated):
            await self._on_session_config(event)
        elif isinstance(event, Error):
            await self._on_error(event)
        else:
            logger.trace(f"{self}: unhandled event {event}")

    async def _on_session_config(self, event: ConfigUpdated) -> None:
        self._effective_config = dict(event.config)
        await self._call_event_handler("on_session_config", dict(event.config))

    async def _on_speech_started(self, event: SpeechStarted) -> None:
        self._open_utterances.add(event.utterance_id)
        if not self._vad_force_turn_endpoint and not self._turn_open:
            self._turn_open = True
            await self.broadcast_frame(ProposedUserStartedSpeakingFrame)

    async def _on_partial(self, event: Partial) -> None:
        if event.text.strip():
            await self.push_frame(
                InterimTranscriptionFrame(
                    event.text,
                    self._device_id,
                    time_now_iso8601(),
                    self._language_hint(),
                    result=dict(event.raw),
                )
            )

    async def _on_eager_end_of_turn(self, event: EagerEndOfTurn) -> None:
        result = dict(event.raw)  # its confidence: P(turn complete) from emostt's turn model
        await self._call_event_handler("on_eager_end_of_turn", result)
        if event.text.strip() and not self._vad_force_turn_endpoint:
            language = self._language_hint()
            await self._push_eager_end_of_turn(
                event.text, user_id=self._device_id, language=language, result=result
            )

    async def _on_final(self, event: Final) -> None:
        self._open_utterances.discard(event.utterance_id)
        self._clear_eager_end_of_turn()  # the turn is committed: the final's text settles it
        result = dict(event.raw)
        await self._call_event_handler("on_final", result)
        language = LANGUAGES.get(event.language.label)
        from_finalize = event.end_reason == "finalize"
        if event.text.strip() and (self._emit_gated_finals or not event.gated):
            if from_finalize:
                self.confirm_finalize()
            # Usage before the transcription, so tracing attaches it to the span the frame closes.
            await self.emit_stt_usage_metrics()
            await self.push_frame(
                TranscriptionFrame(
                    event.text,
                    self._device_id,
                    time_now_iso8601(),
                    language,
                    result=result,
                    finalized=not self._vad_force_turn_endpoint,
                )
            )
            await self._handle_transcription(event.text, True, language)
        elif from_finalize:
            # Nothing to push for the finalize we asked for: report TTFB now, not at the timeout.
            await self.stop_ttfb_metrics()
            await self._cancel_ttfb_timeout()
        await self._maybe_end_turn()

    async def _on_emotion_changed(self, event: EmotionChanged) -> None:
        result = dict(event.raw)
        await self._call_event_handler("on_emotion_changed", result)
        await self.push_frame(
            EmotionChangedFrame(
                from_label=event.from_label or "",
                to_label=event.to_label,
                utterance_id=event.utterance_id or "",
                scores=dict(event.scores),
                user_id=self._device_id,
                result=result,
            )
        )

    async def _on_error(self, event: Error) -> None:
        message = f"emostt error {event.code}: {event.message}"
        if event.code in CLOSING_ERROR_CODES:
            # The close that follows decides: reconnect (1000, 1012) or a permanent error (1008).
            self._last_error = event
            logger.warning(f"{self}: {message}")
            return
        if event.utterance_id is not None:
            self._open_utterances.discard(event.utterance_id)
            message += f" (utterance {event.utterance_id}, retryable: {event.retryable})"
        # invalid_config here answers an STTUpdateSettingsFrame: the stored settings would be
        # refused by every new session too, so it is permanent (new settings make it usable again).
        await self.push_error(error_msg=message, category=category_of(event.code))
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
        await self._cancel_eager_end_of_turn()  # no final will confirm it
        await self._maybe_end_turn()

    @traced_stt
    async def _handle_transcription(
        self, transcript: str, is_final: bool, language: Language | None = None
    ) -> None:
        """Tracing hook (the decorator records the transcript)."""

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
        return LANGUAGES.get(self._language_code())
