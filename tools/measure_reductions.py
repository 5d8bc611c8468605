"""Where the CTC reductions run fastest on the CPU: numpy, torch, or inside the ONNX graph.

    .venv/bin/python tools/measure_reductions.py [--frames 58,178,508] [--vocab 25055] [--logits F.npy]

The reductions are what decoding needs from an utterance's (T, V) CTC logits: the logsumexp
normaliser at every frame, the argmax and its log-prob, the blank's log-prob, and the rich
tokens' log-probs at the four query frames. Timed on one utterance (the CPU server's batch),
one thread each, CPU time of this process, best of five rounds:

- ``numpy chunks``: ``ctc_batch.reduce_logits`` as served (8 frames at a time);
- ``numpy whole``: the same steps over the whole (T, V) array at once;
- ``torch``: ``SenseVoiceEngine.results_from_logits``'s reductions;
- ``graph``: the reductions as ONNX nodes (ReduceLogSumExp, ArgMax, GatherElements, Gather)
  over the logits, on ONNX Runtime; ``graph logsoftmax``: LogSoftmax, then the gathers;
- ``logits copy``: one copy of the logits (what keeping the reductions in the graph would save
  besides the reductions themselves: ONNX Runtime hands its output over as a new array).

``--logits``: a saved (1, T, V) float32 array of real logits instead of CTC-like random ones.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from emostt.inference.ctc_batch import reduce_logits
from emostt.inference.rich_tokens import QUERY_FRAMES

BLANK = 0


def cpu_ms(fn: Callable[[], object], calls: int = 10) -> float:
    best = float("inf")
    fn()
    for _ in range(5):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls)
    return best * 1e3


def numpy_whole(x: np.ndarray, rich: np.ndarray) -> list[np.ndarray]:
    ids = x.argmax(-1)
    best = np.take_along_axis(x, ids[..., None], -1)[..., 0]
    lse = np.log(np.exp(x - best[..., None]).sum(-1)) + best
    query = x[:, :QUERY_FRAMES][..., rich] - lse[:, :QUERY_FRAMES, None]
    return [ids, best - lse, x[..., BLANK] - lse, query]


def torch_reductions(x: np.ndarray, rich: torch.Tensor) -> list[np.ndarray]:
    logits = torch.from_numpy(x)
    lse = torch.logsumexp(logits, dim=-1)
    best_logit, best_ids = logits.max(dim=-1)
    query = logits[:, :QUERY_FRAMES].index_select(-1, rich) - lse[:, :QUERY_FRAMES, None]
    return [t.numpy() for t in (best_ids, best_logit - lse, logits[..., BLANK] - lse, query)]


def graph_session(vocab: int, rich: np.ndarray, log_softmax: bool) -> ort.InferenceSession:
    """An ONNX graph of the reductions over logits (1, T, V), one intra-op thread."""
    ints = {"axis": [2], "blank": [BLANK], "zero": [0], "four": [QUERY_FRAMES], "one": [1]}
    inits = [helper.make_tensor(k, TensorProto.INT64, [len(v)], v) for k, v in ints.items()]
    inits.append(helper.make_tensor("rich", TensorProto.INT64, [len(rich)], rich.tolist()))
    if log_softmax:
        nodes = [helper.make_node("LogSoftmax", ["x"], ["lp"], axis=2)]
        nodes += [helper.make_node("ArgMax", ["lp"], ["ids"], axis=2, keepdims=1)]
        nodes += [helper.make_node("GatherElements", ["lp", "ids"], ["best"], axis=2)]
        nodes += [helper.make_node("Gather", ["lp", "blank"], ["blank_lp"], axis=2)]
        nodes += [helper.make_node("Slice", ["lp", "zero", "four", "one"], ["lp4"])]
        nodes += [helper.make_node("Gather", ["lp4", "rich"], ["query"], axis=2)]
    else:
        nodes = [helper.make_node("ReduceLogSumExp", ["x", "axis"], ["lse"], keepdims=1)]
        nodes += [helper.make_node("ArgMax", ["x"], ["ids"], axis=2, keepdims=1)]
        nodes += [helper.make_node("GatherElements", ["x", "ids"], ["best_logit"], axis=2)]
        nodes += [helper.make_node("Sub", ["best_logit", "lse"], ["best"])]
        nodes += [helper.make_node("Gather", ["x", "blank"], ["blank_logit"], axis=2)]
        nodes += [helper.make_node("Sub", ["blank_logit", "lse"], ["blank_lp"])]
        nodes += [helper.make_node("Slice", ["x", "zero", "four", "one"], ["x4"])]
        nodes += [helper.make_node("Slice", ["lse", "zero", "four", "one"], ["lse4"])]
        nodes += [helper.make_node("Gather", ["x4", "rich"], ["query_logit"], axis=2)]
        nodes += [helper.make_node("Sub", ["query_logit", "lse4"], ["query"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, vocab])]
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64 if name == "ids" else TensorProto.FLOAT, None)
        for name in ("ids", "best", "blank_lp", "query")
    ]
    graph = helper.make_graph(nodes, "reductions", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def ctc_like(frames: int, vocab: int, rng: np.random.Generator) -> np.ndarray:
    logits = rng.standard_normal((1, frames, vocab)).astype(np.float32) * 2
    logits[..., BLANK] += 8.0
    spikes = rng.random(frames) < 0.3
    logits[0, spikes, rng.integers(1, vocab, spikes.sum())] += 14.0
    return logits


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", default="58,178,508", help="CTC frames (queries included); 60 ms each")
    parser.add_argument("--vocab", type=int, default=25055)
    parser.add_argument("--logits", action="append", default=[], help="saved (1, T, V) logits (.npy)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    cases = [np.load(path) for path in args.logits] or [
        ctc_like(int(n), args.vocab, rng) for n in args.frames.split(",")
    ]
    vocab = cases[0].shape[-1]
    rich = np.arange(vocab - 30, vocab - 4, dtype=np.int64)
    rich_t = torch.from_numpy(rich)
    sessions = {False: graph_session(vocab, rich, False), True: graph_session(vocab, rich, True)}
    print(f"vocabulary {vocab}; ms of CPU per utterance (best of 5 rounds)")
    for x in cases:
        lens = np.array([x.shape[1]])
        timings = {
            "numpy chunks": cpu_ms(lambda x=x, lens=lens: reduce_logits(x, lens, BLANK, list(rich), [])),
            "numpy whole": cpu_ms(lambda x=x: numpy_whole(x, rich)),
            "torch": cpu_ms(lambda x=x: torch_reductions(x, rich_t)),
            "graph": cpu_ms(lambda x=x: sessions[False].run(None, {"x": x})),
            "graph logsoftmax": cpu_ms(lambda x=x: sessions[True].run(None, {"x": x})),
            "logits copy": cpu_ms(lambda x=x: x.copy()),
        }
        frames = x.shape[1]
        cells = "  ".join(f"{name} {ms:6.2f}" for name, ms in timings.items())
        print(f"{frames:4d} frames ({(frames - QUERY_FRAMES) * 0.06:4.1f} s): {cells}")


if __name__ == "__main__":
    main()
