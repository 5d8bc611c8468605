#!/usr/bin/env python
"""Unpack wheels into a site directory without pip: the fallback of run_gpu_checklist.sh's
set-up where the machine's Python has no pip module (it uses ``pip install --target`` when it has).

    python tools/gpu/unpack_wheels.py SITE WHEEL...

A wheel is a zip of its importable files plus ``NAME.data/``: ``purelib``/``platlib`` go to
SITE like the rest, ``scripts`` to SITE/bin (py-spy's binary), ``headers``/``data`` are not
needed. Console-script entry points are not generated: everything runs as ``python -m``.
"""

from __future__ import annotations

import shutil
import stat
import sys
import zipfile
from pathlib import Path


def unpack(wheel: Path, site: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            parts = Path(info.filename).parts
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib", "scripts"):
                    continue
                target = site / "bin" / Path(*parts[2:]) if parts[1] == "scripts" else site / Path(*parts[2:])
            else:
                target = site / Path(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            mode = info.external_attr >> 16
            if mode & stat.S_IXUSR or (parts[0].endswith(".data") and parts[1] == "scripts"):
                target.chmod(0o755)


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    site = Path(sys.argv[1])
    site.mkdir(parents=True, exist_ok=True)
    for wheel in sys.argv[2:]:
        unpack(Path(wheel), site)
    print(f"unpacked {len(sys.argv) - 2} wheels into {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
