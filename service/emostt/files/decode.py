"""An uploaded audio file to 16 kHz mono float32, block by block. numpy/soxr/soundfile only.

Blocks keep memory near the size of the result: a long 48 kHz stereo file is never held as a
whole at its own rate. CPU-bound: callers run it off the event loop.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from emostt.audio import Float32Array, to_mono
from emostt.errors import InvalidAudioError
from emostt.vocabulary import SAMPLE_RATE

BLOCK_S = 10


class AudioTooLongError(InvalidAudioError):
    code = "audio_too_long"


def decode_audio(source: BinaryIO, max_seconds: float) -> Float32Array:
    """Any file libsndfile reads (WAV, FLAC, OGG/Vorbis/Opus, MP3 with libsndfile >= 1.1), any rate
    and channel count. ``InvalidAudioError`` when it cannot be read or holds nothing;
    ``AudioTooLongError`` past ``max_seconds`` (checked from the header, and again while decoding,
    since some headers do not know the length)."""
    try:
        with sf.SoundFile(source) as audio:
            rate = int(audio.samplerate)
            if audio.frames > max_seconds * rate:
                raise AudioTooLongError(_too_long(audio.frames / rate, max_seconds))
            resampler = (
                None
                if rate == SAMPLE_RATE
                else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            )
            parts: list[Float32Array] = []
            read = 0
            for block in audio.blocks(blocksize=BLOCK_S * rate, dtype="float32", always_2d=True):
                read += len(block)
                if read > max_seconds * rate:
                    raise AudioTooLongError(_too_long(read / rate, max_seconds))
                mono = to_mono(block)
                parts.append(mono if resampler is None else resampler.resample_chunk(mono))
            if resampler is not None:
                parts.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    except (sf.LibsndfileError, sf.SoundFileRuntimeError, RuntimeError, ValueError, OSError) as exc:
        # libsndfile's own reason ("Format not recognised.") is safe to show; other exception
        # texts may name internals (the upload's temporary file), so they stay in the traceback.
        reason = getattr(exc, "error_string", None) or "unsupported or damaged file"
        raise InvalidAudioError(f"the file could not be decoded as audio: {reason}") from exc
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    if samples.size == 0:
        raise InvalidAudioError("the file holds no audio samples")
    return samples


def _too_long(seconds: float, limit: float) -> str:
    return f"the audio is {seconds:.0f} s long; this server accepts at most {limit:.0f} s"
