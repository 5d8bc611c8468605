"""grafana/emostt.json: provisionable as is, and every panel's query answers with data from a real
Prometheus scraping a real server that just served speech, bad messages and a refused connection.

No Grafana server is installable here, so Grafana's part (variable interpolation) is done the way
its Prometheus data source does it, and each query goes to Prometheus' HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server import Server, free_port
from tests.ops.support import DASHBOARD, RULES, exercise, require

SCRAPE_INTERVAL = "1s"
DEADLINE_S = 60.0
# Grafana's $__rate_interval is at least four scrape intervals; a minute also spans the traffic.
RATE_INTERVAL = "1m"
MATCHERS = ('namespace=~"$namespace"', 'job=~"$job"', 'instance=~"$instance"')


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return dashboard()["panels"]


def targets() -> list[tuple[str, dict[str, Any]]]:
    return [(panel["title"], target) for panel in panels() for target in panel["targets"]]


def variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


def interpolate(expr: str, values: dict[str, str]) -> str:
    """Grafana's substitution of ``$name`` and ``${name}``; an unknown variable fails the test."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown variable {name!r} in {expr}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def grafana_regex(value: str) -> str:
    """A multi-value variable with one value selected, as Grafana writes it into a PromQL regex:
    regex metacharacters escaped, and the backslash doubled inside the PromQL string."""
    return "(" + re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value) + ")"


# -- static: what Grafana needs to provision the file ------------------------------------------


def test_dashboard_is_provisionable() -> None:
    board = dashboard()
    assert board["uid"] == "emostt-p95" and board["id"] is None
    assert board["schemaVersion"] >= 39
    assert "__inputs" not in board, "__inputs breaks file provisioning: use the datasource variable"
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    datasource = variables()["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    for name in ("namespace", "job", "instance"):
        var = variables()[name]
        assert var["type"] == "query" and var["multi"] and var["includeAll"], name
        # Grafana's default "All" is the alternation of the values it found: with no values (no
        # namespace label outside Kubernetes) it would match nothing. ".*" matches an absent label.
        assert var["allValue"] == ".*", name
        assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name
        assert re.fullmatch(rf"label_values\(emostt_\w+(\{{.*\}})?, {name}\)", var["query"]), var["query"]


@pytest.mark.parametrize("title", [p["title"] for p in panels()])
def test_panel_is_complete(title: str) -> None:
    (panel,) = [p for p in panels() if p["title"] == title]
    assert panel["type"] in ("timeseries", "stat")
    assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
    assert panel["fieldConfig"]["defaults"]["unit"], f"{title}: a unit"
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert panel["targets"], title
    for target in panel["targets"]:
        assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        expr = target["expr"]
        for selector in re.findall(r"\{([^}]*)\}", expr):
            assert all(m in selector for m in MATCHERS), f"{title}: {{{selector}}} misses a variable"
        assert "device" not in expr and "session_id" not in expr
        for window in re.findall(r"\b(?:rate|increase|irate)\(.*?\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", f"{title}: rate() over {window}"
        if "histogram_quantile" in expr:
            assert re.search(r"histogram_quantile\(0\.\d+, sum by \(le(, \w+)*\) \(rate\(", expr), expr


def test_panels_cover_what_operators_watch() -> None:
    exprs = " ".join(t["expr"] for _, t in targets())
    for metric in (
        "emostt_endpoint_to_final_seconds_bucket",
        "emostt_speech_end_to_final_seconds_bucket",
        "emostt_vad_seconds_bucket",
        "emostt_queue_wait_seconds_bucket",
        "emostt_batch_inference_seconds_bucket",
        "emostt_partial_latency_seconds_bucket",
        "emostt_batch_size_bucket",
        "emostt_active_sessions",
        "emostt_capacity_sessions",
        "emostt_utterances_total",
        "emostt_errors_total",
        "emostt_refused_connections_total",
        "emostt_retries_total",
        "emostt_fallbacks_total",
        "emostt_degraded_finals_total",
        "emostt_ready",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert metric in exprs, metric


def test_dashboard_and_rules_use_only_exported_metrics(server: Server) -> None:
    exported = {
        sample.name
        for family in text_string_to_metric_families(server.get("/metrics").text)
        for sample in family.samples
    }
    exprs = " ".join(t["expr"] for _, t in targets())
    exprs += " ".join(v["query"] for v in variables().values())
    exprs += " ".join(r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"])
    used = set(re.findall(r"(?<![\w:])(?:emostt|process)_[a-z0-9_]+", exprs))
    assert used and used <= exported, f"not exported: {sorted(used - exported)}"


# -- live: a real Prometheus scraping a real server ----------------------------------------------


@dataclass
class Prometheus:
    url: str
    target: str  # host:port of the scraped server

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=expr)["result"]
        return result


def poll(what: str, attempt: Callable[[], Any]) -> Any:
    """``attempt()`` until it returns something truthy; a bounded wait, then a failure naming ``what``."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        got = attempt()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: nothing after {DEADLINE_S:.0f} s")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def prometheus(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = require("prometheus")
    folder: Path = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "emostt", "static_configs": [{"targets": [server.base]}]}],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    prom = Prometheus(f"http://127.0.0.1:{port}", server.base)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited: {(folder / 'prometheus.log').read_text()[-2000:]}")
            try:
                return httpx.get(f"{prom.url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        poll("prometheus ready", ready)
        yield prom
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def scraped(prometheus: Prometheus, server: Server, speech_with_pauses: np.ndarray) -> Prometheus:
    """Traffic only once Prometheus holds a sample of the server: rates then see it as increases."""
    poll("the server scraped", lambda: prometheus.query('up{job="emostt"} == 1'))
    asyncio.run(exercise(server, speech_with_pauses))
    return prometheus


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


@pytest.mark.parametrize("selection", ["all", "one server"])
def test_every_panel_query_returns_data(scraped: Prometheus, selection: str) -> None:
    values = {"datasource": "prometheus", "__rate_interval": RATE_INTERVAL, "namespace": ".*"}
    if selection == "all":
        values |= {"job": ".*", "instance": ".*"}
    else:
        values |= {"job": grafana_regex("emostt"), "instance": grafana_regex(scraped.target)}
    for title, target in targets():
        expr = interpolate(target["expr"], values)
        poll(f"panel {title!r} ({target['refId']}): {expr}", lambda e=expr: finite(scraped.query(e)))


def test_variables_list_the_server(scraped: Prometheus) -> None:
    """label_values(metric{...}, label), answered the way Grafana asks Prometheus for it."""
    found = {}
    for name in ("namespace", "job", "instance"):
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variables()[name]["query"])
        assert match, name
        selector = interpolate(match.group(1), {"namespace": ".*", "job": ".*"})
        found[name] = scraped.get(f"/api/v1/label/{match.group(2)}/values", **{"match[]": selector})
    assert found["job"] == ["emostt"]
    assert scraped.target in found["instance"]
    assert found["namespace"] == [], "no namespace label outside Kubernetes: All (.*) still matches"


def test_rules_load_and_evaluate(scraped: Prometheus) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        groups: list[dict[str, Any]] = scraped.get("/api/v1/rules")["groups"]
        states = [rule["health"] for group in groups for rule in group["rules"]]
        return groups if states and all(s == "ok" for s in states) else None

    groups = poll("every rule evaluated with health ok", evaluated)
    expected = yaml.safe_load(RULES.read_text())["groups"]
    assert sorted(g["name"] for g in groups) == sorted(g["name"] for g in expected)
    assert sum(len(g["rules"]) for g in groups) == sum(len(g["rules"]) for g in expected)
    # The recording rules hold this server's numbers.
    p95 = poll("the p95 recording rule", lambda: scraped.query("emostt:endpoint_to_final_seconds:p95_5m"))
    assert p95[0]["metric"]["instance"] == scraped.target
    assert finite(p95)
    assert float(scraped.query("emostt_ready")[0]["value"][1]) == 1.0
    # No assertion that no alert is pending: gauges are per process, and in this test process an
    # earlier test's server may have left one set (emostt_circuit_open after a fault test).
