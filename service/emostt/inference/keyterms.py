"""Keyterms: tokenised with the model's own tokenizer, compiled to context graphs, cached.

Why our own decoder (``context_graph.py``, ``beam_search.py``) rather than a library, as
evaluated for issue 22:

* ``asr-decoder`` (0.1.2, icefall/WeNet's context graph and CTC prefix beam search) needs
  torch (``topk`` on tensors) where the CPU path is to become torch-free, keeps its hypotheses
  on the decoder object (one decoder per thread and per keyterm set), walks every top-k token
  of every frame in Python, and its end-of-utterance back-off takes the bonus back from
  *completed* matches (it tests ``is_end`` where the graph means "not an end").
* ``pyctcdecode`` (0.5.0) scores hotwords with a regex over the decoded text with whitespace
  word boundaries, so a keyterm inside Chinese, Japanese or Cantonese text (no spaces) never
  matches; it merges hypotheses by text, not by CTC prefix, wants a label list it can
  normalise (SenseVoice's ``<|...|>`` tags and 25k pieces) and expands every token above a
  log-prob floor in Python on every frame.
* torchaudio's CTC decoder (flashlight) needs torch and torchaudio, has no keyterm graph (a
  custom Python LM callback per token would be the only way in) and is deprecated upstream.

So the scheme those projects share is written here over numpy arrays, with the property tests
the issue asks for (tests/unit/test_keyterm_decoding.py).

Tokenisation: each term is encoded with the model's sentencepiece model, so any model dir
(hub, fine-tuned, generated, the demo) works. A term that starts with a word-boundary piece
alone ("▁", then characters: how CJK text is usually split) drops it, so the term also
matches inside unspaced text; a term that starts with a merged "▁X" piece and an ideographic
character also gets the spelling with "X". Spellings with an unknown piece (which is CTC's
blank in SenseVoice), a control piece or a rich tag are dropped: the model does not write them
as text.

Concurrency: ``KeytermGraphs.graph`` is called from the model worker threads; its cache is a
bounded LRU under a lock, graphs are immutable once built and compiled outside the lock.
"""

from __future__ import annotations

import threading
import unicodedata
from collections import OrderedDict
from typing import Any

from emostt.inference.context_graph import ContextGraph

WORD_START = "▁"
# Chosen on the demo model's held-out clips (docs/BENCHMARKS.md, "Keyterm decoding").
TOKEN_BONUS = 1.5
TERM_CAP = 4.5
CACHE_SIZE = 256


def _ideographic(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL"))


def term_spellings(term: str, sp: Any, blank_id: int) -> list[list[int]]:
    """The token-id sequences that spell ``term`` in the model's vocabulary."""
    text = " ".join(term.split())
    if not text:
        return []
    ids = [int(i) for i in sp.encode(text)]
    unk = int(sp.unk_id())
    spellings = []
    first = sp.id_to_piece(ids[0])
    if first == WORD_START:
        spellings.append(ids[1:])
    else:
        spellings.append(ids)
        if first.startswith(WORD_START) and _ideographic(text[0]):
            bare = int(sp.piece_to_id(first[len(WORD_START) :]))
            spellings.append([bare, *ids[1:]])
    return [s for s in spellings if s and all(_writable(sp, i, unk, blank_id) for i in s)]


def _writable(sp: Any, token: int, unk: int, blank_id: int) -> bool:
    """Whether the model writes ``token`` as text: not unknown (= blank), control or a rich tag."""
    return (
        token not in (unk, blank_id)
        and not sp.is_control(token)
        and not sp.id_to_piece(token).startswith("<|")
    )


class KeytermGraphs:
    """Context graphs per distinct keyterm tuple, built with one model's tokenizer."""

    def __init__(
        self,
        sp: Any,
        blank_id: int,
        token_bonus: float = TOKEN_BONUS,
        term_cap: float = TERM_CAP,
        maxsize: int = CACHE_SIZE,
    ) -> None:
        self._sp = sp
        self._blank_id = blank_id
        self.token_bonus = token_bonus
        self.term_cap = term_cap
        self._maxsize = maxsize
        self._cache: OrderedDict[tuple[str, ...], ContextGraph] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, keyterms: tuple[str, ...]) -> ContextGraph:
        """A new graph of ``keyterms`` (labels are the terms as given)."""
        terms = [
            (term, spelling)
            for term in keyterms
            for spelling in term_spellings(term, self._sp, self._blank_id)
        ]
        return ContextGraph(terms, self.token_bonus, self.term_cap)

    def graph(self, keyterms: tuple[str, ...]) -> ContextGraph:
        """The (cached) graph of ``keyterms``; safe from any thread."""
        with self._lock:
            graph = self._cache.get(keyterms)
            if graph is not None:
                self._cache.move_to_end(keyterms)
                return graph
        graph = self.compile(keyterms)
        with self._lock:
            self._cache[keyterms] = graph
            self._cache.move_to_end(keyterms)
            while len(self._cache) > self._maxsize:
                self._cache.popitem(last=False)
        return graph

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)
