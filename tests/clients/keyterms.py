"""What the clients' keyterm tests share: a real server (``emostt serve``'s uvicorn configuration on a
free port, the bundled demo model) and a clip on which a keyterm changes the demo model's output.

The clip is tests/integration/test_keyterms_engine.py's half_heard_clip ("open the door", a held-out
voice and speed). Sent alone as a session's first audio and ended by ``finalize`` right after it,
greedy decoding hears "open the" ("door" trails blank at its frames); with the keyterm "door" the
same audio comes back as "open the door", and the final's ``keyterms_matched`` is ``["door"]``.
With "open" as the keyterm instead, ``keyterms_matched`` is ``["open"]``: what a replaced list
shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from emostt.inference.engine import Engine
from tests.integration.server import Server, pcm16, running_server, service_settings
from tests.integration.test_keyterms_engine import HELD, MISSED, half_heard_clip

RATE = 16_000
KEYTERM = MISSED  # the word greedy decoding misses
OTHER = HELD  # a word the clip holds either way


def half_heard() -> np.ndarray:
    """16 kHz float32: the clip the demo model hears as "open the" without keyterms."""
    return half_heard_clip()


def half_heard_pcm() -> bytes:
    """The clip as PCM s16le at 16 kHz, as every client sends it."""
    return pcm16(half_heard())


@contextmanager
def keyterm_server(engine: Engine) -> Iterator[Server]:
    """A real server with the protocol's session defaults (no test-only VAD settings)."""
    with running_server(service_settings(session_defaults={}), engine) as server:
        yield server
