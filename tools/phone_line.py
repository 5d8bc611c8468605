"""What a phone call does to 16 kHz audio, for training the demo model and evaluating it.

One definition for both, so the band-limited training copies (tools/train_demo_model.py) and
the ``--phone`` evaluation (tools/eval_demo_model.py) go through the same line.
"""

from __future__ import annotations

import subprocess

import numpy as np

from emostt.audio import decode_samples, resample

SOX_G711 = {"mulaw": "mu-law", "alaw": "a-law"}
PHONE_RATE = 8000


def through_phone(audio: np.ndarray, encoding: str) -> np.ndarray:
    """16 kHz float32 -> sox (8 kHz G.711, as a phone network) -> the server's decoder -> 16 kHz.

    sox does the network's half (resampling and G.711 encoding) so that it is not the server's
    own code on both sides; the way back is exactly /ws/stt?encoding=...&sample_rate=8000.
    """
    pcm = (np.clip(audio, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()
    source = ["-t", "raw", "-r", "16000", "-e", "signed", "-b", "16", "-c", "1", "-"]
    target = ["-t", "raw", "-r", str(PHONE_RATE), "-e", SOX_G711[encoding], "-b", "8", "-"]
    coded = subprocess.run(["sox", *source, *target], input=pcm, capture_output=True, check=True).stdout
    return resample(decode_samples(coded, encoding), PHONE_RATE)
