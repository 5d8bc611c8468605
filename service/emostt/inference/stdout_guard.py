"""stdout carries the CLI's JSON results: what libraries print on it goes to stderr instead.

No model runtime here, so the torch-free modules may use it (``funasr_import.py`` re-exports it
for the torch side).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    with contextlib.redirect_stdout(sys.stderr):
        yield
