"""ONNX Runtime session options: the one definition every session of the server is made with
(the SenseVoice encoder, Silero VAD, the turn model).

Measured on the full-size SenseVoiceSmall int8 graph (docs/engine.md, "CPU threads"):

- **no CPU memory arena**: ONNX Runtime's arena keeps the largest shapes it has seen (a batch
  of 16 x 10 s left the process at 1021 MiB, against 571 MiB without it) and costs no
  measurable time (thread CPU per utterance equal within 5 % at 2 s and 10 s, batches 1-16);
- **no spinning**: intra-op threads that spin between parallel sections hold the cores other
  threads need; on a shared 2-core machine a 2 s call with 2 spinning threads ran at 1.9x real
  time, with 2 threads that sleep at 6.1x, and with one thread at 4.4x. The one exception is
  the encoder's wide session for lone calls (``lone_call.py``), which runs only when no other
  model work does;
- **inter-op 1**, sequential execution: the graph is one chain of layers;
- ``threads`` intra-op threads per session (``encoder_threads``: one for the encoder unless
  configured, and every core for its wide session): the model workers run their calls on their
  own threads.

Concurrency: pure; any thread may call these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emostt.machine import usable_cores


def session_options(threads: int, *, spinning: bool = False) -> Any:
    """``onnxruntime.SessionOptions`` for a CPU session with ``threads`` intra-op threads.
    ``spinning``: the pool's threads spin between the parallel sections of a call and stop when
    it ends (the wide session of a lone call, which has the cores to itself: waking sleeping
    threads at every operator is most of what a second thread would gain)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(threads, 1)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


CPU_PROVIDERS = ["CPUExecutionProvider"]


@dataclass(frozen=True)
class EncoderThreads:
    """The intra-op threads of the encoder's sessions."""

    per_call: int  # its shared session: every model worker's calls
    lone_call: int = 0  # its wide session for calls that run alone (lone_call.py); 0: none


def encoder_threads(
    configured: int | None, configured_lone: int | None = None, cores: int | None = None
) -> EncoderThreads:
    """The encoder's threads from the ``threads`` and ``lone_call_threads`` settings (None: automatic)
    on a machine with ``cores`` usable cores (None: this process's).

    Shared session: ``configured``, else one. With one, a call runs on its caller's thread and no
    pool exists: each model worker (one per core) is its own thread pool. More threads make one
    pool the workers share, whose parallel sections wait for every thread at each operator, so
    they lose whenever a core is busy elsewhere (docs/engine.md, "CPU threads").

    Wide session: ``configured_lone``, else every core when calls run on one thread; none when it
    would be no wider than the shared one (a configured pool, or one core)."""
    per_call = configured or 1
    if configured_lone is None:
        configured_lone = 0 if per_call > 1 else (usable_cores() if cores is None else cores)
    return EncoderThreads(per_call, configured_lone if configured_lone > per_call else 0)
