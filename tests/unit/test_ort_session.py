"""The ONNX Runtime session options (``inference/ort_session.py``) reach every session made."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from emostt.inference.lone_call import running_alone
from emostt.inference.onnx_encoder import OnnxEncoder
from emostt.inference.ort_session import EncoderThreads, encoder_threads, session_options


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
    assert encoder_threads(None, cores=4).per_call == 1
    assert encoder_threads(3, cores=4).per_call == 3


@pytest.mark.parametrize(
    ("threads", "lone", "cores", "wide"),
    [
        (None, None, 4, 4),  # one thread per worker: a lone call gets every core
        (1, None, 2, 2),  # the same when 1 is configured (the Helm chart sets it)
        (None, None, 1, 0),  # one core: nothing wider to have
        (2, None, 4, 0),  # a configured shared pool: no second session unless asked
        (2, 4, 4, 4),
        (None, 1, 4, 0),  # 1 turns it off
        (None, 3, 8, 3),
    ],
)
def test_a_wide_session_for_lone_calls_when_it_is_wider(
    threads: int | None, lone: int | None, cores: int, wide: int
) -> None:
    assert encoder_threads(threads, lone, cores) == EncoderThreads(threads or 1, wide)


def test_lone_calls_run_on_the_wide_spinning_session_and_agree(tmp_path: Path) -> None:
    encoder = OnnxEncoder(_encoder_shaped_graph(tmp_path / "g.onnx"), EncoderThreads(1, 2))
    feats = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    args = (feats, np.array([3, 2]), np.zeros(2), np.zeros(2))
    shared = encoder.session_for_this_call()
    assert shared.get_session_options().intra_op_num_threads == 1
    with running_alone(False) as beside:
        narrow = encoder.run(*args)
    assert not beside.widened
    with running_alone(True) as call:
        wide = encoder.session_for_this_call()
        made = wide.get_session_options()
        assert wide is not shared and made.intra_op_num_threads == 2
        assert made.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        assert made.get_session_config_entry("session.force_spinning_stop") == "1"
        assert made.enable_cpu_mem_arena is False
        lone = encoder.run(*args)
        with running_alone(False):  # a nested call that is not alone
            assert encoder.session_for_this_call() is shared
        assert encoder.session_for_this_call() is wide
    assert encoder.session_for_this_call() is shared
    assert call.widened, "the batcher learns that this call had every core"
    for a, b in zip(narrow, lone, strict=True):
        np.testing.assert_array_equal(a, b)


def test_without_a_wide_session_lone_calls_use_the_shared_one(tmp_path: Path) -> None:
    encoder = OnnxEncoder(_encoder_shaped_graph(tmp_path / "g.onnx"), EncoderThreads(2))
    with running_alone(True) as call:
        assert encoder.session_for_this_call() is encoder._session
    assert not call.widened


def test_the_encoder_session_is_made_with_them(tmp_path: Path) -> None:
    encoder = OnnxEncoder(_encoder_shaped_graph(tmp_path / "g.onnx"), EncoderThreads(2))
    made = encoder._session.get_session_options()
    assert made.enable_cpu_mem_arena is False
    assert made.intra_op_num_threads == 2
    assert made.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    feats = np.ones((2, 3, 4), dtype=np.float32)
    logits, lens = encoder.run(feats, np.array([3, 2]), np.zeros(2), np.zeros(2))
    np.testing.assert_array_equal(logits, feats)
    np.testing.assert_array_equal(lens, [3, 2])
