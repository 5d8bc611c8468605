"""A real CUDA out-of-memory: most of the GPU's memory taken first, then a batch that cannot
fit. The engine must turn torch's OOM into ``OutOfMemoryError`` and ``ResilientRunner`` split
the batch until the halves fit (policy/retry.py), serving every utterance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from prometheus_client import REGISTRY

from emostt.inference.engine import TranscriptionRequest
from emostt.policy.outcome import Served
from emostt.policy.retry import ResilientRunner
from tests.gpu.conftest import NEEDS_CUDA, EngineFactory

pytestmark = NEEDS_CUDA

BATCH = 8
UTTERANCE_S = 30.0  # the longest a final may be: the CTC output (T x 25055) dominates its memory
# Memory left free: room for about this many utterances of the batch, so the whole batch and
# its halves of 4 do not fit and quarters of 2 do.
ROOM_FOR = 3.0


def utterances() -> list[TranscriptionRequest]:
    rng = np.random.default_rng(0)
    n = int(UTTERANCE_S * 16_000)
    return [TranscriptionRequest((rng.standard_normal(n) * 0.05).astype(np.float32)) for _ in range(BATCH)]


def oom_splits() -> float:
    return REGISTRY.get_sample_value("emostt_retries_total", {"reason": "oom_split"}) or 0.0


def test_out_of_memory_is_split_and_served(load_engine: EngineFactory, full_model_dir: Path) -> None:
    engine = load_engine(str(full_model_dir), "cuda", "fp16")
    requests = utterances()
    assert len(engine.transcribe(requests)) == BATCH  # fits while memory is free

    # What one utterance needs at its peak, above what is allocated between batches.
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    engine.transcribe(requests[:1])
    per_utterance = torch.cuda.max_memory_allocated() - base

    torch.cuda.empty_cache()  # what torch holds unused goes back: free memory is all there is
    free, _ = torch.cuda.mem_get_info()
    filler_bytes = int(free - ROOM_FOR * per_utterance)
    assert filler_bytes > 0, "the GPU is too small for this test's batch"
    filler = torch.empty(filler_bytes, dtype=torch.uint8, device="cuda")
    try:
        before = oom_splits()
        outcomes = ResilientRunner(engine).run(requests)
        splits = oom_splits() - before
    finally:
        del filler
        torch.cuda.empty_cache()
    assert splits >= 1, "the batch fitted: the test did not produce an out-of-memory error"
    assert all(isinstance(o, Served) for o in outcomes), outcomes
    # A random-weight model's text is no check (fp16 kernels differ by batch size); the
    # results are there, one per utterance, in order.
    served = [o.result for o in outcomes if isinstance(o, Served)]
    assert [r.duration_ms for r in served] == [r.duration_ms for r in requests]
