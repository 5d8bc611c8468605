"""Signed int8 weights (``inference/int8_weights.py``): the quantization the export writes, the CPUs
that run it exactly, and the exact shift to unsigned weights for the others."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from emostt.inference.int8_weights import quantize_encoder, signed_weights_exact, unsigned_weights
from emostt.inference.ort_session import CPU_PROVIDERS, session_options

D_IN, D_HIDDEN, D_OUT = 64, 96, 48


def fp32_graph(path: Path) -> Path:
    """x @ W1 -> relu -> @ W2, then a projection named as funasr's rule keeps in float."""
    rng = np.random.default_rng(7)
    weights = {
        "w1": rng.standard_normal((D_IN, D_HIDDEN)).astype(np.float32),
        "w2": rng.standard_normal((D_HIDDEN, D_OUT)).astype(np.float32),
        "w3": rng.standard_normal((D_OUT, D_OUT)).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="encoder/layer0/w1"),
        helper.make_node("Relu", ["h"], ["r"], name="encoder/layer0/relu"),
        helper.make_node("MatMul", ["r", "w2"], ["o"], name="encoder/layer0/w2"),
        helper.make_node("MatMul", ["o", "w3"], ["y"], name="encoder/output_projection"),
    ]
    graph = helper.make_graph(
        nodes,
        "encoder_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", D_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", D_OUT])],
        [numpy_helper.from_array(w, name) for name, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("int8")
    out = folder / "model_quant.onnx"
    quantize_encoder(fp32_graph(folder / "model.onnx"), out)
    return out


def matmul_weights(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each MatMulInteger node's weight and weight zero point."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        n.name: (inits[n.input[1]], inits[n.input[3]])
        for n in model.graph.node
        if n.op_type == "MatMulInteger"
    }


def run(graph: str | bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(graph, session_options(1), providers=CPU_PROVIDERS)
    return np.asarray(session.run(None, {"x": x})[0])


def test_the_export_quantizes_matmuls_to_signed_weights_per_channel(quantized: Path) -> None:
    weights = matmul_weights(onnx.load(str(quantized)))
    assert len(weights) == 2, "the output projection stays in float, as funasr's exporter leaves it"
    for weight, zero_point in weights.values():
        assert weight.dtype == np.int8 and zero_point.dtype == np.int8
        assert zero_point.shape == (weight.shape[1],), "one zero point per output channel"
        assert np.abs(weight).max() > 64, "full 8-bit range, not reduce_range's 7 bits"


def test_shifting_to_unsigned_weights_gives_the_same_outputs_exactly(quantized: Path) -> None:
    shifted = unsigned_weights(quantized)
    for weight, zero_point in matmul_weights(onnx.load_from_string(shifted)).values():
        assert weight.dtype == np.uint8 and zero_point.dtype == np.uint8
    signed = {name: w for name, (w, _) in matmul_weights(onnx.load(str(quantized))).items()}
    for name, (weight, _) in matmul_weights(onnx.load_from_string(shifted)).items():
        np.testing.assert_array_equal(weight.astype(np.int16) - 128, signed[name])
    # ONNX's reference evaluator computes the signed graph in numpy (int32 products, as the spec
    # says); ONNX Runtime on the shifted graph agrees to float rounding, on any CPU.
    x = np.random.default_rng(1).standard_normal((5, D_IN)).astype(np.float32)
    got = run(shifted, x)
    want = ReferenceEvaluator(str(quantized)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if signed_weights_exact():  # where the server serves the signed graph itself: bit for bit
        np.testing.assert_array_equal(run(str(quantized), x), got)


def test_an_unsigned_graph_comes_back_unchanged(quantized: Path, tmp_path: Path) -> None:
    once = tmp_path / "unsigned.onnx"
    once.write_bytes(unsigned_weights(quantized))
    twice = onnx.load_from_string(unsigned_weights(once))
    for name, (weight, zero_point) in matmul_weights(twice).items():
        first = matmul_weights(onnx.load(str(once)))[name]
        np.testing.assert_array_equal(weight, first[0])
        np.testing.assert_array_equal(zero_point, first[1])


@pytest.mark.parametrize(
    ("machine", "flags", "exact"),
    [
        ("x86_64", {"avx2", "fma"}, False),  # Haswell to Skylake client, Zen 2, Zen 3
        ("x86_64", {"avx2", "avx512f", "avx512bw"}, False),  # Skylake-SP: AVX-512 without VNNI
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, True),  # Cascade Lake on, Zen 4 on
        ("x86_64", {"avx2", "avx_vnni"}, True),  # Alder Lake on
        ("x86_64", {"amx_int8"}, True),
        ("aarch64", set(), True),
    ],
)
def test_signed_weights_are_exact_where_u8_times_s8_never_sums_in_16_bits(
    machine: str, flags: set[str], exact: bool
) -> None:
    assert signed_weights_exact(machine, frozenset(flags)) is exact
