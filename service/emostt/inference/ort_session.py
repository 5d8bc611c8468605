"""ONNX Runtime session options: the one definition every session of the server is made with
(the SenseVoice encoder, Silero VAD, the turn model).

Measured on the full-size SenseVoiceSmall int8 graph (docs/engine.md, "CPU threads"):

- **no CPU memory arena**: ONNX Runtime's arena keeps the largest shapes it has seen (a batch
  of 16 x 10 s left the process at 1021 MiB, against 571 MiB without it) and costs no
  measurable time (thread CPU per utterance equal within 5 % at 2 s and 10 s, batches 1-16);
- **no spinning**: intra-op threads that spin between parallel sections hold the cores other
  threads need; on a shared 2-core machine a 2 s call with 2 spinning threads ran at 1.9x real
  time, with 2 threads that sleep at 6.1x, and with one thread at 4.4x;
- **inter-op 1**, sequential execution: the graph is one chain of layers;
- ``threads`` intra-op threads per session (``encoder_threads``: one for the encoder unless
  configured): the model workers run their calls on their own threads.

Concurrency: pure; any thread may call these.
"""

from __future__ import annotations

from typing import Any


def session_options(threads: int) -> Any:
    """``onnxruntime.SessionOptions`` for a CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(threads, 1)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


CPU_PROVIDERS = ["CPUExecutionProvider"]


def encoder_threads(configured: int | None) -> int:
    """Intra-op threads of the encoder's session: ``configured`` (the ``threads`` setting), else
    one. With one, a call runs on its caller's thread and no pool exists: each model worker (one
    per core) is its own thread pool. More threads make one pool the workers share, whose
    parallel sections wait for every thread at each operator, so they lose whenever a core is
    busy elsewhere (docs/engine.md, "CPU threads")."""
    return configured or 1
