"""Rendering and validating the Helm chart offline, for tests/deploy.

Helm itself is not needed: ``helm-python-sdk`` (``helm_python``) binds Helm's Go SDK, so
``Chart.load(path).render(values, name=, namespace=)`` runs the real template engine and the
values.schema.json check, and ``helm_python.lint`` is ``helm lint``. Built-in kinds are checked
with ``kubernetes-validate`` (the OpenAPI schemas of a Kubernetes release, strict: unknown fields
fail); custom resources with the pydantic models generated from their CRDs by cloudcoil,
validated with ``extra="forbid"`` so unknown fields fail there too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import kubernetes_validate.utils
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "emostt"
CI_VALUES = sorted(CHART.glob("ci/*-values.yaml"))
RELEASE = "stt"
NAMESPACE = "speech"
FULLNAME = "stt-emostt"

# The newest Kubernetes release kubernetes-validate ships schemas for.
KUBE_VERSION = kubernetes_validate.utils.latest_version()

CUSTOM_RESOURCES: dict[tuple[str, str], type[BaseModel]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): prometheus_operator.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): prometheus_operator.PrometheusRule,
    ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
}


@functools.cache
def _chart() -> helm_python.Chart:
    # Loaded once per test session: a chart handle is immutable and thread-safe.
    return helm_python.Chart.load(CHART)


def ci_values(name: str) -> dict[str, Any]:
    """A chart-testing value set, by file name without "-values.yaml"."""
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text()) or {}
    return loaded


def render_files(values: dict[str, Any] | None = None, release: str = RELEASE) -> dict[str, str]:
    """Template path -> rendered text, NOTES.txt included. Raises helm_python.HelmError."""
    return _chart().render(values or {}, name=release, namespace=NAMESPACE)


def render(values: dict[str, Any] | None = None, release: str = RELEASE) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object (NOTES.txt and empty templates left out)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render_files(values, release).items()):
        if path.endswith(".txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def notes(values: dict[str, Any] | None = None) -> str:
    return render_files(values)["emostt/templates/NOTES.txt"]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single object of ``kind``; fails when there are none or several."""
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {obj["kind"] for obj in objects}


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def settings_configmap(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The ConfigMap with the EMOSTT_* settings (not the dashboard's)."""
    found = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == FULLNAME]
    assert len(found) == 1
    return found[0]


def env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The container's environment: the ConfigMap's EMOSTT_* data overlaid by explicit env
    (values, or the valueFrom source for variables read from a Secret)."""
    merged: dict[str, Any] = dict(settings_configmap(objects)["data"])
    for var in container(objects).get("env", []):
        merged[var["name"]] = var.get("value", var.get("valueFrom"))
    return merged


def validate_builtin(obj: dict[str, Any]) -> None:
    """kubernetes-validate --strict: raises kubernetes_validate.ValidationError on any problem,
    SchemaNotFoundError when the kind does not exist in KUBE_VERSION."""
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def validate_custom(obj: dict[str, Any]) -> BaseModel:
    """Validate a custom resource against its CRD's generated model, unknown fields rejected at
    every level (pydantic's per-call extra="forbid" applies to nested models too), types not
    coerced (strict). Raises pydantic.ValidationError."""
    model = CUSTOM_RESOURCES[(obj["apiVersion"], obj["kind"])]
    parsed = model.model_validate(obj, strict=True, extra="forbid")
    # Belt and braces: what the model keeps must be exactly what the chart wrote.
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == obj
    return parsed


def validate(obj: dict[str, Any]) -> None:
    if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES:
        validate_custom(obj)
    else:
        validate_builtin(obj)


def expect_failure(values: dict[str, Any], render_fn: Callable[..., object] = render) -> str:
    """The error text of a render that must fail."""
    try:
        render_fn(values)
    except helm_python.HelmError as exc:
        return str(exc)
    raise AssertionError(f"rendering {values} should have failed")
