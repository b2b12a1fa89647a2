"""An image's header size is checked before decoding (pipeline.data.image_header, dataset.read_image):
against the annotation's width/height (COCO) and the pixel limit (every dataset).

The oversized images here are small files whose header declares a huge frame; the decoder is replaced
by a stub that records calls, so no test ever allocates the gigabytes such a header asks for.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.data import dataset as ds_module
from pipeline.data.coco import load_coco_people
from pipeline.data.dataset import TopDownDataset, read_image
from pipeline.data.image_header import MAX_IMAGE_PIXELS, header_size
from pipeline.data.skeleton import COCO
from pipeline.errors import PipelineError

SIZES = {1: (64, 48), 2: (80, 60)}  # image id -> (width, height)


def _jpeg(width: int, height: int, **params: int) -> bytes:
    rng = np.random.default_rng(width * height)
    flags = [v for kv in params.items() for v in (getattr(cv2, kv[0]), kv[1])]
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (height, width, 3), dtype=np.uint8), flags)
    assert ok
    return buf.tobytes()


def _declaring(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a JPEG or PNG) with the size in its header replaced; the pixels stay as they are."""
    buf = bytearray(data)
    if buf[:3] == b"\xff\xd8\xff":
        pos = 2
        while not (0xC0 <= buf[pos + 1] <= 0xCF and buf[pos + 1] not in (0xC4, 0xC8, 0xCC)):
            pos += 2 + int.from_bytes(buf[pos + 2:pos + 4], "big")
        buf[pos + 5:pos + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    else:  # PNG: IHDR's width and height (its CRC no longer matches: nothing may decode it)
        buf[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(buf)


@pytest.fixture
def no_decoding(monkeypatch):
    """cv2.imdecode replaced by a stub that records its calls and returns a small image."""
    calls: list[int] = []

    def stub(data, flags):
        calls.append(len(data))
        return np.zeros((48, 64, 3), dtype=np.uint8)

    monkeypatch.setattr(ds_module.cv2, "imdecode", stub)
    return calls


@pytest.fixture
def coco(tmp_path):
    """Two JPEGs of the sizes their annotation file gives, one person each."""
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    images, anns = [], []
    for iid, (w, h) in SIZES.items():
        name = f"{iid:012d}.jpg"
        (img_dir / name).write_bytes(_jpeg(w, h))
        images.append({"id": iid, "file_name": name, "width": w, "height": h})
        kps = [v for _ in range(17) for v in (w / 2, h / 2, 2)]
        anns.append({"id": 10 + iid, "image_id": iid, "category_id": 1, "iscrowd": 0, "area": 400.0,
                     "bbox": [4, 4, w - 8, h - 8], "num_keypoints": 17, "keypoints": kps})
    ann_file = tmp_path / "person_keypoints_val2017.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1}]}))
    return {"ann": ann_file, "dir": img_dir}


def _dataset(coco) -> TopDownDataset:
    recs = load_coco_people(coco["ann"], coco["dir"], aspect_ratio=0.75)
    return TopDownDataset(recs, joint_set=COCO, input_size=(48, 64), heatmap_size=(12, 16), codec="gaussian")


# ----------------------------------------------------------------------------- reading the header
@pytest.mark.parametrize("encode", [
    lambda: _jpeg(97, 31),
    lambda: _jpeg(97, 31, IMWRITE_JPEG_PROGRESSIVE=1),
    lambda: cv2.imencode(".jpg", np.zeros((31, 97), dtype=np.uint8))[1].tobytes(),  # greyscale
    lambda: cv2.imencode(".png", np.zeros((31, 97, 3), dtype=np.uint8))[1].tobytes(),
])
def test_the_header_gives_the_decoded_size(encode):
    data = np.frombuffer(encode(), dtype=np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert header_size(data) == (decoded.shape[1], decoded.shape[0]) == (97, 31)


def test_other_formats_have_no_header_size_here():
    assert header_size(np.frombuffer(cv2.imencode(".bmp", np.zeros((4, 4, 3), np.uint8))[1], np.uint8)) is None


def test_the_limit_covers_real_dataset_images_with_a_wide_margin():
    assert 1920 * 1080 * 20 < MAX_IMAGE_PIXELS < 30000 * 30000


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("kind", ["jpg", "png"])
def test_a_header_declaring_30000x30000_pixels_is_refused_without_decoding(tmp_path, no_decoding, kind):
    """MPII gives no image sizes: the pixel limit alone stops it (a 0.9 MB file that decodes to 2.7 GB)."""
    small = _jpeg(64, 48) if kind == "jpg" else cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))[1].tobytes()
    path = tmp_path / f"015601864.{kind}"
    path.write_bytes(_declaring(small, 30000, 30000))
    with pytest.raises(PipelineError) as info:
        read_image(str(path))
    assert info.value.where == str(path)
    assert "30000×30000 pixels (per its header)" in info.value.what
    assert "50-megapixel limit" in info.value.what and "not decoded" in info.value.what
    assert no_decoding == []


def test_an_image_of_another_size_than_its_annotation_is_refused(coco):
    path = coco["dir"] / "000000000001.jpg"
    path.write_bytes(_jpeg(640, 480))  # another picture under the annotated file name
    ds = _dataset(coco)
    ds[1]  # the other image is as annotated
    with pytest.raises(PipelineError) as info:
        ds[0]
    assert info.value.where == str(path)
    assert "640×480 pixels (per its header) but its annotation says 64×48" in info.value.what


def test_an_oversized_header_under_an_annotated_name_is_refused_without_decoding(coco, no_decoding):
    path = coco["dir"] / "000000000002.jpg"
    path.write_bytes(_declaring(path.read_bytes(), 30000, 30000))
    with pytest.raises(PipelineError, match="30000×30000 pixels .* annotation says 80×60"):
        _dataset(coco)[1]
    assert no_decoding == []


def test_detection_boxes_carry_the_annotated_size_too(coco, tmp_path):
    """The evaluation's crops come from detection records: their images are checked the same way."""
    det = tmp_path / "dets.json"
    det.write_text(json.dumps([{"image_id": 2, "category_id": 1, "bbox": [4, 4, 40, 40], "score": 0.9}]))
    (coco["dir"] / "000000000002.jpg").write_bytes(_jpeg(60, 80))  # rotated: width and height swapped
    recs = load_coco_people(coco["ann"], coco["dir"], aspect_ratio=0.75, use_gt_boxes=False, det_file=det)
    ds = TopDownDataset(recs, joint_set=COCO, input_size=(48, 64), heatmap_size=(12, 16), codec="gaussian")
    with pytest.raises(PipelineError, match="60×80 pixels .* annotation says 80×60"):
        ds[0]


def test_a_format_without_a_header_reader_is_checked_once_decoded(tmp_path):
    path = tmp_path / "000000000001.bmp"
    cv2.imwrite(str(path), np.zeros((48, 65, 3), dtype=np.uint8))
    with pytest.raises(PipelineError, match=r"65×48 pixels \(decoded\) but its annotation says 64×48"):
        read_image(str(path), expected_size=(64, 48))
    assert read_image(str(path), expected_size=(65, 48)).shape == (48, 65, 3)


def test_a_worker_process_reports_the_image_in_one_line(coco):
    path = coco["dir"] / "000000000001.jpg"
    path.write_bytes(_jpeg(640, 480))
    loader = torch.utils.data.DataLoader(_dataset(coco), batch_size=2, num_workers=1)
    with pytest.raises(PipelineError) as info:
        next(iter(loader))
    assert info.value.where == str(path)
    assert info.value.what.startswith("the image is 640×480 pixels (per its header) but its annotation says 64×48")
