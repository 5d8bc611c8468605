"""Whether the engine call on this thread runs alone: no other model worker busy, nothing waiting.

A CPU server runs one single-threaded encoder call per core, which is what it needs under load
(independent calls beat one shared pool, docs/engine.md "CPU threads"); but a call that arrives
while the server is idle then uses one core of several. The batcher knows when a call is alone
and says so here; the ONNX encoder then runs it on its wide session, every core at once.

A context variable rather than an argument: the fact is the batcher's and only the encoder,
several layers below the ``Engine`` protocol, acts on it; engines that cannot use more cores
(the torch engine on a GPU) never read it.

Concurrency: per thread (each model worker sets it around its own call).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class LoneCall:
    """One engine call's lone-call facts: told (``alone``) and done (``widened``)."""

    alone: bool
    # Set by the encoder that ran this call on more cores than one worker's: its time is then not
    # what a call costs under load (the batcher keeps it out of the capacity estimate).
    widened: bool = False


_CALL: ContextVar[LoneCall | None] = ContextVar("emostt_lone_call", default=None)


@contextmanager
def running_alone(alone: bool) -> Iterator[LoneCall]:
    """Within this block, engine calls on this thread run alone (``alone``) or beside others."""
    call = LoneCall(alone)
    token = _CALL.set(call)
    try:
        yield call
    finally:
        _CALL.reset(token)


def is_lone_call() -> bool:
    """Whether the current engine call runs alone (see the module docstring)."""
    call = _CALL.get()
    return call is not None and call.alone


def widen_this_call() -> None:
    """Record that the current engine call ran on every core (``LoneCall.widened``)."""
    call = _CALL.get()
    if call is not None:
        call.widened = True
