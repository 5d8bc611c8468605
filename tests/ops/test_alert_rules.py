"""The Prometheus rule file: valid for promtool, unit-tested alert by alert (tests/ops/rules_test.yaml),
complete (severity, annotations, a runbook heading that exists), and plain enough to be embedded
unchanged in the chart's PrometheusRule."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import emostt.observability.metrics  # noqa: F401 - registers the metrics
from tests.ops.support import DOCS, RULES, RULES_TESTS, require

SERIES_LABELS = ("namespace", "job", "instance")


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_promtool_checks_the_rules() -> None:
    promtool = require("promtool")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_promtool_unit_tests_pass() -> None:
    # promtool resolves rule_files relative to the test file: run it from there.
    run = subprocess.run(
        [require("promtool"), "test", "rules", RULES_TESTS.name],
        cwd=RULES_TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    spec = yaml.safe_load(RULES_TESTS.read_text())
    assert spec["rule_files"] == ["../../helm/emostt/files/prometheus-rules.yaml"]
    fires: dict[str, int] = {}
    silent: dict[str, int] = {}
    for case in spec["tests"]:
        series = " ".join(s["series"] for s in case["input_series"])
        instances = set(re.findall(r'instance="([^"]+)"', series))
        for check in case.get("alert_rule_test", []):
            name = check["alertname"]
            expected = check.get("exp_alerts") or []
            if not expected:
                silent[name] = silent.get(name, 0) + 1
                continue
            fires[name] = fires.get(name, 0) + 1
            firing = {a["exp_labels"].get("instance") for a in expected}
            # The same input holds a healthy server, and the alert must leave it alone.
            if None not in firing:
                healthy = {i for i in instances if i.startswith("ok")}
                assert healthy, f"{case['name']}: no healthy instance next to the unhealthy one"
                assert not firing & healthy, f"{name} fires on a healthy instance"
    assert set(fires) == set(alerts()), "every alert has a test where it fires"
    assert set(silent) >= set(alerts()), "every alert has a test where it stays silent"


@pytest.mark.parametrize("name", sorted(alerts()))
def test_alert_is_complete(name: str) -> None:
    rule = alerts()[name]
    assert re.fullmatch(r"\d+[smh]", rule["for"]), f"{name}: a `for:` duration"
    assert rule["labels"]["severity"] in ("warning", "critical")
    annotations = rule["annotations"]
    assert annotations["summary"] and annotations["description"]
    anchor = name.lower()
    assert annotations["runbook_url"] == f"docs/observability.md#{anchor}"
    assert anchor in anchors(DOCS.read_text()), f"docs/observability.md has no heading for {name}"


def test_rules_aggregate_per_server_never_per_device() -> None:
    for rule in rules():
        expr = rule["expr"]
        assert not re.search(r"device|session_id|utterance_id", expr), expr
        for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
            labels = {label.strip() for label in grouping.split(",")}
            assert set(SERIES_LABELS) <= labels, f"{rule.get('record') or rule.get('alert')}: by ({grouping})"


def test_rules_use_only_exported_metrics() -> None:
    # This process's registry holds the same metric definitions a server exports.
    exported = {
        sample.name
        for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
        for sample in family.samples
    }
    exprs = " ".join(rule["expr"] for rule in rules())
    used = set(re.findall(r"(?<![\w:])emostt_[a-z0-9_]+", exprs))
    assert used and used <= exported, used - exported


def test_rules_file_is_plain_and_embeddable() -> None:
    text = RULES.read_text()
    assert set(yaml.safe_load(text)) == {"groups"}
    # Only Prometheus alert templates ({{ $labels.x }}, {{ $value }}): the chart embeds the file
    # unchanged, so Helm syntax ({{ .Values }}, {{- include }}) would break plain Prometheus.
    for template in re.findall(r"{{(.*?)}}", text):
        assert template.strip().startswith(("$labels", "$value")), template
