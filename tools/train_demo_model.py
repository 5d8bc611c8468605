#!/usr/bin/env python
"""Train the bundled ``demo`` model: SenseVoiceSmall's architecture at a small size, on synthetic speech.

The data comes from ``tools/demo_data.py`` (espeak-ng phrases in five languages, four
prosody styles standing in for emotions, background music and non-speech clips). The model
is funasr's ``SenseVoiceSmall`` class with the same frontend (80 mel, LFR 7/6, CMVN), the
same four query frames and the same rich-tag targets ``<|lang|><|EMO|><|Event|><|itn|>`` +
text as the real model: CTC on the speech frames, cross-entropy on the four query frames.
With ``--phone-share F`` a seeded share F of the clips also goes in as a phone call carries it
(8 kHz G.711 µ-law or A-law and back, ``tools/phone_line.py``), so the model can serve calls
too. The result is a model dir funasr's ``AutoModel`` loads, written to
``service/emostt/models/demo`` by default.

``--init DIR`` fine-tunes a model this script wrote (its weights, CMVN and tokenizer) instead of
starting from random weights: with ``--phone-share`` and a lower ``--lr``, the wideband model
learns calls while the wideband clips, still all there, keep what it knew.

CPU only and reproducible (fixed seeds, pinned voices, single-threaded data order). The bundled
build is a wideband model fine-tuned with a quarter of phone copies (docs/BENCHMARKS.md, "Demo
model" and "Phone audio"):

    python tools/train_demo_model.py --out /tmp/demo-wideband            # 24 epochs, 2 threads
    python tools/train_demo_model.py --init /tmp/demo-wideband --phone-share 0.25 --epochs 8 \
        --lr 5e-4 --threads 1                                              # -> service/emostt/models/demo
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import torch

from emostt.inference.fbank import load_cmvn
from emostt.inference.modeldir import BPE_MODEL_NAME, ModelSize, build_model, write_model_dir
from emostt.inference.rich_tokens import (
    EMOTION_TOKENS,
    EVENT_TOKENS,
    LANGUAGE_QUERY_INDEX,
    LANGUAGE_TOKENS,
    QUERY_FRAMES,
    TEXT_NORM_QUERY_INDEX,
    TEXT_NORM_TOKENS,
)
from emostt.inference.tokenizer_builder import CONTROL_PIECES, RICH_BLOCK_SIZE

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_data
from phone_line import through_phone

SEED = 20261121
RICH_FRAME_WEIGHTS = torch.tensor([1.0, 3.0, 1.0, 1.0])  # language, emotion, event, text norm
DEMO_DIMS = {"output_size": 128, "attention_heads": 4, "linear_units": 512, "num_blocks": 6, "tp_blocks": 2}


def text_pieces(texts: list[str]) -> list[str]:
    """Whole English words (one CTC token each), letters for anything else, single CJK/kana/hangul chars."""
    words: set[str] = set()
    chars: set[str] = set()
    for text in texts:
        for word in text.split():
            if word.isascii():
                words.add(f"▁{word}")
            else:
                chars.update(word)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = ["▁", *sorted(words), *(f"▁{c}" for c in letters), *letters, "'", *sorted(chars)]
    return list(dict.fromkeys(pieces))


def with_random_silence(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lead and tail of varying length, as VAD segments give: room noise, or digital silence.

    Without it the model learns the clips' fixed 100-200 ms margins and fails on the 300 ms
    prefix padding the streaming service adds.
    """
    lead, tail = int(rng.uniform(0.05, 0.45) * 16000), int(rng.uniform(0.05, 0.3) * 16000)
    level = 0.0 if rng.random() < 0.25 else 10 ** (rng.uniform(-70, -55) / 20)
    pad = (rng.standard_normal(lead + tail) * level).astype(np.float32)
    return np.concatenate((pad[:lead], audio, pad[lead:]))


def phone_copies(count: int, share: float, rng: np.random.Generator) -> list[tuple[int, str]]:
    """(clip index, G.711 law) for the clips that also go in through a phone line (8 kHz G.711,
    half µ-law, half A-law, back to 16 kHz): without them the model knows only wideband speech
    and reads almost nothing of a call, whose audio stops at 4 kHz."""
    picked = np.flatnonzero(rng.random(count) < share)
    laws = rng.choice(["mulaw", "alaw"], size=len(picked))
    return [(int(i), str(law)) for i, law in zip(picked, laws, strict=True)]


def init_cmvn(model_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the CMVN a model dir was trained with (am.mvn holds -mean and 1/std)."""
    shift, scale = load_cmvn(model_dir / "am.mvn")
    return torch.from_numpy(-shift), torch.from_numpy(1.0 / scale)


def check_same_tokenizer(model_dir: Path, work: Path) -> None:
    """Fine-tuning keeps the token ids: the data must give the tokenizer the model was trained on."""
    pieces = [spm.SentencePieceProcessor(model_file=str(d / BPE_MODEL_NAME)) for d in (model_dir, work)]
    vocab = [[sp.id_to_piece(i) for i in range(sp.get_piece_size())] for sp in pieces]
    if vocab[0] != vocab[1]:
        raise SystemExit(f"--init {model_dir}: its tokenizer differs from the one this data gives")


def extract_features(audios: list[np.ndarray]) -> list[torch.Tensor]:
    """fbank + LFR exactly as the model's WavFrontend computes them, before CMVN."""
    from emostt.inference.funasr_import import stdout_to_stderr

    with stdout_to_stderr():
        from funasr.frontends.wav_frontend import WavFrontend
    frontend = WavFrontend(
        cmvn_file=None,
        fs=16000,
        window="hamming",
        n_mels=80,
        frame_length=25,
        frame_shift=10,
        lfr_m=7,
        lfr_n=6,
        dither=0.0,
    )
    feats = []
    for audio in audios:
        wav = torch.from_numpy(audio)[None, :]
        feat, _ = frontend(wav, [wav.shape[1]])
        feats.append(feat[0])
    return feats


@dataclass
class Example:
    feats: torch.Tensor  # (T, 560), CMVN applied
    text_ids: list[int]
    language: str
    rich_targets: tuple[int, int, int]  # language, emotion, event token ids


def spec_augment(feats: torch.Tensor, rng: random.Random) -> torch.Tensor:
    out = feats.clone()
    t, d = out.shape
    for _ in range(2):
        width = rng.randint(0, min(4, max(t // 8, 1)))
        start = rng.randint(0, max(t - width, 0))
        out[start : start + width] = 0.0
    for _ in range(2):
        width = rng.randint(0, 48)
        start = rng.randint(0, d - width)
        out[:, start : start + width] = 0.0
    return out


def batches(examples: list[Example], batch_frames: int, rng: random.Random) -> list[list[Example]]:
    """Length-sorted buckets (little padding), shuffled bucket order."""
    order = sorted(examples, key=lambda e: e.feats.shape[0] + rng.random())
    out: list[list[Example]] = []
    current: list[Example] = []
    for ex in order:
        if current and (len(current) + 1) * max(ex.feats.shape[0], current[-1].feats.shape[0]) > batch_frames:
            out.append(current)
            current = []
        current.append(ex)
    if current:
        out.append(current)
    rng.shuffle(out)
    return out


def forward_loss(
    model: Any, batch: list[Example], itn_ids: dict[bool, int], rng: random.Random, augment: bool
) -> tuple[torch.Tensor, float]:
    feats = [spec_augment(e.feats, rng) if augment else e.feats for e in batch]
    lengths = torch.tensor([f.shape[0] for f in feats])
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    use_itn = [rng.random() < 0.5 for _ in batch]
    # Like funasr's training: the language query is sometimes the true language, sometimes auto.
    lang_query = [LANGUAGE_QUERY_INDEX[e.language] if rng.random() < 0.3 else 0 for e in batch]
    query_idx = torch.tensor(
        [[lq, 1, 2, TEXT_NORM_QUERY_INDEX[itn]] for lq, itn in zip(lang_query, use_itn, strict=True)]
    )
    encoder_in = torch.cat((model.embed(query_idx), padded), dim=1)
    encoder_out, out_lens = model.encoder(encoder_in, lengths + QUERY_FRAMES)
    logits = model.ctc.ctc_lo(encoder_out)
    logp = torch.log_softmax(logits, dim=-1)

    targets = [torch.tensor(e.text_ids, dtype=torch.long) for e in batch]
    target_lens = torch.tensor([len(t) for t in targets])
    flat = torch.cat(targets) if any(len(t) for t in targets) else torch.zeros(0, dtype=torch.long)
    ctc = torch.nn.functional.ctc_loss(
        logp[:, QUERY_FRAMES:].transpose(0, 1),
        flat,
        out_lens - QUERY_FRAMES,
        target_lens,
        blank=0,
        reduction="mean",
        zero_infinity=True,
    )
    rich_target = torch.tensor(
        [[*e.rich_targets, itn_ids[itn]] for e, itn in zip(batch, use_itn, strict=True)]
    )
    rich_logits = logits[:, :QUERY_FRAMES].reshape(-1, logits.shape[-1])
    rich = torch.nn.functional.cross_entropy(rich_logits, rich_target.reshape(-1))
    accuracy = (rich_logits.argmax(-1) == rich_target.reshape(-1)).float().mean().item()
    return ctc + rich, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("service/emostt/models/demo"))
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument(
        "--phone-share", type=float, default=0.0, help="share of clips also trained through a phone line"
    )
    parser.add_argument("--batch-frames", type=int, default=1600, help="padded LFR frames per batch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N clips (smoke runs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init", type=Path, default=None, help="fine-tune this model dir's weights")
    args = parser.parse_args()

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    started = time.monotonic()

    demo_data.check_voices()
    clips = demo_data.generate("train", limit=args.limit, workers=args.threads)
    print(f"{len(clips)} training clips in {time.monotonic() - started:.0f}s", flush=True)

    pieces = text_pieces([c.text for c in clips])
    size = ModelSize(vocab_size=len(CONTROL_PIECES) + len(pieces) + RICH_BLOCK_SIZE, **DEMO_DIMS)
    work = args.out.parent / f".{args.out.name}.tmp"
    write_model_dir(work, size, text_pieces=pieces)  # tokenizer first: targets come from it
    if args.init is not None:
        check_same_tokenizer(args.init, work)
    sp = spm.SentencePieceProcessor(model_file=str(work / BPE_MODEL_NAME))

    silence_rng = np.random.default_rng(SEED)
    audios = [with_random_silence(c.audio, silence_rng) for c in clips]
    # Copies rather than replacements: the wideband clips stay exactly what they were. The
    # line comes after the silence, as a call carries the pauses around an utterance too.
    phone = phone_copies(len(clips), args.phone_share, np.random.default_rng(SEED + 1))
    audios += [through_phone(with_random_silence(clips[i].audio, silence_rng), law) for i, law in phone]
    clips += [clips[i] for i, _ in phone]
    print(f"{len(phone)} phone copies ({time.monotonic() - started:.0f}s)", flush=True)
    raw = extract_features(audios)
    if args.init is not None:  # the weights were trained on features normalised this way
        mean, std = init_cmvn(args.init)
    else:
        stacked = torch.cat(raw)
        mean, std = stacked.mean(0), stacked.std(0).clamp_min(1e-3)
    examples = [
        Example(
            feats=(f - mean) / std,
            text_ids=sp.encode(c.text) if c.text else [],
            language=c.language,
            rich_targets=(
                sp.piece_to_id(LANGUAGE_TOKENS[c.language]),
                sp.piece_to_id(EMOTION_TOKENS[c.emotion]),
                sp.piece_to_id(EVENT_TOKENS[c.event]),
            ),
        )
        for f, c in zip(raw, clips, strict=True)
    ]
    itn_ids = {
        True: sp.piece_to_id(TEXT_NORM_TOKENS["withitn"]),
        False: sp.piece_to_id(TEXT_NORM_TOKENS["woitn"]),
    }

    model = build_model(size, seed=SEED)
    if args.init is not None:
        weights = torch.load(args.init / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.2f}M parameters, vocab {size.vocab_size}", flush=True)
    rng = random.Random(SEED)
    plan = [batches(examples, args.batch_frames, rng) for _ in range(args.epochs)]
    total_steps = sum(len(p) for p in plan)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(total_steps // 20, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(step / total_steps, 1.0)))),
    )
    model.train()
    step = 0
    for epoch, epoch_batches in enumerate(plan):
        losses, accs = [], []
        for batch in epoch_batches:
            loss, acc = forward_loss(model, batch, itn_ids, rng, augment=True)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(loss.item())
            accs.append(acc)
        print(
            f"epoch {epoch + 1}/{args.epochs} loss {np.mean(losses):.3f} rich-acc {np.mean(accs):.3f} "
            f"({time.monotonic() - started:.0f}s)",
            flush=True,
        )

    model.eval()
    # fp16 on disk halves the bundle; funasr casts back to the fp32 parameters on load.
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    write_model_dir(work, size, text_pieces=pieces, state_dict=state, cmvn=(mean.numpy(), std.numpy()))
    meta = {
        "seed": SEED,
        "epochs": args.epochs,
        "clips": len(clips),
        "phone_copies": len(phone),
        "lr": args.lr,
        "init": None if args.init is None else json.loads((args.init / "training.json").read_text()),
        "parameters": params,
        "espeak_ng": demo_data.espeak_version(),
        "train_seconds": round(time.monotonic() - started),
    }
    (work / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    if args.out.exists():
        for old in args.out.iterdir():
            if old.is_file():
                old.unlink()
        args.out.rmdir()
    work.rename(args.out)
    print(f"wrote {args.out} ({meta['train_seconds']}s)")


if __name__ == "__main__":
    main()
