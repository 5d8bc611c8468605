"""What the retry runner, and so the batcher, hands back for each utterance: a served result or
a named failure.

``Failed.message`` goes to the client as is, so it never holds exception text: details are
logged where the failure happens.
"""

from __future__ import annotations

from dataclasses import dataclass

from emostt.inference.engine import TranscriptionResult


@dataclass(frozen=True)
class Served:
    result: TranscriptionResult
    degraded: bool = False


@dataclass(frozen=True)
class Failed:
    code: str
    message: str
    retryable: bool


Outcome = Served | Failed
