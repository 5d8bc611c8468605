"""The plugin's options: what each stream sends in its ``config`` message, and the checks and
translations of what the user passed (language hints, session config, the server's URL)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from emostt_client.protocol import SPOKEN_LANGUAGES, TurnDetectionLike, turn_detection_config
from livekit.agents import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGiven, NotGivenOr
from livekit.agents.utils import is_given

from .log import logger

__all__ = ["STTOptions", "apply_options", "base_urls", "checked_session_config", "server_language"]


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

    def config_message(self) -> dict[str, Any]:
        # a final for every utterance, gated or not, so that END_OF_SPEECH always comes: the
        # plugin's drop_gated does the dropping (server-side defaults may turn drop_gated on)
        gating = {**self.session_config.get("gating", {}), "drop_gated": False}
        turns = {} if self.turn_detection is None else {"turn_detection": self.turn_detection}
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


def apply_options(
    opts: STTOptions,
    language: NotGivenOr[str],
    interim_results: NotGivenOr[bool],
    word_timestamps: NotGivenOr[bool],
    session_config: NotGivenOr[Mapping[str, Any]],
    turn_detection: NotGivenOr[TurnDetectionLike] = NOT_GIVEN,
) -> None:
    """Set on ``opts`` the options given to ``update_options`` (the STT's and a stream's alike)."""
    if is_given(language):
        opts.language = server_language(language)
    if is_given(interim_results):
        opts.interim_results = interim_results
    if is_given(word_timestamps):
        opts.word_timestamps = word_timestamps
    if is_given(session_config):
        opts.session_config = checked_session_config(session_config)
    if not isinstance(turn_detection, NotGiven):  # is_given() does not narrow this union
        opts.turn_detection = turn_detection_config(turn_detection)


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
