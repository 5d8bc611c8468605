"""The Helm chart (helm/emostt): lint, render, schema-validate and check its behaviour, offline.

Every value set in helm/emostt/ci/ is linted strictly, rendered with the real Helm engine
(helm-python-sdk) and every manifest validated: built-in kinds with kubernetes-validate --strict
for the newest Kubernetes it ships, custom resources (ServiceMonitor, PrometheusRule,
ScaledObject) with their CRD models, unknown fields rejected. The remaining tests pin the
behaviour the chart exists for: probes sized for a model download, a grace period that lets a
drain finish, GPU settings only in GPU mode, tokens and the Redis URL never inlined, slow
one-pod scale-down.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pydantic
import pytest
import yaml

from emostt.config import Settings
from tests.deploy.chart import (
    CHART,
    CI_VALUES,
    FULLNAME,
    KUBE_VERSION,
    NAMESPACE,
    REPO,
    ci_values,
    container,
    env,
    expect_failure,
    kinds,
    notes,
    one,
    pod_spec,
    render,
    render_files,
    settings_configmap,
    validate,
    validate_builtin,
    validate_custom,
)

CI_SETS = [path.name.removesuffix("-values.yaml") for path in CI_VALUES]
DASHBOARD = REPO / "grafana" / "emostt.json"
RULES = CHART / "files" / "prometheus-rules.yaml"

# The custom resources and optional objects each CI value set must produce: a flag that stops
# gating its object (or a gate that stops opening) shows up here, not in a cluster.
EXPECTED_KINDS = {
    "default": {"ConfigMap", "Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"},
    "gpu": {"Secret", "PersistentVolumeClaim", "HorizontalPodAutoscaler"},
    "cpu-keda": {"ScaledObject"},
    "ingress-monitoring": {"Ingress", "ServiceMonitor", "PrometheusRule"},
    "existing-secret": set(),
    "slim": {"PersistentVolumeClaim"},
}


def expected_kinds(name: str) -> set[str]:
    return EXPECTED_KINDS["default"] | EXPECTED_KINDS[name]


def test_ci_value_sets_cover_the_documented_scenarios() -> None:
    # chart-testing picks up every ci/*-values.yaml; the list here must not silently shrink.
    assert set(CI_SETS) == set(EXPECTED_KINDS)


# --- lint, render, validate ------------------------------------------------------------------


@pytest.mark.parametrize("name", CI_SETS)
def test_chart_lints_strictly(name: str) -> None:
    report = helm_python.lint(
        CHART, ci_values(name), strict=True, kube_version=f"v{KUBE_VERSION}", namespace=NAMESPACE
    )
    # Severity 1 is INFO: only "icon is recommended" (there is no project icon to point at).
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report
    assert {m["error"] for m in report["messages"]} <= {"icon is recommended"}


@pytest.mark.parametrize("name", CI_SETS)
def test_every_rendered_manifest_validates_against_its_schema(name: str) -> None:
    objects = render(ci_values(name))
    assert kinds(objects) == expected_kinds(name)
    for obj in objects:
        # Built-ins: kubernetes-validate strict (SchemaNotFoundError, i.e. a kind or apiVersion the
        # release does not serve, fails too); custom resources: their CRD models.
        validate(obj)
        assert obj["metadata"]["namespace"] == NAMESPACE


# Every remaining option at a non-default value, so each template branch is validated too.
ALL_OPTIONS: dict[str, Any] = {
    "fullnameOverride": "speech-to-text",
    "image": {"pullPolicy": "Always", "tag": "0.2.0"},
    "imagePullSecrets": [{"name": "regcred"}],
    "replicaCount": 3,
    "progressDeadlineSeconds": 3000,
    "gpu": {
        "enabled": True,
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["H100"]}
                            ]
                        }
                    ]
                }
            }
        },
    },
    "nodeSelector": {"pool": "speech"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "speech", "effect": "NoSchedule"}],
    "priorityClassName": "high",
    "podAnnotations": {"team": "speech"},
    "podLabels": {"tier": "asr"},
    "config": {
        "fallback_device": "cpu",
        "log_json": False,
        "warmup": True,
        "target_utilization": 0.5,
        "max_file_s": 600,
        "results_stream_maxlen": 1000,
    },
    "results": {"redis": {"existingSecret": "redis-auth", "existingSecretKey": "uri"}},
    "extraEnv": [{"name": "TZ", "value": "UTC"}],
    "extraEnvFrom": [{"secretRef": {"name": "more-settings"}}],
    "service": {"type": "LoadBalancer", "port": 80, "annotations": {"a": "b"}},
    "serviceAccount": {"create": False, "name": "speech"},
    "shutdown": {"preStopMethod": "exec", "terminationGracePeriodSeconds": 120},
    "cache": {"emptyDirSizeLimit": None},
    "tmpSizeLimit": None,
    "extraVolumes": [{"name": "models", "configMap": {"name": "model-list"}}],
    "extraVolumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
    "podDisruptionBudget": {
        "maxUnavailable": None,
        "minAvailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    },
    "metrics": {"scrapeAnnotations": True},
    "grafana": {"dashboard": {"enabled": True, "namespace": "monitoring"}},
    "ingress": {
        "enabled": True,
        "className": "",
        "nginx": {"enabled": False},
        "hosts": [{"paths": [{"path": "/ws"}]}],
    },
}


def test_all_options_render_valid_manifests() -> None:
    objects = render(ALL_OPTIONS)
    for obj in objects:
        validate(obj)
    spec = pod_spec(objects)
    assert spec["nodeSelector"] == {"pool": "speech"}
    assert [t["key"] for t in spec["tolerations"]] == ["dedicated", "nvidia.com/gpu"]
    assert spec["affinity"] == ALL_OPTIONS["gpu"]["affinity"]
    assert spec["serviceAccountName"] == "speech" and "ServiceAccount" not in kinds(objects)
    assert one(objects, "Deployment")["spec"]["replicas"] == 3
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert "annotations" not in one(objects, "Ingress")["metadata"]


def test_kubernetes_validation_is_strict_about_unknown_fields() -> None:
    # Proof that the validation above can fail: a misspelt Deployment field is rejected.
    deployment = one(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_builtin(deployment)


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule", "ScaledObject"])
def test_custom_resource_validation_rejects_unknown_fields(kind: str) -> None:
    values = ci_values("cpu-keda") if kind == "ScaledObject" else ci_values("ingress-monitoring")
    obj = one(render(values), kind)
    validate_custom(obj)
    obj["spec"]["notAField"] = True
    with pytest.raises(pydantic.ValidationError, match="notAField"):
        validate_custom(obj)


def test_custom_resource_validation_rejects_wrong_types() -> None:
    monitor = one(render(ci_values("ingress-monitoring")), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["honorLabels"] = "yes"
    with pytest.raises(pydantic.ValidationError):
        validate_custom(monitor)


def test_optional_objects_are_off_by_default() -> None:
    # ServiceMonitor and PrometheusRule are gated on values, never on .Capabilities: an offline
    # render (CI, GitOps) must match what a cluster gets.
    assert kinds(render()) == EXPECTED_KINDS["default"]


# --- schema ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCont": 2}, "additional properties 'replicaCont' not allowed"),
        ({"config": {"max_sesion_s": 60}}, "additional properties 'max_sesion_s' not allowed"),
        ({"gpu": {"count": "one"}}, "/gpu/count"),
        ({"gpu": {"count": 0}}, "/gpu/count"),
        ({"config": {"drain_timeout_s": "20s"}}, "/config/drain_timeout_s"),
        ({"config": {"hub": "github"}}, "/config/hub"),
        ({"service": {"type": "ExternalName"}}, "/service/type"),
        ({"keda": {"prometheus": {"threshold": 0.7}}}, "/keda/prometheus/threshold"),
        ({"config": {"max_file_bytes": 1023}}, "/config/max_file_bytes"),
        ({"config": {"file_segment_window": 65}}, "/config/file_segment_window"),
        # The Redis URL is chart-owned: never a ConfigMap setting.
        (
            {"config": {"results_redis_url": "redis://r"}},
            "additional properties 'results_redis_url' not allowed",
        ),
        ({"results": {"redis": {"existingSecretKey": ""}}}, "/results/redis/existingSecretKey"),
        ({"results": {"redis": {"password": "x"}}}, "additional properties 'password' not allowed"),
    ],
)
def test_schema_rejects_unknown_and_mistyped_values(values: dict[str, Any], expected: str) -> None:
    message = expect_failure(values)
    assert "don't meet the specifications of the schema" in message
    assert expected in message


def _schema_levels(schema: dict[str, Any], values: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(path, schema node, values node) for every object level whose keys the chart defines."""
    if "properties" not in schema:
        return []
    levels = [(path, schema, values)]
    for key, sub in schema["properties"].items():
        if isinstance(values, dict) and isinstance(values.get(key), dict):
            levels += _schema_levels(sub, values[key], f"{path}.{key}")
    return levels


def test_schema_covers_every_value_and_closes_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path, node, level in _schema_levels(schema, values):
        assert node.get("additionalProperties") is False, f"{path or '<root>'} is open"
        declared = set(node["properties"])
        if path == "":
            # "global" is where a parent chart passes globals; it has no default of its own.
            declared.discard("global")
        assert declared == set(level), f"schema and values.yaml disagree at {path or '<root>'}"


def test_config_schema_mirrors_server_settings() -> None:
    # config.* become EMOSTT_* settings: a setting the server lacks would stop it at start-up, one
    # the chart lacks cannot be set. Types and bounds follow the server's own schema.
    chart_owned = {"host", "port", "device", "auth_tokens", "results_redis_url", "twilio_auth_token"}
    server = Settings.model_json_schema()["properties"]
    config = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]
    assert set(config["properties"]) == set(server) - chart_owned
    for key, node in config["properties"].items():
        field = server[key]
        base = next((p for p in field.get("anyOf", []) if p.get("type") != "null"), field)
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        assert base["type"] in types, key
        for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound) == base.get(bound), f"{key}.{bound}"
        assert [v for v in node.get("enum", []) if v is not None] == base.get("enum", []), key


@pytest.mark.parametrize("name", CI_SETS)
def test_rendered_settings_are_accepted_by_the_server(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The ConfigMap plus the chart-created Secret's keys, each set as the variable whose
    # secretKeyRef names it, is exactly what the server reads at start-up.
    values = ci_values(name)
    objects = render(values)
    for key in list(os.environ):
        if key.startswith("EMOSTT_"):
            monkeypatch.delenv(key)
    for key, value in settings_configmap(objects)["data"].items():
        monkeypatch.setenv(key, value)
    secrets = {obj["metadata"]["name"]: obj["data"] for obj in objects if obj["kind"] == "Secret"}
    used: set[tuple[str, str]] = set()
    for var in container(objects).get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] in secrets:  # an existing Secret is not rendered
            monkeypatch.setenv(var["name"], base64.b64decode(secrets[ref["name"]][ref["key"]]).decode())
            used.add((ref["name"], ref["key"]))
    # Every key of a chart-created Secret reaches the container.
    assert used == {(secret, key) for secret, data in secrets.items() for key in data}
    settings = Settings()
    assert settings.port == 8000 and settings.host == "0.0.0.0"
    assert settings.device == ("cuda" if values.get("gpu", {}).get("enabled") else "cpu")
    assert len(settings.auth_tokens) == len(values.get("auth", {}).get("tokens", {}))
    url = values.get("results", {}).get("redis", {}).get("url")
    redis_url = settings.results_redis_url
    assert (redis_url.get_secret_value() if redis_url else None) == url


def test_model_workers_follow_the_container_cpu_limit() -> None:
    # With a request and no limit there is no CPU quota for the server to see: the chart sizes workers.
    assert env(render())["EMOSTT_MODEL_WORKERS"] == "2"
    assert env(render())["EMOSTT_THREADS"] == "1"
    assert env(render(ci_values("cpu-keda")))["EMOSTT_MODEL_WORKERS"] == "4"  # limits.cpu 4000m
    half = env(render({"resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": 0.5}}}))
    assert half["EMOSTT_MODEL_WORKERS"] == "1"
    explicit = env(render({"config": {"model_workers": 3, "threads": 2}}))
    assert (explicit["EMOSTT_MODEL_WORKERS"], explicit["EMOSTT_THREADS"]) == ("3", "2")
    gpu = env(render(ci_values("gpu")))
    assert "EMOSTT_MODEL_WORKERS" not in gpu and gpu["EMOSTT_THREADS"] == "8"
    # No CPU figure at all (null deletes a default in Helm): the server decides.
    assert "EMOSTT_MODEL_WORKERS" not in env(render({"resources": {"requests": None, "limits": None}}))


# --- probes and shutdown ---------------------------------------------------------------------


def _probe_budget(probe: dict[str, Any]) -> int:
    return int(probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"])


@pytest.mark.parametrize("name", CI_SETS)
def test_probes_use_health_endpoints_and_startup_covers_model_load(name: str) -> None:
    values = ci_values(name)
    main = container(render(values))
    assert main["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    load_timeout = values.get("config", {}).get("load_timeout_s", Settings().load_timeout_s)
    assert _probe_budget(main["startupProbe"]) >= load_timeout
    assert one(render(values), "Deployment")["spec"]["progressDeadlineSeconds"] > load_timeout


def test_startup_budget_shorter_than_load_timeout_fails() -> None:
    message = expect_failure({"config": {"load_timeout_s": 1800}})
    assert "startup probe budget" in message and "config.load_timeout_s" in message
    # Raising the budget is the documented fix.
    main = container(
        render({"config": {"load_timeout_s": 1800}, "probes": {"startup": {"failureThreshold": 180}}})
    )
    assert _probe_budget(main["startupProbe"]) >= 1800


@pytest.mark.parametrize(
    ("values", "drain"),
    [
        ({}, 20.0),  # the server's default drain_timeout_s
        (ci_values("gpu"), 45.0),
        ({"config": {"drain_timeout_s": 120.5}, "shutdown": {"preStopSleepSeconds": 25}}, 120.5),
    ],
    ids=["default", "gpu-drain-45", "custom-drain-120.5"],
)
def test_termination_grace_covers_prestop_and_drain(values: dict[str, Any], drain: float) -> None:
    spec = pod_spec(render(values))
    pause = container(render(values))["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause == values.get("shutdown", {}).get("preStopSleepSeconds", 10)
    assert env(render(values))["EMOSTT_DRAIN_TIMEOUT_S"] == json.dumps(drain).removesuffix(".0")
    assert spec["terminationGracePeriodSeconds"] >= pause + math.ceil(drain) + 10


def test_too_small_termination_grace_fails() -> None:
    message = expect_failure({"shutdown": {"terminationGracePeriodSeconds": 30}})
    assert "terminationGracePeriodSeconds (30) must be at least" in message
    assert (
        pod_spec(render({"shutdown": {"terminationGracePeriodSeconds": 300}}))[
            "terminationGracePeriodSeconds"
        ]
        == 300
    )


def test_prestop_pause_uses_sleep_action_or_exec() -> None:
    # The sleep action needs no shell in the image; exec is there for clusters without it.
    assert container(render())["lifecycle"] == {"preStop": {"sleep": {"seconds": 10}}}
    exec_hook = container(render(ci_values("existing-secret")))["lifecycle"]["preStop"]
    assert exec_hook == {"exec": {"command": ["sleep", "10"]}}
    assert "lifecycle" not in container(render({"shutdown": {"preStopSleepSeconds": 0}}))


# --- GPU and CPU modes -----------------------------------------------------------------------


@pytest.mark.parametrize("name", CI_SETS)
def test_gpu_resources_runtime_class_and_tolerations_only_in_gpu_mode(name: str) -> None:
    values = ci_values(name)
    objects = render(values)
    gpu = bool(values.get("gpu", {}).get("enabled"))
    spec, main = pod_spec(objects), container(objects)
    limits = main["resources"].get("limits", {})
    requests = main["resources"].get("requests", {})
    assert ("nvidia.com/gpu" in limits) is gpu
    assert "nvidia.com/gpu" not in requests  # extended resources: the limit alone is the request
    assert ("runtimeClassName" in spec) is gpu
    gpu_tolerations = [t for t in spec.get("tolerations", []) if t["key"] == "nvidia.com/gpu"]
    assert bool(gpu_tolerations) is gpu
    assert env(objects)["EMOSTT_DEVICE"] == ("cuda" if gpu else "cpu")
    if gpu:
        assert limits["nvidia.com/gpu"] == 1
        assert spec["runtimeClassName"] == "nvidia"
        assert gpu_tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    else:
        assert "nodeSelector" not in spec


def test_gpu_count_is_configurable() -> None:
    main = container(render({"gpu": {"enabled": True, "count": 2}}))
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 2


# --- auth ------------------------------------------------------------------------------------


def test_existing_secret_is_referenced_never_created_or_inlined() -> None:
    values = ci_values("existing-secret")
    objects = render(values)
    assert "Secret" not in kinds(objects)
    assert env(objects)["EMOSTT_AUTH_TOKENS"] == {
        "secretKeyRef": {"name": "stt-tokens", "key": "tokens.json"}
    }
    assert "checksum/secret" not in one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    # Tokens given next to an existing Secret are refused rather than silently rendered.
    message = expect_failure({**values, "auth": {**values["auth"], "tokens": {"leaky-token-42": "*"}}})
    assert "auth.tokens and auth.existingSecret are both set" in message
    assert "leaky-token-42" not in message


def test_chart_creates_secret_from_tokens_and_keeps_them_out_of_everything_else() -> None:
    values = ci_values("gpu")
    tokens = values["auth"]["tokens"]
    files = render_files(values)
    secret = one(render(values), "Secret")
    assert json.loads(base64.b64decode(secret["data"]["auth-tokens"])) == tokens
    assert env(render(values))["EMOSTT_AUTH_TOKENS"] == {
        "secretKeyRef": {"name": FULLNAME, "key": "auth-tokens"}
    }
    annotations = one(render(values), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" in annotations  # token changes roll the pods
    for token in tokens:
        # Not in the ConfigMap, Deployment or NOTES, and not in plain text even in the Secret.
        assert not any(token in text for text in files.values()), token


def test_no_auth_renders_no_secret_and_warns() -> None:
    assert "EMOSTT_AUTH_TOKENS" not in env(render())
    assert "no auth tokens are configured" in notes()


# --- results on Redis Streams ----------------------------------------------------------------

REDIS_URL = "redis://:leaky-redis-password-7@redis.speech.svc:6379/0"


def _secret_checksum(values: dict[str, Any]) -> str | None:
    annotations = one(render(values), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    return annotations.get("checksum/secret")


def test_redis_url_goes_to_the_chart_secret_and_nowhere_else() -> None:
    values = ci_values("gpu")
    url = values["results"]["redis"]["url"]
    objects = render(values)
    secret = one(objects, "Secret")
    # One Secret holds both: the tokens and the URL, each under its own key.
    assert set(secret["data"]) == {"auth-tokens", "redis-url"}
    assert base64.b64decode(secret["data"]["redis-url"]).decode() == url
    assert env(objects)["EMOSTT_RESULTS_REDIS_URL"] == {
        "secretKeyRef": {"name": FULLNAME, "key": "redis-url"}
    }
    assert "EMOSTT_RESULTS_REDIS_URL" not in settings_configmap(objects)["data"]
    for path, text in render_files(values).items():
        # Not in the ConfigMap, Deployment or NOTES, and not in plain text even in the Secret.
        assert url not in text and "ci-redis-password-42" not in text, path
    assert "Redis Stream" in notes(values) and '"stt:results:<device_id>"' in notes(values)


def test_redis_url_alone_creates_a_secret_without_tokens() -> None:
    objects = render({"results": {"redis": {"url": REDIS_URL}}})
    secret = one(objects, "Secret")
    assert secret["metadata"]["name"] == FULLNAME
    assert set(secret["data"]) == {"redis-url"}
    assert "EMOSTT_AUTH_TOKENS" not in env(objects)
    assert env(objects)["EMOSTT_RESULTS_REDIS_URL"] == {
        "secretKeyRef": {"name": FULLNAME, "key": "redis-url"}
    }
    # The service still runs open: NOTES keep warning about that.
    assert "no auth tokens are configured" in notes({"results": {"redis": {"url": REDIS_URL}}})


def test_redis_url_next_to_an_existing_token_secret() -> None:
    values = {"auth": {"existingSecret": "stt-tokens"}, "results": {"redis": {"url": REDIS_URL}}}
    objects = render(values)
    assert set(one(objects, "Secret")["data"]) == {"redis-url"}
    assert env(objects)["EMOSTT_AUTH_TOKENS"] == {
        "secretKeyRef": {"name": "stt-tokens", "key": "auth-tokens"}
    }
    assert env(objects)["EMOSTT_RESULTS_REDIS_URL"] == {
        "secretKeyRef": {"name": FULLNAME, "key": "redis-url"}
    }


def test_redis_url_changes_roll_the_pods() -> None:
    assert _secret_checksum({}) is None
    first = _secret_checksum({"results": {"redis": {"url": REDIS_URL}}})
    second = _secret_checksum({"results": {"redis": {"url": REDIS_URL.replace("/0", "/1")}}})
    assert first and second and first != second


def test_redis_existing_secret_is_referenced_never_created_or_inlined() -> None:
    values = ci_values("existing-secret")
    objects = render(values)
    assert "Secret" not in kinds(objects)
    assert env(objects)["EMOSTT_RESULTS_REDIS_URL"] == {"secretKeyRef": {"name": "stt-redis", "key": "url"}}
    assert "checksum/secret" not in one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert 'Secret "stt-redis", key "url"' in notes(values)
    # The key defaults to "redis-url".
    default_key = env(render({"results": {"redis": {"existingSecret": "stt-redis"}}}))
    assert default_key["EMOSTT_RESULTS_REDIS_URL"] == {
        "secretKeyRef": {"name": "stt-redis", "key": "redis-url"}
    }
    # A URL given next to an existing Secret is refused rather than silently rendered.
    message = expect_failure(
        {**values, "results": {"redis": {**values["results"]["redis"], "url": REDIS_URL}}}
    )
    assert "results.redis.url and results.redis.existingSecret are both set" in message
    assert "leaky-redis-password-7" not in message


def test_redis_url_scheme_is_checked_without_printing_the_url() -> None:
    message = expect_failure({"results": {"redis": {"url": "http://:leaky-redis-password-7@redis:6379"}}})
    assert "must be a redis://, rediss:// or unix:// URL" in message
    assert "leaky-redis-password-7" not in message
    for url in ("rediss://:pw@redis:6380/0", "unix:///run/redis/redis.sock"):
        assert (
            base64.b64decode(
                one(render({"results": {"redis": {"url": url}}}), "Secret")["data"]["redis-url"]
            ).decode()
            == url
        )


def test_auth_key_clashing_with_the_redis_key_fails() -> None:
    message = expect_failure(
        {
            "auth": {"tokens": {"tok-1": "*"}, "secretKey": "redis-url"},
            "results": {"redis": {"url": REDIS_URL}},
        }
    )
    assert "auth.secretKey" in message and "leaky-redis-password-7" not in message


def test_no_redis_by_default() -> None:
    objects = render()
    assert "EMOSTT_RESULTS_REDIS_URL" not in env(objects)
    assert "Redis" not in notes()


# --- autoscaling -----------------------------------------------------------------------------


def _assert_slow_one_pod_scale_down(behavior: dict[str, Any]) -> None:
    down = behavior["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 300
    # Every policy removes at most one pod per period of at least a minute, so whichever one
    # selectPolicy picks, pods (and their sessions) go one at a time.
    assert down["policies"] and all(
        p["type"] == "Pods" and p["value"] == 1 and p["periodSeconds"] >= 60 for p in down["policies"]
    )
    up = behavior["scaleUp"]
    assert up["stabilizationWindowSeconds"] < down["stabilizationWindowSeconds"]
    assert max(p["value"] for p in up["policies"] if p["type"] == "Pods") > 1


def test_hpa_scales_on_session_utilization_and_scales_down_one_pod_at_a_time() -> None:
    objects = render(ci_values("gpu"))
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    metrics = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in hpa["spec"]["metrics"]}
    assert metrics == {
        "emostt_session_utilization": {"type": "AverageValue", "averageValue": "700m"},
        "emostt_queue_wait_final_seconds": {"type": "AverageValue", "averageValue": "150m"},
    }
    _assert_slow_one_pod_scale_down(hpa["spec"]["behavior"])
    # The autoscaler owns the replica count; a rendered one would reset it on every upgrade.
    assert "replicas" not in one(objects, "Deployment")["spec"]


def test_keda_scaled_object_uses_prometheus_and_the_same_behavior() -> None:
    objects = render(ci_values("cpu-keda"))
    scaled = one(objects, "ScaledObject")["spec"]
    assert "HorizontalPodAutoscaler" not in kinds(objects)
    assert "replicas" not in one(objects, "Deployment")["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 6)
    _assert_slow_one_pod_scale_down(scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"])
    utilization, queue_wait = scaled["triggers"]
    assert utilization["type"] == "prometheus" and utilization["metricType"] == "AverageValue"
    assert utilization["metadata"]["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    assert utilization["metadata"]["threshold"] == "0.7"
    assert "emostt_active_sessions" in utilization["metadata"]["query"]
    assert "emostt_capacity_sessions" in utilization["metadata"]["query"]
    assert f'namespace="{NAMESPACE}",service="{FULLNAME}"' in utilization["metadata"]["query"]
    assert utilization["authenticationRef"] == {"name": "prometheus-auth"}
    assert queue_wait["metricType"] == "Value"
    assert 'emostt_queue_wait_seconds_bucket{kind="final"' in queue_wait["metadata"]["query"]


def test_keda_default_queries_are_valid_promql(tmp_path: Path) -> None:
    triggers = one(render(ci_values("cpu-keda")), "ScaledObject")["spec"]["triggers"]
    _promtool_check([trigger["metadata"]["query"] for trigger in triggers], tmp_path)


def _promtool_check(queries: list[str], tmp_path: Path) -> None:
    """promtool parses each query as a recording rule: a PromQL typo fails the test."""
    promtool = shutil.which("promtool") or pytest.fail(
        "promtool is required (tools/setup.sh installs Debian's prometheus package)"
    )
    rules = [{"record": f"emostt:check_{i}", "expr": query} for i, query in enumerate(queries)]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_prometheus_adapter_rules_are_valid_promql(tmp_path: Path) -> None:
    # The HPA's Pods metrics exist only through these documented adapter rules: they must be
    # valid YAML, name the metrics the HPA asks for, and hold valid PromQL once the adapter has
    # filled in its <<.GroupBy>> / <<.LabelMatchers>> placeholders.
    readme = (CHART / "README.md").read_text()
    block = next(b for b in readme.split("```yaml\n")[1:] if b.startswith("rules:"))
    rules = yaml.safe_load(block.split("```")[0])["rules"]["custom"]
    names = {rule["name"]["as"] for rule in rules}
    hpa = one(render(ci_values("gpu")), "HorizontalPodAutoscaler")
    assert names == {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    queries = [
        rule["metricsQuery"]
        .replace("<<.GroupBy>>", "namespace, pod")
        .replace("<<.LabelMatchers>>", 'namespace="speech",pod=~"stt-emostt-.*"')
        for rule in rules
    ]
    _promtool_check(queries, tmp_path)


def test_hpa_and_keda_together_fail_with_a_clear_message() -> None:
    message = expect_failure({**ci_values("cpu-keda"), "autoscaling": {"enabled": True}})
    assert "autoscaling.enabled (HPA) and keda.enabled are mutually exclusive" in message


def test_keda_without_prometheus_address_fails() -> None:
    assert "keda.prometheus.serverAddress" in expect_failure({"keda": {"enabled": True}})


def test_pod_disruption_budget_allows_one_pod_down() -> None:
    pdb = one(render(), "PodDisruptionBudget")["spec"]
    assert pdb == {
        "selector": {
            "matchLabels": {"app.kubernetes.io/name": "emostt", "app.kubernetes.io/instance": "stt"}
        },
        "maxUnavailable": 1,
    }
    assert "only one of" in expect_failure({"podDisruptionBudget": {"minAvailable": 1}})


# --- security --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CI_SETS)
def test_pod_runs_hardened(name: str) -> None:
    objects = render(ci_values(name))
    spec, main = pod_spec(objects), container(objects)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == 10001 and pod_security["fsGroup"] == 10001
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    security = main["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    # With a read-only root, the cache and /tmp must be volumes.
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    assert mounts == {"/cache": "cache", "/tmp": "tmp"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    assert spec["automountServiceAccountToken"] is False
    # A Service named "emostt" would otherwise inject EMOSTT_PORT=tcp://..., which the server
    # reads as its port setting.
    assert spec["enableServiceLinks"] is False
    assert env(objects)["XDG_CACHE_HOME"] == "/cache"


def test_model_cache_on_pvc_or_existing_claim() -> None:
    objects = render(ci_values("gpu"))
    claim = one(objects, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == f"{FULLNAME}-cache"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "fast-rwx"
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volumes["cache"] == {"name": "cache", "persistentVolumeClaim": {"claimName": f"{FULLNAME}-cache"}}
    existing = render({"cache": {"persistence": {"enabled": True, "existingClaim": "models"}}})
    assert "PersistentVolumeClaim" not in kinds(existing)
    assert {v["name"]: v for v in pod_spec(existing)["volumes"]}["cache"]["persistentVolumeClaim"] == {
        "claimName": "models"
    }
    assert {v["name"]: v for v in pod_spec(render())["volumes"]}["cache"] == {
        "name": "cache",
        "emptyDir": {"sizeLimit": "20Gi"},
    }


# --- labels, config rollout ------------------------------------------------------------------


@pytest.mark.parametrize("name", CI_SETS)
def test_standard_labels_and_selectors_match(name: str) -> None:
    objects = render(ci_values(name))
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "emostt", obj["kind"]
        assert labels["app.kubernetes.io/instance"] == "stt"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "emostt-0.1.0"
    deployment = one(objects, "Deployment")["spec"]
    selector = deployment["selector"]["matchLabels"]
    assert selector.items() <= deployment["template"]["metadata"]["labels"].items()
    assert one(objects, "Service")["spec"]["selector"] == selector
    assert one(objects, "Service")["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]


def test_config_changes_roll_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations = one(render(values), "Deployment")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"config": {"max_connections": 10}})


def test_image_defaults_to_app_version_and_digest_pins_it() -> None:
    assert container(render())["image"] == "ghcr.io/emostt/emostt:0.1.0"
    digest = "sha256:" + "a" * 64
    assert container(render({"image": {"digest": digest}}))["image"] == f"ghcr.io/emostt/emostt@{digest}"


# --- ingress ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "max_session_s"),
    [
        ({"ingress": {"enabled": True}}, 3600),
        (ci_values("ingress-monitoring"), 7200),
    ],
    ids=["default-max-session", "ci-max-session-7200"],
)
def test_ingress_nginx_timeouts_cover_max_session(values: dict[str, Any], max_session_s: int) -> None:
    ingress = one(render(values), "Ingress")
    annotations = ingress["metadata"]["annotations"]
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{key}"]) >= max_session_s
    assert ingress["spec"]["ingressClassName"] == "nginx"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend == {"service": {"name": FULLNAME, "port": {"name": "http"}}}


def test_ingress_timeout_below_max_session_fails() -> None:
    message = expect_failure({"ingress": {"enabled": True, "nginx": {"timeoutSeconds": 600}}})
    assert "below config.max_session_s" in message


def test_ingress_tls_and_user_annotations() -> None:
    ingress = one(render(ci_values("ingress-monitoring")), "Ingress")
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["spec"]["tls"] == [{"secretName": "stt-example-com-tls", "hosts": ["stt.example.com"]}]
    assert "wss://stt.example.com/ws/stt/<device_id>" in notes(ci_values("ingress-monitoring"))


# --- monitoring ------------------------------------------------------------------------------


def test_service_monitor_scrapes_metrics_endpoint() -> None:
    monitor = one(render(ci_values("ingress-monitoring")), "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/metrics", "15s")
    assert monitor["spec"]["selector"]["matchLabels"] == one(render(), "Service")["spec"]["selector"]


def test_prometheus_rule_embeds_the_rules_file() -> None:
    rules = yaml.safe_load(RULES.read_text())
    values = {"metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "prom"}}}}
    rule = one(render(values), "PrometheusRule")
    assert rule["spec"]["groups"] == rules["groups"]
    assert rule["metadata"]["labels"]["release"] == "prom"


def test_additional_rule_labels_reach_every_alert_only() -> None:
    rules = yaml.safe_load(RULES.read_text())
    rendered = one(render(ci_values("ingress-monitoring")), "PrometheusRule")["spec"]["groups"]
    for group, original in zip(rendered, rules["groups"], strict=True):
        for rule, source in zip(group["rules"], original["rules"], strict=True):
            if "alert" in rule:
                assert rule["labels"] == {**source.get("labels", {}), "team": "speech"}
            else:
                assert rule == source


def test_dashboard_configmap_is_labelled_and_holds_the_repository_dashboard() -> None:
    objects = render(ci_values("ingress-monitoring"))
    dashboards = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")
    ]
    assert len(dashboards) == 1
    dashboard = dashboards[0]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Speech"}
    assert json.loads(dashboard["data"]["emostt.json"]) == json.loads(DASHBOARD.read_text())


def test_chart_dashboard_is_a_symlink_to_the_repository_dashboard() -> None:
    # grafana/emostt.json is the only source; Helm's loader follows the link (checked above by
    # rendering it) and `helm package` stores the contents, checked next.
    link = CHART / "files" / "emostt-dashboard.json"
    assert link.is_symlink()
    assert link.resolve() == DASHBOARD.resolve()


def test_packaged_chart_contains_dashboard_contents_not_a_link(tmp_path: Path) -> None:
    archive = helm_python.package(CHART, destination=tmp_path)
    with tarfile.open(archive) as tar:
        member = tar.getmember("emostt/files/emostt-dashboard.json")
        assert member.isfile()
        assert tar.extractfile(member).read() == DASHBOARD.read_bytes()  # type: ignore[union-attr]
        # ci/ value sets are CI inputs, not part of the released chart (.helmignore).
        assert not [name for name in tar.getnames() if "/ci/" in name]


# --- documentation ---------------------------------------------------------------------------


def _leaf_paths(values: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(values, dict) and values:
        return [leaf for key, sub in values.items() for leaf in _leaf_paths(sub, (*prefix, key))]
    return [prefix]


def test_readme_values_table_lists_every_leaf_value() -> None:
    readme = (CHART / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            path = cells[0].strip("`")
            rows[tuple(key.replace("\\.", ".") for key in path.split("."))] = cells
            assert len(cells) == 4 and all(cells), line  # key, type, default, description
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for leaf in _leaf_paths(values):
        # A row documents a leaf itself or a whole map that contains it (e.g. `resources`).
        covering = [leaf[:n] for n in range(len(leaf), 0, -1) if leaf[:n] in rows]
        assert covering, f"README values table misses {'.'.join(leaf)}"


def test_readme_values_table_is_generated_from_values_yaml() -> None:
    from tools.helm_readme import rendered_readme

    assert (CHART / "README.md").read_text() == rendered_readme(), (
        "helm/emostt/README.md is stale: run python tools/helm_readme.py"
    )


def test_notes_explain_connecting_readiness_and_slow_scale_down() -> None:
    default = notes()
    assert f"ws://{FULLNAME}.{NAMESPACE}.svc:8000/ws/stt/<device_id>" in default
    assert "/readyz" in default and "rollout status" in default
    autoscaled = notes(ci_values("cpu-keda"))
    assert "Scale-down is slow by design" in autoscaled
