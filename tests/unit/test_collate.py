from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from emostt.batching.collate import Waiting, pick_batch

jobs = st.lists(st.tuples(st.booleans(), st.integers(1, 480_000)), max_size=60)
limits = st.tuples(st.integers(1, 32), st.integers(16_000, 5_000_000))


def waiting_of(spec: list[tuple[bool, int]]) -> list[Waiting[int]]:
    return [Waiting(i, final, samples) for i, (final, samples) in enumerate(spec)]


@given(jobs, limits)
def test_batch_respects_limits(spec: list[tuple[bool, int]], lim: tuple[int, int]) -> None:
    max_batch, max_padded = lim
    waiting = waiting_of(spec)
    chosen = pick_batch(waiting, max_batch, max_padded)
    assert len(set(chosen)) == len(chosen) <= max_batch
    assert bool(chosen) == bool(waiting), "something always runs when anything waits"
    if len(chosen) > 1:
        assert max(waiting[i].samples for i in chosen) * len(chosen) <= max_padded


@given(jobs, limits)
def test_finals_are_never_starved_by_partials(spec: list[tuple[bool, int]], lim: tuple[int, int]) -> None:
    max_batch, max_padded = lim
    waiting = waiting_of(spec)
    chosen = pick_batch(waiting, max_batch, max_padded)
    finals = [i for i, w in enumerate(waiting) if w.is_final]
    if finals:
        assert finals[0] in chosen, "the oldest final always runs"
        assert all(waiting[i].is_final for i in chosen), "partials never share a batch with finals"
    elif waiting:
        assert chosen[0] == 0, "with no final waiting, the oldest partial runs"


@given(st.lists(st.integers(16_000, 160_000), min_size=8, max_size=40))
def test_length_aware_choice_pads_no_more_than_first_come(lengths: list[int]) -> None:
    waiting = [Waiting(i, True, n) for i, n in enumerate(lengths)]
    chosen = pick_batch(waiting, 4, 10**9)
    assert chosen[0] == 0 and len(chosen) == 4
    # The companions are the utterances closest in length to the oldest one, never further than first-come.
    distance = [abs(n - lengths[0]) for n in lengths]
    assert max(distance[i] for i in chosen) <= max(distance[:4])
    assert max(distance[i] for i in chosen) == sorted(distance[1:])[2]


@given(jobs, limits, st.integers(16_000, 500_000))
def test_partial_batches_respect_their_own_cap(
    spec: list[tuple[bool, int]], lim: tuple[int, int], partial_cap: int
) -> None:
    max_batch, max_padded = lim
    waiting = waiting_of(spec)
    chosen = pick_batch(waiting, max_batch, max_padded, max_partial_padded_samples=partial_cap)
    if len(chosen) > 1 and not waiting[chosen[0]].is_final:
        assert max(waiting[i].samples for i in chosen) * len(chosen) <= min(partial_cap, max_padded)
    if any(w.is_final for w in waiting):
        assert chosen == pick_batch(waiting, max_batch, max_padded), "the partial cap never limits finals"
