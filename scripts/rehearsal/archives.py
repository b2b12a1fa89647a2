"""The rehearsal's dataset downloads: a tiny synthetic COCO and MPII packed as the real servers serve them.

The ``rehearsal`` profile is the paper profile at toy sizes, and its data stage downloads the paper's
entries (``profiles.paper.data.archives``: names, ``extract`` member maps, ``place``) from a local
server (``profiles.rehearsal.data.archives``: every ``url`` at http://127.0.0.1:8641/...). This module
writes what that server serves: the project's synthetic generator (:mod:`pipeline.data.synthetic`) makes
a tiny COCO and MPII in HRNet's layout, and each file of the real downloads is rebuilt from it, under
the path of its rehearsal URL, with the real download's member names and extra members:

* ``zips/{train,val,test}2017.zip``: ``<split>/`` and ``<split>/<12-digit id>.jpg`` (stored, as COCO's);
  test2017 holds the test-dev images and a few more (test-challenge), as the real one does;
* ``annotations/annotations_trainval2017.zip``: ``annotations/person_keypoints_{train,val}2017.json``
  beside other annotation files the data stage must leave out (instances, captions);
* ``annotations/image_info_test2017.zip``: ``annotations/image_info_test-dev2017.json`` (the test-dev
  image list: info, licenses, images, categories; no annotations) and ``image_info_test2017.json``;
* ``person_detection_results/COCO_{val2017,test-dev2017}_detections_*.json``: HRNet's detections;
* ``mpii/mpii_human_pose_v1.tar.gz`` (``images/*.jpg``) and HRNet's converted ``mpii/annot/train.json``,
  ``valid.json``, ``gt_valid.mat``.

Test-dev's ground truth (the generator's ``person_keypoints_test-dev2017.json``, used by the synthetic
profiles' scoring) is in none of them: as with the real data, only COCO's server could score test-dev.

Every byte is a function of the seed (fixed archive timestamps and owners, gzip without a time, a MAT
header without the creation time), so the sha256 of each file can be pinned.

    python -m scripts.rehearsal.archives OUT_DIR [--seed 0]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]
PROFILE = "rehearsal"

# Toy sizes (the rehearsal's data: seconds to generate on one core).
IMAGE_SIZE = (160, 120)        # width, height
MAX_PEOPLE = 2
DIFFICULTY = 0.5               # as the smoke profile
COCO_SIZES = {"train_images": 4, "val_images": 3, "testdev_images": 3, "testchallenge_images": 1}
MPII_SIZES = {"train_images": 4, "val_images": 3}

# The real downloads' contents, by download name: an archive maps each of its members (a file, or a
# folder and everything below it) to the generated path that fills it; a plain file names its path.
# Paths under ``_real/`` are files of the real archives that the generator does not write.
DET_VAL = "COCO_val2017_detections_AP_H_56_person.json"
DET_TESTDEV = "COCO_test-dev2017_detections_AP_H_609_person.json"
CONTENTS: dict[str, dict[str, dict[str, str] | str]] = {
    "coco": {
        "train2017.zip": {"train2017": "images/train2017"},
        "val2017.zip": {"val2017": "images/val2017"},
        "test2017.zip": {"test2017": "images/test2017"},
        "annotations_trainval2017.zip": {
            "annotations/instances_val2017.json": "_real/instances_val2017.json",
            "annotations/captions_val2017.json": "_real/captions_val2017.json",
            "annotations/person_keypoints_train2017.json": "annotations/person_keypoints_train2017.json",
            "annotations/person_keypoints_val2017.json": "annotations/person_keypoints_val2017.json",
        },
        "image_info_test2017.zip": {
            "annotations/image_info_test2017.json": "_real/image_info_test2017.json",
            "annotations/image_info_test-dev2017.json": "annotations/image_info_test-dev2017.json",
        },
        DET_VAL: f"person_detection_results/{DET_VAL}",
        DET_TESTDEV: f"person_detection_results/{DET_TESTDEV}",
    },
    "mpii": {
        "mpii_human_pose_v1.tar.gz": {"images": "images"},
        "train.json": "annot/train.json",
        "valid.json": "annot/valid.json",
        "gt_valid.mat": "annot/gt_valid.mat",
    },
}
# Test-dev's ground truth as the generator writes it: never packed.
TESTDEV_GROUND_TRUTH = "annotations/person_keypoints_test-dev2017.json"

_EPOCH = (2017, 9, 1, 0, 0, 0)                 # zip member times
_EPOCH_S = 1504224000                          # the same, seconds (tar member times)
_MAT_DESCRIPTION = b"MATLAB 5.0 MAT-file Platform: posix, Created on: Fri Sep  1 00:00:00 2017"


# ----------------------------------------------------------------------------- params
def entries(params: dict[str, Any] | None = None, profile: str = PROFILE) -> dict[str, list[dict[str, Any]]]:
    """``profiles.<profile>.data.archives`` (``extends`` expanded) of params.yaml or of ``params``."""
    if params is None:
        from pipeline.config import load_params

        params = load_params(ROOT / "params.yaml", profile)
    return params["profiles"][profile]["data"]["archives"]


def url_path(url: str) -> str:
    """Where a download's URL puts it under the served root (``zips/val2017.zip``)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.path.strip("/"):
        raise ValueError(f"{url!r}: not an http(s) URL of a file")
    return parsed.path.lstrip("/")


# ----------------------------------------------------------------------------- generate
def _dump(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n")  # as the generator writes JSON


def _generate_coco(root: Path, seed: int, progress: bool) -> None:
    """The synthetic COCO, then made into the real downloads' contents (see :data:`CONTENTS`)."""
    from pipeline.data.synthetic import generate_coco

    n_dev = COCO_SIZES["testdev_images"]
    generate_coco(root, seed=seed, image_size=IMAGE_SIZE, train_images=COCO_SIZES["train_images"],
                  val_images=COCO_SIZES["val_images"], test_images=n_dev + COCO_SIZES["testchallenge_images"],
                  max_people=MAX_PEOPLE, difficulty=DIFFICULTY, progress=progress)
    ann = root / "annotations"
    (root / TESTDEV_GROUND_TRUTH).unlink()  # test-dev has no public ground truth

    # test2017 = test-dev + test-challenge: the image lists and the test-dev detections say which is which
    info = json.loads((ann / "image_info_test-dev2017.json").read_text())
    if set(info) != {"info", "licenses", "images", "categories"}:  # the real test-dev image list's keys
        raise RuntimeError(f"image_info_test-dev2017.json: unexpected keys {sorted(info)}")
    every = sorted(info["images"], key=lambda im: im["id"])
    dev = every[:n_dev]
    dev_ids = {im["id"] for im in dev}
    _dump(ann / "image_info_test-dev2017.json", {**info, "images": dev})
    _dump(root / "_real/image_info_test2017.json",
          {**info, "info": {**info["info"], "description": info["info"]["description"].replace(
              "test-dev2017", "test2017")}, "images": every})
    det = root / "person_detection_results" / DET_TESTDEV
    _dump(det, [d for d in json.loads(det.read_text()) if d["image_id"] in dev_ids])

    # other annotation files of annotations_trainval2017.zip, which the data stage must leave out
    val = json.loads((ann / "person_keypoints_val2017.json").read_text())
    instances = [{k: a[k] for k in ("id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation")}
                 for a in val["annotations"]]
    categories = [{k: c[k] for k in ("id", "name", "supercategory")} for c in val["categories"]]
    _dump(root / "_real/instances_val2017.json", {"info": val["info"], "licenses": val["licenses"],
                                                  "images": val["images"], "annotations": instances,
                                                  "categories": categories})
    captions = [{"image_id": im["id"], "id": k + 1, "caption": "A synthetic figure in a cluttered scene."}
                for k, im in enumerate(val["images"])]
    _dump(root / "_real/captions_val2017.json", {"info": val["info"], "licenses": val["licenses"],
                                                 "images": val["images"], "annotations": captions})


def _fixed_mat_header(path: Path) -> None:
    """scipy writes the creation time into a MAT file's 116-byte description: write a fixed one."""
    data = bytearray(path.read_bytes())
    if data[:10] != b"MATLAB 5.0":
        raise RuntimeError(f"{path}: not a MAT 5 file")
    data[:116] = _MAT_DESCRIPTION.ljust(116, b"\0")  # scipy pads with NULs
    path.write_bytes(bytes(data))


def _generate_mpii(root: Path, seed: int, progress: bool) -> None:
    from pipeline.data.synthetic import generate_mpii

    generate_mpii(root, seed=seed, image_size=IMAGE_SIZE, max_people=MAX_PEOPLE, difficulty=DIFFICULTY,
                  progress=progress, **MPII_SIZES)
    _fixed_mat_header(root / "annot/gt_valid.mat")


# ----------------------------------------------------------------------------- pack
def _files(src_root: Path, members: dict[str, str]) -> list[tuple[str, Path]]:
    """(member name, file) of every member, folders first and then their files, sorted; a folder
    member also gets its own entry (``val2017/``), as in the real archives."""
    out: list[tuple[str, Path]] = []
    for member, rel in members.items():
        src = src_root / rel
        if src.is_dir():
            out.append((member + "/", src))
            out += [(f"{member}/{p.relative_to(src).as_posix()}", p) for p in sorted(src.rglob("*")) if p.is_file()]
        elif src.is_file():
            out.append((member, src))
        else:
            raise FileNotFoundError(f"{src}: not generated (member {member})")
    return out


def _write_zip(path: Path, src_root: Path, members: dict[str, str]) -> None:
    images = all(rel.startswith("images/") for rel in members.values())
    method = zipfile.ZIP_STORED if images else zipfile.ZIP_DEFLATED  # COCO's image zips are stored
    with zipfile.ZipFile(path, "w") as zf:
        for name, src in _files(src_root, members):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            if name.endswith("/"):
                info.external_attr = (0o40755 << 16) | 0x10
                zf.writestr(info, b"")
            else:
                info.external_attr = 0o644 << 16
                info.compress_type = method
                zf.writestr(info, src.read_bytes())


def _write_tar_gz(path: Path, src_root: Path, members: dict[str, str]) -> None:
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, src in _files(src_root, members):
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime, info.uid, info.gid, info.uname, info.gname = _EPOCH_S, 0, 0, "", ""
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.mode, info.size = 0o644, src.stat().st_size
                with src.open("rb") as fh:
                    tf.addfile(info, fh)


def _pack(dest: Path, src_root: Path, content: dict[str, str] | str) -> None:
    """Write one download at ``dest`` (under a temporary name, then renamed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        if isinstance(content, str):
            tmp.write_bytes((src_root / content).read_bytes())
        elif dest.name.endswith(".zip"):
            _write_zip(tmp, src_root, content)
        elif dest.name.endswith((".tar.gz", ".tgz")):
            _write_tar_gz(tmp, src_root, content)
        else:
            raise ValueError(f"{dest.name}: no archive format for this name")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def build_archives(out_dir: Path, seed: int = 0, *, params: dict[str, Any] | None = None,
                   profile: str = PROFILE, progress: bool = False) -> dict[str, Path]:
    """Write every download of ``profiles.<profile>.data.archives`` under ``out_dir`` at its URL's path.

    Serving ``out_dir`` as the HTTP root (:func:`scripts.rehearsal.serve.serve`) then answers every
    rehearsal URL. Names and URLs come from params.yaml (or ``params``); contents from
    :data:`CONTENTS`. Returns ``{download name: written file}``. Deterministic for a given seed.
    """
    out_dir = Path(out_dir)
    specs = entries(params, profile)
    written: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="rehearsal-archives-") as tmp:
        for dataset, make in (("coco", _generate_coco), ("mpii", _generate_mpii)):
            if not specs.get(dataset):
                continue
            src_root = Path(tmp) / dataset
            make(src_root, seed, progress)
            for spec in specs[dataset]:
                name = spec["name"]
                if name not in CONTENTS[dataset]:
                    raise KeyError(f"profiles.{profile}.data.archives.{dataset}: no contents known for {name!r}")
                dest = out_dir / url_path(spec["url"])
                _pack(dest, src_root, CONTENTS[dataset][name])
                written[name] = dest
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m scripts.rehearsal.archives", description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path, help="the folder to serve (python -m scripts.rehearsal.serve OUT_DIR)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for name, path in build_archives(args.out_dir, args.seed, progress=True).items():
        print(f"{name}: {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
