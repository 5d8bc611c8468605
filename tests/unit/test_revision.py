"""Model revisions by content: what goes into them, and digests remembered across restarts
beside the file or, where its dir is read-only, in the memo dir."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from emostt.inference import revision
from emostt.inference.revision import file_digest, memo_path, model_files, model_revision, sidecar_path

AN_HOUR_AGO = time.time() - 3600


def write(path: Path, data: bytes, mtime: float = AN_HOUR_AGO) -> Path:
    """Write ``data`` with an mtime in the past: a file written just now is not remembered."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def model_dir(root: Path, weights: bytes, config: bytes = b"encoder: x\n") -> Path:
    write(root / "config.yaml", config)
    write(root / "model.pt", weights)
    write(root / "am.mvn", b"cmvn")
    write(root / "tok.bpe.model", b"tokenizer")
    metas = {"file_path_metas": {"init_param": "model.pt", "tokenizer_conf": {"bpemodel": "tok.bpe.model"}}}
    write(root / "configuration.json", json.dumps(metas).encode())
    return root


class CountingHash:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[Path] = []
        real = revision._hash_file

        def counting(path: Path) -> str:
            self.paths.append(path)
            return real(path)

        monkeypatch.setattr(revision, "_hash_file", counting)


def test_same_config_and_size_with_different_weights_are_different_revisions(tmp_path: Path) -> None:
    first = model_dir(tmp_path / "a", b"\x01" * 1000)
    second = model_dir(tmp_path / "b", b"\x02" * 1000)
    assert model_revision(first) != model_revision(second)
    # The same files elsewhere are the same model.
    copy = Path(shutil.copytree(first, tmp_path / "copy"))
    assert model_revision(copy) == model_revision(first)


def test_a_hub_snapshot_of_links_to_blobs_has_the_revision_of_a_plain_copy(tmp_path: Path) -> None:
    plain = model_dir(tmp_path / "plain", b"weights")
    snapshot = tmp_path / "hub" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    for path in plain.iterdir():
        blob = write(tmp_path / "hub" / "blobs" / path.name, path.read_bytes())
        (snapshot / path.name).symlink_to(blob)
    assert model_revision(snapshot) == model_revision(plain)


@pytest.mark.parametrize("name", ["config.yaml", "am.mvn", "tok.bpe.model", "configuration.json"])
def test_config_tokenizer_and_cmvn_are_part_of_the_revision(tmp_path: Path, name: str) -> None:
    model = model_dir(tmp_path / "m", b"weights")
    before = model_revision(model)
    path = model / name
    data = path.read_bytes()
    write(path, data + b" " if name != "configuration.json" else data.replace(b"}}}", b'}}, "x": 1}'))
    assert model_revision(model) != before


def test_the_files_of_a_dir_without_configuration_json_come_from_config_yaml(tmp_path: Path) -> None:
    model = tmp_path / "m"
    write(model / "model.pt", b"weights")
    write(model / "vocab.model", b"tokenizer")
    write(model / "stats.mvn", b"cmvn")
    config = b"tokenizer_conf:\n  bpemodel: vocab.model\nfrontend_conf:\n  cmvn_file: stats.mvn\n"
    write(model / "config.yaml", config)
    assert [p.name for p in model_files(model)] == ["config.yaml", "model.pt", "stats.mvn", "vocab.model"]


def test_a_large_file_is_hashed_once_and_its_digest_remembered_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = write(tmp_path / "model.pt", os.urandom(4096))
    hashes = CountingHash(monkeypatch)
    first = file_digest(weights, remember_above=0)
    assert file_digest(weights, remember_above=0) == first
    assert hashes.paths == [weights], "the second call read the sidecar, not the file"
    record = json.loads(sidecar_path(weights).read_text())
    assert record == {"size": 4096, "mtime_ns": weights.stat().st_mtime_ns, "sha256": first}


def test_a_changed_file_is_hashed_again_even_with_the_same_size(tmp_path: Path) -> None:
    weights = write(tmp_path / "model.pt", b"\x01" * 4096)
    before = file_digest(weights, remember_above=0)
    write(weights, b"\x02" * 4096, mtime=AN_HOUR_AGO + 60)  # a fine-tune saved over it
    assert file_digest(weights, remember_above=0) != before


def test_a_file_written_just_now_is_not_remembered(tmp_path: Path) -> None:
    weights = write(tmp_path / "model.pt", b"\x01" * 4096, mtime=time.time())
    file_digest(weights, remember_above=0)
    # Another write in the same mtime tick could keep size and mtime: nothing is remembered yet.
    assert not sidecar_path(weights).exists()


def refuse_writes_in(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``folder`` behaves as a read-only mount for the memo writer (root ignores chmod)."""
    real = tempfile.mkstemp

    def mkstemp(*args: object, dir: str | Path | None = None, **kwargs: object) -> tuple[int, str]:
        if dir is not None and Path(dir) == folder:
            raise PermissionError(13, "Read-only file system", str(folder))
        return real(*args, dir=dir, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(revision.tempfile, "mkstemp", mkstemp)


def test_a_read_only_model_dir_remembers_digests_in_the_memo_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models, memo = tmp_path / "ro-volume", tmp_path / "cache" / "digests"
    weights = write(models / "model.pt", os.urandom(4096))
    refuse_writes_in(models, monkeypatch)
    hashes = CountingHash(monkeypatch)
    first = file_digest(weights, memo, remember_above=0)
    assert not sidecar_path(weights).exists()
    assert memo_path(weights, weights.stat(), memo).is_file()
    assert file_digest(weights, memo, remember_above=0) == first
    assert hashes.paths == [weights]


def test_a_replaced_file_never_finds_the_memo_of_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models, memo = tmp_path / "ro-volume", tmp_path / "digests"
    weights = write(models / "model.pt", b"\x01" * 4096)
    refuse_writes_in(models, monkeypatch)
    before = file_digest(weights, memo, remember_above=0)
    # A new file of the same size with the same mtime: only the inode tells them apart.
    replacement = write(models / "new.pt", b"\x02" * 4096)
    replacement.replace(weights)
    assert file_digest(weights, memo, remember_above=0) != before


def test_remembering_never_fails_a_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = write(tmp_path / "model.pt", b"\x01" * 4096)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the memo dir should be")
    refuse_writes_in(tmp_path, monkeypatch)
    assert file_digest(weights, blocker / "digests", remember_above=0) == file_digest(weights)


def test_a_model_without_weights_has_no_revision(tmp_path: Path) -> None:
    write(tmp_path / "config.yaml", b"encoder: x\n")
    with pytest.raises(FileNotFoundError):
        model_revision(tmp_path)
