#!/usr/bin/env python
"""How far apart the demo data's emotion styles are on simple acoustic measures.

Fits a logistic regression on per-clip measures from a sample of the train split and
scores it on the held-out split (unseen voices and speeds):

* level: RMS of the active span in dBFS (voices are level-calibrated, see demo_data),
* tilt: energy at 2-6 kHz against 0.1-1 kHz in dB,
* tempo: seconds of active speech per character of text,
* with ``--with-pitch`` also the median and the 10-90 % spread of F0 (YIN) in semitones.

The demo model's emotion errors track the level/tilt/tempo regression far more closely
than the one with pitch: fbank features show loudness and spectral slope plainly and the
pitch only faintly. So this minute-long check tells whether a change to ``STYLES`` is worth
a twenty-minute training run (see docs/BENCHMARKS.md).

    python tools/demo_style_check.py [--limit 1200] [--with-pitch]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import librosa
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_data


def measures(clip: demo_data.Clip, with_pitch: bool) -> list[float]:
    audio = clip.audio.astype(np.float64)
    start, end = demo_data.active_span(clip.audio) or (0, len(audio))
    speech = audio[start:end]
    level = 20 * np.log10(demo_data.active_rms(clip.audio) + 1e-9)
    power = np.abs(np.fft.rfft(speech)) ** 2
    freqs = np.fft.rfftfreq(len(speech), 1 / demo_data.SAMPLE_RATE)
    low = power[(freqs > 100) & (freqs < 1000)].sum()
    high = power[(freqs > 2000) & (freqs < 6000)].sum()
    tilt = 10 * np.log10(high / low + 1e-12)
    tempo = len(speech) / demo_data.SAMPLE_RATE / max(len(clip.text.replace(" ", "")), 1)
    out = [level, tilt, tempo]
    if with_pitch:
        f0 = librosa.yin(
            speech.astype(np.float32), fmin=60, fmax=500, sr=demo_data.SAMPLE_RATE, frame_length=1024
        )
        energy = librosa.feature.rms(y=speech.astype(np.float32), frame_length=1024, hop_length=256)[0][
            : len(f0)
        ]
        semitones = 12 * np.log2(f0[: len(energy)][energy > 0.3 * energy.max()] / 100)
        out += [
            float(np.median(semitones)),
            float(np.percentile(semitones, 90) - np.percentile(semitones, 10)),
        ]
    return out


def speech_clips(split: str, limit: int | None) -> list[demo_data.Clip]:
    clips = demo_data.generate(split, limit=limit)
    return [c for c in clips if c.event == "speech" and c.emotion != demo_data.UNKNOWN_EMOTION]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=1200, help="train specs to sample (split order)")
    parser.add_argument("--with-pitch", action="store_true", help="add F0 median and spread (YIN)")
    args = parser.parse_args()

    train, heldout = speech_clips("train", args.limit), speech_clips("heldout", None)
    x_train = np.array([measures(c, args.with_pitch) for c in train])
    x_heldout = np.array([measures(c, args.with_pitch) for c in heldout])
    y_train = np.array([c.emotion for c in train])
    y_heldout = np.array([c.emotion for c in heldout])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_train, y_train)
    predicted = model.predict(x_heldout)
    print(f"train clips {len(train)}, held-out clips {len(heldout)}")
    train_accuracy = np.mean(model.predict(x_train) == y_train)
    print(f"accuracy: train {train_accuracy:.1%}, held-out {np.mean(predicted == y_heldout):.1%}")
    labels = sorted(set(y_heldout))
    print("held-out confusion (rows: label, columns: predicted):")
    print(" " * 8 + "".join(f"{label:>9}" for label in labels))
    for label in labels:
        row = predicted[y_heldout == label]
        print(f"{label:>8}" + "".join(f"{int(np.sum(row == p)):>9}" for p in labels))


if __name__ == "__main__":
    main()
