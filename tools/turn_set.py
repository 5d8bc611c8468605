"""A turn-taking test set from espeak-ng: whole turns, some with pauses inside them.

A turn is 1-3 phrases by one voice. In a turn of 2 or 3 phrases every phrase but the last is a
fragment spoken with continuation intonation, followed by a pause of 300-1,500 ms of room noise,
then the rest of the turn; the last phrase of every turn ends in "." or "?". Every fragment ends
in ",": espeak-ng gives that a non-final contour, while a fragment without punctuation is spoken
exactly as if it ended in "." (the same samples), a statement's fall. Some fragments also end on
a word that cannot end a sentence ("a", "is", "to"). Between turns there are
``gap_s`` seconds of room noise (the -65 dBFS floor of tools/demo_data.py), longer than any
policy waits, so every turn has ended before the next begins.

Voices: six espeak-ng English variants (the four held-out variants of tools/demo_data.py and two
more), four speaking rates; one voice and rate per turn, drawn with the turn's pauses from a
fixed seed, so the set is the same on every run of the same espeak-ng.

``build(seed)`` returns the audio and each turn's phrase boundaries (samples): where a phrase's
speech ends is known exactly, which is what scoring a turn detector needs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

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
SPEEDS = (140, 160, 175, 195)
PAUSE_MS = (300, 1500)


@dataclass
class Turn:
    phrases: tuple[str, ...]
    voice: str
    speed: int
    pauses_ms: list[int]
    # (start, end) sample of each phrase's speech in the stream.
    spans: list[tuple[int, int]] = field(default_factory=list)

    @property
    def start(self) -> int:
        return self.spans[0][0]

    @property
    def end(self) -> int:
        return self.spans[-1][1]

    def describe(self) -> dict[str, object]:
        return {
            "text": " | ".join(self.phrases),
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
            "voices": sorted({t.voice for t in self.turns}),
            "speeds_wpm": sorted({t.speed for t in self.turns}),
            "seconds": round(self.seconds, 1),
        }


def speech(text: str, voice: str, speed: int) -> np.ndarray:
    """One phrase, cut to its speech (tools/demo_data.py's active span), at the voice's calibrated level."""
    audio = demo_data._synthesize(text, voice, demo_data.STYLES["neutral"], speed)
    span = demo_data.active_span(audio)
    if span is None:
        raise RuntimeError(f"espeak-ng voice {voice} produced no audio for {text!r}")
    return audio[span[0] : span[1]] * demo_data._voice_gain(voice, "en")


def plan(count: int, seed: int) -> list[Turn]:
    """``count`` turns: a third single phrases, the rest split, in a seeded order."""
    rng = random.Random(seed)
    singles = [(t,) for t in SINGLE]
    splits = list(SPLIT)
    chosen = [singles[i % len(singles)] for i in range(count // 3)]
    chosen += [splits[i % len(splits)] for i in range(count - len(chosen))]
    rng.shuffle(chosen)
    return [
        Turn(
            phrases=phrases,
            voice=rng.choice(VOICES),
            speed=rng.choice(SPEEDS),
            pauses_ms=[rng.randint(*PAUSE_MS) for _ in phrases[1:]],
        )
        for phrases in chosen
    ]


def build(count: int = 48, seed: int = 21, gap_s: float = 3.0, lead_s: float = 1.0) -> TurnSet:
    turns = plan(count, seed)
    parts: list[np.ndarray] = [np.zeros(int(lead_s * SAMPLE_RATE), dtype=np.float32)]
    cursor = len(parts[0])
    for turn in turns:
        for k, text in enumerate(turn.phrases):
            if k:
                pause = np.zeros(turn.pauses_ms[k - 1] * SAMPLE_RATE // 1000, dtype=np.float32)
                parts.append(pause)
                cursor += len(pause)
            clip = speech(text, turn.voice, turn.speed)
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
            )
        )
        cursor += stop - turn.start
    return TurnSet(audio=np.concatenate(parts), turns=turns)
