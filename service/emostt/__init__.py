"""emostt: emotion-aware streaming speech-to-text for voice agents."""

__version__ = "0.1.0"
