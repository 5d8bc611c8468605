"""The ONNX cache's export lock and its staging-dir cleanup: a staging dir is removed exactly
when no live export owns it, decided by the entry's lock, not by its age."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from emostt.errors import ModelLoadError
from emostt.inference.onnx_cache import (
    LOCK_PREFIX,
    STAGING_PREFIX,
    export_lock,
    lock_path,
    remove_stale_staging,
)

ENTRY = "0123abcd-torch2.0-ort1.0-funasr1.0"


def staging_of(root: Path, entry: str, suffix: str = "x1y2z3") -> Path:
    staging = root / f"{STAGING_PREFIX}{entry}.{suffix}"
    staging.mkdir(parents=True)
    (staging / "model.onnx").write_bytes(b"partial")
    return staging


@contextmanager
def held_elsewhere(lock: Path) -> Iterator[None]:
    """The entry's lock held through another open file description, as another process would."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)


def is_locked(lock: Path) -> bool:
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_staging_dir_whose_lock_is_free_is_removed_at_once(tmp_path: Path) -> None:
    (tmp_path / f"{LOCK_PREFIX}{ENTRY}").touch()
    dead = staging_of(tmp_path, ENTRY)  # minutes old, not a day: the lock decides
    remove_stale_staging(tmp_path)
    assert not dead.exists()


def test_a_staging_dir_of_a_running_export_is_kept(tmp_path: Path) -> None:
    live = staging_of(tmp_path, ENTRY)
    with held_elsewhere(tmp_path / f"{LOCK_PREFIX}{ENTRY}"):
        remove_stale_staging(tmp_path)
    assert live.exists()


def test_the_holder_of_an_entrys_lock_removes_all_its_staging_dirs(tmp_path: Path) -> None:
    mine = tmp_path / ENTRY
    leftovers = [staging_of(tmp_path, ENTRY, suffix) for suffix in ("a", "b")]
    other = staging_of(tmp_path, "other-entry")
    with export_lock(mine), held_elsewhere(tmp_path / f"{LOCK_PREFIX}other-entry"):
        remove_stale_staging(tmp_path, held=mine)
    assert not any(p.exists() for p in leftovers)
    assert other.exists(), "another entry's running export keeps its dir"


def test_the_export_lock_excludes_others_and_is_released_on_exit(tmp_path: Path) -> None:
    entry = tmp_path / ENTRY
    with export_lock(entry) as fd:
        assert is_locked(lock_path(entry))
        assert os.get_inheritable(fd) is False, "only a child it is passed to inherits the lock"
        assert (lock_path(entry).read_text().strip()) == str(os.getpid())
    assert not is_locked(lock_path(entry))
    assert lock_path(entry).exists(), "lock files stay: unlinking one could let two exporters in"


def test_an_unwritable_cache_root_is_a_clear_load_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache root should be")
    with pytest.raises(ModelLoadError, match="cannot write the ONNX cache"), export_lock(blocker / ENTRY):
        pass
