"""The service's runtime-updatable settings: emostt's session config, and the ``config``
message they make."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from emostt_client.protocol import keyterms_list
from pipecat.services.settings import STTSettings
from pipecat.utils.types import NOT_GIVEN, NotGiven, is_given

__all__ = ["EmosttSTTSettings", "session_config"]


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
        keyterms: Words and short phrases (names, products, commands; up to 100 of 1–64
            characters) emostt biases decoding towards; each final's ``keyterms_matched`` (in the
            ``TranscriptionFrame``'s ``result``) lists those its text holds. An update replaces
            the list from the next utterance; ``[]`` removes it.
    """

    use_itn: bool | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    interim_results: bool | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    partial_interval_ms: int | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    word_timestamps: bool | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    known_emotion_only: bool | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    vad: dict[str, Any] | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    gating: dict[str, Any] | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    mood: dict[str, Any] | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    keyterms: list[str] | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)


_CONFIG_FIELDS: Final = (
    "use_itn",
    "interim_results",
    "partial_interval_ms",
    "word_timestamps",
    "known_emotion_only",
    "vad",
    "gating",
    "mood",
    "keyterms",
)


def session_config(
    settings: EmosttSTTSettings, language: str, turn_detection: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``config`` message's fields for ``settings``, with ``language`` as the hint and the
    service's ``turn_detection`` (None: the server's default). ``ValueError`` for keyterms emostt
    would refuse (``emostt_client.protocol.keyterms_list``)."""
    config: dict[str, Any] = {"language": language}
    for name in _CONFIG_FIELDS:
        value = getattr(settings, name)
        if is_given(value) and value is not None:
            config[name] = value
    config.update(settings.extra)
    if config.get("keyterms") is not None:
        config["keyterms"] = keyterms_list(config["keyterms"])
    if turn_detection is not None:
        config["turn_detection"] = turn_detection
    # Every utterance must end in a final (or an error), or an emostt-mode turn would never
    # close: gated finals are always sent, and ``emit_gated_finals`` decides what is pushed.
    config["gating"] = {**(config.get("gating") or {}), "drop_gated": False}
    return config
