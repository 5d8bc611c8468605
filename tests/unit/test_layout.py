"""The size rule of the code base: one job per module, none over 400 lines (service and clients)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 400


def test_no_module_in_the_service_or_the_clients_is_over_400_lines() -> None:
    modules = [
        path
        for tree in (ROOT / "service" / "emostt", ROOT / "clients")
        for path in tree.rglob("*")
        if path.suffix in (".py", ".js", ".mjs") and path.is_file() and not path.is_symlink()
    ]
    assert len(modules) > 50, "the walk found the code"
    too_long = {
        str(path.relative_to(ROOT)): lines
        for path in modules
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}
