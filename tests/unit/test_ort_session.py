"""The ONNX Runtime session options (``inference/ort_session.py``) reach every session made."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from emostt.inference.onnx_encoder import OnnxEncoder
from emostt.inference.ort_session import encoder_threads, session_options


def _encoder_shaped_graph(path: Path) -> Path:
    """A graph with the encoder's inputs and outputs (logits = speech, lengths passed through)."""
    inputs = [
        helper.make_tensor_value_info("speech", TensorProto.FLOAT, ["B", "T", "D"]),
        helper.make_tensor_value_info("speech_lengths", TensorProto.INT32, ["B"]),
        helper.make_tensor_value_info("language", TensorProto.INT32, ["B"]),
        helper.make_tensor_value_info("textnorm", TensorProto.INT32, ["B"]),
    ]
    outputs = [
        helper.make_tensor_value_info("ctc_logits", TensorProto.FLOAT, ["B", "T", "D"]),
        helper.make_tensor_value_info("encoder_out_lens", TensorProto.INT32, ["B"]),
    ]
    nodes = [
        helper.make_node("Identity", ["speech"], ["ctc_logits"]),
        helper.make_node("Identity", ["speech_lengths"], ["encoder_out_lens"]),
    ]
    graph = helper.make_graph(nodes, "encoder_shaped", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("threads", [1, 2])
def test_options_turn_the_arena_and_spinning_off(threads: int) -> None:
    options = session_options(threads)
    assert options.intra_op_num_threads == threads
    assert options.inter_op_num_threads == 1
    assert options.enable_cpu_mem_arena is False
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_the_encoder_runs_on_its_callers_threads_unless_configured() -> None:
    assert encoder_threads(None) == 1
    assert encoder_threads(3) == 3


def test_the_encoder_session_is_made_with_them(tmp_path: Path) -> None:
    encoder = OnnxEncoder(_encoder_shaped_graph(tmp_path / "g.onnx"), threads=2)
    made = encoder._session.get_session_options()
    assert made.enable_cpu_mem_arena is False
    assert made.intra_op_num_threads == 2
    assert made.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    feats = np.ones((2, 3, 4), dtype=np.float32)
    logits, lens = encoder.run(feats, np.array([3, 2]), np.zeros(2), np.zeros(2))
    np.testing.assert_array_equal(logits, feats)
    np.testing.assert_array_equal(lens, [3, 2])
