"""What the slim (torch-free) image installs, computed the way its Dockerfile stage does: the
project's dependencies less ``[tool.emostt.slim-image] without``, those in ``no-deps`` without
their own dependencies, everything else with its dependencies (extras and markers followed, as
pip does), read from the installed distributions' metadata. ``as_in_slim_image`` prepares a child
Python that can import nothing else, so a test sees what the slim image would do (optional
imports fall back, required ones fail) without building the image (tools/image_test.sh does)."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def slim_settings() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    settings: dict[str, list[str]] = project["tool"]["emostt"]["slim-image"]
    return settings


def slim_distributions() -> set[str]:
    """Canonical names of every distribution the slim image's venv holds (besides emostt)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    slim = slim_settings()
    left_out = {canonicalize_name(n) for n in slim["without"]}
    no_deps = {canonicalize_name(n) for n in slim["no-deps"]}
    todo = [Requirement(r) for r in project["project"]["dependencies"]]
    todo = [r for r in todo if canonicalize_name(r.name) not in left_out]
    found: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found.add(name)
        if name in no_deps:
            continue
        extras = requirement.extras or {""}
        for line in importlib.metadata.distribution(requirement.name).requires or []:
            dependency = Requirement(line)
            marker = dependency.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras):
                todo.append(dependency)
    return found


PYTHON_FLAGS = ["-S"]  # no site: only the paths as_in_slim_image gives are importable


def slim_site_packages(into: Path) -> Path:
    """A site-packages holding only the slim image's distributions: links to their installed
    files' top-level entries (packages, modules, extension libraries, .dist-info)."""
    into.mkdir(parents=True, exist_ok=True)
    allowed = slim_distributions()
    for dist in importlib.metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in allowed:
            continue
        for file in dist.files or []:
            top = file.parts[0]
            source = Path(str(dist.locate_file(top)))
            link = into / top
            if top == ".." or top.endswith(".pth") or not source.exists() or link.exists():
                continue
            link.symlink_to(source)
    return into


def as_in_slim_image(env: dict[str, str], work_dir: Path) -> dict[str, str]:
    """``env`` for a child Python started with ``PYTHON_FLAGS`` that can import only what the
    slim image installs: the standard library, emostt's source and the slim distributions."""
    paths = [str(ROOT / "service"), str(slim_site_packages(work_dir / "slim-site-packages"))]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}
