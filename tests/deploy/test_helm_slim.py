"""The chart's slim mode (slim.enabled): pods serve with the slim image from an exported model dir
on the cache volume, which an init container running the full image exports once; settings the
slim image cannot serve fail at render time. The init container's script is run for real here,
against the real ``emostt model export``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from emostt.inference.model_source import EXPORTED_MANIFEST
from tests.deploy.chart import ci_values, container, env, expect_failure, pod_spec, render

SLIM = ci_values("slim")


def init_containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = pod_spec(objects).get("initContainers", [])
    return found


def test_slim_pods_serve_the_exported_dir_with_the_slim_image() -> None:
    objects = render(SLIM)
    main = container(objects)
    assert main["image"] == "ghcr.io/emostt/emostt:0.1.0-slim"
    assert env(objects)["EMOSTT_MODEL"] == "/cache/exported/model"
    assert env(objects)["EMOSTT_DEVICE"] == "cpu"
    [export] = init_containers(objects)
    assert export["image"] == "ghcr.io/emostt/emostt:0.1.0", "the export needs the full image"
    # The export reads the same settings (config.model, hub, cache dir) and runs as hardened.
    assert export["envFrom"] == main["envFrom"][:1]
    assert export["securityContext"] == main["securityContext"]
    assert {m["mountPath"] for m in export["volumeMounts"]} == {"/cache", "/tmp"}
    assert export["resources"]["limits"]["memory"] == "6Gi"
    # The script checks for the file the server reads an exported dir by.
    assert f'"$out/{EXPORTED_MANIFEST}"' in export["args"][0]


def test_slim_tags_digests_and_a_provided_export() -> None:
    digest = "sha256:" + "b" * 64
    assert container(render({**SLIM, "slim": {"enabled": True, "tag": "v2-cpu"}}))["image"].endswith(
        ":v2-cpu"
    )
    pinned = render({**SLIM, "slim": {"enabled": True, "digest": digest}})
    assert container(pinned)["image"] == f"ghcr.io/emostt/emostt@{digest}"
    provided = render(
        {**SLIM, "slim": {"enabled": True, "export": False, "exportedModelPath": "models/mine/"}}
    )
    assert init_containers(provided) == []
    assert env(provided)["EMOSTT_MODEL"] == "/cache/models/mine"
    assert init_containers(render()) == [] and "EMOSTT_MODEL" not in env(render())


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gpu": {"enabled": True}}, "turn off gpu.enabled or slim.enabled"),
        ({"config": {"backend": "torch"}}, "config.backend must be auto or onnx"),
        ({"config": {"precision": "fp32"}}, "config.precision must be auto or int8, not fp32"),
    ],
    ids=["gpu", "torch-backend", "fp32"],
)
def test_what_the_slim_image_cannot_serve_fails_to_render(values: dict[str, Any], message: str) -> None:
    assert message in expect_failure({**values, "slim": {"enabled": True}})


def test_schema_rejects_an_absolute_exported_path() -> None:
    assert "exportedModelPath" in expect_failure({"slim": {"enabled": True, "exportedModelPath": "/abs"}})


def test_the_export_init_script_exports_once_and_never_leaves_a_partial_dir(tmp_path: Path) -> None:
    """The rendered script, run by sh with the real ``emostt`` on PATH and the cache in tmp_path:
    the first run exports the model named by the settings, the second finds it and stops."""
    cache = tmp_path / "cache"
    [export] = init_containers(render({**SLIM, "cache": {"mountPath": str(cache)}}))
    command = [*export["command"], export["args"][0]]
    child_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("EMOSTT_")},
        **{e["name"]: e["value"] for e in export["env"]},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOSTNAME": "pod-1",
        "EMOSTT_MODEL": "demo",  # what the ConfigMap's config.model would set
    }
    assert shutil.which("sh")
    first = subprocess.run(command, env=child_env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    out = cache / "exported" / "model"
    assert json.loads((out / EXPORTED_MANIFEST).read_text())["name"] == "demo"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"], "no partial dir left behind"
    again = subprocess.run(command, env=child_env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "exported model found in" in again.stdout
