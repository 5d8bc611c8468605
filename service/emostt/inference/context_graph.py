"""A context graph of keyterms: Aho-Corasick over the model's own token ids, with bonuses.

The biasing scheme of icefall, WeNet and sherpa-onnx (there for transducers; here for CTC
prefix beam search, ``beam_search.py``): each keyterm is a sequence of token ids; a hypothesis
carries a graph state, and every token it emits moves that state. A token that extends a
partial match earns ``token_bonus``; a token that breaks one falls back along the failure arcs
and gives back the bonus of the part that no longer matches; a completed match keeps its
bonus for good; ``finalize`` takes back whatever an unfinished match still holds at the end.

What a finished token sequence keeps (``bonus_of`` computes it by brute force; the property
tests hold the graph to it): every token covered by a completed match is paid once, at the
rate of a term of ``n`` tokens, ``min(token_bonus, term_cap / n)``. Matches are paid as they
end: a match ending at a token pays for its tokens after the end of the previous match (the
best-paid term ending there wins). So a term alone keeps ``min(n * token_bonus, term_cap)``,
and overlapping or nested terms ("good", "good job") all match (``matches`` reports each)
without stacking their bonuses: the total never exceeds ``token_bonus`` per decoded token.
Unlike the icefall graph, which adds up every term ending at a token, a keyterm list holding a
phrase and its words cannot multiply the bonus on that phrase. One more rule, for CTC: a match
that repeats the previous match right after it (the same automaton node, reached again exactly
its depth later: "me me" for the term "me") pays nothing, so a keyterm whose token lingers
over a blank frame is not written twice for its bonus.

A state is a tuple: the automaton node, the tokens since the last match ended (capped at the
longest term) and the node where that match ended.

Pure Python, no numpy or torch. Concurrency: a graph is immutable after construction, so any
number of threads may walk one at once (the engine shares one graph per distinct keyterm set).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

ROOT = 0
NO_MATCH = -1

# (node, tokens since the last match ended, node where it ended)
State = tuple[int, int, int]


def term_rate(length: int, token_bonus: float, term_cap: float) -> float:
    """The bonus per covered token of a term of ``length`` tokens."""
    return min(token_bonus, term_cap / length)


class ContextGraph:
    """Aho-Corasick automaton over token-id sequences, with coverage-paid bonuses.

    ``terms``: (label, token ids) pairs; several pairs may share a label (spellings of one
    keyterm). Empty token sequences are ignored. ``start`` is the state before any token.
    """

    def __init__(
        self, terms: Sequence[tuple[str, Sequence[int]]], token_bonus: float, term_cap: float
    ) -> None:
        if token_bonus < 0 or term_cap < 0:
            raise ValueError("bonuses must be >= 0")
        self.token_bonus = token_bonus
        self.term_cap = term_cap
        self._next: list[dict[int, int]] = [{}]
        self._fail: list[int] = [ROOT]
        self._partial: list[float] = [0.0]  # the bonus a partial match holds at this node
        self._ends: list[dict[str, int]] = [{}]  # label -> length of the terms ending here
        kept = [(label, [int(t) for t in ids]) for label, ids in terms if len(ids)]
        self.labels: tuple[str, ...] = tuple(dict.fromkeys(label for label, _ in kept))
        self.longest = max((len(ids) for _, ids in kept), default=0)
        self._depth: list[int] = [0]
        for label, ids in kept:
            self._insert(label, ids)
        self.tokens: frozenset[int] = frozenset(t for arcs in self._next for t in arcs)
        # Per node: every term ending there or at a node on its failure chain, as
        # (label, length, rate), so that overlapping terms all match.
        self._matched: list[tuple[tuple[str, int, float], ...]] = [() for _ in self._next]
        self._link()

    def _insert(self, label: str, ids: list[int]) -> None:
        node = ROOT
        for depth, token in enumerate(ids, 1):
            child = self._next[node].get(token)
            if child is None:
                child = len(self._next)
                self._next[node][token] = child
                self._next.append({})
                self._fail.append(ROOT)
                self._partial.append(min(depth * self.token_bonus, self.term_cap))
                self._depth.append(depth)
                self._ends.append({})
            node = child
        self._ends[node][label] = len(ids)

    def _link(self) -> None:
        """Failure arcs and matches, breadth first (a node's fail node is always shallower)."""
        queue = deque(self._next[ROOT].values())
        while queue:
            node = queue.popleft()
            fail = self._fail[node]
            own = tuple(
                (label, n, term_rate(n, self.token_bonus, self.term_cap))
                for label, n in self._ends[node].items()
            )
            self._matched[node] = own + self._matched[fail]
            for token, child in self._next[node].items():
                self._fail[child] = self._goto(fail, token) if node != ROOT else ROOT
                queue.append(child)

    def _goto(self, node: int, token: int) -> int:
        while True:
            child = self._next[node].get(token)
            if child is not None:
                return child
            if node == ROOT:
                return ROOT
            node = self._fail[node]

    @property
    def num_states(self) -> int:
        """Automaton nodes (the root included)."""
        return len(self._next)

    def __bool__(self) -> bool:
        return len(self._next) > 1

    @property
    def start(self) -> State:
        """The state before any token: the root, with no match in reach."""
        return ROOT, self.longest, NO_MATCH

    def partial(self, state: State) -> float:
        """The bonus the partial match at ``state`` holds (given back if it does not complete)."""
        return self._partial[state[0]]

    def forward(self, state: State, token: int) -> tuple[State, float]:
        """The state after ``token`` and the score change: the bonus a match completed by this
        token keeps, plus the new partial bonus minus the old one."""
        node, gap, last = state
        if token not in self.tokens:
            return (ROOT, min(gap + 1, self.longest), last), -self._partial[node]
        new = self._goto(node, token)
        delta = self._partial[new] - self._partial[node]
        matched = self._matched[new]
        if not matched:
            return (new, min(gap + 1, self.longest), last), delta
        if new == last and gap + 1 == self._depth[new]:
            return (new, 0, new), delta  # the previous match again, right after it
        paid = max(rate * min(n, gap + 1) for _, n, rate in matched)
        return (new, 0, new), delta + paid

    def finalize(self, state: State) -> float:
        """The score change at the end of a hypothesis: an unfinished match's bonus, taken back."""
        return -self._partial[state[0]]

    def matches(self, tokens: Sequence[int]) -> list[str]:
        """The labels of the terms that occur in ``tokens``, in the order their first match ends."""
        found: dict[str, None] = {}
        node = ROOT
        for token in tokens:
            node = self._goto(node, int(token)) if token in self.tokens else ROOT
            for label, _, _ in self._matched[node]:
                found.setdefault(label)
        return list(found)

    def total_bonus(self, tokens: Sequence[int]) -> float:
        """The bonus ``tokens`` keeps: forward over every token, then finalize."""
        state, total = self.start, 0.0
        for token in tokens:
            state, delta = self.forward(state, int(token))
            total += delta
        return total + self.finalize(state)


def bonus_of(
    tokens: Sequence[int], terms: Sequence[tuple[str, Sequence[int]]], token_bonus: float, term_cap: float
) -> float:
    """The bonus a token sequence keeps, by brute force: the specification of ``ContextGraph``."""
    seq = [int(t) for t in tokens]
    spelled = [[int(t) for t in ids] for _, ids in terms if len(ids)]
    prefixes = {tuple(ids[:d]) for ids in spelled for d in range(1, len(ids) + 1)}

    def node(end: int) -> tuple[int, ...]:  # the longest suffix of seq[:end] that starts a term
        return next((tuple(seq[s:end]) for s in range(end) if tuple(seq[s:end]) in prefixes), ())

    total, last_end = 0.0, None
    for end in range(1, len(seq) + 1):
        lengths = [len(ids) for ids in spelled if len(ids) <= end and seq[end - len(ids) : end] == ids]
        if not lengths:
            continue
        here = node(end)
        if last_end is not None and last_end == end - len(here) and node(last_end) == here:
            pass  # the previous match again, right after it: unpaid
        else:
            since = end - last_end if last_end is not None else end
            total += max(term_rate(n, token_bonus, term_cap) * min(n, since) for n in lengths)
        last_end = end
    return total
