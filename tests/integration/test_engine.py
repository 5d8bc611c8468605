"""The SenseVoice engine on a generated model dir, against funasr's own AutoModel.generate()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from emostt.errors import InvalidAudioError
from emostt.inference.engine import TranscriptionRequest
from emostt.inference.funasr_import import auto_model_class
from emostt.inference.rich_tokens import EMOTION_TOKENS, LANGUAGE_TOKENS
from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine
from tests.conftest import noise_utterances

# fp32 on the CPU: batched and single-utterance matmuls may round differently.
LOGPROB_TOLERANCE = 1e-4
SCORE_TOLERANCE = 1e-4
MIXED_LENGTHS = [1.0, 3.2, 0.6, 2.1, 4.0, 1.5, 0.9, 2.7]


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> Any:
    return auto_model_class()(model=str(tiny_model_dir), device="cpu", disable_update=True, disable_pbar=True)


def reference_run(
    reference: Any, audios: list[np.ndarray], **kwargs: Any
) -> tuple[list[str], list[np.ndarray]]:
    """funasr's generate(); CTC log-probs captured from its ctc_lo layer."""
    captured: list[torch.Tensor] = []
    hook = reference.model.ctc.ctc_lo.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        out = reference.generate(input=audios, batch_size=len(audios), **kwargs)
    finally:
        hook.remove()
    logp = torch.log_softmax(captured[0].float(), dim=-1).numpy()
    return [r["text"] for r in out], [logp[i] for i in range(len(audios))]


@pytest.mark.parametrize("batch", [1, 8])
def test_parity_with_funasr_generate(tiny_engine: SenseVoiceEngine, reference: Any, batch: int) -> None:
    audios = noise_utterances(MIXED_LENGTHS[:batch], seed=batch)
    requests = [TranscriptionRequest(a, language="auto", use_itn=True) for a in audios]
    results = tiny_engine.transcribe(requests)
    ours = tiny_engine.log_probs(requests)
    for i, audio in enumerate(audios):
        # Each utterance alone through funasr: the reference SenseVoice serving path.
        texts, ref_logp = reference_run(reference, [audio], language="auto", use_itn=True)
        assert results[i].raw_text == texts[0]
        assert ours[i].shape == ref_logp[0].shape
        np.testing.assert_allclose(ours[i], ref_logp[0], atol=LOGPROB_TOLERANCE, rtol=0)
    if batch > 1:
        # And funasr's own padded batch agrees too.
        texts, ref_logp = reference_run(reference, audios, language="auto", use_itn=True)
        assert [r.raw_text for r in results] == texts
        for i in range(batch):
            np.testing.assert_allclose(ours[i], ref_logp[i][: len(ours[i])], atol=LOGPROB_TOLERANCE, rtol=0)


def test_language_hint_and_itn_apply_per_utterance(tiny_engine: SenseVoiceEngine, reference: Any) -> None:
    audio = noise_utterances([2.0], seed=3)[0]
    settings = [("en", True), ("zh", False), ("auto", True), ("ko", False)]
    results = tiny_engine.transcribe(
        [TranscriptionRequest(audio, language=lang, use_itn=itn) for lang, itn in settings]
    )
    for (lang, itn), result in zip(settings, results, strict=True):
        texts, _ = reference_run(reference, [audio], language=lang, use_itn=itn)
        assert result.raw_text == texts[0]
    assert len({r.raw_text for r in results}) > 1, "the query frames must change the output"


def test_padding_does_not_change_results(tiny_engine: SenseVoiceEngine) -> None:
    audios = noise_utterances(MIXED_LENGTHS, seed=7)
    batched = tiny_engine.transcribe([TranscriptionRequest(a, word_timestamps=True) for a in audios])
    for audio, together in zip(audios, batched, strict=True):
        alone = tiny_engine.transcribe([TranscriptionRequest(audio, word_timestamps=True)])[0]
        assert together.text == alone.text
        assert together.raw_text == alone.raw_text
        assert together.confidence == pytest.approx(alone.confidence, abs=SCORE_TOLERANCE)
        for name in ("language", "emotion", "event"):
            a, b = getattr(together, name), getattr(alone, name)
            assert a.label == b.label
            for label, p in a.scores.items():
                assert p == pytest.approx(b.scores[label], abs=SCORE_TOLERANCE)
        assert [w.word for w in together.words or []] == [w.word for w in alone.words or []]


def test_result_fields(tiny_engine: SenseVoiceEngine, speech_16k: np.ndarray) -> None:
    result = tiny_engine.transcribe([TranscriptionRequest(speech_16k, word_timestamps=True)])[0]
    assert set(result.language.scores) == set(LANGUAGE_TOKENS)
    assert set(result.emotion.scores) == set(EMOTION_TOKENS)
    assert {"speech", "bgm", "laughter", "applause", "cry", "sneeze", "breath", "cough"} <= set(
        result.event.scores
    )
    for dist in (result.language, result.emotion, result.event):
        assert sum(dist.scores.values()) == pytest.approx(1.0, abs=1e-6)
        assert dist.label == max(dist.scores, key=dist.scores.__getitem__)
    assert 0.0 <= result.confidence <= 1.0
    assert "<|" not in result.text
    assert result.duration_ms == round(len(speech_16k) / 16)
    assert result.words is not None
    assert "".join(w.word for w in result.words) == result.text.replace(" ", "")
    assert all(
        0 <= w.start_ms < w.end_ms <= result.duration_ms and 0 <= w.confidence <= 1 for w in result.words
    )
    assert result.to_dict()["emotion"]["label"] == result.emotion.label


def test_known_emotion_only(tiny_engine: SenseVoiceEngine, speech_16k: np.ndarray) -> None:
    plain, known = tiny_engine.transcribe(
        [TranscriptionRequest(speech_16k), TranscriptionRequest(speech_16k, known_emotion_only=True)]
    )
    assert "unknown" in plain.emotion.scores
    assert "unknown" not in known.emotion.scores and known.emotion.label != "unknown"
    assert sum(known.emotion.scores.values()) == pytest.approx(1.0)
    rest = 1.0 - plain.emotion.scores["unknown"]
    for label, p in known.emotion.scores.items():
        assert p == pytest.approx(plain.emotion.scores[label] / rest, rel=1e-6)


def test_int8_quantizes_linear_layers_and_keeps_results_valid(
    tiny_model_dir: Path, speech_16k: np.ndarray
) -> None:
    engine = SenseVoiceEngine.load(
        str(tiny_model_dir), EngineOptions(device="cpu", precision="int8", backend="torch")
    )
    assert engine.info.precision == "int8"
    quantized = [m for m in engine._model.modules() if "quantized" in type(m).__module__]
    assert quantized, "int8 must replace the Linear layers with dynamically quantized ones"
    result = engine.transcribe([TranscriptionRequest(speech_16k)])[0]
    assert sum(result.emotion.scores.values()) == pytest.approx(1.0, abs=1e-6)
    assert 0.0 <= result.confidence <= 1.0


def test_bad_requests_are_rejected_clearly(tiny_engine: SenseVoiceEngine) -> None:
    with pytest.raises(InvalidAudioError, match="too short"):
        tiny_engine.transcribe([TranscriptionRequest(np.zeros(100, dtype=np.float32))])
    with pytest.raises(ValueError, match="language must be one of"):
        TranscriptionRequest(np.zeros(16000, dtype=np.float32), language="fr")
    with pytest.raises(ValueError, match="mono"):
        TranscriptionRequest(np.zeros((2, 16000), dtype=np.float32))
    assert tiny_engine.transcribe([]) == []


def test_bucketed_padding_gives_the_same_results(tiny_model_dir: Path, tiny_engine: SenseVoiceEngine) -> None:
    bucketed = SenseVoiceEngine.load(
        str(tiny_model_dir), EngineOptions(device="cpu", precision="fp32", pad_multiple=64)
    )
    requests = [TranscriptionRequest(a) for a in noise_utterances(MIXED_LENGTHS[:4], seed=11)]
    for a, b in zip(bucketed.log_probs(requests), tiny_engine.log_probs(requests), strict=True):
        np.testing.assert_allclose(a, b, atol=LOGPROB_TOLERANCE, rtol=0)
    assert [r.text for r in bucketed.transcribe(requests)] == [
        r.text for r in tiny_engine.transcribe(requests)
    ]


def test_configured_dither_is_deterministic_and_survives_digital_silence(tmp_path: Path) -> None:
    from emostt.inference.modeldir import SIZES, write_model_dir

    model_dir = write_model_dir(tmp_path / "dithered", SIZES["tiny"], seed=0, dither=1.0)
    engine = SenseVoiceEngine.load(str(model_dir), EngineOptions(device="cpu", precision="fp32"))
    silence = np.zeros(16_000, dtype=np.float32)
    first, second = (
        engine.log_probs([TranscriptionRequest(silence)]),
        engine.log_probs([TranscriptionRequest(silence)]),
    )
    np.testing.assert_array_equal(first[0], second[0])
    plain = SenseVoiceEngine.load(str(model_dir), EngineOptions(device="cpu", precision="fp32"))
    plain._features._dither = 0.0
    assert not np.allclose(plain.log_probs([TranscriptionRequest(silence)])[0], first[0]), (
        "dither reached the features"
    )
