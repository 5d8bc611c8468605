"""A batch's CTC output, reduced to what decoding needs, and the batch's decoding.

Both engines end here: ``SenseVoiceEngine`` reduces its (B, T, V) logits with torch on the
device and hands the compact arrays over as a ``CtcBatch``; the torch-free engine
(``onnx_engine.py``) gets numpy logits from ONNX Runtime and reduces them with
``reduce_logits`` below. ``decode_batch`` turns either into results (``scores.decode_utterance``
per utterance) and records the decode metrics.

The reductions, per utterance, over its valid frames only (never the batch's padding):

- the normaliser ``logsumexp`` over the vocabulary, at every frame (every log-probability below
  is a logit minus it);
- the argmax id and its log-probability, and the blank's log-probability, at every frame;
- the rich tokens' log-probabilities at the four query frames only (language, emotion, event,
  text norm): ``len(rich_ids)`` columns, not the vocabulary;
- for requests with keyterms only, the text frames' top-k tokens, and only at frames where a
  token other than blank can come within ``PRUNE`` nats of the best (most CTC frames are
  blank-only: they hold blank ids and -inf, which the beam search reads as blank frames).

Where they run, measured (``tools/measure_reductions.py``: one utterance, as the CPU server
batches them, real logits of a generated full-size model, 25055 tokens, one thread, ms of CPU
on a shared 2-core Xeon): 3 s of audio, numpy by chunks 1.8, numpy over the whole array 4.2,
torch 3.2, in the graph 9.7 (ReduceLogSumExp, ArgMax, Gather appended to the logits on ONNX
Runtime; 2.8 with a LogSoftmax node instead); 10 s, numpy by chunks 6.9, whole 17.1, torch
15.1, in the graph 34.7 (LogSoftmax 15.4). So numpy, **in chunks of ``CHUNK_FRAMES``
frames**: the logits of 8 frames (800 KB) stay in the core's cache through the max, the
subtraction, the exp and the sum, where a pass per step over the whole (T, V) array goes to
memory each time. ONNX Runtime's reduce kernels are slower than numpy's SIMD exp, and keeping
the reductions in the graph would save only the logits' copy out of it (1.4 ms at 10 s).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from emostt.inference.beam_search import PRUNE, TOP_K
from emostt.inference.engine import TranscriptionRequest, TranscriptionResult
from emostt.inference.keyterms import KeytermGraphs
from emostt.inference.rich_tokens import QUERY_FRAMES, RichVocab
from emostt.inference.scores import CtcFrames, decode_utterance
from emostt.observability import metrics

CHUNK_FRAMES = 8

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
TopK = tuple[IntArray, FloatArray]

_GREEDY_SECONDS = metrics.DECODE_SECONDS.labels("greedy")
_KEYTERM_SECONDS = metrics.DECODE_SECONDS.labels("keyterms")


@dataclass(frozen=True)
class CtcBatch:
    """A batch's CTC output reduced on the host: per utterance i, frames ``[: lens[i]]`` of the
    (B, T) arrays are valid. ``query_logp`` is (B, QUERY_FRAMES, len(rich_ids)), columns in
    ``rich_ids`` order; ``text_top`` maps the index of each request with keyterms to its text
    frames' top-k ids and log-probs, (lens[i] - QUERY_FRAMES, k). ``reduce_s`` and ``top_s``: the
    seconds the reductions and the top-k took, for the decode metrics."""

    best_ids: IntArray
    best_logp: FloatArray
    blank_logp: FloatArray
    query_logp: FloatArray
    lens: npt.NDArray[np.integer[Any]]
    rich_ids: Sequence[int]
    text_top: Mapping[int, TopK] = field(default_factory=dict)
    reduce_s: float = 0.0
    top_s: float = 0.0


def reduce_logits(
    logits: FloatArray,
    lens: npt.NDArray[np.integer[Any]],
    blank_id: int,
    rich_ids: Sequence[int],
    keyed: Sequence[int],
) -> CtcBatch:
    """``CtcBatch`` of numpy CTC logits (B, T, V) with valid lengths (B,); ``keyed``: the
    indices of the requests with keyterms (their text frames' top-k are computed)."""
    started = time.perf_counter()
    batch, frames, _ = logits.shape
    best_ids = np.full((batch, frames), blank_id, dtype=np.int64)
    best_logp = np.zeros((batch, frames), dtype=np.float32)
    blank_logp = np.zeros((batch, frames), dtype=np.float32)
    query_logp = np.zeros((batch, QUERY_FRAMES, len(rich_ids)), dtype=np.float32)
    lse = np.zeros((batch, frames), dtype=np.float32)
    best_logit = np.zeros((batch, frames), dtype=np.float32)
    columns = np.asarray(rich_ids, dtype=np.int64)
    for i in range(batch):
        n = int(lens[i])
        rows = logits[i, :n]
        best_ids[i, :n], best_logit[i, :n], lse[i, :n] = _argmax_and_normaliser(rows)
        best_logp[i, :n] = best_logit[i, :n] - lse[i, :n]
        blank_logp[i, :n] = rows[:, blank_id] - lse[i, :n]
        query_logp[i] = rows[:QUERY_FRAMES, columns] - lse[i, :QUERY_FRAMES, None]
    reduced = time.perf_counter()
    text_top = {}
    for i in keyed:
        n = int(lens[i])
        text_top[i] = text_top_k(logits[i, :n], lse[i, :n], blank_logp[i, :n], best_logit[i, :n], blank_id)
    return CtcBatch(
        best_ids,
        best_logp,
        blank_logp,
        query_logp,
        lens,
        list(rich_ids),
        text_top,
        reduce_s=reduced - started,
        top_s=time.perf_counter() - reduced,
    )


def _argmax_and_normaliser(rows: FloatArray) -> tuple[IntArray, FloatArray, FloatArray]:
    """Per frame of (n, V) logits: the argmax id, its logit and the logsumexp, in chunks of
    ``CHUNK_FRAMES`` frames that stay in the cache through every step."""
    n, vocab = rows.shape
    ids = np.empty(n, dtype=np.int64)
    best = np.empty(n, dtype=np.float32)
    sums = np.empty(n, dtype=np.float32)
    work = np.empty((min(CHUNK_FRAMES, n), vocab), dtype=np.float32)
    for start in range(0, n, CHUNK_FRAMES):
        chunk = rows[start : start + CHUNK_FRAMES]
        count = chunk.shape[0]
        scratch = work[:count]
        chunk_ids = chunk.argmax(axis=-1)
        chunk_best = chunk[np.arange(count), chunk_ids]
        np.subtract(chunk, chunk_best[:, None], out=scratch)
        np.exp(scratch, out=scratch)
        ids[start : start + count] = chunk_ids
        best[start : start + count] = chunk_best
        sums[start : start + count] = scratch.sum(axis=-1)
    return ids, best, np.log(sums) + best


def text_top_k(
    rows: FloatArray, lse: FloatArray, blank_logp: FloatArray, best: FloatArray, blank_id: int
) -> TopK:
    """The top-k token ids and log-probs, best first, of the text frames (after the query frames)
    of one utterance's (n, V) logits, (n - QUERY_FRAMES, k); ``best``: each frame's highest
    logit. Only tokens within ``PRUNE`` nats of their frame's best are candidates (the beam
    search drops the others anyway); the slots they leave hold blank ids and -inf. Frames where
    no token but blank can come within ``PRUNE`` (most CTC frames) are not read at all.

    Per frame a comparison over the row finds the few candidates and only they are sorted: three
    to four times faster than an ``argpartition`` of every active row over the whole vocabulary
    (docs/BENCHMARKS.md, "Keyterms")."""
    text = rows[QUERY_FRAMES:]
    blank = blank_logp[QUERY_FRAMES:]
    floor = best[QUERY_FRAMES:] - np.float32(PRUNE)
    norm = lse[QUERY_FRAMES:]
    k = min(TOP_K, rows.shape[-1])
    top_ids = np.full((len(text), k), blank_id, dtype=np.int64)
    top_logp = np.full((len(text), k), -np.inf, dtype=np.float32)
    with np.errstate(divide="ignore"):
        active = np.flatnonzero(np.log1p(-np.exp(blank)) >= blank - np.float32(PRUNE))
    for t in active.tolist():
        row = text[t]
        ids = np.flatnonzero(row >= floor[t])
        values = row[ids]
        if len(ids) > k:
            part = np.argpartition(-values, k - 1)[:k]
            ids, values = ids[part], values[part]
        order = np.argsort(-values, kind="stable")
        top_ids[t, : len(ids)] = ids[order]
        top_logp[t, : len(ids)] = values[order] - norm[t]
    return top_ids, top_logp


def decode_batch(
    requests: Sequence[TranscriptionRequest],
    batch: CtcBatch,
    vocab: RichVocab,
    sp: Any,
    keyterm_graphs: KeytermGraphs,
) -> list[TranscriptionResult]:
    """Each request's result from ``batch`` (greedy, or biased decoding for the requests with
    keyterms), with the decode metrics recorded; ``sp``: the model's sentencepiece processor."""
    results = []
    own = []
    for i, request in enumerate(requests):
        began = time.perf_counter()
        n = int(batch.lens[i])
        frames = CtcFrames(
            batch.best_ids[i, :n],
            batch.best_logp[i, :n],
            batch.blank_logp[i, :n],
            batch.query_logp[i],
            batch.rich_ids,
        )
        graph = None
        if i in batch.text_top:
            frames = replace(frames, text_top=batch.text_top[i])
            graph = keyterm_graphs.graph(request.keyterms)
        results.append(decode_utterance(frames, vocab, request, sp.decode_ids, sp.id_to_piece, graph))
        own.append(time.perf_counter() - began)
    record_decodes(results, batch.reduce_s, batch.top_s, own)
    return results


def record_decodes(
    results: Sequence[TranscriptionResult], reduce_s: float, top_s: float, own_s: Sequence[float]
) -> None:
    """``emostt_decode_seconds`` per utterance, by mode, and the keyterms matched. An utterance's
    time: its share of the batch's reductions (``reduce_s``), for one with keyterms its share of
    the top-k of the keyed rows (``top_s``), and its own decoding (``own_s``)."""
    keyed = sum(r.keyterms_matched is not None for r in results)
    for result, own in zip(results, own_s, strict=True):
        seconds = reduce_s / len(results) + own
        if result.keyterms_matched is None:
            _GREEDY_SECONDS.observe(seconds)
            continue
        _KEYTERM_SECONDS.observe(seconds + top_s / keyed)
        if result.keyterms_matched:
            metrics.KEYTERM_MATCHES.inc(len(result.keyterms_matched))
