"""The plugin's options: what each stream sends in its ``config`` message, the checks and
translations of what the user passed (language hints, session config, keyterms, the server's
URL), and ``update_options``, one implementation for the STT and its streams."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from emostt_client.protocol import SPOKEN_LANGUAGES, TurnDetectionLike, keyterms_list, turn_detection_config
from livekit.agents import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGiven, NotGivenOr
from livekit.agents.utils import is_given

from .log import logger

__all__ = [
    "OptionsUpdate",
    "STTOptions",
    "UpdatableOptions",
    "base_urls",
    "checked_session_config",
    "server_language",
]


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
    turn_detection: dict[str, Any] | None = None  # None: the server's default (silence turns)
    keyterms: list[str] | None = None  # None: not sent (the server's default: none); [] clears them

    def config_message(self) -> dict[str, Any]:
        # a final for every utterance, gated or not, so that END_OF_SPEECH always comes: the
        # plugin's drop_gated does the dropping (server-side defaults may turn drop_gated on)
        gating = {**self.session_config.get("gating", {}), "drop_gated": False}
        turns = {} if self.turn_detection is None else {"turn_detection": self.turn_detection}
        keyterms = {} if self.keyterms is None else {"keyterms": list(self.keyterms)}
        return {
            **self.session_config,
            "gating": gating,
            "type": "config",
            "language": self.language,
            "use_itn": self.use_itn,
            "interim_results": self.interim_results,
            "word_timestamps": self.word_timestamps,
            "known_emotion_only": self.known_emotion_only,
            **turns,
            **keyterms,
        }


def server_language(language: str) -> str:
    """A LiveKit language (``en-US``, ``yue``…) -> the server's hint; ``auto`` for the languages
    SenseVoice does not know (it then detects the language)."""
    if not language or language.strip().lower() == "auto":
        return "auto"
    base = LanguageCode(language).language
    if base in SPOKEN_LANGUAGES:
        return base
    logger.warning("emostt (SenseVoice) has no %r hint; detecting the language instead", language)
    return "auto"


@dataclass(frozen=True)
class OptionsUpdate:
    """What one ``update_options`` call changes, checked and translated once (a bad value raises
    before anything changes); NOT_GIVEN: unchanged."""

    language: NotGivenOr[str] = NOT_GIVEN
    interim_results: NotGivenOr[bool] = NOT_GIVEN
    word_timestamps: NotGivenOr[bool] = NOT_GIVEN
    session_config: NotGivenOr[dict[str, Any]] = NOT_GIVEN
    turn_detection: NotGivenOr[dict[str, Any]] = NOT_GIVEN
    keyterms: NotGivenOr[list[str]] = NOT_GIVEN

    def apply(self, opts: STTOptions) -> None:
        """Set the changed options on ``opts`` (the STT's, or one stream's copy)."""
        if is_given(self.language):
            opts.language = self.language
        if is_given(self.interim_results):
            opts.interim_results = self.interim_results
        if is_given(self.word_timestamps):
            opts.word_timestamps = self.word_timestamps
        if is_given(self.session_config):
            opts.session_config = dict(self.session_config)
        if is_given(self.turn_detection):
            opts.turn_detection = dict(self.turn_detection)
        if is_given(self.keyterms):
            opts.keyterms = list(self.keyterms)


class UpdatableOptions:
    """``update_options`` as both the ``STT`` and its ``SpeechStream`` take it: the STT applies an
    update to its options and passes it to each open stream, a stream applies it to its own and
    sends its new ``config`` message."""

    def update_options(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        interim_results: NotGivenOr[bool] = NOT_GIVEN,
        word_timestamps: NotGivenOr[bool] = NOT_GIVEN,
        session_config: NotGivenOr[Mapping[str, Any]] = NOT_GIVEN,
        turn_detection: NotGivenOr[TurnDetectionLike] = NOT_GIVEN,
        keyterms: NotGivenOr[Sequence[str]] = NOT_GIVEN,
    ) -> None:
        """Change options: on the STT, for new streams and (with a ``config`` message) for the
        open ones; on a stream, for that stream. ``keyterms`` replaces the list from the next
        utterance (``[]``: none). ``ValueError`` for a value emostt would refuse."""
        # is_given() does not narrow a NotGivenOr of a union or a protocol: isinstance does
        self._apply_update(
            OptionsUpdate(
                language=server_language(language) if is_given(language) else NOT_GIVEN,
                interim_results=interim_results,
                word_timestamps=word_timestamps,
                session_config=checked_session_config(session_config)
                if not isinstance(session_config, NotGiven)
                else NOT_GIVEN,
                turn_detection=turn_detection_config(turn_detection)
                if not isinstance(turn_detection, NotGiven)
                else NOT_GIVEN,
                keyterms=keyterms_list(keyterms) if not isinstance(keyterms, NotGiven) else NOT_GIVEN,
            )
        )

    def _apply_update(self, update: OptionsUpdate) -> None:
        raise NotImplementedError


def checked_session_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    config = dict(config or {})
    if "sample_rate" in config or "type" in config:
        raise ValueError("session_config may not set 'type' or 'sample_rate' (use sample_rate=)")
    if not isinstance(config.get("gating", {}), Mapping):
        raise ValueError("session_config['gating'] must be a mapping")
    if config.get("gating", {}).get("drop_gated"):
        raise ValueError("use drop_gated=True rather than session_config gating.drop_gated")
    if "turn_detection" in config:
        raise ValueError("use turn_detection= rather than session_config['turn_detection']")
    return config


def base_urls(url: str) -> tuple[str, str]:
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
