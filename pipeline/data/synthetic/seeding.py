"""Random streams of the synthetic datasets, derived from the seed alone.

Why: each image has its own random stream derived from ``(seed, dataset, split, index)``, so a
split does not change when another split's size does."""
from __future__ import annotations

import numpy as np

_SPLIT_CODE = {"train2017": 0, "val2017": 1, "test2017": 2, "train": 0, "valid": 1}
_DATASET_CODE = {"coco": 0, "mpii": 1}


def image_rng(seed: int, dataset: str, split: str, index: int) -> np.random.Generator:
    """Independent stream per image, so splits do not depend on each other's sizes."""
    return np.random.default_rng(np.random.SeedSequence([seed, _DATASET_CODE[dataset], _SPLIT_CODE[split], index]))


def detections_rng(seed: int, split: str) -> np.random.Generator:
    """The stream of a COCO split's simulated detector, apart from every image's stream."""
    return np.random.default_rng(np.random.SeedSequence([seed, 0, _SPLIT_CODE[split], 10**6]))
