"""Synthetic speech dataset for training the small SenseVoice-architecture demo model.

Every clip is produced by espeak-ng (formant synthesis) plus a few numpy signal generators,
so the whole set can be regenerated bit-for-bit on any machine with the same espeak-ng
build. The data is synthetic through and through, and the labels say only what the
generator did, not what a listener would perceive:

* Text and language: short voice-agent commands in English (``en``), Mandarin (``zh``,
  espeak-ng voice ``cmn-latn-pinyin``), Cantonese (``yue``), Japanese (``ja``, kana only)
  and Korean (``ko``).
* Emotion: none of these clips is emotional speech. "happy", "sad" and "angry" are
  prosody settings that imitate the broad acoustic correlates reported for those
  emotions (pitch level, pitch excursion, speaking rate, loudness, spectral tilt). A model
  trained on them learns those correlates, and nothing more:

  ========  =====  =====  =====  ====  ===  ==========================================
  style     pitch  range  rate   amp   gap  tilt
  ========  =====  =====  =====  ====  ===  ==========================================
  neutral   50     100%   x1.00  60    0    flat (espeak-ng defaults apart from level)
  happy     72     220%   x1.20  90    0    +1.5 dB/oct (brighter)
  sad       32     40%    x0.78  36    3    -2.0 dB/oct (duller, lax)
  angry     50     25%    x1.16  110   1    +6.0 dB/oct (pressed, tense)
  ========  =====  =====  =====  ====  ===  ==========================================

  pitch is ``espeak-ng -p`` (0-99), range the SSML ``<prosody range>`` (how far the
  intonation moves), rate a factor on the clip's base words per minute (``-s``), amp
  ``espeak-ng -a`` (0-200), gap ``-g`` (pause between words, 10 ms units) and tilt a
  zero-phase spectral slope applied above 500 Hz. Each clip also gets seeded jitter on
  pitch (±8, about a speaker's natural spread), range and level, so that the styles
  overlap at the edges and absolute pitch alone does not give the style away: the cues
  that separate the styles for an unseen voice are relative ones (how far the pitch
  moves, spectral tilt, loudness against the voice's neutral level).
* Level: each voice is scaled by one fixed gain, calibrated so that a neutral reference
  utterance peaks at 0.45 (neutral clips then peak near 0.5). Clips are not normalised
  individually, so an angry clip is well over twice as loud (RMS) as a sad one of the
  same phrase and voice.
* Event: ``speech`` (clean speech over a -65 dBFS noise floor), ``bgm`` (speech over
  generated sine-chord music at 5-10 dB SNR, or, with empty text, music alone) and
  ``event_unk`` (coloured noise alone, from barely audible to clearly audible). Clips
  without speech have language ``nospeech`` and emotion ``unknown``.

Splits: ``train`` uses 32 of espeak-ng's voice variants plus 32 variants generated from
seeded random speaker parameters (vocal-tract scale, pitch range, breathiness, roughness,
flutter; written into a private copy of espeak-ng's data directory), 18 of the 64 per
phrase and style, and seven base speaking rates; ``heldout`` uses four other stock variants
and four other rates, so it measures generalisation to unseen (synthetic) speakers and
tempos, not to real speech.

Output is 16 kHz mono float32. Leading and trailing silence is trimmed to 100-200 ms.

Reproducibility: every random choice is seeded from a hash of the clip's spec, split
membership and order come from hashes of fixed names, the voice list is pinned below,
and :func:`check_voices` fails if the installed espeak-ng lacks one of them. The tables
were made with espeak-ng 1.51 (Debian 1.51+dfsg-10); :func:`espeak_version` reports the
installed version and the CLI records it in ``meta.json``. Other espeak-ng versions (or a
numpy that changes its PCG64-based sampling) produce similar but not identical audio.

Known espeak-ng 1.51 limits that shaped the phrase list: the ``cmn`` voice reads Chinese
characters as pinyin with tone digits spoken in English ("ni three"), so Mandarin uses
``cmn-latn-pinyin``, which pronounces the same characters correctly; the ``ja`` voice
reads every kanji as the English words "Chinese letter" and the particle は as "ha", so
Japanese phrases are kana and avoid は.

Usage::

    python tools/demo_data.py OUT_DIR --split train|heldout [--limit N] [--workers 2]

writes ``OUT_DIR/wavs/*.wav`` (16 kHz PCM16), ``OUT_DIR/manifest.jsonl`` (one JSON object
of labels per clip) and ``OUT_DIR/meta.json``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import multiprocessing
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050  # espeak-ng always synthesises at this rate
PINNED_ESPEAK_VERSION = "1.51"

LANGUAGES = ("en", "zh", "yue", "ja", "ko")
EMOTIONS = ("neutral", "happy", "sad", "angry")
NOSPEECH = "nospeech"
UNKNOWN_EMOTION = "unknown"

# (text, language). English is lowercase without punctuation, matching what the model
# is trained to emit.
PHRASES: tuple[tuple[str, str], ...] = (
    ("turn left", "en"),
    ("turn right", "en"),
    ("stop", "en"),
    ("go forward", "en"),
    ("go back", "en"),
    ("how are you", "en"),
    ("what time is it", "en"),
    ("hello robot", "en"),
    ("thank you", "en"),
    ("come here", "en"),
    ("sit down", "en"),
    ("good morning", "en"),
    ("good night", "en"),
    ("open the door", "en"),
    ("close the window", "en"),
    ("play some music", "en"),
    ("stop the music", "en"),
    ("what is your name", "en"),
    ("yes", "en"),
    ("no", "en"),
    ("turn on the lights", "en"),
    ("turn off the lights", "en"),
    ("wait a moment", "en"),
    ("i need help", "en"),
    ("call my mother", "en"),
    ("set a timer", "en"),
    ("what is the weather", "en"),
    ("where are you", "en"),
    ("follow me", "en"),
    ("speed up", "en"),
    ("slow down", "en"),
    ("that is great", "en"),
    ("i am tired", "en"),
    ("leave me alone", "en"),
    ("be quiet", "en"),
    ("pick it up", "en"),
    ("put it down", "en"),
    ("nice to meet you", "en"),
    ("see you later", "en"),
    ("good job", "en"),
    # Mandarin, simplified characters.
    ("你好", "zh"),
    ("谢谢", "zh"),
    ("再见", "zh"),
    ("停下", "zh"),
    ("早上好", "zh"),
    ("请开门", "zh"),
    # Cantonese, traditional characters.
    ("你好", "yue"),
    ("多謝", "yue"),
    ("再見", "yue"),
    ("早晨", "yue"),
    ("唔該", "yue"),
    ("開門", "yue"),
    # Japanese, kana only (see module docstring).
    ("ありがとう", "ja"),
    ("おはよう", "ja"),
    ("さようなら", "ja"),
    ("すみません", "ja"),
    ("とまれ", "ja"),
    ("はい", "ja"),
    # Korean.
    ("안녕하세요", "ko"),
    ("감사합니다", "ko"),
    ("멈춰", "ko"),
    ("네", "ko"),
    ("아니요", "ko"),
    ("이리 와", "ko"),
)

# espeak-ng base voice per language. English alternates accents per variant instead.
BASE_VOICE = {"zh": "cmn-latn-pinyin", "yue": "yue", "ja": "ja", "ko": "ko"}

# variant -> English accent. Train and held-out variants are disjoint, and so are their
# base speaking rates (words per minute).
TRAIN_VARIANTS: dict[str, str] = {
    "m1": "en",
    "m3": "en-us",
    "m4": "en",
    "m6": "en-us",
    "m7": "en",
    "f1": "en-us",
    "f2": "en",
    "f4": "en-us",
    "klatt": "en-us",
    "klatt2": "en",
    "klatt4": "en-us",
    "Andy": "en",
    "Annie": "en-us",
    "linda": "en",
    "belinda": "en-us",
    "Alicia": "en",
    "Mike": "en-us",
    "Gene": "en",
    "adam": "en",
    "benjamin": "en-us",
    "david": "en",
    "edward": "en-us",
    "john": "en",
    "paul": "en-us",
    "robert": "en",
    "travis": "en-us",
    "m8": "en",
    "anika": "en-us",
    "aunty": "en",
    "steph": "en-us",
    "Andrea": "en",
    "shelby": "en-us",
}
# Each (phrase, style) is spoken by this many of the train variants (rotated): many voices,
# at the data size (and training time) of fewer.
TRAIN_VOICES_PER_PHRASE = 18
HELDOUT_VARIANTS: dict[str, str] = {"m2": "en-us", "m5": "en", "f3": "en", "f5": "en-us"}
# Train variants generated from seeded random voice parameters (vocal tract scale, pitch,
# breathiness, roughness, flutter): many more speakers than espeak-ng ships, so the model
# meets a wide spread of timbres and has to separate the styles by what they change.
GENERATED_VARIANT_COUNT = 32
GENERATED_VARIANTS: dict[str, str] = {
    f"emostt{i:02d}": ("en", "en-us")[i % 2] for i in range(GENERATED_VARIANT_COUNT)
}
TRAIN_SPEEDS = (128, 145, 160, 175, 190, 205, 228)
HELDOUT_SPEEDS = (138, 168, 198, 215)

# Fraction (in tenths) of speech specs that get an extra copy mixed over music.
BGM_TENTHS = 3
NOSPEECH_COUNTS = {"train": 120, "heldout": 20}  # per event type (tones, noise)
# Keeps held-out non-speech clips from reusing train seeds.
TAKE_OFFSET = {"train": 0, "heldout": 100_000}

TARGET_PEAK = 0.45
MAX_PEAK = 0.98
NOISE_FLOOR_DBFS = -65.0


@dataclass(frozen=True)
class Style:
    pitch: int  # espeak-ng -p
    pitch_range: int  # SSML <prosody range>, percent of the voice's default excursion
    rate: float  # factor on the spec's base words per minute
    amplitude: int  # espeak-ng -a
    word_gap: int  # espeak-ng -g
    tilt_db_per_octave: float


STYLES: dict[str, Style] = {
    "neutral": Style(pitch=50, pitch_range=100, rate=1.00, amplitude=60, word_gap=0, tilt_db_per_octave=0.0),
    "happy": Style(pitch=72, pitch_range=220, rate=1.20, amplitude=90, word_gap=0, tilt_db_per_octave=1.5),
    "sad": Style(pitch=32, pitch_range=40, rate=0.78, amplitude=36, word_gap=3, tilt_db_per_octave=-2.0),
    "angry": Style(pitch=50, pitch_range=25, rate=1.16, amplitude=110, word_gap=1, tilt_db_per_octave=6.0),
}


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one clip; its hash seeds all randomness."""

    kind: str  # "speech", "tones" or "noise"
    text: str
    language: str
    emotion: str
    event: str
    voice: str  # full espeak-ng voice, e.g. "en-us+m3"; "" without speech
    speed: int  # base words per minute before the style's rate factor; 0 without speech
    take: int = 0


@dataclass(frozen=True)
class Clip:
    audio: np.ndarray  # 16 kHz mono float32
    text: str
    language: str
    emotion: str
    event: str
    voice: str
    speed: int  # base words per minute (see ClipSpec.speed)


# ---------------------------------------------------------------------------- espeak-ng


def espeak_version() -> str:
    """The installed espeak-ng version, e.g. ``"1.51"``."""
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"text-to-speech:\s*(\S+)", out)
    return match.group(1) if match else out.strip()


def voice_for(language: str, variant: str, variants: dict[str, str]) -> str:
    base = variants[variant] if language == "en" else BASE_VOICE[language]
    return f"{base}+{variant}"


# Files under espeak-ng-data/lang/ for the base voices above.
USED_LANGUAGE_FILES = frozenset({"gmw/en", "gmw/en-US", "sit/cmn-Latn-pinyin", "sit/yue", "jpx/ja", "ko"})


def _system_data_dir() -> Path:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"Data at:\s*(\S+)", out)
    if match is None:
        raise RuntimeError(f"cannot find espeak-ng's data directory in {out!r}")
    return Path(match.group(1))


def generated_variant_text(index: int) -> str:
    """An espeak-ng voice variant file with seeded random speaker parameters.

    The ranges stay within those of the variants espeak-ng ships (formant frequencies at
    80-135 % of the base voice, pitch 70-250 Hz, breath up to 6, roughness up to 5).
    """
    rng = np.random.default_rng(_stable_int("generated-variant", index))
    female = index % 2 == 1
    low = rng.uniform(140, 190) if female else rng.uniform(72, 120)
    high = low + (rng.uniform(50, 90) if female else rng.uniform(25, 60))
    tract = rng.uniform(1.05, 1.25) if female else rng.uniform(0.85, 1.08)
    lines = [
        "language variant",
        f"name emostt{index:02d}",
        f"gender {'female' if female else 'male'}",
        f"pitch {low:.0f} {high:.0f}",
    ]
    for formant in range(9):
        frequency = 100 * tract * rng.uniform(0.94, 1.06)
        lines.append(
            f"formant {formant} {frequency:.0f} {rng.uniform(70, 90):.0f} {rng.uniform(100, 180):.0f}"
        )
    if rng.random() < 0.5:
        level = rng.uniform(1, 6)
        lines.append("breath 0 " + " ".join(f"{level * w:.0f}" for w in (0.5, 1, 1, 1, 1, 0.2, 1)))
    lines.append(f"roughness {int(rng.integers(0, 6))}")
    lines.append(f"flutter {int(rng.integers(0, 16))}")
    lines.append(f"voicing {int(rng.integers(75, 111))}")
    if rng.random() < 0.5:
        lines.append(f"echo {int(rng.integers(80, 150))} {int(rng.integers(5, 16))}")
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=1)
def espeak_path() -> str:
    """A private espeak-ng data directory: the installed one plus the generated variants.

    Built once per machine and content (the directory name is a digest of both), so
    parallel workers and reruns share it.
    """
    source = _system_data_dir()
    texts = {f"emostt{i:02d}": generated_variant_text(i) for i in range(GENERATED_VARIANT_COUNT)}
    digest = _stable_int(str(source), espeak_version(), sorted(texts.items()))
    root = Path(tempfile.gettempdir()) / f"emostt-espeak-{digest:016x}"
    if not (root / "espeak-ng-data" / "phontab").exists():
        staging = Path(tempfile.mkdtemp(prefix="emostt-espeak-"))
        shutil.copytree(source, staging / "espeak-ng-data", symlinks=True)
        # espeak-ng lists at most 349 voices and silently drops the rest; keep only the
        # languages used here so the stock and generated variants all fit.
        lang_dir = staging / "espeak-ng-data" / "lang"
        for path in sorted(lang_dir.rglob("*"), reverse=True):
            if path.is_file() and path.relative_to(lang_dir).as_posix() not in USED_LANGUAGE_FILES:
                path.unlink()
        for name, text in texts.items():
            (staging / "espeak-ng-data" / "voices" / "!v" / name).write_text(text)
        try:
            staging.rename(root)
        except OSError:  # another process got there first
            shutil.rmtree(staging, ignore_errors=True)
    return str(root)


def _installed_voices() -> tuple[set[str], set[str]]:
    def listing(arg: str) -> str:
        command = ["espeak-ng", f"--path={espeak_path()}", arg]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    languages: set[str] = set()
    for line in listing("--voices").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5:
            # A voice answers to its language, its file name and each "(alias priority)".
            languages |= {fields[1].lower(), fields[4].rsplit("/", 1)[-1].lower()}
            languages |= {alias.lower() for alias in re.findall(r"\((\S+) \d+\)", line)}
    variants = set(re.findall(r"!v/(\S+)", listing("--voices=variant")))
    return languages, variants


def check_voices() -> None:
    """Fail unless every pinned voice is installed and speaks each of its phrases.

    espeak-ng silently falls back to the default variant for an unknown ``+variant``, so
    the listings are checked explicitly rather than trusting the synthesiser. Text a
    voice cannot read is not silent either: espeak-ng switches to English mid-utterance
    and marks that with ``(en)`` in its phoneme output, which is what gets checked.
    """
    languages, variants = _installed_voices()
    wanted_bases = set(BASE_VOICE.values()) | set(TRAIN_VARIANTS.values()) | set(HELDOUT_VARIANTS.values())
    missing = sorted(wanted_bases - languages) + sorted(
        f"+{v}" for v in {*TRAIN_VARIANTS, *HELDOUT_VARIANTS, *GENERATED_VARIANTS} - variants
    )
    if missing:
        raise RuntimeError(f"espeak-ng lacks voices: {', '.join(missing)}")
    for text, language in PHRASES:
        voice = voice_for(language, "m1", TRAIN_VARIANTS)
        if active_span(_synthesize(text, voice, STYLES["neutral"], 175)) is None:
            raise RuntimeError(f"espeak-ng voice {voice} produced no audio for {text!r}")
        if language != "en" and "(en)" in _phonemes(text, voice):
            raise RuntimeError(f"espeak-ng voice {voice} falls back to English for {text!r}")


def _phonemes(text: str, voice: str) -> str:
    command = ["espeak-ng", f"--path={espeak_path()}", "-q", "-x", "-v", voice, text]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def _espeak_command(text: str, voice: str, style: Style, wpm: int, pitch: int, pitch_range: int) -> list[str]:
    # Pitch range has no command-line flag, hence SSML for the text.
    ssml = f'<speak><prosody range="{pitch_range}%">{escape(text)}</prosody></speak>'
    return [
        "espeak-ng",
        f"--path={espeak_path()}",
        "--stdout",
        "-m",
        "-v",
        voice,
        "-p",
        str(int(np.clip(pitch, 0, 99))),
        "-s",
        str(int(np.clip(wpm, 80, 450))),
        "-a",
        str(style.amplitude),
        "-g",
        str(style.word_gap),
        ssml,
    ]


def _wav_bytes_to_float(data: bytes) -> np.ndarray:
    # --stdout writes a streaming header with a placeholder size, which some readers
    # reject, so locate the data chunk by hand.
    start = data.find(b"data")
    if data[:4] != b"RIFF" or start < 0:
        raise RuntimeError("espeak-ng did not return WAV data")
    pcm = data[start + 8 :]
    pcm = pcm[: len(pcm) - len(pcm) % 2]
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def _synthesize(
    text: str, voice: str, style: Style, wpm: int, pitch: int | None = None, pitch_range: int | None = None
) -> np.ndarray:
    """espeak-ng speech at 16 kHz, untrimmed, at espeak-ng's own level."""
    command = _espeak_command(
        text,
        voice,
        style,
        wpm,
        style.pitch if pitch is None else pitch,
        style.pitch_range if pitch_range is None else pitch_range,
    )
    raw = subprocess.run(command, capture_output=True, check=True).stdout
    audio = soxr.resample(_wav_bytes_to_float(raw), ESPEAK_RATE, SAMPLE_RATE, quality="HQ")
    return np.asarray(audio, dtype=np.float32)


@functools.lru_cache(maxsize=64)
def _voice_gain(voice: str, language: str) -> float:
    # Variants differ in output level by up to ~2x; one gain per voice removes that
    # nuisance cue without flattening the loudness differences between styles.
    reference = next(text for text, lang in PHRASES if lang == language)
    peak = float(np.max(np.abs(_synthesize(reference, voice, STYLES["neutral"], 175))))
    return TARGET_PEAK / max(peak, 1e-4)


# ------------------------------------------------------------------------ signal helpers


def _seed(spec: ClipSpec) -> int:
    # hash() is salted per process; a digest keeps workers and reruns in agreement.
    return int.from_bytes(hashlib.blake2b(repr(spec).encode(), digest_size=8).digest(), "little")


def _stable_int(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def _frame_rms(audio: np.ndarray, frame: int = SAMPLE_RATE // 100) -> np.ndarray:
    n = len(audio) // frame
    frames = audio[: n * frame].reshape(n, frame).astype(np.float64)
    return np.sqrt(np.mean(frames**2, axis=1))


def active_span(audio: np.ndarray, below_max_db: float = 35.0) -> tuple[int, int] | None:
    """Sample range between the first and last 10 ms frame within ``below_max_db`` of the loudest."""
    rms = _frame_rms(audio)
    if rms.size == 0 or rms.max() < 1e-5:
        return None
    active = np.flatnonzero(rms >= rms.max() * 10 ** (-below_max_db / 20))
    frame = SAMPLE_RATE // 100
    return int(active[0]) * frame, (int(active[-1]) + 1) * frame


def active_rms(audio: np.ndarray) -> float:
    """RMS over :func:`active_span` (the whole clip when nothing stands out)."""
    start, end = active_span(audio) or (0, len(audio))
    return float(np.sqrt(np.mean(audio[start:end].astype(np.float64) ** 2)))


def _trim(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    span = active_span(audio)
    if span is None:
        return audio
    lead, tail = (int(rng.uniform(0.10, 0.20) * SAMPLE_RATE) for _ in range(2))
    start, end = span
    body = audio[max(0, start - lead) : end + tail]
    # espeak-ng's own leading silence can be shorter than the margin we want.
    pad_front = max(0, lead - start)
    pad_back = max(0, end + tail - len(audio))
    return np.pad(body, (pad_front, pad_back))


def _tilt(audio: np.ndarray, db_per_octave: float) -> np.ndarray:
    """Zero-phase spectral slope above 500 Hz: the brighter or duller timbre of tense or lax voice."""
    if db_per_octave == 0.0:
        return audio
    spectrum = np.fft.rfft(audio.astype(np.float64))
    freqs = np.fft.rfftfreq(len(audio), 1.0 / SAMPLE_RATE)
    gain_db = db_per_octave * np.log2(np.maximum(freqs, 500.0) / 500.0)
    return np.fft.irfft(spectrum * 10 ** (gain_db / 20), n=len(audio)).astype(np.float32)


def _fade(audio: np.ndarray, seconds: float = 0.01) -> np.ndarray:
    n = min(int(seconds * SAMPLE_RATE), len(audio) // 2)
    if n == 0:
        return audio
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    out = audio.copy()
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def _unit_rms(audio: np.ndarray) -> np.ndarray:
    return audio / max(float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))), 1e-9)


def _music(n: int, rng: np.random.Generator) -> np.ndarray:
    """Sine-chord accompaniment at unit RMS: a four-chord loop with plucked envelopes and a bass line."""
    t_max = n / SAMPLE_RATE
    root = int(rng.integers(45, 57))  # MIDI A2..G#3
    degrees = rng.choice([0, 2, 5, 7, 9], size=4)  # diatonic roots that sound consonant together
    chord_s = float(rng.uniform(0.35, 0.7))
    decay_s = float(rng.uniform(0.25, 0.8))
    out = np.zeros(n, dtype=np.float64)
    start = -float(rng.uniform(0.0, chord_s))  # clips begin mid-phrase, not on a downbeat
    index = 0
    while start < t_max:
        degree = int(degrees[index % len(degrees)])
        third = 3 if degree in (2, 9) else 4  # ii and vi are minor in a major key
        notes = [root + 12 + degree, root + 12 + degree + third, root + 12 + degree + 7, root + degree]
        for k, midi in enumerate(notes):
            freq = 440.0 * 2 ** ((midi - 69) / 12)
            first = max(0, int(start * SAMPLE_RATE))
            last = min(n, int((start + chord_s + 2 * decay_s) * SAMPLE_RATE))
            if last <= first:
                continue
            t = np.arange(first, last) / SAMPLE_RATE - start
            envelope = np.minimum(t / 0.015, 1.0) * np.exp(-t / decay_s)
            phase = 2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)
            tone = np.sin(phase) + 0.35 * np.sin(2 * phase) + 0.12 * np.sin(3 * phase)
            out[first:last] += (0.8 if k == 3 else 0.5) * envelope * tone
        start += chord_s
        index += 1
    return _unit_rms(out).astype(np.float32)


def _coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise at unit RMS, slowly amplitude-modulated like fans or traffic."""
    exponent = float(rng.choice([0.0, 1.0, 2.0]))
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE), 20.0)
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=n)
    t = np.arange(n) / SAMPLE_RATE
    depth = rng.uniform(0.0, 0.5)
    noise *= 1.0 + depth * np.sin(2 * np.pi * rng.uniform(0.5, 4.0) * t + rng.uniform(0, 2 * np.pi))
    return _unit_rms(noise).astype(np.float32)


def _db(value: float) -> float:
    return float(10 ** (value / 20))


# ----------------------------------------------------------------------------- clips


def _speech_clip(spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
    style = STYLES[spec.emotion]
    pitch = style.pitch + int(rng.integers(-8, 9))
    pitch_range = round(style.pitch_range * rng.uniform(0.9, 1.1))
    wpm = round(spec.speed * style.rate)
    speech = _synthesize(spec.text, spec.voice, style, wpm, pitch, pitch_range)
    speech = _trim(_tilt(speech, style.tilt_db_per_octave), rng)
    speech = speech * _voice_gain(spec.voice, spec.language) * rng.uniform(0.92, 1.08)
    speech = speech + _db(NOISE_FLOOR_DBFS) * rng.standard_normal(len(speech))
    if spec.event == "bgm":
        speech_rms = active_rms(speech)
        snr_db = rng.uniform(5.0, 10.0)
        speech = speech + _fade(_music(len(speech), rng)) * speech_rms / _db(snr_db)
    return speech


def _nospeech_clip(spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
    n = int(rng.uniform(0.5, 2.0) * SAMPLE_RATE)
    if spec.kind == "tones":
        return _fade(_music(n, rng)) * _db(rng.uniform(-30.0, -16.0))
    # Levels down to -50 dBFS make some of these near-silent, as in real pauses.
    return _fade(_coloured_noise(n, rng)) * _db(rng.uniform(-50.0, -20.0))


def make_clip(spec: ClipSpec) -> Clip:
    """Render one clip; the same spec always yields the same audio."""
    rng = np.random.default_rng(_seed(spec))
    audio = _speech_clip(spec, rng) if spec.kind == "speech" else _nospeech_clip(spec, rng)
    peak = float(np.max(np.abs(audio)))
    # Rescale rather than clip. This touches mostly angry clips, by a few dB, so angry
    # stays the loudest style.
    if peak > MAX_PEAK:
        audio = audio * (MAX_PEAK / peak)
    return Clip(
        audio=np.asarray(audio, dtype=np.float32),
        text=spec.text,
        language=spec.language,
        emotion=spec.emotion,
        event=spec.event,
        voice=spec.voice,
        speed=spec.speed,
    )


# ----------------------------------------------------------------------------- splits


def _speech_specs(split: str) -> list[ClipSpec]:
    variants, speeds = (
        (TRAIN_VARIANTS, TRAIN_SPEEDS) if split == "train" else (HELDOUT_VARIANTS, HELDOUT_SPEEDS)
    )
    if split == "train":
        variants = {**variants, **GENERATED_VARIANTS}
    names = sorted(variants)
    specs: list[ClipSpec] = []
    for p, (text, language) in enumerate(PHRASES):
        for e, emotion in enumerate(EMOTIONS):
            # Train: TRAIN_VOICES_PER_PHRASE variants per (phrase, style), a window rotated
            # so every variant speaks every style and language. Held-out: one variant per
            # (phrase, style), rotated the same way.
            if split == "train":
                first = p * 5 + e * 9
                chosen = [names[(first + k) % len(names)] for k in range(TRAIN_VOICES_PER_PHRASE)]
            else:
                chosen = [names[(p + e) % len(names)]]
            for variant in chosen:
                h = _stable_int(split, text, language, emotion, variant)
                voice = voice_for(language, variant, variants)
                speed = speeds[h % len(speeds)]
                specs.append(ClipSpec("speech", text, language, emotion, "speech", voice, speed))
                if (h >> 8) % 10 < BGM_TENTHS:
                    bgm_speed = speeds[(h + 1 + (h >> 16) % (len(speeds) - 1)) % len(speeds)]
                    specs.append(ClipSpec("speech", text, language, emotion, "bgm", voice, bgm_speed))
    return specs


def _nospeech_specs(split: str) -> list[ClipSpec]:
    specs = []
    for i in range(NOSPEECH_COUNTS[split]):
        take = TAKE_OFFSET[split] + i
        specs.append(ClipSpec("tones", "", NOSPEECH, UNKNOWN_EMOTION, "bgm", "", 0, take))
        specs.append(ClipSpec("noise", "", NOSPEECH, UNKNOWN_EMOTION, "event_unk", "", 0, take))
    return specs


def split_specs(split: str) -> list[ClipSpec]:
    """All clip specs of a split, in a fixed shuffled order (so any prefix is a fair sample)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    specs = _speech_specs(split) + _nospeech_specs(split)
    return sorted(specs, key=lambda s: _stable_int("order", s))


def generate(split: str, limit: int | None = None, workers: int = 2) -> list[Clip]:
    """Render a split (or its first ``limit`` specs), in spec order."""
    specs = split_specs(split)[:limit]
    if workers <= 1 or len(specs) < 4 * workers:
        return [make_clip(spec) for spec in specs]
    # fork shares the already-imported module with workers, which spawn could not do when
    # this file is loaded by path rather than as an installed module.
    for spec in specs:  # calibrate once here so forked workers inherit the cache
        if spec.kind == "speech":
            _voice_gain(spec.voice, spec.language)
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(make_clip, specs, chunksize=16))


# ------------------------------------------------------------------------------- CLI


def write_dataset(clips: Sequence[Clip], out_dir: Path, split: str) -> Path:
    wav_dir = out_dir / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    with manifest.open("w", encoding="utf-8") as f:
        for i, clip in enumerate(clips):
            key = f"{split}_{i:05d}"
            sf.write(wav_dir / f"{key}.wav", clip.audio, SAMPLE_RATE, subtype="PCM_16")
            record = {
                "key": key,
                "audio": f"wavs/{key}.wav",
                "text": clip.text,
                "language": clip.language,
                "emotion": clip.emotion,
                "event": clip.event,
                "voice": clip.voice,
                "speed": clip.speed,
                "duration": round(len(clip.audio) / SAMPLE_RATE, 3),
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return manifest


def _counts(clips: Sequence[Clip]) -> dict[str, dict[str, int]]:
    return {
        field: dict(sorted(Counter(getattr(c, field) for c in clips).items()))
        for field in ("language", "emotion", "event")
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--split", choices=("train", "heldout"), default="train")
    parser.add_argument("--limit", type=int, default=None, help="render only the first N specs")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    version = espeak_version()
    if version != PINNED_ESPEAK_VERSION:
        print(f"warning: espeak-ng {version}, tables were made with {PINNED_ESPEAK_VERSION}", file=sys.stderr)
    check_voices()
    started = time.monotonic()
    clips = generate(args.split, args.limit, args.workers)
    manifest = write_dataset(clips, args.out_dir, args.split)
    seconds = time.monotonic() - started
    counts = _counts(clips)
    hours = sum(len(c.audio) for c in clips) / SAMPLE_RATE / 3600
    meta = {
        "split": args.split,
        "clips": len(clips),
        "hours": round(hours, 4),
        "espeak_ng": version,
        **counts,
    }
    (args.out_dir / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")

    print(f"{len(clips)} clips ({hours * 60:.1f} min of audio) in {seconds:.1f} s -> {manifest}")
    for field, table in counts.items():
        print(f"  {field:9s} " + "  ".join(f"{k}={v}" for k, v in table.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
