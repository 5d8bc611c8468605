"""How a user's turn ends: the session config's ``turn_detection`` (docs/protocol.md, "Turns").

``{"type": "silence"}`` (the server's default): after ``vad.silence_duration_ms`` of silence.
``{"type": "semantic", "eagerness": ...}``: at a pause the server's turn model says whether the
turn is complete; the ``final`` comes at the turn's end (``Final.end_of_turn_confidence``), an
``eager_end_of_turn`` when the model is fairly sure, and ``turn_resumed`` if speech comes back.

Standard library only: part of the protocol core (``emostt_client.protocol`` re-exports it), so the
SDK, the LiveKit plugin and the Pipecat service take the same values. The server checks the ranges
(an ``invalid_config`` error); here only the type and the eagerness are checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from emostt_client.keyterms import keyterms_list

__all__ = [
    "EAGERNESS",
    "TURN_TYPES",
    "Eagerness",
    "TurnDetection",
    "TurnDetectionLike",
    "config_fields",
    "is_semantic",
    "turn_detection_config",
]

Eagerness = Literal["low", "medium", "high", "auto"]
EAGERNESS: tuple[Eagerness, ...] = ("low", "medium", "high", "auto")
TURN_TYPES = ("silence", "semantic")


@dataclass(frozen=True)
class TurnDetection:
    """A typed ``turn_detection``: ``TurnDetection("semantic", eagerness="high")``. Fields left
    None are not sent (the server keeps its own value: the eagerness's thresholds).

    ``threshold``: P(turn complete) at a pause that ends the turn; ``eager_threshold``: the P from
    which an ``eager_end_of_turn`` is sent; ``min_pause_ms``: the pause that asks the model;
    ``max_silence_ms``: the turn ends after this much silence whatever the model says."""

    type: Literal["silence", "semantic"] = "semantic"
    eagerness: Eagerness | None = None
    threshold: float | None = None
    eager_threshold: float | None = None
    min_pause_ms: int | None = None
    max_silence_ms: int | None = None

    def to_config(self) -> dict[str, Any]:
        """The session config's ``turn_detection`` value."""
        fields = (
            ("eagerness", self.eagerness),
            ("threshold", self.threshold),
            ("eager_threshold", self.eager_threshold),
            ("min_pause_ms", self.min_pause_ms),
            ("max_silence_ms", self.max_silence_ms),
        )
        return turn_detection_config({"type": self.type, **{k: v for k, v in fields if v is not None}})


TurnDetectionLike = TurnDetection | Mapping[str, Any]


def turn_detection_config(value: TurnDetectionLike) -> dict[str, Any]:
    """``value`` (a ``TurnDetection`` or a mapping) as the config's ``turn_detection`` dict;
    ``ValueError`` for an unknown type or eagerness."""
    if isinstance(value, TurnDetection):
        return value.to_config()
    if not isinstance(value, Mapping):
        raise ValueError(f"turn_detection must be a mapping or a TurnDetection, not {type(value).__name__}")
    config = dict(value)
    if config.get("type", "silence") not in TURN_TYPES:
        raise ValueError(f"turn_detection type must be one of {TURN_TYPES}, not {config['type']!r}")
    if "eagerness" in config and config["eagerness"] not in EAGERNESS:
        raise ValueError(f"turn_detection eagerness must be one of {EAGERNESS}, not {config['eagerness']!r}")
    return config


def is_semantic(value: TurnDetectionLike | None) -> bool:
    """Whether ``value`` asks for semantic turns (the turn model ends the turn)."""
    return value is not None and turn_detection_config(value).get("type") == "semantic"


def config_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Session config fields as sent: a ``turn_detection`` among them becomes its dict, and
    ``keyterms`` a checked list (``emostt_client.keyterms``); ``ValueError`` for either one wrong."""
    out = dict(fields)
    if out.get("turn_detection") is not None:
        out["turn_detection"] = turn_detection_config(out["turn_detection"])
    if out.get("keyterms") is not None:
        out["keyterms"] = keyterms_list(out["keyterms"])
    return out
