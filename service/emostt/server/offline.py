"""``emostt transcribe``: audio files through the engine built from the settings, no server."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emostt.config import EngineSettings
from emostt.errors import EmosttError
from emostt.files.decode import AudioTooLongError, decode_audio
from emostt.inference.engine import TranscriptionRequest
from emostt.server.engines import engine_options

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
        # The service's file decoder: streamed, so a file of unknown length (a FLAC written to a
        # pipe) is read up to the limit instead of being trusted or refused by its header.
        try:
            with path.open("rb") as source:
                audio = decode_audio(source, MAX_FILE_SECONDS)
        except AudioTooLongError:
            raise EmosttError(
                f"{path} is longer than {MAX_FILE_SECONDS:.0f} s; transcribe takes utterances up to "
                f"{MAX_FILE_SECONDS:.0f} s (stream longer audio to the service, which segments it)"
            ) from None
        except OSError as exc:
            raise EmosttError(f"cannot read audio file {str(path)!r}: {exc.strerror or exc}") from None
        requests.append(
            TranscriptionRequest(
                audio,
                language=language,
                use_itn=use_itn,
                word_timestamps=word_timestamps,
                known_emotion_only=known_emotion_only,
            )
        )
    # The model runtime: only once the input is good.
    from emostt.inference.serving import load_with_fallback

    engine, _ = load_with_fallback(settings.model, settings.fallback_model, engine_options(settings))
    return [result.to_dict() for result in engine.transcribe(requests)]
