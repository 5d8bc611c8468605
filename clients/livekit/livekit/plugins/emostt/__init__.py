"""emostt plugin for LiveKit Agents

Streaming speech-to-text with the speaker's emotion, language and audio event from
[emostt](https://github.com/) (SenseVoiceSmall): ``emostt.STT(url=..., token=...)``.
Each final's ``SpeechData.metadata`` holds ``emotion``, ``language`` and ``event``
(``{label, scores}``), the session's ``mood``, ``gated`` and ``gate_reasons``, and, with
``keyterms=[...]`` (words to bias decoding towards), ``keyterms_matched``.
"""

from livekit.agents import Plugin

from .log import logger
from .models import EmosttLanguages, EmotionChangedEvent, EmotionContext
from .stt import STT, SpeechStream
from .version import __version__

__all__ = [
    "STT",
    "EmosttLanguages",
    "EmotionChangedEvent",
    "EmotionContext",
    "SpeechStream",
    "__version__",
]


class EmosttPlugin(Plugin):
    def __init__(self) -> None:
        super().__init__(__name__, __version__, __package__, logger)


Plugin.register_plugin(EmosttPlugin())
