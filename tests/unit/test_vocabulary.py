"""The facts defined once in emostt.vocabulary agree with what documents and uses them."""

from __future__ import annotations

import re
from pathlib import Path

from emostt.inference.rich_tokens import EMOTION_TOKENS, EVENT_TOKENS, LANGUAGE_QUERY_INDEX, LANGUAGE_TOKENS
from emostt.vocabulary import CLOSE_BY_CODE, CLOSE_CODES, REFUSAL_CLOSE_CODES
from emostt.vocabulary.labels import EMOTION_LABELS, EVENT_LABELS, LANGUAGE_HINTS, LANGUAGE_LABELS

PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_the_close_code_table_in_the_protocol_doc_is_the_services() -> None:
    section = PROTOCOL_DOC.read_text().split("### Close codes", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| (\d{4}) \| `(\w+)` \| (.+?) \| (yes|no) \|$", section, re.M)
    documented = [(int(code), name, meaning, retry == "yes") for code, name, meaning, retry in rows]
    assert documented == [(c.code, c.name, c.meaning, c.retryable) for c in CLOSE_CODES]


def test_close_codes_are_unique_and_policy_closes_are_never_retried() -> None:
    assert len(CLOSE_BY_CODE) == len(CLOSE_CODES)
    assert not CLOSE_BY_CODE[1008].retryable and not CLOSE_BY_CODE[1009].retryable
    assert CLOSE_BY_CODE[1012].retryable and CLOSE_BY_CODE[1013].retryable
    assert set(REFUSAL_CLOSE_CODES) <= {str(c.code) for c in CLOSE_CODES}


def test_every_label_has_its_model_token_and_every_hint_its_query() -> None:
    assert tuple(LANGUAGE_TOKENS) == LANGUAGE_LABELS
    assert tuple(EMOTION_TOKENS) == EMOTION_LABELS
    assert tuple(EVENT_TOKENS) == EVENT_LABELS
    assert tuple(LANGUAGE_QUERY_INDEX) == LANGUAGE_HINTS
