"""Property tests of the biased CTC prefix beam search (beam_search.py) on random posteriors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emostt.inference.beam_search import align, prefix_beam_search
from emostt.inference.context_graph import ContextGraph
from emostt.inference.scores import collapse_ctc

BLANK = 0
B, CAP = 1.5, 4.5


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def posteriors(seed: int, frames: int, vocab: int, blank_bias: float, scale: float) -> np.ndarray:
    """Random (T, V) log-probs; distinct values, from flat to CTC-peaky with a blank bias."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, scale, (frames, vocab))
    logits[:, BLANK] += blank_bias
    return log_softmax(logits)


def top_k(logp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.argsort(-logp, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(logp, ids, axis=1), logp[:, BLANK].copy()


def greedy(logp: np.ndarray) -> tuple[int, ...]:
    spans = collapse_ctc(logp.argmax(axis=1), logp.max(axis=1), BLANK)
    return tuple(s.token_id for s in spans)


def viterbi(logp: np.ndarray, tokens: tuple[int, ...]) -> float:
    """The best CTC path's log-prob for ``tokens`` over the full posteriors (independent DP)."""
    states = [BLANK]
    for token in tokens:
        states += [token, BLANK]
    score = [-math.inf] * len(states)
    score[0] = logp[0, states[0]]
    if len(states) > 1:
        score[1] = logp[0, states[1]]
    for t in range(1, len(logp)):
        prev = score
        score = []
        for s, token in enumerate(states):
            best = prev[s]
            if s >= 1:
                best = max(best, prev[s - 1])
            if s >= 2 and token != BLANK and states[s - 2] != token:
                best = max(best, prev[s - 2])
            score.append(best + logp[t, token])
    return max(score[-1], score[-2]) if len(states) > 1 else score[-1]


shapes = st.tuples(
    st.integers(0, 2**32 - 1),  # seed
    st.integers(1, 40),  # frames
    st.integers(2, 12),  # vocabulary, blank included
    st.floats(0.0, 6.0),  # blank bias
    st.floats(0.5, 6.0),  # peakiness
)


def random_graph(seed: int, vocab: int) -> tuple[ContextGraph, list[tuple[str, list[int]]]]:
    rng = np.random.default_rng(seed + 1)
    terms = [
        (f"t{i}", [int(x) for x in rng.integers(1, vocab, int(rng.integers(1, 4)))])
        for i in range(int(rng.integers(1, 6)))
    ]
    return ContextGraph(terms, B, CAP), terms


@given(shapes, st.integers(1, 8), st.sampled_from([1, 2, 6]))
def test_without_keyterms_any_beam_decodes_exactly_greedy(
    shape: tuple[int, int, int, float, float], k: int, beam: int
) -> None:
    logp = posteriors(*shape)
    ids, top, blank = top_k(logp, k)
    empty = ContextGraph([], B, CAP)
    assert prefix_beam_search(ids, top, blank, BLANK, empty, beam=beam) == greedy(logp)


@given(shapes, st.integers(1, 8))
def test_aligning_greedy_text_gives_greedy_spans_and_confidences(
    shape: tuple[int, int, int, float, float], k: int
) -> None:
    logp = posteriors(*shape)
    ids, top, blank = top_k(logp, k)
    expected = collapse_ctc(logp.argmax(axis=1), logp.max(axis=1), BLANK)
    spans = align([s.token_id for s in expected], ids, top, blank)
    assert spans is not None
    assert [(t, a, b) for t, a, b, _ in spans] == [
        (s.token_id, s.first_frame, s.last_frame) for s in expected
    ]
    assert [c for *_, c in spans] == pytest.approx([s.confidence for s in expected], abs=1e-12)


@given(shapes, st.floats(0.01, 5.0))
def test_a_keyterm_never_appears_from_silence(
    shape: tuple[int, int, int, float, float], margin: float
) -> None:
    """Blank leads every token by more than the per-token bonus at every frame: whatever the
    keyterms (here every token is one), nothing is written."""
    seed, frames, vocab, _, scale = shape
    logits = np.random.default_rng(seed).normal(0.0, scale, (frames, vocab))
    logits[:, BLANK] = np.delete(logits, BLANK, axis=1).max(axis=1) + B + margin
    logp = log_softmax(logits)
    ids, top, blank = top_k(logp, vocab)
    every_token = ContextGraph([(f"t{v}", [v]) for v in range(1, vocab)] + [("pair", [1, 1])], B, CAP)
    assert prefix_beam_search(ids, top, blank, BLANK, every_token) == ()


@settings(max_examples=200)
@given(shapes, st.sampled_from([1, 4, 6]))
def test_bias_buys_at_most_the_bonus_it_keeps(shape: tuple[int, int, int, float, float], beam: int) -> None:
    """The result is never worse than greedy under log-prob + kept bonus, so what it gives up
    in log-prob is at most its kept bonus, itself at most the token bonus per token."""
    logp = posteriors(*shape)
    graph, _ = random_graph(shape[0], shape[2])
    ids, top, blank = top_k(logp, shape[2])
    result = prefix_beam_search(ids, top, blank, BLANK, graph, beam=beam)
    best = greedy(logp)
    gain = graph.total_bonus(result) - graph.total_bonus(best)
    assert viterbi(logp, best) - viterbi(logp, result) <= gain + 1e-6
    assert 0.0 <= graph.total_bonus(result) <= B * len(result) + 1e-9
    assert align(result, ids, top, blank) is not None


def test_a_keyterm_recovers_a_word_the_model_half_heard() -> None:
    """Token 5 trails blank by 0.7 nats at frame 2: greedy drops it; the keyterm brings it back,
    and an unrelated keyterm changes nothing."""
    probs = np.full((5, 8), 1e-4)
    probs[:, BLANK] = 1.0
    probs[0, 3] = 50.0  # a confident first word
    probs[2, 5], probs[2, BLANK] = 1.0, 2.0
    logp = np.log(probs / probs.sum(axis=1, keepdims=True))
    ids, top, blank = top_k(logp, 4)
    assert greedy(logp) == (3,)
    keyterm = ContextGraph([("five", [5])], B, CAP)
    assert prefix_beam_search(ids, top, blank, BLANK, keyterm) == (3, 5)
    assert keyterm.matches((3, 5)) == ["five"]
    unrelated = ContextGraph([("six", [6]), ("four three", [4, 3])], B, CAP)
    assert prefix_beam_search(ids, top, blank, BLANK, unrelated) == (3,)
    spans = align((3, 5), ids, top, blank)
    assert spans is not None and [s[:3] for s in spans] == [(3, 0, 0), (5, 2, 2)]
    assert spans[1][3] == pytest.approx(1 / 3, rel=1e-3)


def test_no_frames_and_no_candidates_decode_to_nothing() -> None:
    graph = ContextGraph([("x", [1])], B, CAP)
    none = np.zeros((0, 3), dtype=np.int64)
    assert prefix_beam_search(none, none.astype(np.float32), np.zeros(0), BLANK, graph) == ()
    ids = np.zeros((4, 3), dtype=np.int64)
    top = np.full((4, 3), -np.inf, dtype=np.float32)
    assert prefix_beam_search(ids, top, np.zeros(4), BLANK, graph) == ()
    assert align((), ids, top, np.zeros(4)) == []
    assert align((1, 2, 3, 4, 5), ids, top, np.zeros(4)) is None
    with pytest.raises(ValueError):
        prefix_beam_search(ids, top, np.zeros(4), BLANK, graph, beam=0)
