"""The clients' one protocol core (clients/python/src/emostt_client/protocol.py): dependency-free,
in agreement with the server's own tables (``emostt.vocabulary``), the rules every client takes
(the Python ones import them; the web client's copies are checked here)."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import get_args

import emostt_client
import pipecat_emostt
import pytest
from emostt_client import protocol, reconnect, turns
from livekit.plugins.emostt import models as livekit_models

from emostt import vocabulary
from emostt.vocabulary import labels, session_config
from tests.clients.test_web_close_codes import node

ROOT = Path(__file__).resolve().parents[2]
CORE_FILES = [
    Path(protocol.__file__),
    *(Path(protocol.__file__).with_name(n) for n in ("events.py", "turns.py", "keyterms.py")),
]


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_the_core_needs_nothing_but_the_standard_library(path: Path) -> None:
    imported: set[str] = set()
    for node_ in ast.walk(ast.parse(path.read_text())):
        if isinstance(node_, ast.Import):
            imported.update(alias.name for alias in node_.names)
        elif isinstance(node_, ast.ImportFrom) and node_.module:
            imported.add(node_.module)
    core = {"emostt_client.events", "emostt_client.turns", "emostt_client.keyterms"}
    allowed = set(sys.stdlib_module_names) | {"__future__"} | core
    assert {name for name in imported if name.split(".")[0] not in allowed and name not in allowed} == set()


def test_close_codes_agree_with_the_servers_table() -> None:
    for close in vocabulary.CLOSE_CODES:
        # The server's retryable flag is the core's rule for a close the client did not ask for.
        assert protocol.is_retryable_close(close.code) is close.retryable, close
    named = {
        protocol.CLOSE_NORMAL: vocabulary.CLOSE_NORMAL,
        protocol.CLOSE_POLICY: vocabulary.CLOSE_POLICY,
        protocol.CLOSE_TOO_BIG: vocabulary.CLOSE_TOO_BIG,
        protocol.CLOSE_INTERNAL: vocabulary.CLOSE_INTERNAL,
        protocol.CLOSE_RESTART: vocabulary.CLOSE_RESTART,
        protocol.CLOSE_OVERLOADED: vocabulary.CLOSE_OVERLOADED,
    }
    assert all(code == close.code for code, close in named.items())
    # Retried too, though the server never sends them: 1006 is no close frame at all (a network
    # loss), 1001 a proxy or the host going away.
    sent_retryable = {close.code for close in vocabulary.CLOSE_CODES if close.retryable}
    assert protocol.RETRYABLE_CLOSE_CODES - sent_retryable == {
        protocol.CLOSE_GOING_AWAY,
        protocol.CLOSE_ABNORMAL,
    }


@pytest.mark.parametrize(
    ("code", "requested", "outlives_sessions", "reconnects"),
    [
        (1008, False, False, False),
        (1008, False, True, False),  # policy: never retried, by any client
        (1009, False, True, False),
        (4000, False, True, False),
        (1012, False, False, True),
        (1013, False, False, True),
        (1006, False, False, True),
        (1011, False, False, True),
        (1001, False, False, True),
        (1000, False, False, False),  # a session limit ends a stream opened for one session
        (1000, False, True, True),  # ... but not an agent's or a pipeline's stream
        (1000, True, True, False),  # a close the client asked for is the end
        (1012, True, True, False),  # even a drain's, after the client's own close
    ],
)
def test_the_one_reconnect_rule(
    code: int, requested: bool, outlives_sessions: bool, reconnects: bool
) -> None:
    assert (
        protocol.reconnects_after(code, requested=requested, outlives_sessions=outlives_sessions)
        is reconnects
    )


def test_error_codes_are_the_servers() -> None:
    for codes in (
        protocol.AUTH_ERROR_CODES,
        protocol.SESSION_LIMIT_ERROR_CODES,
        protocol.CLOSING_ERROR_CODES,
    ):
        assert codes <= labels.ERROR_CODES


def test_turn_detection_is_the_servers() -> None:
    assert protocol.TURN_MODEL_UNAVAILABLE in labels.ERROR_CODES
    fields = session_config.TurnDetection.model_fields
    assert get_args(fields["type"].annotation) == turns.TURN_TYPES
    assert set(turns.EAGERNESS) == set(session_config.EAGERNESS) == set(get_args(protocol.Eagerness))
    # Every field the typed helper can send is one the server takes (it forbids others).
    assert {f.name for f in dataclasses.fields(protocol.TurnDetection)} == set(fields)
    full = protocol.TurnDetection("semantic", "low", 0.6, 0.4, 300, 5000).to_config()
    assert session_config.TurnDetection(**full).effective() == session_config.TurnDefaults(0.6, 0.4, 5000)


def test_keyterm_bounds_are_the_servers() -> None:
    assert protocol.MAX_KEYTERMS == session_config.MAX_KEYTERMS
    assert protocol.MAX_KEYTERM_CHARS == session_config.MAX_KEYTERM_CHARS
    # What the core lets through, the server takes: the same list, stripped as the server strips.
    terms = ["  Ada Lovelace ", "x" * protocol.MAX_KEYTERM_CHARS] + ["a"] * (protocol.MAX_KEYTERMS - 2)
    checked = protocol.keyterms_list(terms)
    assert list(session_config.SessionConfig(keyterms=tuple(terms)).keyterms) == checked
    # ... and what the server refuses (invalid_config naming keyterms), the core refuses first.
    for bad in (["x" * (protocol.MAX_KEYTERM_CHARS + 1)], ["  "], ["a"] * (protocol.MAX_KEYTERMS + 1)):
        with pytest.raises(ValueError, match="keyterm"):
            protocol.keyterms_list(bad)
        with pytest.raises(ValueError):
            session_config.SessionConfig(keyterms=tuple(bad))
    with pytest.raises(ValueError, match="list of strings"):
        protocol.keyterms_list("Ada Lovelace")  # one string is not a list of terms
    assert protocol.config_fields({"keyterms": (" alone ",)}) == {"keyterms": ["alone"]}


def test_device_id_languages_and_rates_are_the_servers() -> None:
    assert protocol.DEVICE_ID.pattern == vocabulary.DEVICE_ID.pattern
    assert protocol.DEVICE_ID_RULE == vocabulary.DEVICE_ID_RULE
    assert protocol.LANGUAGE_LABELS == labels.LANGUAGE_LABELS
    assert protocol.NO_SPEECH in labels.LANGUAGE_LABELS
    # Every hint a client offers is one the server takes; "nospeech" is the only one left out.
    assert set(labels.LANGUAGE_HINTS) - set(protocol.LANGUAGE_HINTS) == {protocol.NO_SPEECH}
    assert get_args(protocol.LanguageHint) == protocol.LANGUAGE_HINTS
    assert protocol.SAMPLE_RATES == vocabulary.SUPPORTED_INPUT_RATES


def test_the_python_clients_take_the_cores_rules() -> None:
    assert reconnect.RETRYABLE_CLOSE_CODES is protocol.RETRYABLE_CLOSE_CODES
    assert pipecat_emostt.RETRYABLE_CLOSE_CODES is protocol.RETRYABLE_CLOSE_CODES
    assert livekit_models.SUPPORTED_SAMPLE_RATES is protocol.SAMPLE_RATES
    assert get_args(livekit_models.EmosttLanguages) == protocol.LANGUAGE_HINTS
    assert emostt_client.build_url is protocol.build_url
    with pytest.raises(ValueError, match="starting with a letter or digit"):
        protocol.check_device_id("-robot")


def test_the_web_clients_copies_are_the_cores() -> None:
    result = subprocess.run(node("constants"), capture_output=True, text=True, timeout=30, check=True)
    web = json.loads(result.stdout)
    assert set(web["retryable_close_codes"]) == protocol.RETRYABLE_CLOSE_CODES
    assert tuple(web["sample_rates"]) == protocol.SAMPLE_RATES
    assert web["device_id"] == protocol.DEVICE_ID.pattern
    assert web["device_id_rule"] == protocol.DEVICE_ID_RULE
