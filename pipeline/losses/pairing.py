"""Which codecs each training loss accepts, declared by the loss's own module.

A loss trains against one kind of target (Gaussian heatmaps, or the dots themselves) and its heatmaps
mean something only to the decoders made for it, so a run's codec must be one its loss names: a third
loss with no declaration, or a codec its loss does not name, stops with one line instead of silently
training against another loss's targets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import PipelineError


@dataclass(frozen=True)
class LossCodecs:
    """The codecs a loss accepts, the first one its default; ``pick_default(hdm)`` chooses the default
    from the run's ``hdm`` section (defaults applied) when the loss has settings that change it."""
    loss: str
    accepts: tuple[str, ...]
    pick_default: Callable[[dict[str, Any]], str] | None = None

    def default(self, hdm: dict[str, Any]) -> str:
        return self.pick_default(hdm) if self.pick_default is not None else self.accepts[0]


_PAIRINGS: dict[str, LossCodecs] = {}


def register_loss_codecs(pairing: LossCodecs) -> LossCodecs:
    """Declare the codecs a loss accepts; declaring a loss again replaces its entry."""
    _PAIRINGS[pairing.loss] = pairing
    return pairing


def loss_codecs(loss: str, key: str = "loss") -> LossCodecs:
    """The declaration of ``loss``; a loss that declares none stops with one line naming ``key``."""
    try:
        return _PAIRINGS[loss]
    except KeyError:
        raise PipelineError(key, f"unknown loss {loss!r}: no codec pairing declared "
                                 f"(known: {', '.join(sorted(_PAIRINGS))})") from None


def paired_codec(loss: str, codec: str | None, hdm: dict[str, Any], key: str) -> str:
    """The codec a run of ``loss`` uses: ``codec`` when given (refused with one line naming ``key``
    unless the loss accepts it), else the loss's default."""
    pairing = loss_codecs(loss, key)
    name = pairing.default(hdm) if codec is None else codec
    if name not in pairing.accepts:
        raise PipelineError(key, f"codec {name!r} does not go with loss {loss} "
                                 f"(it accepts {', '.join(pairing.accepts)})")
    return name
