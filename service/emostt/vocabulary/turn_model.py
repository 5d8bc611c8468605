"""The end-of-turn model: its file, and where Pipecat ships it.

Smart Turn v3.2 (BSD-2-Clause, by Daily for Pipecat) is one ONNX file inside the pipecat-ai
wheel; emostt never downloads it (docs/engine.md, "Turn model"). Defined here because the
settings (validation at start-up) and the inference layer (locating and loading it) both read it.
"""

from __future__ import annotations

TURN_MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
# The file's place inside the installed ``pipecat`` package (pipecat-ai 1.x).
PIPECAT_TURN_MODEL_PARTS = ("audio", "turn", "smart_turn", "data", TURN_MODEL_FILE)
TURN_MODEL_CHOICES = "auto, off, or the path of a Smart Turn .onnx file"
