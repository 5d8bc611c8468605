"""Keyterms tokenised with the demo model's own tokenizer, the graph cache, the request field."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from emostt.inference.engine import Distribution, TranscriptionRequest, TranscriptionResult
from emostt.inference.keyterms import KeytermGraphs, term_spellings

DEMO_BPE = (
    Path(__file__).resolve().parents[2]
    / "service"
    / "emostt"
    / "models"
    / "demo"
    / "chn_jpn_yue_eng_ko_spectok.bpe.model"
)
BLANK = 0


@pytest.fixture(scope="module")
def sp() -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(DEMO_BPE))


def pieces(sp: spm.SentencePieceProcessor, spellings: list[list[int]]) -> list[list[str]]:
    return [[sp.id_to_piece(i) for i in s] for s in spellings]


def test_words_are_spelled_with_the_models_own_pieces(sp: spm.SentencePieceProcessor) -> None:
    assert pieces(sp, term_spellings("alone", sp, BLANK)) == [["▁alone"]]
    assert pieces(sp, term_spellings("  leave   me  alone ", sp, BLANK)) == [["▁leave", "▁me", "▁alone"]]
    # Unknown words fall apart into the pieces the model has.
    assert pieces(sp, term_spellings("zebra", sp, BLANK)) == [["▁z", "e", "b", "r", "a"]]


def test_unspaced_scripts_drop_the_word_start_piece_so_they_match_inside_text(
    sp: spm.SentencePieceProcessor,
) -> None:
    assert pieces(sp, term_spellings("停下", sp, BLANK)) == [["停", "下"]]
    assert pieces(sp, term_spellings("ありがとう", sp, BLANK)) == [["あ", "り", "が", "と", "う"]]
    # In running text the term is found whatever precedes it.
    graph = KeytermGraphs(sp, BLANK).compile(("停下",))
    assert graph.matches(sp.encode("请停下来")) == ["停下"]
    assert graph.matches(sp.encode("停下")) == ["停下"]


def test_terms_the_model_cannot_write_are_dropped(sp: spm.SentencePieceProcessor) -> None:
    assert sp.unk_id() == BLANK  # SenseVoice's blank is the unknown piece: never in a graph
    assert term_spellings("Zebra", sp, BLANK) == []  # "Z" is not in the demo vocabulary
    assert term_spellings("€", sp, BLANK) == []
    assert term_spellings("<|en|>", sp, BLANK) == []  # a rich tag is not text
    assert term_spellings("   ", sp, BLANK) == []
    graph = KeytermGraphs(sp, BLANK).compile(("Zebra", "", "alone"))
    assert graph.labels == ("alone",)


def test_graphs_are_cached_per_keyterm_tuple_and_bounded(sp: spm.SentencePieceProcessor) -> None:
    graphs = KeytermGraphs(sp, BLANK, maxsize=2)
    first = graphs.graph(("alone",))
    assert graphs.graph(("alone",)) is first
    graphs.graph(("stop",))
    graphs.graph(("alone",))  # most recently used again
    graphs.graph(("go back",))  # evicts ("stop",)
    assert len(graphs) == 2
    assert graphs.graph(("alone",)) is first


def test_the_cache_is_safe_from_many_threads(sp: spm.SentencePieceProcessor) -> None:
    graphs = KeytermGraphs(sp, BLANK, maxsize=8)
    words = ["alone", "stop", "go", "back", "turn", "left", "right", "me"]
    sets = [(a, b) for a in words for b in words if a < b][:16]
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(200):
                terms = sets[(i + offset) % len(sets)]
                assert graphs.graph(terms).labels == terms
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(graphs) <= 8


def test_requests_hold_keyterms_as_a_tuple_of_strings() -> None:
    audio = np.zeros(1600, dtype=np.float32)
    assert TranscriptionRequest(audio).keyterms == ()
    request = TranscriptionRequest(audio, keyterms=["alone", "stop"])  # type: ignore[arg-type]
    assert request.keyterms == ("alone", "stop")
    hash(request.keyterms)
    with pytest.raises(ValueError, match="keyterms"):
        TranscriptionRequest(audio, keyterms=("ok", 3))  # type: ignore[arg-type]


def test_results_carry_keyterms_matched_only_when_asked() -> None:
    dist = Distribution("en", {"en": 1.0})
    plain = TranscriptionResult("hi", dist, dist, dist, 1.0, 100)
    assert plain.keyterms_matched is None and "keyterms_matched" not in plain.to_dict()
    keyed = TranscriptionResult("hi", dist, dist, dist, 1.0, 100, keyterms_matched=[])
    assert keyed.to_dict()["keyterms_matched"] == []
