"""Synchronised BatchNorm for DDP runs whose reference uses it (HRFormer's ``norm_cfg = SyncBN``).

With ``train.sync_bn`` every BatchNorm of the model normalises a training batch with the mean and
variance of the whole distributed batch (all processes) instead of its own GPU's share, and the
running statistics follow those global values. On CUDA this is torch's :class:`torch.nn.SyncBatchNorm`
(what MMCV's ``SyncBN`` is). torch's implementation runs on GPUs only (DDP refuses it on CPU modules),
so on CPU (Gloo) :class:`GlooSyncBatchNorm` does the same computation with two autograd-aware
all-reduces per layer: it lets CPU tests and CPU runs with ``gpus > 1`` use the same setting.
The parameter and buffer names are BatchNorm's, so checkpoints load into plain BatchNorm models.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class GlooSyncBatchNorm(_BatchNorm):
    """BatchNorm over the whole distributed batch, for CPU processes (any backend; written for Gloo).

    In training under an initialised process group of more than one process, the batch statistics
    are the exact mean and biased variance over every process's samples (two passes, so no
    ``E[x²] − E[x]²`` cancellation), the gradient flows through them to every process, and the
    running statistics get the unbiased variance, as :class:`torch.nn.SyncBatchNorm` does. Otherwise
    (evaluation, a single process) it is plain BatchNorm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()  # statistics in float32, as BatchNorm under autocast
        count = torch.full((1,), xf.numel() / c, dtype=xf.dtype, device=xf.device)
        sums = dist_nn.all_reduce(torch.cat([xf.sum(dims), count]))
        n = sums[c]
        mean = sums[:c] / n
        centred = xf - mean.view(shape)
        var = dist_nn.all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1.0 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                unbiased = var.detach() * n / (n - 1.0).clamp(min=1.0)
                self.running_var.mul_(1.0 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def _to_gloo_sync(module: nn.Module) -> nn.Module:
    """``module`` with every plain BatchNorm replaced by a :class:`GlooSyncBatchNorm` sharing its
    parameters and buffers (so an optimiser built before still holds the right tensors)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, (nn.SyncBatchNorm, GlooSyncBatchNorm)):
        out = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, _to_gloo_sync(child))
    return module


def convert_sync_batchnorm(net: nn.Module, device: torch.device) -> tuple[nn.Module, int]:
    """``net`` with synchronised BatchNorm layers (torch's on CUDA, :class:`GlooSyncBatchNorm` on CPU),
    and how many layers are synchronised. Call before wrapping the model in DistributedDataParallel."""
    if device.type == "cuda":  # pragma: no cover - CUDA only: torch's SyncBatchNorm runs on CUDA only
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        kind: type = nn.SyncBatchNorm
    else:
        net = _to_gloo_sync(net)
        kind = GlooSyncBatchNorm
    return net, sum(isinstance(m, kind) for m in net.modules())
