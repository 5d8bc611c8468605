"""Choosing the next batch from the waiting jobs. Pure: no threads, no clocks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# A batch's default limits: utterances, and batch size x longest utterance in seconds. Here, in
# this import-light module, so that the server's planning reads them before metrics are set up.
DEFAULT_MAX_BATCH_SIZE = 16
DEFAULT_MAX_PADDED_SECONDS = 160.0


@dataclass(frozen=True)
class Waiting(Generic[T]):
    item: T
    is_final: bool
    samples: int


def pick_batch(
    waiting: Sequence[Waiting[T]],
    max_batch: int,
    max_padded_samples: int,
    *,
    max_partial_padded_samples: int | None = None,
) -> list[int]:
    """Indices of the jobs to run next (``waiting`` is oldest first).

    - The oldest final (or, with no final waiting, the oldest partial) always runs: nothing starves.
    - A batch holds finals only, or partials only: a long partial never makes finals wait for
      its padding, and partials never displace a final.
    - Within each class, jobs closest in length to the first one are preferred, which keeps
      padding (batch size x longest utterance) small; the padded size stays within
      ``max_padded_samples`` (for partials also ``max_partial_padded_samples``, so a partial
      batch is short and its worker soon free for finals) and the count within ``max_batch``.
    """
    finals = [i for i, w in enumerate(waiting) if w.is_final]
    partials = [i for i, w in enumerate(waiting) if not w.is_final]
    group = finals or partials
    if not group:
        return []
    padded_cap = max_padded_samples
    if not finals and max_partial_padded_samples is not None:
        padded_cap = min(padded_cap, max_partial_padded_samples)
    anchor = group[0]
    chosen = [anchor]
    longest = target = waiting[anchor].samples
    for i in sorted((i for i in group if i != anchor), key=lambda i: (abs(waiting[i].samples - target), i)):
        if len(chosen) >= max_batch:
            break
        longest_if = max(longest, waiting[i].samples)
        if longest_if * (len(chosen) + 1) <= padded_cap:
            chosen.append(i)
            longest = longest_if
    return chosen
