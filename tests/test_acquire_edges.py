"""The data stage's installer (pipeline.data.acquire.install) on local copies: reinstalls when the params pin
other bytes, a lost marker, targets in the way, a move across filesystems, and the one-line errors of a
wrong ``path`` or a corrupt archive of the user's own."""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from pipeline.data import acquire
from pipeline.data.download import CorruptArchive
from pipeline.errors import PipelineError

KEY = "profiles.t.data.archives.coco"


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _install(root: Path, *specs: dict) -> dict:
    return acquire.install(list(specs), root, root.parent / "cache", key=KEY, progress=False)


def _marker(root: Path, name: str) -> dict:
    return json.loads((root / ".fetched" / f"{name}.json").read_text())


def test_a_file_whose_pinned_bytes_change_is_installed_again(tmp_path):
    copy = tmp_path / "det.json"
    copy.write_bytes(b"0123456789")
    root = tmp_path / "coco"
    spec = {"name": "det.json", "path": str(copy), "place": "person_detection_results/det.json"}
    _install(root, spec)
    placed = root / "person_detection_results/det.json"
    assert placed.is_symlink() and _marker(root, "det.json")["size"] == 10
    # the user replaced the copy and pinned its size; the link had been replaced by a plain file
    copy.write_bytes(b"0123456789AB")
    placed.unlink()
    placed.write_bytes(b"stale")
    _install(root, {**spec, "size": 12})
    assert placed.is_symlink() and placed.read_bytes() == b"0123456789AB"
    assert _marker(root, "det.json")["size"] == 12
    # a pinned sha256 that differs from the one measured: installed again, the pin taken as it is
    sha = hashlib.sha256(b"0123456789AB").hexdigest()
    marker = _marker(root, "det.json")
    marker["sha256"] = "0" * 64  # as measured from other bytes
    (root / ".fetched" / "det.json.json").write_text(json.dumps(marker))
    _install(root, {**spec, "size": 12, "sha256": sha})
    assert _marker(root, "det.json")["sha256"] == sha


def test_an_unreadable_marker_leaves_the_targets_adopted_as_found(tmp_path):
    copy = tmp_path / "det.json"
    copy.write_bytes(b"{}")
    root = tmp_path / "coco"
    spec = {"name": "det.json", "path": str(copy), "place": "det.json"}
    _install(root, spec)
    (root / ".fetched" / "det.json.json").write_text("{not json")
    _install(root, spec)
    assert _marker(root, "det.json")["origin"] == "found"  # never overwritten: it may be a copy by hand


def test_an_archive_of_new_bytes_replaces_the_stage_s_own_folder(tmp_path):
    archive = _tar(tmp_path / "annotations.tar", {"annotations/a.json": b"1", "annotations/b.json": b"2"})
    root = tmp_path / "coco"
    spec = {"name": "annotations.tar", "path": str(archive), "extract": {"annotations": "annotations"}}
    _install(root, spec)
    assert (root / "annotations/b.json").read_bytes() == b"2"
    _tar(archive, {"annotations/a.json": b"new"})
    _install(root, {**spec, "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()})
    assert sorted(p.name for p in (root / "annotations").iterdir()) == ["a.json"]
    assert (root / "annotations/a.json").read_bytes() == b"new"


def test_a_target_in_the_way_stops_before_anything_is_placed(tmp_path):
    archive = _tar(tmp_path / "images.tar", {"x/a.jpg": b"a", "x/b.jpg": b"b"})
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    (root / "images/a.jpg").write_bytes(b"mine")  # one of two targets, put there by hand
    spec = {"name": "images.tar", "path": str(archive), "extract": {"x/a.jpg": "images/a.jpg", "x/b.jpg": "images/b.jpg"}}
    with pytest.raises(PipelineError) as exc:
        _install(root, spec)
    assert str(exc.value) == (f"{root / 'images/a.jpg'}: exists but was not made by the data stage; move it away "
                              "to let the stage replace it")
    assert not (root / "images/b.jpg").exists() and (root / "images/a.jpg").read_bytes() == b"mine"


def test_a_move_across_filesystems_copies_then_renames(tmp_path, monkeypatch):
    archive = _tar(tmp_path / "annotations.tar", {"annotations/a.json": b"1"})
    root = tmp_path / "coco"
    real_replace = os.replace

    def replace(src, dst):
        if Path(src).parent.name.endswith(".staging"):  # a member leaving the staging folder: another filesystem
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src), None, str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(acquire.os, "replace", replace)
    _install(root, {"name": "annotations.tar", "path": str(archive), "extract": {"annotations": "annotations"}})
    assert (root / "annotations/a.json").read_bytes() == b"1"
    assert not list(root.glob(".annotations.tar.staging*"))


def test_a_failed_move_into_place_is_one_line(tmp_path, monkeypatch):
    archive = _tar(tmp_path / "annotations.tar", {"annotations/a.json": b"1"})
    real_replace = os.replace

    def replace(src, dst):
        if Path(src).parent.name.endswith(".staging"):
            raise PermissionError(errno.EACCES, "Permission denied", str(src))
        return real_replace(src, dst)

    monkeypatch.setattr(acquire.os, "replace", replace)
    root = tmp_path / "coco"
    with pytest.raises(PipelineError) as exc:
        _install(root, {"name": "annotations.tar", "path": str(archive), "extract": {"annotations": "annotations"}})
    assert exc.value.where == str(root / "annotations")
    assert exc.value.what.startswith("cannot move extracted annotations into place (")


def test_a_wrong_path_names_the_entry_and_its_key(tmp_path):
    root = tmp_path / "coco"
    with pytest.raises(PipelineError) as exc:
        _install(root, {"name": "det.json", "path": str(tmp_path / "none.json"), "place": "det.json"})
    assert str(exc.value) == f"{tmp_path / 'none.json'}: det.json: local copy not found (set by {KEY}.0.path)"
    with pytest.raises(PipelineError) as exc:
        _install(root, {"name": "det.json", "path": str(tmp_path), "place": "det.json"})
    assert str(exc.value) == f"{tmp_path}: det.json: is a folder; {KEY}.0.path must name the file itself"
    (tmp_path / "extracted").mkdir()
    with pytest.raises(PipelineError) as exc:
        _install(root, {"name": "val2017.zip", "path": str(tmp_path / "extracted"), "extract": {"val2017": "images/val2017"}})
    assert str(exc.value) == (f"{tmp_path / 'extracted/val2017'}: not found in the extracted copy of val2017.zip "
                              f"(set by {KEY}.0.path)")


def test_a_corrupt_archive_of_the_user_s_own_is_not_fetched_again(tmp_path):
    bad = tmp_path / "annotations.tar"
    bad.write_bytes(b"not an archive at all")
    with pytest.raises(CorruptArchive) as exc:
        _install(tmp_path / "coco", {"name": "annotations.tar", "url": str(bad), "extract": {"a": "a"}})
    assert str(exc.value) == f"{bad}: not a zip or tar archive"


def test_a_file_put_in_place_by_hand_must_match_the_pinned_size(tmp_path):
    root = tmp_path / "coco"
    root.mkdir()
    (root / "det.json").write_bytes(b"{}")
    with pytest.raises(PipelineError) as exc:
        _install(root, {"name": "det.json", "url": "https://example.org/det.json", "size": 3, "place": "det.json"})
    assert str(exc.value) == f"{root / 'det.json'}: det.json: size mismatch (expected 3 bytes, got 2)"
