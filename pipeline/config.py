"""params.yaml: loading, schema validation, profile resolution and the output paths.

``params.yaml`` is the single source of configuration. The CLI (which every DVC stage runs) reads it with
:func:`load_params`, the Snakefile with :func:`read_yaml` and :func:`validate_params` on Snakemake's
config: the same schema check, one-line errors naming the key. Both resolve runs with :func:`resolve_run`
(profile defaults ← architecture overrides ← run overrides), and all output locations come from
:class:`Paths`, so the two front-ends cannot drift apart.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import PipelineError, shorten
from .paths import Paths
from .pretrain.spec import check_pins

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "workflow" / "schemas" / "params.schema.yaml"
DEFAULT_PARAMS = "params.yaml"
# Values a params.yaml may hold once every alias (*name) is counted as a copy of the value it names. The
# project's own file holds a few thousand; aliases of lists of aliases multiply ("billion laughs"): a few
# lines reach billions, which validation or an error message would then walk through or print.
MAX_YAML_VALUES = 100_000
# Characters of a config value an error message echoes (the rest is cut, see errors.shorten)
MAX_ECHOED_VALUE = 200


class YamlTooLarge(yaml.YAMLError):
    """A YAML document whose aliases expand it beyond :data:`MAX_YAML_VALUES`, or refer to themselves."""


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def expanded_yaml_values(root: yaml.Node, limit: int = MAX_YAML_VALUES) -> int:
    """How many values (scalars, lists, mappings) the document ``root`` holds once each alias is
    replaced by a copy of the value it names; :class:`YamlTooLarge` past ``limit`` or for an alias inside
    the value it names.

    Counted on the composed node graph, where an alias is one shared node, so the count costs one visit
    per distinct node however large the expansion (a loop, not recursion: deep nesting is fine).
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # visited, their children still being counted
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_counted = stack.pop()
        key = id(node)
        if children_counted:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _yaml_children(node))
            if sizes[key] > limit:
                raise YamlTooLarge(f"its aliases (*name) expand it to more than {limit} values (aliases of "
                                   "lists of aliases multiply): write the values out, or use fewer aliases")
        elif key in open_nodes:
            raise YamlTooLarge("an alias (*name) refers to a value that contains it: a YAML value cannot "
                               "contain itself")
        elif key not in sizes:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _yaml_children(node))
    return sizes[id(root)]


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that counts a document's expanded values before building any of them."""

    def construct_document(self, node: yaml.Node) -> Any:
        expanded_yaml_values(node)
        return super().construct_document(node)


def read_yaml(path: Path) -> Any:
    """The YAML file ``path`` as Python data (safe types only); one-line errors naming the file."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(str(path), f"cannot read the file ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except YamlTooLarge as exc:
        raise PipelineError(str(path), f"refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise PipelineError(str(path), f"not valid YAML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise PipelineError(str(path), "refused: its values are nested too deeply to read") from None


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def _echoed(value: Any) -> str:
    """``repr(value)`` as an error message shows it: cut to :data:`MAX_ECHOED_VALUE` characters."""
    return shorten(repr(value), MAX_ECHOED_VALUE)


def _describe(error: jsonschema.ValidationError) -> tuple[str, str]:
    """Turn a jsonschema error into (key, message), naming an unknown key itself.

    jsonschema's messages quote the offending value whole; here it is cut (:func:`_echoed`), so a
    mistyped list of thousands of entries gives a readable line.
    """
    where = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        name = shorten(str(extra[0]), MAX_ECHOED_VALUE)
        key = f"{where}.{name}" if where != "(top level)" else name
        return key, f"unknown key (allowed: {', '.join(sorted(allowed))})"
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        key = f"{where}.{missing[0]}" if where != "(top level)" else missing[0]
        return key, "required key is missing"
    if error.validator == "pattern" and isinstance(error.schema, dict) and error.schema.get("description"):
        return where, f"{_echoed(error.instance)} is not valid: {error.schema['description']}"  # not the raw regex
    full = repr(error.instance)
    if len(full) <= MAX_ECHOED_VALUE:
        return where, error.message
    return where, error.message.replace(full, _echoed(error.instance))


def validate_params(params: Any, source: str = DEFAULT_PARAMS) -> dict[str, Any]:
    """Validate a params mapping against the schema; raise a one-line :class:`PipelineError`.

    Profiles that ``extends`` another are expanded first, in place (Snakemake's ``config`` is the
    mapping passed here, so its rules see the complete profile too)."""
    expand_profiles(params, source)
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: (len(list(e.absolute_path)), str(e)))
    if errors:
        # The deepest error is usually the most specific one (allOf wraps its sub-errors).
        best = jsonschema.exceptions.best_match(errors)
        key, msg = _describe(best)
        raise PipelineError(f"{source}: {key}", msg)
    profile = params["profile"]
    if profile not in params["profiles"]:
        raise PipelineError(f"{source}: profile",
                            f"{profile!r} is not a key of profiles ({', '.join(params['profiles'])})")
    _check_unique_run_names(params, source)
    for name, run in run_specs(params, verdict=True).items():
        key = run_key(params, name)
        if run.get("codec") is not None and run["loss"] != "mse":
            raise PipelineError(f"{source}: {key}.codec",
                                f"{run['codec']!r} needs loss: mse (it replaces the Gaussian targets of an MSE run; "
                                f"{run['loss']} runs have their own)")
        _check_alpha(run, f"{source}: {key}.alpha")
        if "init_from" in run:
            _check_init_from(params, name, f"{source}: {key}.init_from")
        for pname, prof in params["profiles"].items():
            if run.get("split") == "tune" and "tune" not in prof:
                raise PipelineError(f"{source}: profiles.{pname}.tune",
                                    f"required by {key} (split: tune): the tune split's fraction and seed")
            if run["arch"] not in prof["archs"]:
                raise PipelineError(f"{source}: {key}.arch",
                                    f"{run['arch']!r} is not defined in profiles.{pname}.archs")
            if "heatmap_stride" in run:
                _check_heatmap_stride(run, prof, pname, f"{source}: {key}.heatmap_stride")
    for pname, prof in params["profiles"].items():
        if prof["data"]["source"] == "synthetic" and "synthetic" not in prof["data"]:
            raise PipelineError(f"{source}: profiles.{pname}.data.synthetic",
                                "required when data.source is 'synthetic'")
        if prof["data"]["source"] == "download":
            _check_archives(prof["data"], f"profiles.{pname}.data", source)
        _check_archs(prof, f"profiles.{pname}", source)
    check_pins(params, source)
    return params


def _merge_named(base: list[Any], over: list[Any], where: str) -> list[Any]:
    """A list of named entries (``data.archives.<dataset>``) under ``extends``: each entry of ``over``
    changes the base entry of the same ``name`` (so a profile states only what it changes); an
    unknown name is an error rather than a silently added entry."""
    out = copy.deepcopy(base)
    index = {e.get("name"): i for i, e in enumerate(out) if isinstance(e, dict)}
    for entry in over:
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in index:
            raise PipelineError(where, f"{name!r} is not an entry of the extended profile "
                                       f"(entries: {', '.join(map(str, index))})")
        out[index[name]] = _merge_extension(out[index[name]], entry, where)
    return out


def _merge_extension(base: Any, over: Any, where: str) -> Any:
    """``over`` on ``base`` as ``extends`` reads it: mappings merge key by key, lists of named
    mappings merge by name, anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = _merge_extension(out[k], v, f"{where}.{k}") if k in out else copy.deepcopy(v)
        return out
    named = isinstance(base, list) and isinstance(over, list) and all(
        isinstance(e, dict) and "name" in e for e in [*base, *over])
    if named and base:
        return _merge_named(base, over, where)
    return copy.deepcopy(over)


def expand_profiles(params: Any, source: str = DEFAULT_PARAMS) -> None:
    """Replace every profile holding ``extends: <other profile>`` by that profile with its own keys
    merged on top (in place). A profile that differs from another only in a few keys (the paper
    rehearsal: the paper profile at toy sizes) states just those keys, and every other setting is
    the other profile's by construction. Chains are followed; a cycle or unknown name is an error."""
    profiles = params.get("profiles") if isinstance(params, dict) else None
    if not isinstance(profiles, dict):
        return  # the schema names what is wrong

    def expanded(name: str, seen: tuple[str, ...]) -> dict[str, Any]:
        prof = profiles[name]
        if not isinstance(prof, dict) or "extends" not in prof:
            return prof
        base = prof["extends"]
        where = f"{source}: profiles.{name}.extends"
        if base not in profiles:
            raise PipelineError(where, f"{base!r} is not a key of profiles ({', '.join(profiles)})")
        if base in seen:
            raise PipelineError(where, f"profiles extend each other in a cycle ({' -> '.join([*seen, base])})")
        over = {k: v for k, v in prof.items() if k != "extends"}
        profiles[name] = _merge_extension(expanded(base, (*seen, base)), over, f"{source}: profiles.{name}")
        return profiles[name]

    for name in list(profiles):
        expanded(name, (name,))


# Heatmap strides the built-in model families can output (``model.output_stride``, set by a run's
# ``heatmap_stride``): a torch-free copy of their registered ``output_strides`` (pipeline/models), so
# that params.yaml is checked before any job starts without importing torch (tests/test_registry.py
# keeps the two equal). A family not listed here is checked when its model is built.
OUTPUT_STRIDES: dict[str, tuple[int, ...]] = {"simplebaseline": (4,), "hrnet": (1, 2, 4, 8), "hrformer": (4,)}


def _check_alpha(run: dict[str, Any], where: str) -> None:
    """``alpha`` weighs the HDM term of ``loss: mse_hdm``: required there, meaningless elsewhere."""
    if run["loss"] == "mse_hdm" and "alpha" not in run:
        raise PipelineError(where, "required for loss mse_hdm (the weight of the HDM term: MSE + alpha × HDM)")
    if run["loss"] != "mse_hdm" and "alpha" in run:
        raise PipelineError(where, f"only for loss mse_hdm (the weight of its HDM term); this run's loss is {run['loss']}")


def _check_init_from(params: dict[str, Any], name: str, where: str) -> None:
    """A run's ``init_from`` names another run of params.yaml with the same dataset and architecture
    (its trained weights must fit this run's model), and a chain of them never returns to a run."""
    specs = run_specs(params, verdict=True)
    run, seen = specs[name], [name]
    other = run["init_from"]
    if other not in specs:
        raise PipelineError(where, f"{other!r} is not a run of params.yaml (runs, study.runs or verdict.runs)")
    # a target trains its own run set and the earlier ones only (the main target and DVC: main runs)
    rank = {"runs": 0, "study": 1, "verdict": 2}
    mine, theirs = run_key(params, name).split(".")[0], run_key(params, other).split(".")[0]
    if rank[theirs] > rank[mine]:
        raise PipelineError(where, f"{other!r} is a {theirs}-only run ({theirs}.runs): a run of {mine} starts from "
                                   f"a run of its own set or an earlier one")
    for key in ("dataset", "arch"):
        if specs[other][key] != run[key]:
            raise PipelineError(where, f"{other!r} has {key} {specs[other][key]}, this run {run[key]}: "
                                       "its weights would not fit this run's model")
    while other is not None:
        if other in seen:
            raise PipelineError(where, f"runs start from each other in a cycle ({' -> '.join([*seen, other])})")
        seen.append(other)
        other = specs[other].get("init_from")


def strided_heatmap_size(input_size: list[int], stride: int, where: str) -> list[int]:
    """``input_size / stride`` per axis; an input size the stride does not divide is a config error
    (a rounded heatmap would no longer sit on the input's pixel grid the codecs assume)."""
    if any(int(v) % stride for v in input_size):
        raise PipelineError(where, f"{stride} does not divide input_size {list(input_size)}: "
                                   f"no whole heatmap size at stride {stride}")
    return [int(v) // stride for v in input_size]


def _check_unique_run_names(params: dict[str, Any], source: str) -> None:
    """One name, one results folder and one MLflow run per seed: a study-only or verdict-only run may
    not reuse the name of a run of an earlier set."""
    seen, earlier = set(params["runs"]), "runs"
    for where, runs in (("study.runs", params["study"].get("runs")),
                        ("verdict.runs", (params.get("verdict") or {}).get("runs"))):
        for name in (runs or {}):
            if name in seen:
                raise PipelineError(f"{source}: {where}.{name}",
                                    f"also a key of {earlier}: a {where.split('.')[0]}-only run needs a name of "
                                    "its own")
        seen |= set(runs or {})
        earlier = "runs or study.runs"


def _check_heatmap_stride(run: dict[str, Any], prof: dict[str, Any], pname: str, where: str) -> None:
    """What the schema cannot say about a run's ``heatmap_stride`` in one profile: the family of its
    architecture must output that stride, and it must divide the (architecture's) input size."""
    stride = run["heatmap_stride"]
    arch = prof["archs"][run["arch"]]
    family = arch["model"]["family"]
    strides = OUTPUT_STRIDES.get(family, (stride,))
    if stride not in strides:
        raise PipelineError(where, f"{stride}: {family} models (profiles.{pname}.archs.{run['arch']}) output "
                                   f"stride {' or '.join(map(str, strides))} only")
    data = _merge(prof["datasets"][run["dataset"]], arch.get("datasets", {}).get(run["dataset"]))
    strided_heatmap_size(data["input_size"], stride, f"{where} (profile {pname})")


def _check_archs(prof: dict[str, Any], key: str, source: str) -> None:
    """What the schema cannot say about a profile's architectures: timm ImageNet weights are named by
    their tag (timm's bare ``resnet152`` is ``resnet152.a1h_in1k``, not the torchvision weights the
    reference used, and a timm upgrade may change any default), and MPII has no box to shift at load."""
    for name, arch in prof["archs"].items():
        model = arch["model"]
        if model.get("pretrained") and model["family"] != "hrformer" and "." not in model["backbone"]:
            raise PipelineError(f"{source}: {key}.archs.{name}.model.backbone",
                                f"pretrained timm weights must be pinned by tag, e.g. {model['backbone']}.<tag> "
                                "(resnet152.tv_in1k: torchvision's weights); a bare name follows timm's default")
    shifts = [(f"{key}.datasets.mpii", prof["datasets"]["mpii"])]
    shifts += [(f"{key}.archs.{n}.datasets.mpii", a.get("datasets", {}).get("mpii") or {})
               for n, a in prof["archs"].items()]
    for where, data in shifts:
        if data.get("load_shift_prob", 0) > 0:
            raise PipelineError(f"{source}: {where}.load_shift_prob",
                                "MPII records have no person box to shift (HRFormer's load-time shift is COCO's)")


def _overlap(a: str, b: str) -> bool:
    """True when layout paths ``a`` and ``b`` are equal or one lies inside the other."""
    pa, pb = a.strip("/").split("/"), b.strip("/").split("/")
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def _check_archives(data: dict[str, Any], key: str, source: str) -> None:
    """What the schema cannot say about ``data.archives``: one of extract/place, unique names and places."""
    if "archives" not in data:
        raise PipelineError(f"{source}: {key}.archives", "required when data.source is 'download'")
    names: dict[str, str] = {}
    for dataset, entries in data["archives"].items():
        placed: dict[str, str] = {}
        for i, entry in enumerate(entries):
            ekey = f"{key}.archives.{dataset}.{i}"
            if ("extract" in entry) == ("place" in entry):
                raise PipelineError(f"{source}: {ekey}",
                                    "needs exactly one of extract (an archive's members) or place (a plain file)")
            if entry["name"] in names:  # names share one cache folder
                raise PipelineError(f"{source}: {ekey}.name", f"{entry['name']!r} is also {names[entry['name']]}")
            names[entry["name"]] = ekey
            dests = list(entry["extract"].values()) if "extract" in entry else [entry["place"]]
            for dest in dests:
                other = next((k for d, k in placed.items() if _overlap(d, dest)), None)
                if other is not None:
                    raise PipelineError(f"{source}: {ekey}", f"destination {dest!r} overlaps a destination of {other}")
                placed[dest] = ekey


def load_params(path: str | os.PathLike = DEFAULT_PARAMS, profile: str | None = None) -> dict[str, Any]:
    """Read and validate params.yaml; ``profile`` overrides its ``profile`` switch."""
    p = Path(path)
    if not p.is_file():
        raise PipelineError(str(p), "file not found")
    params = read_yaml(p)
    if not isinstance(params, dict):
        raise PipelineError(str(p), "must be a mapping of keys to values")
    if profile is not None:
        params["profile"] = profile
    return validate_params(params, str(p))


def _merge(base: dict[str, Any], over: dict[str, Any] | None) -> dict[str, Any]:
    """Recursive dict merge (``over`` wins); returns a new dict."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


TABLE_FILES = ([f"table{i}.{ext}" for i in range(1, 7) for ext in ("md", "tex", "csv")]
               + ["findings.md", "summary.md", "README.md"])


def run_label(run: str, seed: int) -> str:
    """The name of one (run, seed) pair in MLflow and in log file names: ``<run>-seed<k>``."""
    return f"{run}-seed{int(seed)}"


def seeds(params: dict[str, Any], *, study: bool = False) -> list[int]:
    """The training seeds of the main target (``seeds``) or of the study target (``study.seeds``)."""
    return [int(s) for s in (params["study"]["seeds"] if study else params["seeds"])]


def run_specs(params: dict[str, Any], *, study: bool = False, verdict: bool = False) -> dict[str, dict[str, Any]]:
    """Run name -> its params.yaml entry: the main target's ``runs``; with ``study`` also the study-only
    ``study.runs``; with ``verdict`` also the verdict-only ``verdict.runs`` (each after the former).
    The one place that says which runs a target trains."""
    specs = dict(params["runs"])
    if study or verdict:
        specs.update(params["study"].get("runs") or {})
    if verdict:
        specs.update((params.get("verdict") or {}).get("runs") or {})
    return specs


def run_names(params: dict[str, Any], *, study: bool = False, verdict: bool = False) -> list[str]:
    """The runs of the main target, of the study target (main + study-only) or of the verdict target
    (main + study-only + verdict-only)."""
    return list(run_specs(params, study=study, verdict=verdict))


def run_key(params: dict[str, Any], run: str) -> str:
    """Where a run is defined in params.yaml (``runs.<name>``, ``study.runs.<name>`` or
    ``verdict.runs.<name>``), for errors."""
    if run in params["runs"]:
        return f"runs.{run}"
    return f"study.runs.{run}" if run in (params["study"].get("runs") or {}) else f"verdict.runs.{run}"


def resolve_run(params: dict[str, Any], run: str, profile: str | None = None,
                seed: int | None = None) -> dict[str, Any]:
    """The complete configuration of one run (of ``runs`` or ``study.runs``) under one profile and
    training seed (plain dict, JSON-serialisable). ``seed`` defaults to the first of ``seeds``.

    A run's ``heatmap_stride`` sets ``data.heatmap_size`` to ``input_size / stride`` and the model's
    ``output_stride``; runs without it resolve exactly as before the key existed (same dict, same
    JSON), so their Snakemake ``run_config`` and MLflow params do not change. The same holds for the
    other optional run keys: ``sigma`` (replaces ``data.sigma``), ``augment`` (replaces the dataset's
    augmentation keys), ``alpha`` (loss mse_hdm) and
    ``init_from`` (the run whose trained weights of the same seed this run starts from) appear only in
    the configs of runs that set them."""
    profile = profile or params["profile"]
    specs = run_specs(params, verdict=True)
    if run not in specs:
        raise PipelineError("params.yaml: runs", f"no run named {run!r} (known: {', '.join(specs)})")
    seed = seeds(params)[0] if seed is None else int(seed)
    prof = params["profiles"][profile]
    spec = specs[run]
    arch = prof["archs"][spec["arch"]]
    dataset = spec["dataset"]
    paths = Paths(profile)
    model = copy.deepcopy(arch["model"])
    data = {
        **_merge(prof["datasets"][dataset], arch.get("datasets", {}).get(dataset)),
        "root": str(paths.dataset(dataset)),
    }
    if "heatmap_stride" in spec:
        stride = int(spec["heatmap_stride"])
        data["heatmap_size"] = strided_heatmap_size(data["input_size"], stride,
                                                    f"params.yaml: {run_key(params, run)}.heatmap_stride")
        model["output_stride"] = stride
    if "sigma" in spec:  # heatmap pixels, as data.sigma: stride-2/1 runs scale it with the heatmap
        data["sigma"] = spec["sigma"]
    data.update(spec.get("augment") or {})  # the training augmentation, re-selected on the tune split
    return {
        "name": run,
        "profile": profile,
        "seed": seed,
        "device": prof["device"],
        "dataset": dataset,
        "arch": spec["arch"],
        "loss": spec["loss"],
        # only when the run sets it, so the configs (and MLflow params) of the other runs stay as they were
        **({"codec": spec["codec"]} if spec.get("codec") is not None else {}),
        **_tune_keys(spec, prof),
        **({"alpha": spec["alpha"]} if "alpha" in spec else {}),
        **({"init_from": spec["init_from"]} if "init_from" in spec else {}),
        "model": model,
        "data": data,
        # profile ← architecture ← architecture on this dataset (MPII HRNet-W48's batch) ← run
        "train": _merge(_merge(_merge(prof["train"], arch.get("train")),
                               arch.get("train_by_dataset", {}).get(dataset)), spec.get("train")),
        "hdm": _merge(prof["hdm"], spec.get("hdm")),
        "test": copy.deepcopy(prof["test"]),
    }


def _tune_keys(spec: dict[str, Any], prof: dict[str, Any]) -> dict[str, Any]:
    """``split`` and ``tune`` of a run with ``split: tune`` (trained on train ∖ tune, validated and
    evaluated on tune: pipeline/data/tune.py); nothing for any other run, so their resolved configs,
    config hashes and MLflow params stay exactly as before the keys existed."""
    if spec.get("split") != "tune":
        return {}
    return {"split": "tune", "tune": copy.deepcopy(prof["tune"])}


def is_tuning_run(params: dict[str, Any], run: str) -> bool:
    """A ``split: tune`` run: it chooses hyperparameters and has no place in the paper's tables."""
    return run_specs(params, verdict=True)[run].get("split") == "tune"


def report_run_names(params: dict[str, Any], *, study: bool = False, verdict: bool = False) -> list[str]:
    """The runs a report's tables (and its workflow target) cover: :func:`run_names` without tuning runs,
    whose tune scores must never stand beside val and test-dev results."""
    return [r for r in run_names(params, study=study, verdict=verdict) if not is_tuning_run(params, r)]


def tracking_uri(params: dict[str, Any]) -> str:
    """MLflow store: ``MLFLOW_TRACKING_URI`` wins over params.yaml (e.g. a server on a cluster)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or params["mlflow"]["tracking_uri"]


def experiment_name(params: dict[str, Any], profile: str | None = None) -> str:
    return f"{params['mlflow']['experiment']}-{profile or params['profile']}"
