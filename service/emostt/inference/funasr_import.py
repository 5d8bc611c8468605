"""Import funasr without its banner on stdout (stdout carries JSON results in the CLI)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    with contextlib.redirect_stdout(sys.stderr):
        yield


def auto_model_class() -> Any:
    with stdout_to_stderr():
        from funasr import AutoModel
    return AutoModel


def sense_voice_class() -> Any:
    with stdout_to_stderr():
        from funasr.models.sense_voice.model import SenseVoiceSmall
    return SenseVoiceSmall
