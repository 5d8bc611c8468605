"""An uploaded audio file to 16 kHz mono float32, decoded as a stream. numpy/soxr/soundfile only.

What a file may cost is bounded while it is decoded, never by trusting its header:

- **length**: blocks are read until the file ends (not until the header's frame count: a piped
  encoder's FLAC says "unknown", which libsndfile reports as 2^63 - 1 frames), and decoding stops
  with ``audio_too_long`` as soon as more than ``max_seconds`` have been read. A header that
  states a length over the limit is refused before decoding, as a shortcut only.
- **amplification**: at most one second of audio per ``MIN_BYTES_PER_S`` bytes of upload (past
  ``FREE_S`` seconds), ``audio_too_compressed``: 178 KB of FLAC silence would otherwise be an hour
  of decoding, VAD and memory. The figures behind the bound are in docs/openai.md "Decoding".
- **sample rate**: ``MIN_RATE`` to ``MAX_RATE`` (``unsupported_sample_rate``): a 2 KB WAV at 1 Hz
  would be 1,000 s of 16 kHz audio.
- **memory**: each block's 16 kHz samples are reserved from ``FILE_MEMORY`` (files/memory.py)
  before they are kept (``FileMemoryFullError``, a 503, when the files in flight hold it all;
  ``audio_too_long`` when the file alone would not fit), and stay reserved until the returned
  array and every view of it are freed.

The result is written in place into one buffer sized for the most the file may decode to. For
a long file that is an anonymous mapping (glibc maps any allocation over 32 MiB): only the pages
written are resident, and all of them go back to the OS when the array is freed, however
fragmented the heap is (docs/RELIABILITY.md "files" has the RSS figures). Reads and the downmix
reuse one buffer each. CPU-bound: callers run it off the event loop.
"""

from __future__ import annotations

import math
import os
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from emostt.audio import Float32Array
from emostt.errors import InvalidAudioError
from emostt.files.memory import FILE_MEMORY, MemoryBudget, hold
from emostt.vocabulary import SAMPLE_RATE

BLOCK_S = 10  # seconds read at a time (fewer for many channels: READ_SAMPLES)
READ_SAMPLES = 1 << 20  # samples (all channels) read at a time at most: a 4 MiB read buffer
MIN_RATE, MAX_RATE = 8_000, 384_000
# The thinnest real recordings measured (docs/openai.md "Decoding"): Opus at its lowest bitrate
# 390 B/s for silence and 830 B/s for speech, Vorbis 1.5 KB/s and FLAC 2.3 KB/s for an 8 kHz
# microphone's noise floor, MP3 1 KB/s. Only digital silence comes near: FLAC 23-46 B/s at
# 8-16 kHz (refused), 129-140 B/s at 44.1-48 kHz and Vorbis 110-123 B/s (served).
MIN_BYTES_PER_S = 100
FREE_S = 60.0  # seconds any upload may decode to, however small (a short clip of digital silence)
UNKNOWN_FRAMES = 2**63 - 1  # libsndfile's frame count when the header does not know the length
_BYTES = np.dtype(np.float32).itemsize


class AudioTooLongError(InvalidAudioError):
    code = "audio_too_long"


class AudioTooCompressedError(InvalidAudioError):
    code = "audio_too_compressed"


class UnsupportedSampleRateError(InvalidAudioError):
    code = "unsupported_sample_rate"


def decode_audio(source: BinaryIO, max_seconds: float, *, budget: MemoryBudget | None = None) -> Float32Array:
    """Any file libsndfile reads (WAV, FLAC, OGG/Vorbis/Opus, MP3 with libsndfile >= 1.1), any rate
    from 8 to 384 kHz and any channel count. ``InvalidAudioError`` when it cannot be read or holds
    nothing, and its subclasses for the bounds above; ``FileMemoryFullError`` (retryable) when the
    files in flight hold ``budget`` (default: the process-wide ``FILE_MEMORY``)."""
    budget = FILE_MEMORY if budget is None else budget
    size = _size(source)
    try:
        with _Stream(source) as audio:
            return _Decoder(audio, max_seconds, size, budget).run()
    except (sf.LibsndfileError, sf.SoundFileRuntimeError, RuntimeError, ValueError, OSError) as exc:
        # libsndfile's own reason ("Format not recognised.") is safe to show; other exception
        # texts may name internals (the upload's temporary file), so they stay in the traceback.
        reason = getattr(exc, "error_string", None) or "unsupported or damaged file"
        raise InvalidAudioError(f"the file could not be decoded as audio: {reason}") from exc


def allowed_seconds(size: int | None, max_seconds: float) -> float:
    """The most audio an upload of ``size`` bytes may decode to (``None``: size unknown)."""
    if size is None:
        return max_seconds
    return min(max_seconds, max(FREE_S, size / MIN_BYTES_PER_S))


class _Stream(sf.SoundFile):
    """Read front to back, without soundfile's seek after each read to keep its position: for a
    FLAC of unknown length the seek to its end fails, and the last read's samples with it."""

    def seekable(self) -> bool:
        return False


class _Decoder:
    def __init__(self, audio: _Stream, max_seconds: float, size: int | None, budget: MemoryBudget):
        self.audio = audio
        self.rate = int(audio.samplerate)
        self.max_seconds = max_seconds
        self.size = size
        self.limit_s = allowed_seconds(size, max_seconds)
        self.budget = budget

    def run(self) -> Float32Array:
        rate, channels = self.rate, int(self.audio.channels)
        if not MIN_RATE <= rate <= MAX_RATE:
            raise UnsupportedSampleRateError(
                f"the audio's sample rate is {rate} Hz; this server accepts {MIN_RATE} to {MAX_RATE} Hz"
            )
        if self.audio.frames != UNKNOWN_FRAMES:  # a stated length over a limit: refused at once
            self._check(self.audio.frames)
        resampler = (
            None
            if rate == SAMPLE_RATE
            else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        )
        step = max(1, min(BLOCK_S * rate, READ_SAMPLES // channels))
        block = np.empty((step, channels), dtype=np.float32)
        mono = np.empty(step, dtype=np.float32) if channels > 1 else None
        # Room for the most this file may decode to (plus the resampler's rounding), or the budget
        # holds: virtual memory only, until written.
        room = math.ceil(self.limit_s * SAMPLE_RATE) + SAMPLE_RATE
        out = _Output(min(room, self.budget.limit_bytes // _BYTES), self.budget)
        try:
            read = 0
            while True:
                n = len(self.audio.read(out=block))
                if n == 0:
                    break
                read += n
                self._check(read)
                samples = block[:n, 0] if mono is None else np.mean(block[:n], axis=1, out=mono[:n])
                out.append(samples if resampler is None else resampler.resample_chunk(samples))
            if resampler is not None:
                out.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
            if out.filled == 0:
                raise InvalidAudioError("the file holds no audio samples")
            return out.result()
        except BaseException:
            out.discard()
            raise

    def _check(self, frames: int) -> None:
        """Refuses ``frames`` (read so far, or stated) when they are over a bound."""
        seconds = frames / self.rate
        if seconds > self.max_seconds:
            raise AudioTooLongError(
                f"the audio is {'at least ' if frames != self.audio.frames else ''}{seconds:.0f} s "
                f"long; this server accepts at most {self.max_seconds:.0f} s"
            )
        if seconds > self.limit_s:
            raise AudioTooCompressedError(
                f"the file decodes to more than {self.limit_s:.0f} s of audio from {self.size} bytes; "
                f"this server decodes at most 1 s per {MIN_BYTES_PER_S} bytes (beyond {FREE_S:.0f} s): "
                "a recording this compressed holds digital silence, not speech"
            )


class _Output:
    """The 16 kHz samples, written in place; each chunk reserved from the budget before it is kept."""

    def __init__(self, capacity: int, budget: MemoryBudget) -> None:
        self.buffer: Float32Array | None = np.empty(capacity, dtype=np.float32)
        self.budget = budget
        self.filled = 0
        self.reserved = 0

    def append(self, chunk: Float32Array) -> None:
        assert self.buffer is not None
        end = self.filled + len(chunk)
        if self.reserved + len(chunk) * _BYTES > self.budget.limit_bytes:  # not even alone: never
            limit_s = self.budget.limit_bytes / (_BYTES * SAMPLE_RATE)
            raise AudioTooLongError(
                f"the audio is longer than this server's memory for files holds ({limit_s:.0f} s)"
            )
        if end > len(self.buffer):  # the checks on frames read come first; this is a backstop
            raise AudioTooLongError("the audio decodes to more samples than its length allows")
        self.budget.reserve(len(chunk) * _BYTES)
        self.reserved += len(chunk) * _BYTES
        self.buffer[self.filled : end] = chunk
        self.filled = end

    def result(self) -> Float32Array:
        """The samples, a view of the buffer: the reservation goes when the last view does."""
        assert self.buffer is not None
        buffer, self.buffer = self.buffer, None
        hold(buffer, self.budget, self.reserved)
        self.reserved = 0
        return buffer[: self.filled]

    def discard(self) -> None:
        self.buffer = None
        self.budget.release(self.reserved)
        self.reserved = 0


def _size(source: BinaryIO) -> int | None:
    """The bytes from ``source``'s position to its end; None when it cannot seek."""
    try:
        start = source.tell()
        end = source.seek(0, os.SEEK_END)
        source.seek(start)
    except (OSError, AttributeError, ValueError):
        return None
    return max(0, end - start)
