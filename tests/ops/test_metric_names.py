"""Every emostt_* metric a real server exports follows Prometheus conventions, carries no
per-device or per-session label, and takes label values only from its declared vocabulary."""

from __future__ import annotations

import asyncio
import re
import subprocess

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from emostt.observability import metrics
from tests.integration.server import Server
from tests.ops.support import exercise, require

NAME = re.compile(r"^emostt_[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# Base units only (seconds, bytes, ratios): a name saying ms or percent means a scaled value.
NON_BASE_UNITS = {"ms", "millis", "milliseconds", "us", "microseconds", "minutes", "hours", "percent", "kb"}
# Labels that would make one series per device, session, person or connection.
IDENTITY = re.compile(r"device|session|utterance|token|user|client|addr|peer|^ip$")
# Histograms of counts, not durations.
COUNT_HISTOGRAMS = {"emostt_batch_size", "emostt_turn_batch_size"}


@pytest.fixture(scope="module")
def exposition(server: Server, speech_with_pauses: np.ndarray) -> str:
    asyncio.run(exercise(server, speech_with_pauses))
    return server.get("/metrics").text


def declared_types(text: str) -> dict[str, str]:
    """``# TYPE name type`` lines: the names exactly as Prometheus stores them."""
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE emostt_"):
            _, _, name, kind = line.split()
            types[name] = kind
    return types


def test_names_follow_prometheus_conventions(exposition: str) -> None:
    types = declared_types(exposition)
    assert len(types) >= 25, types
    for name, kind in types.items():
        assert not name.endswith("_created"), f"{name}: creation-time series are disabled"
        assert NAME.fullmatch(name), f"{name}: snake_case under the emostt_ prefix"
        assert not NON_BASE_UNITS & set(name.split("_")), f"{name}: use base units (seconds, bytes)"
        if kind == "counter":
            assert name.endswith("_total"), f"counter {name} must end in _total"
        else:
            assert not name.endswith("_total"), f"{kind} {name} must not end in _total"
        if kind == "histogram" and name not in COUNT_HISTOGRAMS:
            assert name.endswith("_seconds"), f"histogram {name} measures time: name it *_seconds"


def test_new_operator_metrics_are_exported(exposition: str) -> None:
    types = declared_types(exposition)
    assert types["emostt_speech_end_to_final_seconds"] == "histogram"
    assert types["emostt_degraded_finals_total"] == "counter"
    assert types["emostt_refused_connections_total"] == "counter"
    assert types["emostt_ready"] == "gauge"
    assert types["emostt_decode_seconds"] == "histogram"
    assert types["emostt_keyterm_matches_total"] == "counter"


def test_labels_carry_no_identity_and_stay_in_their_vocabulary(exposition: str) -> None:
    seen: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(exposition):
        if not family.name.startswith("emostt_"):
            continue
        for sample in family.samples:
            # The series name as stored (a counter family is reported without its _total).
            series = family.name + ("_total" if family.type == "counter" else "")
            for label, value in sample.labels.items():
                assert not IDENTITY.search(label), f"{sample.name} has an identity label {label!r}"
                if label == "le":
                    continue
                seen.setdefault(series, {}).setdefault(label, set()).add(value)
    assert set(seen) == set(metrics.LABEL_VALUES), "every labelled metric declares its label values"
    for series, labels in seen.items():
        declared = metrics.LABEL_VALUES[series]
        assert set(labels) == set(declared), series
        for label, values in labels.items():
            outside = values - set(declared[label])
            assert not outside, f"{series}{{{label}}} took undeclared values {sorted(outside)}"
            # Pre-created at zero, so a first increase shows up in rate() and increase().
            assert values == set(declared[label]), series


def test_traffic_lands_in_the_expected_series(exposition: str) -> None:
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(exposition)
        for s in f.samples
    }
    assert samples[("emostt_errors_total", (("code", "invalid_message"),))] >= 1
    assert samples[("emostt_errors_total", (("code", "unknown_message_type"),))] >= 1
    assert samples[("emostt_refused_connections_total", (("code", "1008"),))] >= 1
    assert samples[("emostt_rejected_connections_total", (("reason", "unauthorized"),))] >= 1
    assert samples[("emostt_speech_end_to_final_seconds_count", ())] >= 3
    # Every final and partial is decoded; these sessions set no keyterms.
    assert samples[("emostt_decode_seconds_count", (("mode", "greedy"),))] >= 3
    assert ("emostt_decode_seconds_count", (("mode", "keyterms"),)) in samples
    assert samples[("emostt_ready", ())] == 1.0


def test_promtool_lints_the_exposition(exposition: str) -> None:
    check = subprocess.run(
        [require("promtool"), "check", "metrics"], input=exposition, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
