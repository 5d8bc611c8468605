"""G.711 µ-law and A-law decoding: every code against sox's own decoder (the reference), and the
framer's handling of one-byte samples split across chunks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from emostt.audio import ALAW, MULAW, decode_samples
from emostt.streaming.framing import Framer
from emostt.vocabulary import VAD_FRAME_SAMPLES


def sox_decode(codes: bytes, encoding: str, tmp: Path) -> np.ndarray:
    if shutil.which("sox") is None:
        pytest.fail("sox is required for the G.711 tests (apt-get install sox)")
    raw, out = tmp / f"{encoding}.raw", tmp / f"{encoding}.s16"
    raw.write_bytes(codes)
    name = {"mulaw": "mu-law", "alaw": "a-law"}[encoding]
    source = ["-t", "raw", "-r", "8000", "-e", name, "-b", "8", "-c", "1", str(raw)]
    subprocess.run(["sox", *source, "-t", "raw", "-e", "signed", "-b", "16", str(out)], check=True)
    return np.frombuffer(out.read_bytes(), dtype="<i2")


@pytest.mark.parametrize(("encoding", "table"), [("mulaw", MULAW), ("alaw", ALAW)])
def test_every_code_decodes_as_sox_decodes_it(tmp_path: Path, encoding: str, table: np.ndarray) -> None:
    codes = bytes(range(256))
    reference = sox_decode(codes, encoding, tmp_path)
    ours = decode_samples(codes, encoding)
    assert np.array_equal(np.round(ours * 32768).astype(np.int32), reference.astype(np.int32))
    assert np.array_equal(table[np.arange(256)], ours)


def test_g711_streams_frame_like_pcm16_with_no_byte_carried_over() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, 8000, dtype=np.uint8).tobytes()  # 1 s at 8 kHz
    whole = Framer(8000, "mulaw").push(codes)
    framer = Framer(8000, "mulaw")
    pieces = [framer.push(codes[i : i + 333]) for i in range(0, len(codes), 333)]
    split = np.concatenate([p for p in pieces if len(p)])
    assert whole.shape[1] == VAD_FRAME_SAMPLES and np.allclose(split, whole[: len(split)], atol=1e-6)
