"""A model's identity: a digest of the contents of the files that decide what it computes.

The revision is SHA-256 over config.yaml, model.pt, configuration.json and the files they
name (tokenizer, CMVN statistics), each by content. Two checkpoints with the same config
and the same size (a fine-tune of the same architecture) get different revisions, so an
ONNX export cached for one is never served for the other.

Hashing model.pt (about 900 MB for SenseVoiceSmall) takes seconds, so the digest of each
large file is computed once and remembered:

- beside the file, in ``.<name>.sha256`` (JSON), valid while the file's size and mtime are
  the ones recorded there (copying a model dir with its sidecar keeps it valid);
- where the model dir cannot be written (a read-only volume, an installed package's demo
  model), in a memo dir (the ONNX cache's), under a name derived from the file's absolute
  path, size, mtime_ns and inode.

Remembering never fails a load: a digest that cannot be stored is computed again next time.
A digest taken within ``MTIME_SLACK_S`` of the file's mtime is not remembered, because a
write landing in the same timestamp tick could change the contents without changing the
size or the mtime (git's "racy clean" problem).

Concurrency: any number of threads and processes may compute the same digests at once;
each writes its memo to a temp file and renames it into place, so a reader sees a whole
memo or none, and concurrent writers store the same value.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

# Smaller files are hashed on every load: that costs less than reading and checking a memo.
REMEMBER_ABOVE_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 4 * 1024 * 1024
MTIME_SLACK_S = 2.0
SIDECAR_SUFFIX = ".sha256"
# Bump when what goes into a revision changes: old memos and cache entries stop matching.
REVISION_FORMAT = "emostt-model-revision-2"
# ModelInfo.revision: a prefix of the content digest, as git shows commits.
SHORT_REVISION = 12
# Files funasr picks up by name from a dir without configuration.json.
FUNASR_DEFAULT_FILES = ("tokens.txt", "tokens.json", "seg_dict", "bpe.model", "am.mvn", "jieba_usr_dict")
# Where a config.yaml names the model's other files (when no configuration.json does).
CONFIG_FILE_KEYS = (
    ("tokenizer_conf", "bpemodel"),
    ("tokenizer_conf", "token_list"),
    ("frontend_conf", "cmvn_file"),
)


def model_files(model_dir: Path) -> list[Path]:
    """The files that decide what the model in ``model_dir`` computes, existing ones only."""
    files = [model_dir / "config.yaml", model_dir / "model.pt", model_dir / "configuration.json"]
    # configuration.json is funasr's list of the dir's files (tokenizer, CMVN, ...).
    metas = _read_json(model_dir / "configuration.json").get("file_path_metas")
    files += [model_dir / name for name in _strings(metas)]
    # A dir without configuration.json names them in config.yaml (relative or absolute), or
    # funasr finds them by their default names.
    files += [model_dir / name for name in FUNASR_DEFAULT_FILES]
    config = _read_yaml(model_dir / "config.yaml")
    for block, key in CONFIG_FILE_KEYS:
        section = config.get(block)
        value = section.get(key) if isinstance(section, dict) else None
        if isinstance(value, str) and value:
            files.append(model_dir / value)  # an absolute value replaces model_dir
    # One entry per file (a name may be listed twice); named as listed, not resolved: hub caches
    # link a snapshot's files to blobs elsewhere.
    unique: dict[Path, Path] = {}
    for path in files:
        if path.is_file():
            unique.setdefault(path.resolve(), path)
    return sorted(unique.values())


def model_revision(model_dir: Path, memo_dir: Path | None = None) -> str:
    """The revision (64 hex digits) of the model in ``model_dir``; ``memo_dir`` is where large
    files' digests are remembered when their own dir is read-only (None: not remembered then)."""
    if not (model_dir / "model.pt").is_file():
        raise FileNotFoundError(f"{model_dir} has no model.pt")
    digest = hashlib.sha256(REVISION_FORMAT.encode())
    for path in model_files(model_dir):
        # Names relative to the dir: a model copied elsewhere keeps its revision.
        name = str(path.relative_to(model_dir)) if path.is_relative_to(model_dir) else str(path)
        digest.update(f"{name}\0{file_digest(path, memo_dir)}\n".encode())
    return digest.hexdigest()


def file_digest(path: Path, memo_dir: Path | None = None, remember_above: int = REMEMBER_ABOVE_BYTES) -> str:
    """SHA-256 (hex) of the file's contents, remembered for files over ``remember_above`` bytes."""
    stat = path.stat()
    if stat.st_size <= remember_above:
        return _hash_file(path)
    sidecar = sidecar_path(path)
    memo = memo_path(path, stat, memo_dir) if memo_dir is not None else None
    for candidate in (sidecar, memo):
        if candidate is not None and (remembered := _remembered(candidate, stat)) is not None:
            return remembered
    value = _hash_file(path)
    after = path.stat()
    if _key(after) != _key(stat) or time.time() - after.st_mtime < MTIME_SLACK_S:
        # Changed while being read, or so recently that a change could hide in one mtime tick.
        return value
    record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": value}
    if not _store(sidecar, record) and memo is not None and not _store(memo, record):
        log.warning("cannot remember the digest of %s (neither beside it nor in %s)", path, memo_dir)
    return value


def sidecar_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{SIDECAR_SUFFIX}")


def memo_path(path: Path, stat: os.stat_result, memo_dir: Path) -> Path:
    """The memo of a file whose own dir is read-only: one name per path, size, mtime and inode,
    so a replaced file (new inode or mtime) never finds the old file's digest."""
    identity = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}"
    return memo_dir / (hashlib.sha256(identity.encode()).hexdigest()[:32] + SIDECAR_SUFFIX)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _key(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_size, stat.st_mtime_ns


def _remembered(memo: Path, stat: os.stat_result) -> str | None:
    """The digest ``memo`` holds if it describes the file as it is now (size and mtime), else None."""
    record = _read_json(memo)
    value = record.get("sha256")
    if (record.get("size"), record.get("mtime_ns")) != _key(stat) or not isinstance(value, str):
        return None
    return value if len(value) == 64 else None


def _store(memo: Path, record: Mapping[str, Any]) -> bool:
    """Write ``memo`` atomically (temp file, rename); False where its dir cannot be written."""
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=memo.name + ".", dir=memo.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(record, out)
        Path(temp).replace(memo)
    except OSError:
        Path(temp).unlink(missing_ok=True)
        return False
    return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> Iterator[str]:
    """Every string inside nested dicts and lists."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _strings(item)
