"""Smart Turn v3.2, the end-of-turn model (BSD-2-Clause, Pipecat): locating it, and one batched call.

``locate_turn_model(setting)`` resolves ``turn_model`` (auto | off | PATH) to a file or to the
reason there is none; "auto" finds the installed pipecat-ai's copy without importing pipecat (its
package import is heavy and logs), and never downloads anything. ``SmartTurn.predict`` runs one
batch: the model's input is each turn's Whisper log-mel (``turn_features.py``), its output the
probability that the turn is complete. The batch dimension is dynamic and the quantisation static
(QDQ with fixed scales), so a clip's probability does not depend on what it is batched with.

Concurrency: one thread (the turn thread, ``streaming/turns.py``) calls ``predict``; the ONNX
Runtime session runs with one intra-op thread, the caller's own.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emostt.inference.ort_session import CPU_PROVIDERS, session_options
from emostt.inference.turn_features import FloatArray, turn_feature_batch
from emostt.vocabulary.turn_model import PIPECAT_TURN_MODEL_PARTS


@dataclass(frozen=True)
class TurnModelChoice:
    path: Path | None  # None: turn detection is off
    reason: str  # for the one start-up log line: where the file came from, or why it is off


def pipecat_turn_model() -> Path | None:
    """The ONNX file inside the installed pipecat-ai, or None. ``find_spec`` of a top-level
    package reads its location without running its ``__init__``."""
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*PIPECAT_TURN_MODEL_PARTS)
        if path.is_file():
            return path
    return None


def locate_turn_model(setting: str) -> TurnModelChoice:
    """What ``turn_model`` (already validated: auto, off or an existing .onnx file) means here."""
    if setting == "off":
        return TurnModelChoice(None, "turn_model is off")
    if setting != "auto":
        return TurnModelChoice(Path(setting), "turn_model")
    found = pipecat_turn_model()
    if found is None:
        reason = "turn_model is auto and pipecat-ai is not installed: set turn_model to its .onnx path"
        return TurnModelChoice(None, reason)
    return TurnModelChoice(found, "turn_model auto: the installed pipecat-ai's copy")


class SmartTurn:
    """The ONNX Runtime session on CPU, set up as Pipecat's analyzer sets up its own."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        self.path = path
        self._session: Any = ort.InferenceSession(
            str(path), sess_options=session_options(1), providers=CPU_PROVIDERS
        )

    def predict(self, audios: list[FloatArray]) -> list[float]:
        """P(turn complete) for each turn (16 kHz mono float32, any length; the last 8 s count)."""
        if not audios:
            return []
        (probs,) = self._session.run(None, {"input_features": turn_feature_batch(audios)})
        return [float(p) for p in np.asarray(probs, dtype=np.float32).reshape(len(audios))]
