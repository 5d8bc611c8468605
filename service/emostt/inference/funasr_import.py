"""Import funasr without its banner on stdout (stdout carries JSON results in the CLI)."""

from __future__ import annotations

from typing import Any

from emostt.inference.stdout_guard import stdout_to_stderr

__all__ = ["auto_model_class", "sense_voice_class", "stdout_to_stderr"]


def auto_model_class() -> Any:
    with stdout_to_stderr():
        from funasr import AutoModel
    return AutoModel


def sense_voice_class() -> Any:
    with stdout_to_stderr():
        from funasr.models.sense_voice.model import SenseVoiceSmall
    return SenseVoiceSmall
