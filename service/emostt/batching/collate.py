"""Choosing the next batch from the waiting jobs. Pure: no threads, no clocks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Waiting(Generic[T]):
    item: T
    is_final: bool
    samples: int


def pick_batch(waiting: Sequence[Waiting[T]], max_batch: int, max_padded_samples: int) -> list[int]:
    """Indices of the jobs to run next: finals before partials, oldest first within each.

    The batch stops growing when it would exceed ``max_batch`` jobs or ``max_padded_samples``
    (batch size x longest utterance); the first job is always taken so nothing starves.
    """
    order = [i for i, w in enumerate(waiting) if w.is_final] + [
        i for i, w in enumerate(waiting) if not w.is_final
    ]
    chosen: list[int] = []
    longest = 0
    for i in order:
        if len(chosen) >= max_batch:
            break
        longest_if = max(longest, waiting[i].samples)
        if chosen and longest_if * (len(chosen) + 1) > max_padded_samples:
            continue
        chosen.append(i)
        longest = longest_if
    return chosen
