"""train.sync_bn (HRFormer's SyncBN) on two Gloo processes: the training wiring synchronises BatchNorm,
so each process normalises with the statistics of the whole distributed batch."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pipeline.engine.sync_bn import GlooSyncBatchNorm, convert_sync_batchnorm
from pipeline.engine.train import DistEnv, distributed_model

WORLD = 2


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))


def _batch() -> torch.Tensor:
    """Two halves with different means and spreads: per-process statistics differ from the global ones."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2 * WORLD, 3, 5, 5, generator=g)
    x[2:] = x[2:] * 3.0 + 2.0
    return x


def _worker(rank: int, init: str, out: str) -> None:
    """One process of a two-process Gloo job: one training step with and one without sync_bn."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        for sync in (True, False):
            net, model = distributed_model(_net(), {"sync_bn": sync}, DistEnv(rank, WORLD, rank),
                                           torch.device("cpu"))
            x = _batch()[2 * rank:2 * rank + 2]
            y = model(x)
            y.pow(2).mean().backward()
            torch.save({"y": y.detach(), "kinds": [type(m).__name__ for m in net.modules()],
                        "ddp": type(model).__name__, "state": net.state_dict(),
                        "grad": net[0].weight.grad.clone()}, f"{out}_{sync}_{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def gloo_results(tmp_path_factory) -> dict[bool, list[dict]]:
    """{sync_bn: [rank 0's result, rank 1's result]} of one two-process job."""
    tmp = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(f"file://{tmp}/pg", str(tmp / "res")), nprocs=WORLD, join=True)
    return {sync: [torch.load(tmp / f"res_{sync}_{r}.pt", weights_only=True) for r in range(WORLD)]
            for sync in (True, False)}


@pytest.fixture(scope="module")
def full_batch():
    """One process, plain BatchNorm, the whole batch: what synchronised BN must reproduce."""
    net = _net().train()
    y = net(_batch())
    y.pow(2).mean().backward()
    return {"y": y.detach(), "state": net.state_dict(), "grad": net[0].weight.grad.clone()}


def test_sync_bn_on_two_gloo_processes_normalises_over_the_whole_batch(gloo_results, full_batch):
    results = gloo_results[True]
    for rank, res in enumerate(results):
        assert res["ddp"] == "DistributedDataParallel"
        assert res["kinds"].count("GlooSyncBatchNorm") == 2 and "BatchNorm2d" not in res["kinds"]
        # outputs: this process's half of the full-batch result
        torch.testing.assert_close(res["y"], full_batch["y"][2 * rank:2 * rank + 2], rtol=1e-5, atol=1e-5)
        # running statistics: the global batch's, on every process
        for key in ("1.running_mean", "1.running_var", "4.running_mean", "4.running_var", "1.num_batches_tracked"):
            torch.testing.assert_close(res["state"][key], full_batch["state"][key], rtol=1e-5, atol=1e-6)
        # DDP's averaged gradient, through the synchronised statistics, is the full-batch gradient
        torch.testing.assert_close(res["grad"], full_batch["grad"], rtol=1e-4, atol=1e-6)


def test_without_sync_bn_each_process_normalises_its_own_share(gloo_results, full_batch):
    """The control: per-GPU BatchNorm (HRNet's setting) gives other statistics on this batch."""
    results = gloo_results[False]
    assert results[0]["kinds"].count("BatchNorm2d") == 2 and "GlooSyncBatchNorm" not in results[0]["kinds"]
    assert not torch.allclose(results[0]["state"]["1.running_mean"], full_batch["state"]["1.running_mean"], atol=1e-3)
    assert not torch.allclose(results[0]["state"]["1.running_mean"], results[1]["state"]["1.running_mean"], atol=1e-3)


def test_conversion_keeps_parameters_names_and_plain_behaviour_outside_ddp():
    """Converted layers share the original parameters and buffers (an optimiser built before still
    updates them), keep BatchNorm's state-dict names (checkpoints load into plain models) and behave
    as plain BatchNorm without a process group and in evaluation."""
    plain = _net()
    before = {n: p for n, p in plain.named_parameters()}
    keys = list(plain.state_dict())
    x = _batch()
    ref = copy.deepcopy(plain).train()(x)
    net, n = convert_sync_batchnorm(plain, torch.device("cpu"))
    assert n == 2 and isinstance(net[1], GlooSyncBatchNorm)
    assert all(p is before[name] for name, p in net.named_parameters())
    assert list(net.state_dict()) == keys
    torch.testing.assert_close(net.train()(x), ref)
    fresh = _net()
    fresh.load_state_dict(net.state_dict())
    torch.testing.assert_close(fresh.eval()(x), net.eval()(x))
    # one process: nothing to wrap or convert
    same, model = distributed_model(plain, {"sync_bn": True}, DistEnv(), torch.device("cpu"))
    assert same is plain and model is plain
