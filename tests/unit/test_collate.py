from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from emostt.batching.collate import Waiting, pick_batch

jobs = st.lists(st.tuples(st.booleans(), st.integers(1, 480_000)), max_size=60)


@given(jobs, st.integers(1, 32), st.integers(16_000, 5_000_000))
def test_batch_respects_limits_and_puts_finals_first(
    spec: list[tuple[bool, int]], max_batch: int, max_padded: int
) -> None:
    waiting = [Waiting(i, final, samples) for i, (final, samples) in enumerate(spec)]
    chosen = pick_batch(waiting, max_batch, max_padded)
    assert len(set(chosen)) == len(chosen) <= max_batch
    if not waiting:
        assert chosen == []
        return
    assert chosen, "something always runs"
    if len(chosen) > 1:
        assert max(waiting[i].samples for i in chosen) * len(chosen) <= max_padded
    finals = [i for i, w in enumerate(waiting) if w.is_final]
    chosen_partials = [i for i in chosen if not waiting[i].is_final]
    if chosen_partials:
        # A partial only runs when every final that fits has been taken.
        assert (
            all(i in chosen or waiting[i].samples * (len(chosen) + 1) > max_padded for i in finals)
            or len(chosen) == max_batch
        )
    # The oldest final is never passed over.
    if finals:
        assert finals[0] in chosen
