"""pipecat-emostt: emostt, the emotion-aware streaming speech-to-text server, as a Pipecat STT service.

    from pipecat_emostt import EmosttSTTService

    stt = EmosttSTTService(url="ws://localhost:8000", device_id="robot-1", token="SECRET")

Each ``TranscriptionFrame.result`` is emostt's whole ``final`` event: ``emotion``, ``mood``,
``language`` and ``event`` distributions, ``confidence``, ``gated``… (docs/protocol.md).
"""

from pipecat_emostt.frames import EmotionChangedFrame
from pipecat_emostt.stt import (
    RETRYABLE_CLOSE_CODES,
    EmosttRefusedError,
    EmosttSTTService,
    EmosttSTTSettings,
    emostt_language_to_language,
    language_to_emostt_language,
)

__version__ = "0.1.0"

__all__ = [
    "RETRYABLE_CLOSE_CODES",
    "EmosttRefusedError",
    "EmosttSTTService",
    "EmosttSTTSettings",
    "EmotionChangedFrame",
    "__version__",
    "emostt_language_to_language",
    "language_to_emostt_language",
]
