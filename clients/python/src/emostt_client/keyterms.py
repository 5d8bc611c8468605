"""Keyterms: the words and short phrases a session's decoding is biased towards (names, products,
commands; docs/protocol.md, "Keyterms"). The session config's ``keyterms``: at most
``MAX_KEYTERMS`` terms of 1 to ``MAX_KEYTERM_CHARS`` characters each (surrounding white space
does not count); a new list replaces the old one from the next utterance, and ``[]`` clears it.
Each final then carries ``keyterms_matched``: the keyterms found in its text, in order.

Standard library only: part of the protocol core (``emostt_client.protocol`` re-exports it), so the
SDK, the LiveKit plugin and the Pipecat service check keyterms the same way, before the server
would refuse them (an ``invalid_config`` error naming ``keyterms``).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MAX_KEYTERMS", "MAX_KEYTERM_CHARS", "keyterms_list"]

MAX_KEYTERMS = 100
MAX_KEYTERM_CHARS = 64


def keyterms_list(value: Iterable[str]) -> list[str]:
    """``value`` as the config's ``keyterms``: its terms, stripped, in order. ``ValueError`` for a
    single string (a list of terms is expected: ``["Ada Lovelace"]``, not ``"Ada Lovelace"``), a
    term that is not a string, more than ``MAX_KEYTERMS`` terms, or a term out of bounds."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"keyterms must be a list of strings, not {type(value).__name__}")
    terms = list(value)
    if len(terms) > MAX_KEYTERMS:
        raise ValueError(f"at most {MAX_KEYTERMS} keyterms, not {len(terms)}")
    checked: list[str] = []
    for term in terms:
        if not isinstance(term, str):
            raise ValueError(f"each keyterm must be a string, not {type(term).__name__}")
        stripped = term.strip()
        if not 1 <= len(stripped) <= MAX_KEYTERM_CHARS:
            raise ValueError(f"each keyterm is 1 to {MAX_KEYTERM_CHARS} characters: {term[:80]!r}")
        checked.append(stripped)
    return checked
