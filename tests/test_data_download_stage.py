"""The ``data`` stage with ``source: download`` against a local HTTP server.

The server serves archives built like the real ones (``val2017.zip`` holding ``val2017/*.jpg``,
``annotations_trainval2017.zip`` holding ``annotations/person_keypoints_*.json``, the MPII tarball
holding ``images/*.jpg``) from a tiny synthetic dataset, plus plain files (detections, MPII
annotations). Every request is recorded, so tests can assert that a rerun makes none.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import tarfile
import threading
import zipfile
from io import BytesIO
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from pipeline import io
from pipeline.config import load_params, validate_params
from pipeline.data import download as dl
from pipeline.data.prepare import REQUIRED, prepare_dataset
from pipeline.data.synthetic import generate_coco, generate_mpii
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent
DET_VAL = "COCO_val2017_detections_AP_H_56_person.json"
DET_TEST = "COCO_test-dev2017_detections_AP_H_609_person.json"


class Files(BaseHTTPRequestHandler):
    """Serves ``server.files[path]`` (with Range support); records each GET's path."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        body = self.server.files.get(self.path)  # type: ignore[attr-defined]
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        rng = self.headers.get("Range")
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])


def _zip(members: dict[str, Path | bytes]) -> bytes:
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # COCO's image zips are stored, not deflated
        for name, data in members.items():
            zf.writestr(name, data.read_bytes() if isinstance(data, Path) else data)
    return buf.getvalue()


def _folder(src: Path, prefix: str) -> dict[str, Path]:
    return {f"{prefix}/{p.name}": p for p in sorted(src.iterdir())}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny synthetic COCO and MPII, and the archives / files the server will serve."""
    base = tmp_path_factory.mktemp("built")
    coco, mpii = base / "coco", base / "mpii"
    generate_coco(coco, seed=0, image_size=(96, 72), train_images=3, val_images=2, test_images=2,
                  max_people=1, progress=False)
    generate_mpii(mpii, seed=0, image_size=(96, 72), train_images=3, val_images=2, max_people=1, progress=False)
    ann = coco / "annotations"
    files = {
        "/coco/train2017.zip": _zip(_folder(coco / "images/train2017", "train2017")),
        "/coco/val2017.zip": _zip(_folder(coco / "images/val2017", "val2017")),
        "/coco/test2017.zip": _zip(_folder(coco / "images/test2017", "test2017")),
        "/coco/annotations_trainval2017.zip": _zip({
            "annotations/person_keypoints_train2017.json": ann / "person_keypoints_train2017.json",
            "annotations/person_keypoints_val2017.json": ann / "person_keypoints_val2017.json",
            "annotations/instances_val2017.json": b"{}",  # in the real zip, not wanted in the layout
        }),
        "/coco/image_info_test2017.zip": _zip({
            "annotations/image_info_test-dev2017.json": ann / "image_info_test-dev2017.json",
            "annotations/image_info_test2017.json": ann / "image_info_test-dev2017.json",
        }),
        f"/coco/{DET_VAL}": (coco / "person_detection_results" / DET_VAL).read_bytes(),
        f"/coco/{DET_TEST}": (coco / "person_detection_results" / DET_TEST).read_bytes(),
        "/mpii/train.json": (mpii / "annot/train.json").read_bytes(),
        "/mpii/valid.json": (mpii / "annot/valid.json").read_bytes(),
        "/mpii/gt_valid.mat": (mpii / "annot/gt_valid.mat").read_bytes(),
    }
    tgz = base / "mpii_human_pose_v1.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(mpii / "images", arcname="images")
    files["/mpii/mpii_human_pose_v1.tar.gz"] = tgz.read_bytes()
    return {"coco": coco, "mpii": mpii, "files": files, "tgz": tgz}


@pytest.fixture
def server(built: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, ThreadingHTTPServer]]:
    monkeypatch.setattr(dl, "BACKOFF_BASE", 0.0)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    httpd.daemon_threads = True
    httpd.files = dict(built["files"])  # type: ignore[attr-defined]
    httpd.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _entry(name: str, url: str | None, files: dict[str, bytes], *, key: str | None = None,
           sized: bool = True, **where: Any) -> dict[str, Any]:
    body = files.get(key) if key else None
    return {"name": name, "url": url, "size": len(body) if (body is not None and sized) else None,
            "sha256": None, **where}


def coco_entries(base: str, files: dict[str, bytes]) -> list[dict[str, Any]]:
    """The paper profile's COCO list, pointed at the test server (sha256 unpinned, as shipped)."""
    def z(name: str, **where: Any) -> dict[str, Any]:
        return _entry(name, f"{base}/coco/{name}", files, key=f"/coco/{name}", **where)
    keypoints = {f"annotations/person_keypoints_{s}2017.json": f"annotations/person_keypoints_{s}2017.json"
                 for s in ("train", "val")}
    return [
        z("train2017.zip", extract={"train2017": "images/train2017"}),
        z("val2017.zip", extract={"val2017": "images/val2017"}),
        z("test2017.zip", extract={"test2017": "images/test2017"}),
        z("annotations_trainval2017.zip", extract=keypoints),
        z("image_info_test2017.zip", sized=False,
          extract={"annotations/image_info_test-dev2017.json": "annotations/image_info_test-dev2017.json"}),
        z(DET_VAL, place=f"person_detection_results/{DET_VAL}"),
        z(DET_TEST, place=f"person_detection_results/{DET_TEST}"),
    ]


def mpii_entries(base: str, files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [
        _entry("mpii_human_pose_v1.tar.gz", f"{base}/mpii/mpii_human_pose_v1.tar.gz", files,
               key="/mpii/mpii_human_pose_v1.tar.gz", sized=False, extract={"images": "images"}),
        _entry("train.json", f"{base}/mpii/train.json", files, key="/mpii/train.json", place="annot/train.json"),
        _entry("valid.json", f"{base}/mpii/valid.json", files, key="/mpii/valid.json", place="annot/valid.json"),
        _entry("gt_valid.mat", f"{base}/mpii/gt_valid.mat", files, key="/mpii/gt_valid.mat",
               place="annot/gt_valid.mat"),
    ]


@pytest.fixture(scope="module")
def real_params() -> dict[str, Any]:
    return load_params(ROOT / "params.yaml")


def make_params(real: dict[str, Any], coco: list, mpii: list) -> dict[str, Any]:
    """The real params with the paper profile's archive lists replaced; schema-checked."""
    params = copy.deepcopy(real)
    params["profiles"]["paper"]["data"] = {"source": "download", "archives": {"coco": coco, "mpii": mpii}}
    return validate_params(params, "test params")


def stage(params: dict[str, Any], dataset: str) -> dict[str, Any]:
    return io.read_json(prepare_dataset(params, "paper", dataset, progress=False))


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- tests
def test_coco_download_builds_layout_then_rerun_is_offline(server, built, real_params, tmp_path, monkeypatch):
    base, httpd = server
    monkeypatch.chdir(tmp_path)
    entries = coco_entries(base, built["files"])
    params = make_params(real_params, entries, mpii_entries(base, built["files"]))
    manifest = stage(params, "coco")

    root = tmp_path / "data/paper/coco"
    assert manifest["source"] == "download" and set(manifest["files"]) == set(REQUIRED["coco"])
    for rel in REQUIRED["coco"]:
        if rel.endswith("/"):
            assert manifest["files"][rel]["files"] == len(list((built["coco"] / rel).iterdir()))
        else:
            assert manifest["files"][rel]["sha256"] == _sha(built["coco"] / rel)
    assert not (root / "annotations/instances_val2017.json").exists()  # only mapped members
    assert sorted(p.name for p in root.iterdir()) == [".fetched", "annotations", "images",
                                                       "person_detection_results"]  # no staging left
    assert sorted(httpd.requests) == sorted(f"/coco/{e['name']}" for e in entries)
    recorded = manifest["summary"]["archives"]
    assert recorded["val2017.zip"]["sha256"] == hashlib.sha256(built["files"]["/coco/val2017.zip"]).hexdigest()
    assert all(r["origin"] == "download" for r in recorded.values())

    httpd.requests.clear()
    stamp = (root / "images/val2017").stat().st_ino
    again = stage(params, "coco")
    assert httpd.requests == [] and again["files"] == manifest["files"]

    # Pinning the sha256 the first run measured describes the same bytes: still nothing to do.
    entries[1]["sha256"] = recorded["val2017.zip"]["sha256"]
    stage(make_params(real_params, entries, []), "coco")
    assert httpd.requests == [] and (root / "images/val2017").stat().st_ino == stamp


@pytest.mark.parametrize("damage", ["truncated", "truncated-size-unknown", "corrupt-same-size"])
def test_damaged_archive_in_cache_is_fetched_again(damage, server, built, real_params, tmp_path, monkeypatch,
                                                   caplog):
    base, httpd = server
    monkeypatch.chdir(tmp_path)
    entries = coco_entries(base, built["files"])
    good = built["files"]["/coco/val2017.zip"]
    if damage == "truncated-size-unknown":
        entries[1]["size"] = None
    bad = bytearray(good[: len(good) // 2]) if damage.startswith("truncated") else bytearray(good)
    if damage == "corrupt-same-size":
        mid = len(bad) // 2
        bad[mid:mid + 64] = bytes(64)
    cache = tmp_path / "data/paper/_archives"
    cache.mkdir(parents=True)
    (cache / "val2017.zip").write_bytes(bytes(bad))

    with caplog.at_level(logging.WARNING):
        manifest = stage(make_params(real_params, entries, []), "coco")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("val2017.zip" in w and "again" in w for w in warnings), warnings
    assert httpd.requests.count("/coco/val2017.zip") == 1
    assert (cache / "val2017.zip").read_bytes() == good
    assert manifest["files"]["images/val2017/"]["files"] == len(list((built["coco"] / "images/val2017").iterdir()))


def test_missing_manual_file_stops_before_any_download(server, built, real_params, tmp_path, monkeypatch):
    base, httpd = server
    monkeypatch.chdir(tmp_path)
    entries = mpii_entries(base, built["files"])
    note = "get gt_valid.mat from the HRNet README data-preparation links and put it there"
    entries[3] = {"name": "gt_valid.mat", "url": None, "size": None, "sha256": None,
                  "place": "annot/gt_valid.mat", "manual": note}
    params = make_params(real_params, [], entries)
    with pytest.raises(PipelineError) as err:
        stage(params, "mpii")
    msg = str(err.value)
    assert "data/paper/mpii/annot/gt_valid.mat" in msg and note in msg and "\n" not in msg
    assert httpd.requests == []
    assert not (tmp_path / "data/paper/mpii.manifest.json").exists()

    # Put there by hand, as the note says: the stage takes it as it is.
    target = tmp_path / "data/paper/mpii/annot/gt_valid.mat"
    target.parent.mkdir(parents=True)
    target.write_bytes(built["files"]["/mpii/gt_valid.mat"])
    manifest = stage(params, "mpii")
    assert manifest["summary"]["archives"]["gt_valid.mat"]["origin"] == "found"
    assert sorted(httpd.requests) == ["/mpii/mpii_human_pose_v1.tar.gz", "/mpii/train.json", "/mpii/valid.json"]


def test_local_copies_are_used_in_place(server, built, real_params, tmp_path, monkeypatch):
    base, httpd = server
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"  # the user's own copies, outside data/
    (mine / "annot").mkdir(parents=True)
    for name in ("train.json", "valid.json"):
        (mine / "annot" / name).write_bytes(built["files"][f"/mpii/{name}"])
    entries = mpii_entries(base, built["files"])
    entries[0] = {**entries[0], "path": str(built["mpii"])}          # extracted copy: holds images/
    entries[1] = {**entries[1], "path": str(mine / "annot/train.json")}
    entries[2] = {**entries[2], "url": (mine / "annot/valid.json").as_uri()}
    manifest = stage(make_params(real_params, [], entries), "mpii")

    root = tmp_path / "data/paper/mpii"
    assert (root / "images").is_symlink() and (root / "images").resolve() == (built["mpii"] / "images").resolve()
    assert (root / "annot/train.json").resolve() == (mine / "annot/train.json").resolve()
    assert (root / "annot/valid.json").resolve() == (mine / "annot/valid.json").resolve()
    assert httpd.requests == ["/mpii/gt_valid.mat"]
    assert sorted(p.name for p in (tmp_path / "data/paper/_archives").iterdir()) == ["gt_valid.mat"]  # no copies
    assert manifest["files"]["images/"]["files"] == len(list((built["mpii"] / "images").iterdir()))

    # A local archive is extracted from where it lies, not copied into the cache.
    entries[0] = {**entries[0], "path": str(built["tgz"])}
    stage(make_params(real_params, [], entries), "mpii")
    assert (root / "images").is_dir() and not (root / "images").is_symlink()
    assert not (tmp_path / "data/paper/_archives/mpii_human_pose_v1.tar.gz").exists()
    assert httpd.requests == ["/mpii/gt_valid.mat"]


def test_copy_put_in_layout_by_hand_is_kept(server, built, real_params, tmp_path, monkeypatch):
    base, httpd = server
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "data/paper/coco/images/train2017"
    own.mkdir(parents=True)
    (own / "000000000001.jpg").write_bytes(b"mine")
    manifest = stage(make_params(real_params, coco_entries(base, built["files"]), []), "coco")
    assert "/coco/train2017.zip" not in httpd.requests
    assert [p.name for p in own.iterdir()] == ["000000000001.jpg"]
    assert manifest["summary"]["archives"]["train2017.zip"]["origin"] == "found"


def test_archive_without_the_mapped_member_names_it(server, built, real_params, tmp_path, monkeypatch):
    base, _ = server
    monkeypatch.chdir(tmp_path)
    entries = coco_entries(base, built["files"])
    entries[1]["extract"] = {"val2014": "images/val2017"}
    with pytest.raises(PipelineError, match=r"val2017\.zip: has no member 'val2014'"):
        stage(make_params(real_params, entries, []), "coco")
    assert not (tmp_path / "data/paper/coco/images/val2017").exists()
