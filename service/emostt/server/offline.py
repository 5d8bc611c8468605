"""``emostt transcribe``: audio files through the engine built from the settings, no server."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emostt.audio import read_audio_file
from emostt.config import EngineSettings
from emostt.errors import EmosttError
from emostt.inference.engine import TranscriptionRequest
from emostt.server.engines import engine_options
from emostt.vocabulary import SAMPLE_RATE

# One file is one utterance to the model, whose limit is 30 s; longer audio goes to the service.
MAX_FILE_SECONDS = 30.0


def transcribe_files(
    settings: EngineSettings,
    paths: Sequence[Path],
    *,
    language: str = "auto",
    use_itn: bool = True,
    word_timestamps: bool = False,
    known_emotion_only: bool = False,
) -> list[dict[str, Any]]:
    """Each file's result (``TranscriptionResult.to_dict``), in order. Every file is read and
    checked before the model loads, so a bad path fails fast."""
    requests = []
    for path in paths:
        audio = read_audio_file(path)
        if len(audio) > MAX_FILE_SECONDS * SAMPLE_RATE:
            raise EmosttError(
                f"{path} is {len(audio) / SAMPLE_RATE:.0f} s long; transcribe takes utterances up to "
                f"{MAX_FILE_SECONDS:.0f} s (stream longer audio to the service, which segments it)"
            )
        requests.append(
            TranscriptionRequest(
                audio,
                language=language,
                use_itn=use_itn,
                word_timestamps=word_timestamps,
                known_emotion_only=known_emotion_only,
            )
        )
    from emostt.inference.sensevoice import SenseVoiceEngine  # torch: only once the input is good

    engine = SenseVoiceEngine.load_with_fallback(
        settings.model, settings.fallback_model, engine_options(settings)
    )
    return [result.to_dict() for result in engine.transcribe(requests)]
