"""CTC prefix beam search biased by a context graph of keyterms, on numpy posteriors.

Input: one utterance's text frames (SenseVoice's four rich-tag frames are not decoded here)
as the per-frame top-k token ids and log-probs, plus the blank log-prob of every frame.
Output: the decoded token ids, then ``align`` finds their best path through the frames, from
which token spans and confidences are computed the way greedy decoding computes them.

The search keeps, per prefix, the best path ending in blank and the best ending in its last
token (Viterbi scores, max over paths, not their sum) plus its context-graph state and the
bonus that state holds (``context_graph.py``). Max rather than sum is deliberate: the greedy
path is the best path overall, so with no bonus in play the best prefix is always greedy's
text, for any beam width. Biasing a session therefore changes only what a keyterm is about:
a prefix other than greedy's wins only when the bonus it keeps at the end (completed matches
only) outweighs what its path costs against greedy's. Greedy's prefix is never pruned from
the beam (it is kept beside the ``beam`` best by biased score), so that comparison is always
made.

Costs: frames where no token other than blank comes within ``prune`` nats of the frame's best
(most CTC frames) are folded into one blank step; the others expand at most (beam + 1) x k
candidates. Pure Python over small dicts plus a few numpy calls: about a millisecond or two
for a 5 s utterance (tools/bench_keyterms_decode.py).

Concurrency: plain functions of their arguments; safe from any number of threads.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from emostt.inference.context_graph import ContextGraph

NEG_INF = -math.inf

# Within the usual ranges; on the demo model's held-out clips beam 4 / k 8 and beam 8 / k 16
# gave the same results (docs/BENCHMARKS.md, "Keyterm decoding").
BEAM = 6
TOP_K = 10
# A token more than this far below its frame's best is not a candidate there: over twice what
# one keyterm's match keeps (``keyterms.TERM_CAP``), so no bonus could pay for it.
PRUNE = 10.0

FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64] | npt.NDArray[np.int32]

# One hypothesis: [best log-prob ending in blank, best ending in the last token, graph state,
# bonus the prefix holds (completed matches plus the partial match at its state)]; a list, as
# the search updates the scores in place.
_Hyp = list[Any]


def _frames(
    top_ids: IntArray, top_logp: FloatArray, blank_logp: FloatArray, blank_id: int, prune: float
) -> list[tuple[float, list[tuple[int, float]]]]:
    """Per frame: the blank log-prob and the non-blank candidates within ``prune`` of the best."""
    best = np.maximum(np.asarray(blank_logp, dtype=np.float64), np.max(top_logp, axis=1))
    keep = (top_logp >= (best - prune)[:, None]) & (top_ids != blank_id)
    blank = np.asarray(blank_logp, dtype=np.float64).tolist()
    out: list[tuple[float, list[tuple[int, float]]]] = []
    active = keep.any(axis=1).tolist()
    for t, is_active in enumerate(active):
        if is_active:
            row = keep[t]
            cands = zip(top_ids[t][row].tolist(), top_logp[t][row].tolist(), strict=True)
            out.append((blank[t], list(cands)))
        else:
            out.append((blank[t], []))
    return out


def prefix_beam_search(
    top_ids: IntArray,
    top_logp: FloatArray,
    blank_logp: FloatArray,
    blank_id: int,
    graph: ContextGraph,
    beam: int = BEAM,
    prune: float = PRUNE,
) -> tuple[int, ...]:
    """The best token sequence (CTC-collapsed, blanks dropped) under path log-prob plus the bonus
    it keeps. ``top_ids``/``top_logp``: (T, k); ``blank_logp``: (T,)."""
    if beam < 1:
        raise ValueError("beam must be >= 1")
    hyps: dict[tuple[int, ...], _Hyp] = {(): [0.0, NEG_INF, graph.start, 0.0]}
    pending = 0.0  # blank log-prob of the frames folded since the last expansion
    for blank, cands in _frames(top_ids, top_logp, blank_logp, blank_id, prune):
        if not cands:
            pending += blank
            continue
        if pending:
            for hyp in hyps.values():
                hyp[0], hyp[1] = max(hyp[0], hyp[1]) + pending, NEG_INF
            pending = 0.0
        hyps = _expand(hyps, blank, cands, graph, beam)
    final: list[tuple[float, float, tuple[int, ...]]] = []
    for prefix, (pb, pnb, state, bonus) in hyps.items():
        path = max(pb, pnb) + pending
        final.append((path + bonus + graph.finalize(state), path, prefix))
    # On a tie the better path (greedy's, with no bonus in play) wins.
    return max(final)[2]


def _expand(
    hyps: dict[tuple[int, ...], _Hyp],
    blank: float,
    cands: list[tuple[int, float]],
    graph: ContextGraph,
    beam: int,
) -> dict[tuple[int, ...], _Hyp]:
    new: dict[tuple[int, ...], _Hyp] = {}
    for prefix, (pb, pnb, state, bonus) in hyps.items():
        total = pb if pb > pnb else pnb
        stay = new.get(prefix)
        if stay is None:
            stay = new[prefix] = [total + blank, NEG_INF, state, bonus]
        elif total + blank > stay[0]:
            stay[0] = total + blank
        last = prefix[-1] if prefix else -1
        for token, logp in cands:
            if token == last:
                if pnb + logp > stay[1]:
                    stay[1] = pnb + logp  # the same token continues: the prefix is unchanged
                score = pb + logp  # a repeat needs a blank in between
            else:
                score = total + logp
            if score == NEG_INF:
                continue
            longer = (*prefix, token)
            hyp = new.get(longer)
            if hyp is None:
                next_state, delta = graph.forward(state, token)
                new[longer] = [NEG_INF, score, next_state, bonus + delta]
            elif score > hyp[1]:
                hyp[1] = score
    if len(new) <= beam:
        return new
    paths = {prefix: (h[0] if h[0] > h[1] else h[1]) for prefix, h in new.items()}
    ranked = heapq.nlargest(beam, paths, key=lambda prefix: paths[prefix] + new[prefix][3])
    kept = {prefix: new[prefix] for prefix in ranked}
    greedy = max(paths, key=paths.__getitem__)
    kept.setdefault(greedy, new[greedy])
    return kept


def align(
    tokens: Sequence[int], top_ids: IntArray, top_logp: FloatArray, blank_logp: FloatArray
) -> list[tuple[int, int, int, float]] | None:
    """The best path of ``tokens`` through the frames (forced alignment, Viterbi), as
    (token, first frame, last frame, mean token probability over those frames) per token;
    None when no path exists within the top-k candidates."""
    n_frames, n_tokens = len(blank_logp), len(tokens)
    if n_tokens == 0:
        return []
    if n_frames < n_tokens:
        return None
    ids = np.asarray(tokens, dtype=np.int64)
    # Each token's log-prob per frame, -inf where it is not among the frame's top k.
    hit = np.asarray(top_ids)[:, :, None] == ids[None, None, :]
    token_logp = np.where(hit, np.asarray(top_logp, dtype=np.float64)[:, :, None], NEG_INF).max(axis=1)
    n_states = 2 * n_tokens + 1
    blank = np.asarray(blank_logp, dtype=np.float64)
    emit = np.empty((n_frames, n_states))
    emit[:, 0::2] = blank[:, None]
    emit[:, 1::2] = token_logp
    # A token state may be entered from two states back (skipping the blank) unless it repeats
    # the token before it.
    skip = np.zeros(n_states, dtype=bool)
    skip[3::2] = ids[1:] != ids[:-1]
    # Frames where none of the tokens is a candidate (most frames) can only be blank: a run of
    # them is one step, into the blank after a token or staying in a blank.
    tokenless = ~np.isfinite(token_logp).any(axis=1)
    back = np.zeros((n_frames, n_states), dtype=np.int8)
    score = np.full(n_states, NEG_INF)
    score[:2] = emit[0, :2]
    moves = np.empty((3, n_states))
    cols = np.arange(n_states)
    t = 1
    while t < n_frames:
        if tokenless[t]:
            run_end = t + 1
            while run_end < n_frames and tokenless[run_end]:
                run_end += 1
            stay, came = score[0::2], np.concatenate(([NEG_INF], score[1::2]))
            back[t, 0::2] = came > stay
            score = np.full(n_states, NEG_INF)
            score[0::2] = np.maximum(stay, came) + blank[t:run_end].sum()
            t = run_end
            continue
        moves[0] = score
        moves[1, 0], moves[1, 1:] = NEG_INF, score[:-1]
        moves[2, :2], moves[2, 2:] = NEG_INF, np.where(skip[2:], score[:-2], NEG_INF)
        step = moves.argmax(axis=0)
        back[t] = step
        score = moves[step, cols] + emit[t]
        t += 1
    end = n_states - 1 if score[-1] >= score[-2] else n_states - 2
    if score[end] == NEG_INF:
        return None
    path = np.empty(n_frames, dtype=np.int64)
    for t in range(n_frames - 1, -1, -1):
        path[t] = end
        end -= int(back[t, end])
    spans = []
    for j, token in enumerate(ids.tolist()):
        frames = np.flatnonzero(path == 2 * j + 1)
        conf = float(np.exp(token_logp[frames, j]).mean())
        spans.append((token, int(frames[0]), int(frames[-1]), min(max(conf, 0.0), 1.0)))
    return spans
