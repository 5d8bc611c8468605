"""The int8 encoder's weights: quantized signed, per output channel, and made unsigned at load on
the CPUs where signed weights are not exact.

**Why signed.** ONNX Runtime's integer GEMM (MLAS) multiplies the u8 activations that
``DynamicQuantizeLinear`` makes by s8 weights with VNNI or AMX instructions on x86; u8 weights
(funasr's own quantization) take a u8 x u8 kernel that widens both to 16 bits first. On the
full-size SenseVoiceSmall graph on a 2-core Xeon with AVX512-VNNI and AMX, signed weights ran a
lone 2 s call 1.6x and one-thread batches 3x faster, with the same error against the fp32
graph (docs/engine.md, "Signed int8 weights").

**Where they are not exact.** An x86 CPU without VNNI (AVX2 or AVX-512 without VNNI: Haswell to
Skylake, AMD Zen 2 and Zen 3) runs u8 x s8 with ``vpmaddubsw``, which adds two products in 16
bits and saturates: 255 x 127 x 2 overflows. There the signed weights are shifted to unsigned
when the graph is loaded: ``w + 128`` with zero point ``z + 128`` gives ``(w + 128) - (z + 128)
= w - z``, the same products exactly, on the u8 x u8 kernel. (ONNX Runtime's other answer,
7-bit weights, ``reduce_range``, had 26-28 % more error against fp32, on every CPU.)

The quantization mirrors funasr's exporter in everything else: MatMuls only, dynamic, per
channel, and the same nodes left in float (those funasr's rule names: ``output``,
``bias_encoder``, ``bias_decoder``).

Concurrency: pure functions of files; any thread may call them.
"""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

import numpy as np

# The quantization of the graphs this emostt exports: in the ONNX cache's entry names and the
# exported dir's manifest, so a graph quantized otherwise is never mistaken for one of these.
QUANTIZATION = "int8-signed-per-channel"
# funasr's exporter's (quantize=True): what exported dirs whose manifest names none hold.
FUNASR_QUANTIZATION = "int8-unsigned-per-channel"
# funasr's exporter leaves the nodes whose names hold these in float.
FLOAT_NODE_MARKS = ("output", "bias_encoder", "bias_decoder")
# x86 CPU flags (Linux /proc/cpuinfo) of the instructions that multiply u8 by s8 without an
# intermediate 16-bit sum: AVX512-VNNI, AVX-VNNI, AMX-INT8.
EXACT_SIGNED_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686"})
# The weight and weight zero point inputs of ONNX's MatMulInteger.
WEIGHT_INPUT, WEIGHT_ZERO_POINT_INPUT = 1, 3


def quantize_encoder(
    fp32_graph: Path, out: Path, *, signed: bool = True, per_channel: bool = True, reduce_range: bool = False
) -> None:
    """Write the int8 graph of the fp32 encoder graph ``fp32_graph`` (weights as external data
    beside it, as funasr's exporter writes them) to ``out``. For the export (imports onnx). The
    defaults are ``QUANTIZATION``; tools/bench_int8_weights.py measures the others."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = [node.name for node in onnx.load(str(fp32_graph), load_external_data=False).graph.node]
    quantize_dynamic(
        model_input=str(fp32_graph),
        model_output=str(out),
        op_types_to_quantize=["MatMul"],
        per_channel=per_channel,
        reduce_range=reduce_range,
        weight_type=QuantType.QInt8 if signed else QuantType.QUInt8,
        nodes_to_exclude=[name for name in names if any(mark in name for mark in FLOAT_NODE_MARKS)],
    )


def signed_weights_exact(machine: str | None = None, flags: frozenset[str] | None = None) -> bool:
    """Whether ONNX Runtime multiplies u8 by s8 exactly on this CPU (``machine``: platform.machine(),
    ``flags``: its CPU flags; None: this machine's)."""
    machine = (machine or platform.machine()).lower()
    if machine not in X86_MACHINES:
        return True  # MLAS's ARM64 kernels (dot products, widening multiplies) never sum in 16 bits
    return bool((cpu_flags() if flags is None else flags) & EXACT_SIGNED_FLAGS)


@cache
def cpu_flags() -> frozenset[str]:
    """This CPU's flags as Linux lists them; empty where /proc/cpuinfo cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def unsigned_weights(graph: Path) -> bytes:
    """The serialized graph ``graph`` with every signed MatMulInteger weight shifted to unsigned
    (exactly the same products; see the module docstring). Unsigned graphs come back unchanged."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(graph))
    initializers = {init.name: init for init in model.graph.initializer}
    signed = onnx.TensorProto.INT8
    shifted: set[str] = set()
    for node in model.graph.node:
        if node.op_type != "MatMulInteger" or len(node.input) <= WEIGHT_ZERO_POINT_INPUT:
            continue
        weight = initializers.get(node.input[WEIGHT_INPUT])
        zero_point = initializers.get(node.input[WEIGHT_ZERO_POINT_INPUT])
        if weight is None or zero_point is None:
            continue  # computed at run time: not a weight
        if weight.data_type != signed and weight.name not in shifted:
            continue  # unsigned already
        for tensor in (weight, zero_point):
            if tensor.data_type == signed:  # a tensor two nodes share is shifted once
                as_unsigned = (numpy_helper.to_array(tensor).astype(np.int16) + 128).astype(np.uint8)
                tensor.CopyFrom(numpy_helper.from_array(as_unsigned, tensor.name))
                shifted.add(tensor.name)
    return bytes(model.SerializeToString())
