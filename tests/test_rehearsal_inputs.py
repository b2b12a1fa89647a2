"""The rehearsal's data inputs: the downloads built as the real ones (scripts/rehearsal/archives.py),
the local server that serves them (scripts/rehearsal/serve.py), and the rehearsal profile's data stage
against them, end to end in a copy of the project, from an empty data/rehearsal.

Also the download-path cases the rehearsal exposed: a complete ``.part`` of unknown size, a server that
labels a ``.tar.gz`` ``Content-Encoding: gzip``, and a stage killed while an entry's targets go into place.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from pipeline import io
from pipeline.config import load_params
from pipeline.data import acquire
from pipeline.data import download as dl
from pipeline.data.prepare import REQUIRED, prepare_dataset
from pipeline.engine.builders import COCO_SPLITS, MPII_GT_VALID, MPII_SPLITS
from pipeline.errors import Terminated
from project_copy import copy_project
from scripts.rehearsal import serve as srv
from scripts.rehearsal.archives import COCO_SIZES, MPII_SIZES, build_archives, url_path

ROOT = Path(__file__).resolve().parent.parent
PROFILE = "rehearsal"
TESTDEV_GT = "person_keypoints_test-dev2017"
# what an archive's member names look like in the real downloads
MEMBER_NAMES = {
    "train2017.zip": r"train2017(/\d{12}\.jpg)?",
    "val2017.zip": r"val2017(/\d{12}\.jpg)?",
    "test2017.zip": r"test2017(/\d{12}\.jpg)?",
    "annotations_trainval2017.zip": r"annotations/[a-z_]+_(train|val)2017\.json",
    "image_info_test2017.zip": r"annotations/image_info_test(-dev)?2017\.json",
    "mpii_human_pose_v1.tar.gz": r"images(/\d{9}\.jpg)?",
}


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    return load_params(ROOT / "params.yaml", PROFILE)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("served")
    return out, build_archives(out, seed=0)


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "BACKOFF_BASE", 0.0)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def server(built: tuple[Path, dict[str, Path]], no_proxy: None) -> Iterator[srv.Server]:
    with srv.serve(built[0], port=0) as httpd:  # a free port: tests may run beside a rehearsal on 8641
        yield httpd


def _entries(params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    archives = params["profiles"][PROFILE]["data"]["archives"]
    return [(dataset, e) for dataset in ("coco", "mpii") for e in archives[dataset]]


def _members(path: Path) -> list[str]:
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    with tarfile.open(path) as tf:
        return tf.getnames()


def _read_member(path: Path, member: str) -> bytes:
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            return zf.read(member)
    with tarfile.open(path) as tf:
        return tf.extractfile(member).read()  # type: ignore[union-attr]


def _rehearsal_params(tmp: Path, port: int) -> dict[str, Any]:
    """params.yaml with the rehearsal's server on ``port`` instead of 8641."""
    text = (ROOT / "params.yaml").read_text()
    assert text.count(f"{srv.HOST}:{srv.PORT}/") >= 11
    path = tmp / "params.yaml"
    path.write_text(text.replace(f"{srv.HOST}:{srv.PORT}/", f"{srv.HOST}:{port}/"))
    return load_params(path, PROFILE)


# ----------------------------------------------------------------------------- the downloads
def test_every_download_is_at_its_rehearsal_url_and_is_a_paper_entry(params, built):
    out, written = built
    paper = params["profiles"]["paper"]["data"]["archives"]
    for dataset, e in _entries(params):
        assert e["url"].startswith(f"http://{srv.HOST}:{srv.PORT}/"), e["url"]  # the server's defaults
        assert written[e["name"]] == out / url_path(e["url"]) and written[e["name"]].is_file()
        same = next(p for p in paper[dataset] if p["name"] == e["name"])
        assert {k: v for k, v in e.items() if k not in ("url", "size")} == \
               {k: v for k, v in same.items() if k not in ("url", "size")}
    assert sorted(p for p in out.rglob("*") if p.is_file()) == sorted(written.values())  # nothing else served


def test_archives_hold_the_members_params_extract_and_more(params, built):
    _, written = built
    for _, e in _entries(params):
        path = written[e["name"]]
        if "place" in e:
            assert Path(e["place"]).name == e["name"]
            continue
        members = _members(path)
        assert all(re.fullmatch(MEMBER_NAMES[e["name"]], m.rstrip("/")) for m in members), members
        chosen = [m for m in members if any(m.rstrip("/") == k or m.startswith(k + "/") for k in e["extract"])]
        for key in e["extract"]:
            assert any(m.rstrip("/") == key or m.startswith(key + "/") for m in chosen), (e["name"], key)
        if e["name"] in ("annotations_trainval2017.zip", "image_info_test2017.zip"):
            assert len(chosen) < len(members)  # the extract map selects: the rest stays in the archive
        elif e["name"].endswith("2017.zip") or e["name"].endswith(".tar.gz"):
            assert len(members) > 2 and chosen == members
    # the layout paths the extract / place maps fill are the ones the pipeline reads (HRNet's)
    archives = params["profiles"][PROFILE]["data"]["archives"]
    filled = {d: {dest for e in archives[d] for dest in (e["extract"].values() if "extract" in e else [e["place"]])}
              for d in ("coco", "mpii")}
    read = {"coco": {p for split in ("train", "val", "test-dev") for p in COCO_SPLITS[split][:3] if p},
            "mpii": {*MPII_SPLITS.values(), MPII_GT_VALID, "images"}}
    assert read["coco"] <= filled["coco"] and read["mpii"] <= filled["mpii"]
    assert {r.rstrip("/") for r in REQUIRED["coco"]} == filled["coco"]


def test_testdev_has_no_ground_truth(built):
    out, written = built
    for path in written.values():
        names = _members(path) if path.name.endswith((".zip", ".tar.gz")) else [path.name]
        assert not any(TESTDEV_GT in n for n in names), path
    info_zip = written["image_info_test2017.zip"]
    dev = json.loads(_read_member(info_zip, "annotations/image_info_test-dev2017.json"))
    every = json.loads(_read_member(info_zip, "annotations/image_info_test2017.json"))
    assert set(dev) == {"info", "licenses", "images", "categories"} == set(every)  # no annotations key
    dev_ids = {im["id"] for im in dev["images"]}
    all_ids = {im["id"] for im in every["images"]}
    files = {m.split("/")[1] for m in _members(written["test2017.zip"]) if m.endswith(".jpg")}
    assert len(dev_ids) == COCO_SIZES["testdev_images"] and dev_ids < all_ids and {f"{i:012d}.jpg" for i in all_ids} == files
    dets = json.loads(written["COCO_test-dev2017_detections_AP_H_609_person.json"].read_text())
    assert dets and {d["image_id"] for d in dets} <= dev_ids
    assert all(set(d) == {"image_id", "category_id", "bbox", "score"} for d in dets)
    trainval = written["annotations_trainval2017.zip"]
    for member in _members(trainval):
        data = json.loads(_read_member(trainval, member))
        assert not {a["image_id"] for a in data.get("annotations", [])} & all_ids, member


def test_build_is_deterministic(built, tmp_path):
    out, written = built
    again = build_archives(tmp_path, seed=0)
    assert {n: p.read_bytes() for n, p in again.items()} == {n: p.read_bytes() for n, p in written.items()}
    other = build_archives(tmp_path / "seed1", seed=1)
    assert other["val2017.zip"].read_bytes() != written["val2017.zip"].read_bytes()


# ----------------------------------------------------------------------------- the server
def test_server_answers_as_the_downloader_expects(server, built):
    out, written = built
    url = f"{server.url}/{written['val2017.zip'].relative_to(out).as_posix()}"
    body = written["val2017.zip"].read_bytes()
    full = requests.get(url, timeout=10)
    assert full.status_code == 200 and full.content == body and full.headers["Accept-Ranges"] == "bytes"
    assert "Content-Encoding" not in full.headers
    for rng, part, first, last in (("bytes=100-", body[100:], 100, len(body) - 1), ("bytes=10-19", body[10:20], 10, 19),
                                   ("bytes=-5", body[-5:], len(body) - 5, len(body) - 1)):
        r = requests.get(url, headers={"Range": rng}, timeout=10)
        assert (r.status_code, r.content, r.headers["Content-Range"]) == (206, part, f"bytes {first}-{last}/{len(body)}")
    r = requests.get(url, headers={"Range": f"bytes={len(body)}-"}, timeout=10)
    assert (r.status_code, r.headers["Content-Range"]) == (416, f"bytes */{len(body)}")
    assert requests.get(f"{server.url}/zips/nope.zip", timeout=10).status_code == 404
    assert requests.get(f"{server.url}/zips/", timeout=10).status_code == 404  # no folder listings
    assert [(q.range, q.status) for q in server.requests] == [
        (None, 200), ("bytes=100-", 206), ("bytes=10-19", 206), ("bytes=-5", 206), (f"bytes={len(body)}-", 416),
        (None, 404), (None, 404)]


def test_serve_command_line(built, no_proxy):
    out, written = built
    proc = subprocess.Popen([sys.executable, "-m", "scripts.rehearsal.serve", str(out), "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        base = re.search(r"at (http://\S+?)/? ", line)[1]  # type: ignore[index]
        got = requests.get(f"{base}/mpii/annot/gt_valid.mat", timeout=10)
        assert got.status_code == 200 and got.content == written["gt_valid.mat"].read_bytes()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ----------------------------------------------------------------------------- the data stage, end to end
def test_data_stage_downloads_and_installs_both_datasets(built, no_proxy, tmp_path, monkeypatch):
    out, written = built
    work = tmp_path / "project"
    work.mkdir()
    copy_project(work)
    env = {**os.environ, "PYTHONPATH": str(work), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    with srv.serve(out, port=0) as httpd:
        port = httpd.server_address[1]
        text = (work / "params.yaml").read_text()
        (work / "params.yaml").write_text(text.replace(f"{srv.HOST}:{srv.PORT}/", f"{srv.HOST}:{port}/"))
        for dataset in ("coco", "mpii"):
            run = subprocess.run([sys.executable, "-m", "pipeline", "--profile", PROFILE, "--quiet", "data",
                                  "--dataset", dataset], cwd=work, env=env, capture_output=True, text=True,
                                 timeout=120)
            assert run.returncode == 0, run.stderr[-3000:]
            assert f"data/{PROFILE}/{dataset}.manifest.json" in run.stdout
        served = sorted(f"/{url_path(e['url'])}" for _, e in _entries(load_params(work / "params.yaml", PROFILE)))
        assert sorted(q.path for q in httpd.requests) == served and all(q.status == 200 for q in httpd.requests)

        data = work / "data" / PROFILE
        for dataset in ("coco", "mpii"):
            manifest = io.read_json(data / f"{dataset}.manifest.json")
            assert manifest["source"] == "download" and set(manifest["files"]) == set(REQUIRED[dataset])
            assert all(r["origin"] == "download" for r in manifest["summary"]["archives"].values())
        coco, mpii = data / "coco", data / "mpii"
        assert sorted(p.name for p in coco.iterdir()) == [".fetched", "annotations", "images",
                                                          "person_detection_results"]
        assert sorted(p.name for p in (coco / "annotations").iterdir()) == [
            "image_info_test-dev2017.json", "person_keypoints_train2017.json", "person_keypoints_val2017.json"]
        assert not list(data.rglob(f"*{TESTDEV_GT}*"))
        for split, n in (("train2017", COCO_SIZES["train_images"]), ("val2017", COCO_SIZES["val_images"]),
                         ("test2017", COCO_SIZES["testdev_images"] + COCO_SIZES["testchallenge_images"])):
            images = sorted((coco / "images" / split).iterdir())
            assert len(images) == n
            assert images[0].read_bytes() == _read_member(written[f"{split}.zip"], f"{split}/{images[0].name}")
        for name in ("COCO_val2017_detections_AP_H_56_person.json", "COCO_test-dev2017_detections_AP_H_609_person.json"):
            assert (coco / "person_detection_results" / name).read_bytes() == written[name].read_bytes()
        assert len(list((mpii / "images").iterdir())) == MPII_SIZES["train_images"] + MPII_SIZES["val_images"]
        for name in ("train.json", "valid.json", "gt_valid.mat"):
            assert (mpii / "annot" / name).read_bytes() == written[name].read_bytes()

        # a rerun is instant and offline: the markers say every entry is in place
        httpd.requests.clear()
        monkeypatch.chdir(work)
        params = load_params(work / "params.yaml", PROFILE)
        for dataset in ("coco", "mpii"):
            prepare_dataset(params, PROFILE, dataset, progress=False)
        assert httpd.requests == []


# ----------------------------------------------------------------------------- download-path defects
def test_complete_part_file_of_unknown_size_is_not_fetched_again(server, built, tmp_path):
    """A run stopped between the last byte and the rename left a complete ``.part`` of an entry whose
    size is not in params (the rehearsal's: all ``size: null``; the paper's MPII tarball): the server
    answers its resume request with 416 and the file's size, which is the ``.part``'s."""
    out, written = built
    body = written["val2017.zip"].read_bytes()
    (tmp_path / "val2017.zip.part").write_bytes(body)
    got = dl.fetch(dl.Source("val2017.zip", f"{server.url}/zips/val2017.zip"), tmp_path, progress=False)
    assert got.read_bytes() == body and not (tmp_path / "val2017.zip.part").exists()
    assert [(q.range, q.status) for q in server.requests] == [(f"bytes={len(body)}-", 416)]


@pytest.mark.parametrize("part", [0, 3], ids=["fresh", "resumed"])
def test_archive_labelled_gzip_encoded_lands_as_sent(part, built, no_proxy, tmp_path):
    """An Apache with ``AddEncoding x-gzip .gz`` labels the MPII tarball ``Content-Encoding: gzip``; the
    bytes are the archive's own and must not be decompressed on the way (nor the resumed rest)."""
    out, written = built
    body = written["mpii_human_pose_v1.tar.gz"].read_bytes()
    if part:
        (tmp_path / "mpii_human_pose_v1.tar.gz.part").write_bytes(body[: len(body) // part])
    with srv.serve(out, port=0, gzip_encoding=True) as httpd:
        got = dl.fetch(dl.Source("mpii_human_pose_v1.tar.gz", f"{httpd.url}/mpii/mpii_human_pose_v1.tar.gz"),
                       tmp_path, progress=False)
        assert got.read_bytes() == body
        assert [q.status for q in httpd.requests] == [206 if part else 200]


@pytest.mark.parametrize("when", ["between-members", "before-marker"])
def test_stage_killed_while_placing_is_finished_by_the_next_run(when, server, tmp_path, monkeypatch):
    """SIGTERM (a time limit) after an entry's first target went into place: the next run installs the
    entry again from the cache, as its own (not refusing its own files, nor taking them for the user's)."""
    params = _rehearsal_params(tmp_path, server.server_address[1])
    monkeypatch.chdir(tmp_path)
    target = "annotations_trainval2017.zip"
    move, mark = acquire._move_into_place, acquire._write_marker
    moved: list[Path] = []

    def move_then_die(src: Path, dest: Path, owned: bool) -> None:
        ours = f".{target}.staging" in src.parts
        if ours and moved:
            raise Terminated("SIGTERM")  # the second member of the archive
        move(src, dest, owned)
        if ours:
            moved.append(dest)

    def die_before_marker(root: Path, e: acquire.Entry, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if e.name == target:
            raise Terminated("SIGTERM")
        return mark(root, e, *args, **kwargs)

    with monkeypatch.context() as m:
        if when == "between-members":
            m.setattr(acquire, "_move_into_place", move_then_die)
        else:
            m.setattr(acquire, "_write_marker", die_before_marker)
        with pytest.raises(Terminated):
            prepare_dataset(params, PROFILE, "coco", progress=False)
    root = tmp_path / "data" / PROFILE / "coco"
    assert (root / "annotations/person_keypoints_train2017.json").is_file()  # placed before the kill
    server.requests.clear()

    manifest = io.read_json(prepare_dataset(params, PROFILE, "coco", progress=False))
    assert manifest["summary"]["archives"][target]["origin"] == "download"
    assert not [q for q in server.requests if q.path.endswith(target)]  # from the cache
    assert (root / "annotations/person_keypoints_val2017.json").is_file()
    assert io.read_json(root / ".fetched" / f"{target}.json")["origin"] == "download"
