"""The architectures a run can name (``model.family``), each registered by its own module.

A family module (``simple_baseline``, ``hrnet``, ``hrformer``, or one a test or a user defines) calls
:func:`register_architecture` with an :class:`Architecture`: how to build it from a resolved ``model``
config and the facts the other stages ask about it (the heatmap strides it can output, which backbone
map the pretrain stage trains, where its ImageNet weights come from). Nothing else in the package names
a family, so a new architecture is one module that registers itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..errors import PipelineError


def timm_weights(model_cfg: dict[str, Any]) -> str:
    """ImageNet weights from timm's hub, named by the backbone and its pinned tag (params.yaml)."""
    return f"timm:{model_cfg['backbone']}"


@dataclass(frozen=True)
class Architecture:
    """One model family and what the stages need to know about it.

    ``build(model_cfg, num_joints)`` returns the network; ``output_strides`` are the heatmap strides it
    can output (``model.output_stride``); ``feature_index`` picks the map of ``backbone(x)`` its pose
    head reads (the pretrain stage trains the backbone through that map); ``weights_source(model_cfg)``
    says where its ImageNet weights come from (logged as the run's ``pretrained_weights`` tag)."""
    name: str
    build: Callable[[dict[str, Any], int], nn.Module]
    output_strides: tuple[int, ...] = (4,)
    feature_index: int = -1
    weights_source: Callable[[dict[str, Any]], str] = timm_weights


_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    """Make ``arch`` buildable by name; registering a name again replaces its entry (a reloaded module)."""
    _ARCHITECTURES[arch.name] = arch
    return arch


def architecture_names() -> tuple[str, ...]:
    """The registered family names, sorted."""
    return tuple(sorted(_ARCHITECTURES))


def architecture(name: str, key: str = "model.family") -> Architecture:
    """The family registered as ``name``; any other name stops with one line naming ``key``."""
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise PipelineError(key, f"unknown model family {name!r} (known: {', '.join(architecture_names())})") from None


def check_output_stride(arch: Architecture, stride: int) -> None:
    """Refuse a stride the family cannot output, rather than ignore it: a model whose heatmaps stay at
    stride 4 would train against stride-8 targets of another size."""
    if stride not in arch.output_strides:
        raise PipelineError("model.output_stride", f"{stride}: the {arch.name} family outputs stride "
                                                   f"{' or '.join(map(str, arch.output_strides))} only")
