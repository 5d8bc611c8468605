"""emostt's results as the framework's speech events: a stream's typed server events (the
protocol core's, ``emostt_client.protocol``) turned into START_OF_SPEECH .. END_OF_SPEECH spans,
transcripts, usage and ``emotion_changed``; and a file's ``verbose_json`` as one final.

Turns: END_OF_SPEECH follows the final that ends the last open utterance. With semantic turns
(``turn_detection``) emostt keeps the utterance open across mid-turn pauses, so that is the turn's
end, as LiveKit's ``turn_detection="stt"`` expects. ``eager_end_of_turn`` is a PREFLIGHT_TRANSCRIPT
(LiveKit's preemptive generation starts on it); ``turn_resumed`` needs no event of its own: the
span stays open, and the next INTERIM_TRANSCRIPT, which moves past the preflight's text, is what
makes LiveKit drop a preemptive reply (``on_preflight_stale``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from emostt_client.protocol import (
    CLOSE_POLICY,
    SPOKEN_LANGUAGES,
    TURN_MODEL_UNAVAILABLE,
    ConfigUpdated,
    EagerEndOfTurn,
    EmotionChanged,
    Error,
    Final,
    Partial,
    ServerEvent,
    SpeechStarted,
    TurnResumed,
    Unknown,
)
from livekit.agents import APIConnectOptions, APIStatusError, LanguageCode, stt
from livekit.agents.types import NOT_GIVEN, TimedString

from .log import logger
from .models import EmotionChangedEvent, EmotionContext
from .options import STTOptions

if TYPE_CHECKING:
    from .stt import STT

__all__ = ["TranscriptStream", "verbose_json_event"]

# Usage is reported at each final, and at least this often (seconds of audio) during long speech.
_USAGE_REPORT_S = 5.0


class TranscriptStream(stt.SpeechStream):
    """The half of ``SpeechStream`` that turns emostt's events into speech events; the other half
    (``stream.SpeechStream``) owns the connection and feeds them in with ``_handle_event``."""

    def __init__(self, *, stt: STT, opts: STTOptions, conn_options: APIConnectOptions) -> None:
        super().__init__(
            stt=stt,
            conn_options=conn_options,
            sample_rate=opts.sample_rate if opts.sample_rate is not None else NOT_GIVEN,
        )
        self._emostt = stt
        self._opts = opts
        self._session_id = ""
        self._session_config: dict[str, Any] = {}  # the effective config, as the server reports it
        # utterances started and not yet ended by their final or error, in order: one span of
        # START_OF_SPEECH .. END_OF_SPEECH covers them all (a final can come after the next
        # utterance's speech_started when the model is busy)
        self._open: list[str] = []
        self._language = LanguageCode(opts.language if opts.language != "auto" else "")
        self._unreported_audio_s = 0.0
        self._last_partial: Partial | None = None  # the times of an eager end of turn's text

    def _count_audio(self, seconds: float) -> None:
        self._unreported_audio_s += seconds
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

    def _request_id(self, utterance_id: str | None) -> str:
        return f"{self._session_id}:{utterance_id or ''}"

    def _start_utterance(self, utterance_id: str, audio_start_ms: int | None) -> None:
        if utterance_id in self._open:
            return
        if not self._open:
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.START_OF_SPEECH,
                    request_id=self._request_id(utterance_id),
                    speech_start_time=self.start_time + audio_start_ms / 1000
                    if audio_start_ms is not None
                    else None,
                )
            )
        self._open.append(utterance_id)

    def _finish_utterance(self, utterance_id: str, audio_end_ms: int | None = None) -> None:
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
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.END_OF_SPEECH,
                    request_id=self._request_id(utterance_id),
                    speech_end_time=self.start_time + audio_end_ms / 1000
                    if audio_end_ms is not None
                    else None,
                )
            )

    def _end_utterance(self) -> None:
        """The connection ended: whatever was open ends without a final."""
        if self._open:
            self._open.clear()
            self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH))

    def _handle_event(self, event: ServerEvent) -> None:
        if isinstance(event, SpeechStarted):
            self._start_utterance(event.utterance_id, event.audio_start_ms)
        elif isinstance(event, Partial):
            self._on_partial(event)
        elif isinstance(event, EagerEndOfTurn):
            self._on_eager_end_of_turn(event)
        elif isinstance(event, TurnResumed):
            logger.debug("emostt turn resumed", extra={"session_id": self._session_id})
        elif isinstance(event, Final):
            self._on_final(event)
        elif isinstance(event, EmotionChanged):
            self._emostt.emit(
                "emotion_changed",
                EmotionChangedEvent(
                    from_label=event.from_label or "",
                    to_label=event.to_label,
                    utterance_id=event.utterance_id or "",
                    scores=dict(event.scores),
                    request_id=self._request_id(event.utterance_id),
                ),
            )
        elif isinstance(event, Error):
            self._on_error(event)
        elif isinstance(event, ConfigUpdated):
            self._session_config = dict(event.config)
        elif isinstance(event, Unknown):
            logger.debug("unhandled emostt event %s", event.type)

    def _on_partial(self, event: Partial) -> None:
        self._last_partial = event
        current = not self._open or self._open[-1] == event.utterance_id
        if not (self._opts.interim_results and event.text and current):
            return
        self._start_utterance(event.utterance_id, event.audio_start_ms)
        self._event_ch.send_nowait(
            stt.SpeechEvent(
                type=stt.SpeechEventType.INTERIM_TRANSCRIPT,
                request_id=self._request_id(event.utterance_id),
                alternatives=[
                    stt.SpeechData(
                        language=self._language,
                        text=event.text,
                        start_time=event.audio_start_ms / 1000 + self.start_time_offset,
                        end_time=event.audio_end_ms / 1000 + self.start_time_offset,
                    )
                ],
            )
        )

    def _on_eager_end_of_turn(self, event: EagerEndOfTurn) -> None:
        """The turn model is fairly sure the turn is over: a PREFLIGHT_TRANSCRIPT of its text."""
        current = not self._open or self._open[-1] == event.utterance_id
        if not (event.text and current):
            return
        partial = (
            self._last_partial
            if self._last_partial and self._last_partial.utterance_id == event.utterance_id
            else None
        )
        self._start_utterance(event.utterance_id, partial.audio_start_ms if partial else None)
        self._event_ch.send_nowait(
            stt.SpeechEvent(
                type=stt.SpeechEventType.PREFLIGHT_TRANSCRIPT,
                request_id=self._request_id(event.utterance_id),
                alternatives=[
                    stt.SpeechData(
                        language=self._language,
                        text=event.text,
                        start_time=partial.audio_start_ms / 1000 + self.start_time_offset if partial else 0.0,
                        end_time=partial.audio_end_ms / 1000 + self.start_time_offset if partial else 0.0,
                        metadata={
                            "end_of_turn_confidence": event.confidence,
                            "utterance_id": event.utterance_id,
                            "session_id": event.session_id,
                        },
                    )
                ],
            )
        )

    def _on_error(self, event: Error) -> None:
        if event.code == "invalid_config":  # only our own config message can cause one
            raise APIStatusError(
                f"emostt refused the session config: {event.message}",
                status_code=CLOSE_POLICY,
                body=dict(event.raw),
                retryable=False,
            )
        if event.code == TURN_MODEL_UNAVAILABLE:  # the session goes on, with silence turns
            logger.warning("emostt has no turn model: turns end at silences (%s)", event.message)
            return
        logger.warning(
            "emostt error: %s: %s", event.code, event.message, extra={"session_id": self._session_id}
        )
        if event.utterance_id is not None:  # this utterance ends with the error instead of a final
            self._finish_utterance(event.utterance_id)

    def _on_final(self, event: Final) -> None:
        data = _speech_data(event, self.start_time_offset, self._language)
        if data.language in SPOKEN_LANGUAGES:  # not nospeech: partials get the last spoken language
            self._language = data.language
        context = EmotionContext.from_metadata(data.metadata)
        if context is not None:
            self.context = context
        if data.text and not (self._opts.drop_gated and event.gated):
            if not self._open:  # no speech_started seen for it
                self._start_utterance(event.utterance_id, event.timings.audio_start_ms)
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                    request_id=self._request_id(event.utterance_id),
                    alternatives=[data],
                )
            )
        self._report_usage()
        self._finish_utterance(event.utterance_id, event.timings.audio_end_ms)


def _speech_data(event: Final, offset: float, fallback: LanguageCode) -> stt.SpeechData:
    return stt.SpeechData(
        language=LanguageCode(event.language.label) if event.language.label else fallback,
        text=event.text,
        start_time=event.timings.audio_start_ms / 1000 + offset,
        end_time=event.timings.audio_end_ms / 1000 + offset,
        confidence=event.confidence,
        words=[
            TimedString(
                w.word,
                start_time=w.start_ms / 1000 + offset,
                end_time=w.end_ms / 1000 + offset,
                confidence=w.confidence,
                start_time_offset=offset,
            )
            for w in event.words
        ]
        if event.words
        else None,
        metadata=_metadata(event.raw),
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
    "end_of_turn_confidence",
    "keyterms_matched",
    "duration_ms",
    "latency_ms",
    "utterance_id",
    "session_id",
)


def _metadata(event: Mapping[str, Any]) -> dict[str, Any]:
    """emostt's fields that SpeechData has no slot for: ``emotion``, ``language`` and ``event`` as
    ``{label, scores}``, ``mood``, ``gated``, ``gate_reasons``… (absent ones are left out)."""
    return {key: event[key] for key in _METADATA_FIELDS if key in event}


def verbose_json_event(data: Mapping[str, Any], hint: str) -> stt.SpeechEvent:
    """A file's transcription (``POST /v1/audio/transcriptions``, ``verbose_json``) as one final."""
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
