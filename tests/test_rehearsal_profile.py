"""The rehearsal profile is the paper profile at toy sizes: every resolved run, and every setting of the
profile itself, equals the paper's except the keys of a short allow-list, each commented with why."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from pipeline.config import load_params, resolve_run, run_names, validate_params
from pipeline.errors import PipelineError

# Keys (dotted, as flattened below) in which a rehearsal run may differ from its paper run.
RUN_ALLOWED = {
    "profile",               # the profile's name (results/<profile>/, the MLflow experiment)
    "device",                # CPU instead of the node's GPUs
    "data.root",             # data/<profile>/<dataset>
    "data.input_size",       # toy input: the paper's aspect ratios, sides divisible by HRNet's stride 32
    "data.heatmap_size",     # input / 4, as in the paper
    "train.epochs",          # a handful of steps ...
    "train.lr_steps",        # ... with the schedule's shape: two lr drops, the last epoch after the second
    "train.batch_size",      # per process
    "train.gpus",            # torchrun processes: 2 on CPU (Gloo) instead of 4 or 8 GPUs (NCCL)
    "train.warmup_iters",    # HRFormer's warm-up ends inside the first epoch, as 500 of its ~2,300 steps do
    "train.workers",         # data-loading processes: one, still a separate worker process
    "train.threads",         # CPU threads per process
    "model.weights",         # HRFormer-B's official checkpoint: a local file in its layout (random values)
}
# Keys in which the rehearsal profile's own settings (beyond its runs) may differ.
PROFILE_ALLOWED = {
    "device",
    "data.cache",                                   # data/rehearsal/_archives
    "data.archives.*.*.url",                        # (dataset, entry): the rehearsal's local server
    "data.archives.*.*.size",                       # toy archives: sizes not pinned
}


def _flat(d: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Nested mappings as ``{("a", "b", "c"): value}``; lists of named entries keyed by ``name``
    (entry names hold dots, so keys are tuples)."""
    if isinstance(d, dict):
        out: dict[tuple[str, ...], Any] = {}
        for k, v in d.items():
            out.update(_flat(v, (*prefix, str(k))))
        return out
    if isinstance(d, list) and d and all(isinstance(e, dict) and "name" in e for e in d):
        out = {}
        for e in d:
            out.update(_flat({k: v for k, v in e.items() if k != "name"}, (*prefix, e["name"])))
        return out
    return {prefix: d}


def _differences(a: dict, b: dict) -> set[tuple[str, ...]]:
    fa, fb = _flat(a), _flat(b)
    return {k for k in fa.keys() | fb.keys() if fa.get(k, KeyError) != fb.get(k, KeyError)}


def _allowed(key: tuple[str, ...], allowed: set[str]) -> bool:
    """``key`` matches a dotted pattern of ``allowed``, ``*`` standing for any one element."""
    return any(len(pp) == len(key) and all(p in ("*", k) for p, k in zip(pp, key))
               for pp in (pattern.split(".") for pattern in allowed))


def _unexpected(a: dict, b: dict, allowed: set[str]) -> list[str]:
    return sorted(".".join(k) for k in _differences(a, b) if not _allowed(k, allowed))


@pytest.fixture(scope="module")
def params():
    return load_params("params.yaml", "rehearsal")


@pytest.mark.parametrize("study", [False, True])
def test_every_run_differs_from_the_paper_only_in_size_keys(params, study):
    names = run_names(params, study=study)
    assert len(run_names(params)) == 19 and names  # 17 paper runs + the 2 UDP runs
    for run in names:
        paper = resolve_run(params, run, "paper")
        rehearsal = resolve_run(params, run, "rehearsal")
        extra = _unexpected(paper, rehearsal, RUN_ALLOWED)
        assert not extra, f"{run}: rehearsal differs from paper in {extra}"


def test_the_profile_differs_from_the_paper_only_in_allowed_keys(params):
    paper, rehearsal = params["profiles"]["paper"], params["profiles"]["rehearsal"]
    other = {k: v for k, v in rehearsal.items() if k not in ("archs", "datasets", "train")}
    base = {k: v for k, v in paper.items() if k not in ("archs", "datasets", "train")}
    extra = _unexpected(base, other, PROFILE_ALLOWED)
    assert not extra, f"rehearsal profile differs from paper in {extra}"
    # the same architectures: the paper's full-size backbones, pretrained, no demo weights
    for name, arch in paper["archs"].items():
        ours = rehearsal["archs"][name]["model"]
        assert {k: v for k, v in ours.items() if k != "weights"} == \
               {k: v for k, v in arch["model"].items() if k != "weights"}


def test_the_checker_catches_a_changed_setting(params):
    """The allow-list is short: a changed loss setting, sigma or optimizer is caught."""
    bad = copy.deepcopy(params)
    bad["profiles"]["rehearsal"]["datasets"]["coco"]["sigma"] = 2.0
    bad["profiles"]["rehearsal"]["hdm"]["iterations"] = 10
    paper = resolve_run(bad, "coco_hrnet_w32_hdm", "paper")
    rehearsal = resolve_run(bad, "coco_hrnet_w32_hdm", "rehearsal")
    assert _unexpected(paper, rehearsal, RUN_ALLOWED) == ["data.sigma", "hdm.iterations"]
    assert _unexpected({"data": {"archives": {"coco": [{"name": "a.zip", "sha256": "x", "url": "u"}]}}},
                       {"data": {"archives": {"coco": [{"name": "a.zip", "sha256": "y", "url": "v"}]}}},
                       PROFILE_ALLOWED) == ["data.archives.coco.a.zip.sha256"]


def test_extends_merges_and_refuses_unknown_entries(params):
    raw = {"profile": "b", "profiles": {"a": {"x": {"y": 1, "z": [1]}, "l": [{"name": "n", "u": 1, "v": 2}]},
                                        "b": {"extends": "a", "x": {"z": [2]}, "l": [{"name": "n", "u": 3}]}}}
    from pipeline.config import expand_profiles

    expand_profiles(raw)
    assert raw["profiles"]["b"] == {"x": {"y": 1, "z": [2]}, "l": [{"name": "n", "u": 3, "v": 2}]}
    bad = {"profiles": {"a": {"l": [{"name": "n"}]}, "b": {"extends": "a", "l": [{"name": "m"}]}}}
    with pytest.raises(PipelineError, match="profiles.b.l.*'m' is not an entry"):
        expand_profiles(bad)
    with pytest.raises(PipelineError, match="cycle"):
        expand_profiles({"profiles": {"a": {"extends": "b"}, "b": {"extends": "a"}}})
    with pytest.raises(PipelineError, match="profiles.b.extends.*'c' is not a key"):
        expand_profiles({"profiles": {"b": {"extends": "c"}}})
    validate_params(copy.deepcopy(params))  # expanded params validate again unchanged
