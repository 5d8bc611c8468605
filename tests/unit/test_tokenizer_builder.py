from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm

from emostt.inference.modeldir import BPE_MODEL_NAME, SIZES
from emostt.inference.rich_tokens import RichVocab, all_rich_pieces, strip_rich_tags
from emostt.inference.tokenizer_builder import default_text_pieces, write_sentencepiece


def test_full_size_vocab_matches_sensevoice_small_ids(tmp_path: Path) -> None:
    n_text = SIZES["full"].vocab_size - 3 - 171
    write_sentencepiece(tmp_path / BPE_MODEL_NAME, default_text_pieces(n_text))
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / BPE_MODEL_NAME))
    assert sp.get_piece_size() == 25055
    # Ids SenseVoiceSmall's tokenizer uses (funasr hard-codes these in its training path).
    assert {
        p: sp.piece_to_id(p) for p in ("<|zh|>", "<|en|>", "<|yue|>", "<|ja|>", "<|ko|>", "<|nospeech|>")
    } == {
        "<|zh|>": 24884,
        "<|en|>": 24885,
        "<|yue|>": 24888,
        "<|ja|>": 24892,
        "<|ko|>": 24896,
        "<|nospeech|>": 24992,
    }
    assert sp.piece_to_id("<|HAPPY|>") == 25001 and sp.piece_to_id("<|EMO_UNKNOWN|>") == 25009
    assert sp.piece_to_id("<|withitn|>") == 25016 and sp.piece_to_id("<|woitn|>") == 25017
    vocab = RichVocab.from_tokenizer(sp.piece_to_id, unk_id=sp.unk_id())
    assert len(vocab.rich_ids()) == len(all_rich_pieces()) - 2  # text-norm tokens are not scored classes


def test_rich_tags_decode_verbatim_and_text_round_trips(tmp_path: Path) -> None:
    write_sentencepiece(tmp_path / "t.model", default_text_pieces(100))
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "t.model"))
    ids = [sp.piece_to_id("<|en|>"), sp.piece_to_id("<|HAPPY|>"), *sp.encode("turn left")]
    text = sp.decode(ids)
    assert text.startswith("<|en|><|HAPPY|>")
    assert strip_rich_tags(text) == "turn left"


def test_vocab_without_rich_tokens_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks SenseVoice rich tokens"):
        RichVocab.from_tokenizer(lambda piece: 0, unk_id=0)
