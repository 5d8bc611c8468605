"""The torch-free engine's numpy reductions (``ctc_batch.reduce_logits``) against the torch
engine's device reductions (``SenseVoiceEngine._reduce_on_device``, torch as on a GPU) on the same logits:
the same arrays, and the same results through the one shared ``decode_batch``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import sentencepiece as spm
import torch

from emostt.inference.ctc_batch import CtcBatch, decode_batch, reduce_logits
from emostt.inference.engine import TranscriptionRequest, TranscriptionResult
from emostt.inference.keyterms import KeytermGraphs
from emostt.inference.model_source import BUNDLED_MODELS_DIR
from emostt.inference.rich_tokens import QUERY_FRAMES, RichVocab
from emostt.inference.sensevoice import SenseVoiceEngine

DEMO_TOKENIZER = BUNDLED_MODELS_DIR / "demo" / "chn_jpn_yue_eng_ko_spectok.bpe.model"
TOLERANCE = 1e-5


def ctc_like_logits(batch: int, frames: int, vocab: int, seed: int) -> np.ndarray:
    """Mostly blank frames with a confident token here and there, as a CTC head writes them."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((batch, frames, vocab)).astype(np.float32) * 2
    logits[..., 0] += 8.0
    draw = rng.random((batch, frames))
    logits[draw > 0.6, 0] += 20.0  # certain blanks: no other token within PRUNE nats
    spikes = draw < 0.3
    tokens = rng.integers(1, vocab, size=(batch, frames))
    logits[spikes, tokens[spikes]] += 14.0
    # Near-ties between two tokens, where the top-k order matters.
    logits[:, ::7, 1:3] = logits[:, ::7, 3:4] + 13.0
    return logits


def torch_reductions(logits: np.ndarray, blank_id: int, rich_ids: list[int]) -> list[np.ndarray]:
    """What ``SenseVoiceEngine.results_from_logits`` computes on the device."""
    x = torch.from_numpy(logits)
    lse = torch.logsumexp(x, dim=-1)
    best, ids = x.max(dim=-1)
    query = x[:, :QUERY_FRAMES].index_select(-1, torch.tensor(rich_ids)) - lse[:, :QUERY_FRAMES, None]
    return [t.numpy() for t in (ids, best - lse, x[..., blank_id] - lse, query, lse, best)]


@pytest.mark.parametrize("vocab", [354, 25055])
def test_the_arrays_equal_torchs_on_the_valid_frames(vocab: int) -> None:
    logits = ctc_like_logits(3, 61, vocab, seed=vocab)
    lens = np.array([61, 23, 5], dtype=np.int32)
    rich_ids = list(range(vocab - 30, vocab - 4))
    batch = reduce_logits(logits, lens, 0, rich_ids, keyed=[0, 1, 2])
    ids, best, blank, query, lse, best_logit = torch_reductions(logits, 0, rich_ids)
    for i, n in enumerate(lens):
        np.testing.assert_array_equal(batch.best_ids[i, :n], ids[i, :n])
        np.testing.assert_allclose(batch.best_logp[i, :n], best[i, :n], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(batch.blank_logp[i, :n], blank[i, :n], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(batch.query_logp[i], query[i], atol=TOLERANCE, rtol=0)
    # The top-k of each keyed row, against the torch engine's device method (``topk``, as on a
    # GPU; on the CPU that engine uses ``text_top_k`` too).
    stub = SimpleNamespace(vocab=SimpleNamespace(blank_id=0))
    top_ids, top_logp = SenseVoiceEngine._text_top_device(
        stub,  # type: ignore[arg-type]
        torch.from_numpy(logits),
        torch.from_numpy(lse),
        torch.from_numpy(blank),
        torch.from_numpy(best_logit),
        [0, 1, 2],
    )
    first = batch.text_top[0][1]
    assert np.isfinite(first).any() and np.isneginf(first).any(), "sorted and unsorted frames"
    for i, n in enumerate(lens):
        mine_ids, mine_logp = batch.text_top[i]
        assert mine_ids.shape == (n - QUERY_FRAMES, 10)
        np.testing.assert_allclose(mine_logp, top_logp[i, : n - QUERY_FRAMES], atol=TOLERANCE, rtol=0)
        # Ids equal wherever the log-probs do not tie (and blank on the frames left unsorted).
        want_ids, want_logp = top_ids[i, : n - QUERY_FRAMES], top_logp[i, : n - QUERY_FRAMES]
        compared = untied(want_logp) | np.isneginf(want_logp)
        assert compared.mean() > 0.5
        np.testing.assert_array_equal(mine_ids[compared], want_ids[compared])


def untied(values: np.ndarray) -> np.ndarray:
    """Where a row of best-first values (F, k) differs from both neighbours by more than 1e-4."""
    with np.errstate(invalid="ignore"):  # -inf - -inf on unsorted frames: never "untied"
        gaps = np.abs(np.diff(values, axis=-1)) > 1e-4
    edge = np.ones_like(gaps[:, :1])
    return np.concatenate([edge, gaps], axis=-1) & np.concatenate([gaps, edge], axis=-1)


def test_frames_shorter_than_the_queries_and_no_keyterms() -> None:
    logits = ctc_like_logits(1, 4, 50, seed=1)
    batch = reduce_logits(logits, np.array([4]), 0, [40, 41], keyed=[])
    assert batch.text_top == {} and batch.best_ids.shape == (1, 4)
    top = reduce_logits(logits, np.array([4]), 0, [40, 41], keyed=[0]).text_top[0]
    assert top[0].shape == (0, 10)


@pytest.fixture(scope="module")
def demo_vocab() -> tuple[spm.SentencePieceProcessor, RichVocab, KeytermGraphs]:
    sp = spm.SentencePieceProcessor(model_file=str(DEMO_TOKENIZER))
    vocab = RichVocab.from_tokenizer(sp.piece_to_id, unk_id=sp.unk_id(), blank_id=0)
    return sp, vocab, KeytermGraphs(sp, 0)


def results_both_ways(
    logits: np.ndarray, lens: np.ndarray, requests: list[TranscriptionRequest], demo_vocab: tuple
) -> tuple[list[TranscriptionResult], list[TranscriptionResult]]:
    sp, vocab, graphs = demo_vocab
    rich_ids = vocab.rich_ids()
    keyed = [i for i, r in enumerate(requests) if r.keyterms]
    mine = decode_batch(requests, reduce_logits(logits, lens, 0, rich_ids, keyed), vocab, sp, graphs)
    # The torch engine's own method, on an engine holding only what it reads.
    engine = SimpleNamespace(
        vocab=vocab,
        _rich_ids=rich_ids,
        _rich_index=torch.tensor(rich_ids),
        _tokenizer=SimpleNamespace(sp=sp),
        keyterm_graphs=graphs,
    )
    engine._text_top_device = lambda *args: SenseVoiceEngine._text_top_device(engine, *args)  # type: ignore[arg-type]
    # The device reductions (torch, as on a GPU): on the CPU that engine uses ``reduce_logits``.
    batch = SenseVoiceEngine._reduce_on_device(
        engine,  # type: ignore[arg-type]
        torch.from_numpy(logits),
        torch.from_numpy(lens),
        keyed,
    )
    theirs = decode_batch(requests, batch, vocab, sp, graphs)
    return mine, theirs


@pytest.mark.parametrize("seed", range(4))
def test_results_equal_the_torch_engines(seed: int, demo_vocab: tuple) -> None:
    sp = demo_vocab[0]
    logits = ctc_like_logits(4, 90, sp.get_piece_size(), seed)
    lens = np.array([90, 61, 33, 90], dtype=np.int32)
    audio = np.zeros(90 * 960, dtype=np.float32)
    requests = [
        TranscriptionRequest(audio, word_timestamps=True),
        TranscriptionRequest(audio, keyterms=("turn left", "door")),
        TranscriptionRequest(audio, known_emotion_only=True, word_timestamps=True),
        TranscriptionRequest(audio, keyterms=("what time",), word_timestamps=True),
    ]
    mine, theirs = results_both_ways(logits, lens, requests, demo_vocab)
    for a, b in zip(mine, theirs, strict=True):
        assert (a.text, a.raw_text, a.keyterms_matched) == (b.text, b.raw_text, b.keyterms_matched)
        assert a.text, "the logits spell something"
        assert [(w.word, w.start_ms, w.end_ms) for w in a.words or []] == [
            (w.word, w.start_ms, w.end_ms) for w in b.words or []
        ]
        assert abs(a.confidence - b.confidence) <= TOLERANCE
        for x, y in ((a.language, b.language), (a.emotion, b.emotion), (a.event, b.event)):
            assert x.label == y.label
            assert max(abs(x.scores[k] - y.scores[k]) for k in x.scores) <= TOLERANCE


def test_a_batch_built_by_hand_decodes(demo_vocab: tuple) -> None:
    """``CtcBatch`` is the seam: an all-blank utterance is empty text with the blank's confidence."""
    sp, vocab, graphs = demo_vocab
    frames = 10
    rich = vocab.rich_ids()
    batch = CtcBatch(
        best_ids=np.zeros((1, frames), dtype=np.int64),
        best_logp=np.full((1, frames), -0.1, dtype=np.float32),
        blank_logp=np.full((1, frames), -0.1, dtype=np.float32),
        query_logp=np.full((1, QUERY_FRAMES, len(rich)), -3.0, dtype=np.float32),
        lens=np.array([frames]),
        rich_ids=rich,
    )
    (result,) = decode_batch(
        [TranscriptionRequest(np.zeros(9600, dtype=np.float32))], batch, vocab, sp, graphs
    )
    assert result.text == "" and result.confidence == pytest.approx(np.exp(-0.1), abs=1e-6)
