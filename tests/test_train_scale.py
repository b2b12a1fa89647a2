"""Training at scale on the tiny `smoke` profile: automatic resume (same MLflow run, exact continuation,
restart on a config or code change, fallback past a corrupt checkpoint), AdamW's no-decay groups, the warm-up
schedule, mixed precision (float16 autocast and a GradScaler on the CPU too), two DistributedDataParallel
processes with Gloo on the CPU, and SIGTERM stopping training cleanly wherever it lands."""
from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from pipeline.config import load_params, resolve_run
from pipeline.engine import builders
from pipeline.engine import train as train_mod

ROOT = Path(__file__).resolve().parent.parent
RUN = "coco_hrnet_w32_mse"
EXPERIMENT = "hdm-benchmark-smoke"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A scratch folder with the smoke COCO data and an MLflow store; cwd while the tests run."""
    from pipeline.data.prepare import prepare_dataset
    from pipeline.tracking import init_store

    d = tmp_path_factory.mktemp("train_scale")
    params = load_params(ROOT / "params.yaml", "smoke")
    uri = f"sqlite:///{d / 'store' / 'mlflow.db'}"
    (d / "pretrained").symlink_to(ROOT / "pretrained")  # the committed backbones the smoke archs pin
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        prepare_dataset(params, "smoke", "coco", progress=False)
        init_store(uri, EXPERIMENT)
        yield d, params, uri


def _cfg(params, epochs, **train):
    cfg = resolve_run(params, RUN, "smoke")
    cfg["train"].update(epochs=epochs, **train)
    return cfg


def _train(cfg, uri):
    path = train_mod.train_run(cfg, tracking_uri=uri, experiment=EXPERIMENT, progress=False)
    return torch.load(path, map_location="cpu", weights_only=True)


def _history(uri, run_id, key="train/loss"):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return [m.step for m in mlflow.tracking.MlflowClient().get_metric_history(run_id, key)]


def test_resume_continues_the_run(workdir, caplog, monkeypatch):
    d, params, uri = workdir
    caplog.set_level(logging.INFO, logger="pipeline")
    ckpts = d / "results/smoke/runs" / RUN / "seed0" / "checkpoints"

    first = _train(_cfg(params, 1), uri)
    assert (ckpts / "epoch_001.pth").is_file() and [h["epoch"] for h in first["history"]] == [1]

    caplog.clear()
    second = _train(_cfg(params, 2), uri)  # raising epochs is not a config change: continue at epoch 2
    assert "resuming coco_hrnet_w32_mse from" in caplog.text and "epoch_001.pth: epoch 2 of 2" in caplog.text
    assert second["mlflow_run_id"] == first["mlflow_run_id"]
    assert [h["epoch"] for h in second["history"]] == [1, 2]
    assert _history(uri, second["mlflow_run_id"]) == [1, 2]
    import mlflow

    run = mlflow.tracking.MlflowClient().get_run(second["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "1" and run.data.tags["resume.train.epochs"] == "2"
    assert run.data.params["seeds.python_numpy_torch"] == "0" and "seeds.loader_generator" in run.data.params
    summary = json.loads((d / "results/smoke/runs" / RUN / "seed0" / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("epoch_001.pth") and len(summary["history"]) == 2

    # the resumed run is exactly the uninterrupted one (RNG, optimiser and schedule state restored)
    straight = _cfg(params, 2)
    straight["name"] = RUN + "_straight"
    ref = _train(straight, uri)
    assert ref["model"].keys() == second["model"].keys()
    assert all(torch.equal(ref["model"][k], second["model"][k]) for k in ref["model"])
    assert [h["train_loss"] for h in ref["history"]] == [h["train_loss"] for h in second["history"]]
    # and so are its validation measurements, the mechanism ones included (replayed from the history)
    val_keys = [k for k in ref["history"][0] if k.startswith("val_")]
    assert {"val_pos_share", "val_gt_nonpos_share", "val_joint_err", "val_joint_err.nose"} <= set(val_keys)
    assert ([{k: h.get(k) for k in val_keys} for h in second["history"]]
            == [{k: h.get(k) for k in val_keys} for h in ref["history"]])
    assert _history(uri, second["mlflow_run_id"], "val/pos_share") == [1, 2]

    # a changed configuration is never resumed: warn naming the checkpoint, start over in a new MLflow run
    caplog.clear()
    changed = _train(_cfg(params, 2, lr=0.002), uri)
    assert "epoch_002.pth was written under a different run configuration" in caplog.text
    assert "starting over from epoch 1" in caplog.text
    assert changed["mlflow_run_id"] != first["mlflow_run_id"]
    assert [h["epoch"] for h in changed["history"]] == [1, 2] and changed["history"][0]["lr"] == 0.002

    # a corrupt latest checkpoint: warn naming it, fall back to the one before
    latest = ckpts / "epoch_002.pth"
    latest.write_bytes(latest.read_bytes()[:1000])
    caplog.clear()
    again = _train(_cfg(params, 2, lr=0.002), uri)
    assert f"checkpoint {Path('results/smoke/runs') / RUN / 'seed0/checkpoints/epoch_002.pth'} is unreadable" in caplog.text
    assert "epoch_001.pth: epoch 2 of 2" in caplog.text
    assert again["mlflow_run_id"] == changed["mlflow_run_id"]
    assert all(torch.equal(again["model"][k], changed["model"][k]) for k in again["model"])
    torch.load(latest, weights_only=True)  # rewritten

    # other training code (say a fix since): retrain instead of resuming the old weights
    monkeypatch.setattr(train_mod, "code_hash", lambda: "0" * 64)
    caplog.clear()
    fixed = _train(_cfg(params, 1, lr=0.002), uri)
    assert "epoch_001.pth was written by different training code" in caplog.text
    assert fixed["mlflow_run_id"] != changed["mlflow_run_id"] and len(fixed["history"]) == 1


class _WithTable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.table = nn.Parameter(torch.zeros(5, 2))
        self.fc = nn.Linear(4, 2)

    def no_weight_decay_keys(self):
        return {"table"}


class _Wrapper(nn.Module):  # as CenteredHeatmaps wraps a model
    def __init__(self, net):
        super().__init__()
        self.net = net


def _names(net, group):
    ids = {id(p) for p in group["params"]}
    return {n for n, p in net.named_parameters() if id(p) in ids}


def test_adamw_spares_only_the_model_keys():
    net = _Wrapper(_WithTable())
    cfg = {"profile": "smoke", "train": {"optimizer": "adamw", "lr": 5e-4, "betas": [0.9, 0.98],
                                          "weight_decay": 0.01}}
    opt = builders.optimizer(cfg, net)
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert decay["betas"] == (0.9, 0.98)
    assert _names(net, decay) == {"net.conv.weight", "net.conv.bias", "net.norm.weight", "net.norm.bias",
                                  "net.fc.weight", "net.fc.bias"}
    assert _names(net, no_decay) == {"net.table"}
    # without the method nothing is spared (the HRFormer pose recipe decays norms and biases)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    groups = builders.param_groups(plain, {"optimizer": "adamw", "weight_decay": 0.01})
    assert _names(plain, groups[0]) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    # adam keeps the reference recipe: one group, decay (L2) on everything
    opt = builders.optimizer({**cfg, "train": {**cfg["train"], "optimizer": "adam"}}, net)
    assert type(opt) is torch.optim.Adam and len(opt.param_groups) == 1
    assert opt.param_groups[0]["weight_decay"] == 0.01


def test_warmup_then_step_schedule():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=5e-4)
    sched = builders.WarmupMultiStepLR(opt, [2], 0.1, warmup_iters=500, warmup_ratio=0.001)
    seen = {}
    for it in range(600):
        seen[it] = opt.param_groups[0]["lr"]
        sched.step_iter()
    assert seen[0] == pytest.approx(5e-7)                       # 0.001 × lr
    assert seen[250] == pytest.approx(5e-4 * (0.001 + 0.999 * 0.5))
    assert seen[499] == pytest.approx(5e-4 * (0.001 + 0.999 * 499 / 500))
    assert seen[500] == seen[599] == 5e-4
    sched.step_epoch()
    assert opt.param_groups[0]["lr"] == 5e-4
    state = sched.state_dict()
    sched.step_epoch()
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-5)     # milestone 2
    sched.load_state_dict(state)
    assert opt.param_groups[0]["lr"] == 5e-4 and sched.iteration == 600
    # warm-up across an epoch boundary and under a milestone
    assert sched.lr_at(3, 100)[0] == pytest.approx(5e-5 * (0.001 + 0.999 * 0.2))


def test_without_warmup_equals_torch_multisteplr():
    """The reference recipe is unchanged: the same rates, bit for bit, as MultiStepLR per epoch."""
    q = nn.Parameter(torch.zeros(1))
    ours = builders.WarmupMultiStepLR(torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1e-3), [170, 200], 0.1)
    ref_opt = torch.optim.Adam([q], lr=1e-3)
    ref = torch.optim.lr_scheduler.MultiStepLR(ref_opt, milestones=[170, 200], gamma=0.1)
    for _ in range(210):
        assert ours.get_last_lr() == [g["lr"] for g in ref_opt.param_groups]
        for _ in range(3):
            ours.step_iter()
        ours.step_epoch()
        ref.step()


class _Heads(nn.Module):
    """Convolutions and a BatchNorm, as the pose nets: image -> (N, 2, H, W) heatmaps."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.bn(self.conv1(x))))


def test_amp_float16_on_cpu_runs_the_gpu_code_path(caplog):
    """train.amp with float16 on the CPU: the convolutions run in float16 under autocast, the loss in
    float32 outside it, and the GradScaler scales the loss's gradient and unscales it before the step."""
    caplog.set_level(logging.INFO, logger="pipeline")
    dev = torch.device("cpu")
    dtype, scaler = train_mod.amp_settings({"amp": True, "amp_dtype": "float16"}, dev)
    assert dtype is torch.float16 and scaler.is_enabled() and scaler.get_scale() == 2.0 ** 16
    assert "mixed precision on cpu: autocast float16 with a GradScaler" in caplog.text
    bf16, no_scaler = train_mod.amp_settings({"amp": True, "amp_dtype": "bfloat16"}, dev)
    assert bf16 is torch.bfloat16 and not no_scaler.is_enabled()

    net = _Heads().to(memory_format=torch.channels_last).train()
    seen = {}

    def record(module, inputs, output):
        seen[module.name] = output.dtype

    for name in ("conv1", "conv2"):
        getattr(net, name).name = name
        getattr(net, name).register_forward_hook(record)
    out_grads, loss_seen = [], []

    def crit(out, target, weight):
        loss_seen.append((out.dtype, torch.is_autocast_enabled("cpu")))
        out.register_hook(out_grads.append)  # the gradient backward sends into the model's output
        return ((out - target) ** 2 * weight[..., None]).mean()

    g = torch.Generator().manual_seed(1)
    batch = {"image": torch.randn(2, 3, 8, 8, generator=g), "weight": torch.ones(2, 2, 1),
             "target": torch.rand(2, 2, 8, 8, generator=g)}
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    stepped = []
    opt.register_step_pre_hook(lambda o, a, k: stepped.append({n: p.grad.clone() for n, p in net.named_parameters()}))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    loss = train_mod.train_step(net, crit, opt, scaler, batch, {"loss": "mse"}, dev, dtype)

    assert seen == {"conv1": torch.float16, "conv2": torch.float16}
    assert loss_seen == [(torch.float32, False)] and loss.dtype == torch.float32
    # scaled: the gradient into the output is 2^16 × d(loss)/d(out) ...
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        out = _Heads().to(memory_format=torch.channels_last).train()(batch["image"])
    expected = 2 * (out.float() - batch["target"]) / out.numel()
    torch.testing.assert_close(out_grads[0], 2.0 ** 16 * expected, rtol=1e-6, atol=1e-3)
    # ... and unscaled again before the optimiser step: finite float32 gradients of the loss itself
    ref = _Heads().to(memory_format=torch.channels_last).train()
    with torch.autocast("cpu", dtype=torch.float16):
        ref_out = ref(batch["image"])
    ((ref_out.float() - batch["target"]) ** 2).mean().backward()
    for name, p in ref.named_parameters():
        grad = stepped[0][name]
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all()
        torch.testing.assert_close(grad, p.grad, rtol=2e-2, atol=1e-5)
    assert all(not torch.equal(p, before[n]) for n, p in net.named_parameters())  # the step was taken
    assert scaler.get_scale() == 2.0 ** 16 and scaler.state_dict()["_growth_tracker"] == 1  # no inf found


def test_amp_falls_back_to_float32_where_autocast_is_unsupported(caplog, monkeypatch):
    # the probe: a dtype CPU autocast does not run (it warns and stays in float32) or a device torch lacks
    assert not train_mod.autocast_supported("cpu", torch.float64)
    assert not train_mod.autocast_supported("no_such_device", torch.float16)
    caplog.set_level(logging.INFO, logger="pipeline")
    monkeypatch.setattr(train_mod, "autocast_supported", lambda device_type, dtype: False)
    dtype, scaler = train_mod.amp_settings({"amp": True, "amp_dtype": "float16"}, torch.device("cpu"))
    assert dtype is None and not scaler.is_enabled()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["train.amp is set but this torch has no float16 autocast on cpu: training in float32"]
    assert train_mod.amp_settings({"amp": False, "amp_dtype": "float16"}, torch.device("cpu"))[0] is None


def test_the_loss_sees_float32():
    class Half(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 2, 4, 4, dtype=torch.bfloat16)

    seen = []

    def crit(out, target, weight):
        seen.append(out.dtype)
        return out.sum()

    batch = {"image": torch.zeros(1, 3, 8, 8), "weight": torch.ones(1, 2, 1), "target": torch.zeros(1, 2, 4, 4)}
    train_mod.forward_loss(Half(), crit, batch, {"loss": "mse"}, torch.device("cpu"), None)
    assert seen == [torch.float32]


def test_config_hash_ignores_only_resume_invariant_keys():
    params = load_params(ROOT / "params.yaml", "smoke")
    cfg = builders.with_train_defaults(resolve_run(params, RUN, "smoke"))
    h = train_mod.config_hash(cfg)
    for key, value in (("epochs", 99), ("workers", 4), ("threads", 2)):
        c = copy.deepcopy(cfg)
        c["train"][key] = value
        assert train_mod.config_hash(c) == h
    for key, value in (("lr", 0.01), ("gpus", 2), ("optimizer", "adamw"), ("warmup_iters", 5)):
        c = copy.deepcopy(cfg)
        c["train"][key] = value
        assert train_mod.config_hash(c) != h
    # an explicit default is the same configuration as a left-out key
    assert train_mod.config_hash(builders.with_train_defaults(
        {**cfg, "train": {**cfg["train"], "amp": False}})) == h


def test_ddp_two_cpu_processes(workdir):
    """`train` with gpus: 2 relaunches itself under torchrun; Gloo, DistributedSampler, rank 0 writes;
    sync_bn (HRFormer's SyncBN) synchronises every BatchNorm of the model under training."""
    d, params, uri = workdir
    p = copy.deepcopy(params)
    p["profile"] = "smoke"
    p["profiles"]["smoke"]["train"]["gpus"] = 2
    p["profiles"]["smoke"]["train"]["sync_bn"] = True
    (d / "params_ddp.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    run = "coco_hrnet_w48_hdm"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MLFLOW_TRACKING_URI": uri}
    res = subprocess.run([sys.executable, "-m", "pipeline", "--params", "params_ddp.yaml", "--quiet", "train",
                          "--run", run], cwd=d, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "relaunching under torchrun" in res.stderr
    out = d / "results/smoke/runs" / run / "seed0"
    final = torch.load(out / "final.pth", map_location="cpu", weights_only=True)
    assert [h["epoch"] for h in final["history"]] == [1, 2]
    assert not any(k.startswith("module.") for k in final["model"])  # unwrapped: evaluation loads it as is
    assert (out / "checkpoints/epoch_002.pth").is_file()
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    ckpt = torch.load(out / "checkpoints/epoch_002.pth", map_location="cpu", weights_only=True)
    assert len(ckpt["rng"]) == 2 and ckpt["world_size"] == 2
    assert _history(uri, final["mlflow_run_id"]) == [1, 2]
    log_text = (out / "train.log").read_text()
    assert log_text.count("epoch 1/2") == 1  # rank 0 alone logs to the file
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in builders.model(resolve_run(p, run, "smoke")).modules())
    assert n_bn > 0 and f"train.sync_bn: {n_bn} BatchNorm layers normalise over all 2 processes" in log_text
    import mlflow

    logged = mlflow.tracking.MlflowClient().get_run(final["mlflow_run_id"]).data
    assert logged.params["train.sync_bn"] == "True"
    assert logged.tags["pretrained_weights"].startswith("pretrain:pretrained/smoke/hrnet_w48/backbone.pth sha256:")


# ----------------------------------------------------------------------------- SIGTERM in training
def _smoke_params(d, params, name, **train):
    """A params file in ``d`` for the smoke profile with ``train`` overrides; returns its name."""
    p = copy.deepcopy(params)
    p["profile"] = "smoke"
    p["profiles"]["smoke"]["train"].update(train)
    (d / name).write_text(yaml.safe_dump(p, sort_keys=False))
    return name


def _cli_env(uri):
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "MLFLOW_TRACKING_URI": uri}


def _mlflow_status(uri, run, seed=0):
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string=f"tags.mlflow.runName = '{run}-seed{seed}'")
    return list(runs["status"])


def test_loader_workers_leave_the_group_and_exit_quietly_on_sigterm(workdir, monkeypatch):
    """torchrun stops a training process with SIGTERM to its process group, Ctrl-C reaches the whole
    group: neither reaches the DataLoader's processes (their owner stops them as it unwinds). A SIGTERM
    sent to a loader process itself (a scheduler signalling every process) ends it with status 0, and
    the training loop, with a SIGTERM pending, ends the epoch there for the stop check instead of raising
    "worker killed by signal". Training and evaluation loaders alike."""
    import signal
    import time

    from pipeline.engine import inference

    d, params, uri = workdir
    cfg = builders.with_defaults(_cfg(params, 1, workers=1, batch_size=4))
    data = train_mod._build_data(cfg, train_mod.DistEnv(), torch.device("cpu"))
    it = iter(data.loader)
    next(it)
    worker = it._workers[0].pid
    assert os.getpgid(worker) == worker != os.getpgid(0)  # a group of its own
    os.kill(worker, signal.SIGTERM)
    t0 = time.time()
    while it._workers[0].exitcode is None and time.time() - t0 < 10:
        time.sleep(0.05)
    assert it._workers[0].exitcode == 0
    with pytest.raises(RuntimeError, match="exited unexpectedly"):  # raised where the batch is asked for
        list(it)
    del it

    class DiesAfterOne:  # a loader whose worker has gone after the first batch
        def __iter__(self):
            yield "batch 1"
            raise RuntimeError("DataLoader worker (pid(s) 1) exited unexpectedly")

    monkeypatch.setattr(train_mod, "sigterm_pending", lambda: True)
    assert list(train_mod._batches(DiesAfterOne())) == ["batch 1"]
    monkeypatch.setattr(train_mod, "sigterm_pending", lambda: False)  # no stop under way: the error stands
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        list(train_mod._batches(DiesAfterOne()))

    made = []

    class Recording(inference.DataLoader):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("worker_init_fn"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(inference, "DataLoader", Recording)
    net = builders.model(cfg)
    inference.predict(net, cfg, builders.records(cfg, "val")[:2], flip_test=False, dev=torch.device("cpu"),
                      batch_size=2)
    assert made == [data.loader.worker_init_fn] and made[0] is not None


# A SIGTERM that lands while a DataLoader forks its worker: Python runs the handler inside its at-fork
# hook, where an exception is printed and dropped ("Exception ignored"). This driver sends itself SIGTERM
# from such a hook, at the first fork after epoch 1's checkpoint (epoch 2's loader starting).
_FORK_SIGTERM = """
import os, signal, sys
from pathlib import Path
ckpt, fired = Path(sys.argv[1]), []
def hook():
    if ckpt.exists() and not fired:
        fired.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
os.register_at_fork(after_in_parent=hook)
from pipeline.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_as_the_loader_forks_still_stops_training(workdir):
    import shutil
    import subprocess
    import sys

    d, params, uri = workdir
    run = "coco_hrnet_w32_hdm"
    out = d / "results/smoke/runs" / run / "seed0"
    shutil.rmtree(out, ignore_errors=True)
    name = _smoke_params(d, params, "params_fork.yaml", workers=1, epochs=2)
    (d / "fork_sigterm.py").write_text(_FORK_SIGTERM)
    res = subprocess.run([sys.executable, "fork_sigterm.py", str(out / "checkpoints/epoch_001.pth"),
                          "--params", name, "--quiet", "train", "--run", run], cwd=d, env=_cli_env(uri),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 143, res.stderr[-3000:]  # not trained to the end as if nothing had come
    assert "Exception ignored" not in res.stderr and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("error:")] == [
        f"error: train --run {run}: stopped by SIGTERM; rerun the stage to continue "
        "(training resumes from its last epoch checkpoint)"]
    assert not (out / "final.pth").exists() and not (out / "checkpoints/epoch_002.pth").exists()
    assert _mlflow_status(uri, run) == ["KILLED"]


def test_sigterm_to_one_ddp_process_stops_both_at_the_same_step(workdir):
    """SIGTERM reaching one worker of a two-process job (before or apart from the other) stops both at
    the same step boundary: the other is never left in a collective with a peer that has gone (a Gloo
    "Connection closed by peer" error and a FAILED run instead of a clean stop)."""
    import signal
    import subprocess
    import sys
    import time

    import node_checks

    d, params, uri = workdir
    run = "coco_hrnet_w32_udp"
    out = d / "results/smoke/runs" / run / "seed0"
    name = _smoke_params(d, params, "params_ddp_stop.yaml", gpus=2, batch_size=2, epochs=3, sync_bn=True)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--params", name, "--quiet", "train", "--run", run],
                            cwd=d, env=_cli_env(uri), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        node_checks._wait_for((out / "checkpoints/epoch_001.pth").exists, 240, "epoch 1's checkpoint", proc)
        workers = [pid for pid in node_checks.descendants(proc.pid)
                   if b"\0RANK=" in Path(f"/proc/{pid}/environ").read_bytes()]
        rank1 = [pid for pid in workers if b"\0RANK=1\0" in Path(f"/proc/{pid}/environ").read_bytes()]
        assert len(workers) == 2 and len(rank1) == 1, workers
        time.sleep(0.5)  # inside epoch 2
        os.kill(rank1[0], signal.SIGTERM)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        node_checks._kill_leftovers(workers)
    assert "Connection closed by peer" not in err and "DistBackendError" not in err, err[-3000:]
    stopped = [ln for ln in err.splitlines() if "stopped by SIGTERM" in ln and "error: train" in ln]
    assert len(stopped) == 2, err[-3000:]  # each worker stopped by the one signal
    assert _mlflow_status(uri, run) == ["KILLED"]
    assert not (out / "final.pth").exists()
