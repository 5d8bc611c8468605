"""Pipecat's ``Language`` <-> emostt's language hints and labels (the protocol core's
``SPOKEN_LANGUAGES``: SenseVoice's ``zh en yue ja ko``)."""

from __future__ import annotations

from typing import Final

from emostt_client.protocol import SPOKEN_LANGUAGES
from pipecat.transcriptions.language import Language

__all__ = ["emostt_language_to_language", "language_to_emostt_language"]

# emostt's labels are Pipecat's base language codes.
LANGUAGES: Final = {code: Language(code) for code in SPOKEN_LANGUAGES}


def language_to_emostt_language(language: Language | str) -> str | None:
    """Pipecat ``Language`` -> emostt's language hint (``zh en yue ja ko``), or ``None``.

    Regional variants map to their base language; Hong Kong Chinese (``zh-HK``) and every
    ``yue`` variant to Cantonese. ``None``: SenseVoice does not know the language (the service
    then sends ``auto``, automatic detection).
    """
    code = str(language.value if isinstance(language, Language) else language).lower()
    if code in ("auto", ""):
        return "auto"
    if code == "zh-hk" or code.startswith("yue"):
        return "yue"
    base = code.split("-")[0]
    if base == "cmn":
        return "zh"
    return base if base in LANGUAGES else None


def emostt_language_to_language(label: str | None) -> Language | None:
    """A final's ``language.label`` -> Pipecat ``Language`` (``None`` for ``nospeech``, ``unknown``…)."""
    return LANGUAGES.get(label or "")
