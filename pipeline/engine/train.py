"""Training of one benchmark run: the reference recipe (Adam, step schedule stepped per epoch),
one checkpoint per epoch, per-epoch validation, everything logged to MLflow and to a log file.

Per-epoch validation uses ground-truth boxes without the flip test (cheap and detector-free); the
full test protocol (detection boxes, flip test, rescoring, OKS-NMS) is the evaluation stage's job.
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import io
from ..config import Paths
from ..tracking import flatten, open_run, table_tags
from . import builders
from .validate import validate

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _step(net, crit, batch, cfg, dev) -> torch.Tensor:
    out = net(batch["image"].to(dev, non_blocking=True, memory_format=torch.channels_last))
    weight = batch["weight"].to(dev)
    if cfg["loss"] == "mse":
        return crit(out, batch["target"].to(dev), weight)
    return crit(out, batch["keypoints"].to(dev), weight)


def train_run(cfg: dict[str, Any], *, tracking_uri: str, experiment: str, progress: bool = True) -> Path:
    """Train one run end to end; returns the path of its final checkpoint."""
    paths = Paths(cfg["profile"])
    run_dir = paths.run_dir(cfg["name"])
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg["seed"])
    dev = builders.device(cfg)
    if dev.type == "cpu":
        torch.set_num_threads(cfg["train"]["threads"])

    train_recs = builders.records(cfg, "train")
    val_recs = builders.records(cfg, "val")
    train_ds = builders.dataset(cfg, train_recs, train=True)
    t = cfg["train"]
    loader = DataLoader(train_ds, batch_size=t["batch_size"], shuffle=True, drop_last=len(train_ds) > t["batch_size"],
                        num_workers=t["workers"], pin_memory=dev.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg["seed"]))
    # channels_last: about 1.3x faster convolutions on CPU for these models (and fine on GPU)
    net = builders.model(cfg).to(dev, memory_format=torch.channels_last)
    crit = builders.loss(cfg).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=t["lr_steps"], gamma=t["lr_factor"])
    n_params = sum(p.numel() for p in net.parameters())
    log.info("run %s: %d train / %d val people, %.2fM parameters, device %s", cfg["name"], len(train_ds),
             len(val_recs), n_params / 1e6, dev)

    tags = {**table_tags(cfg["name"]), "profile": cfg["profile"], "dataset": cfg["dataset"],
            "arch": cfg["arch"], "loss": cfg["loss"], "evaluated": "false"}
    history: list[dict[str, float]] = []
    with open_run(tracking_uri, experiment, run_name=cfg["name"], tags=tags) as mlflow:
        run_id = mlflow.active_run().info.run_id
        mlflow.log_params({**flatten(cfg), "num_parameters": n_params, "device_used": str(dev)})
        mlflow.log_dict(cfg, "config.json")
        for epoch in range(1, t["epochs"] + 1):
            train_ds.set_epoch(epoch)
            net.train()
            t0 = time.time()
            total, count, dead = 0.0, 0, 0
            bar = tqdm(loader, desc=f"{cfg['name']} epoch {epoch}/{t['epochs']}", disable=not progress,
                       mininterval=5.0, leave=False)
            for batch in bar:
                loss = _step(net, crit, batch, cfg, dev)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(batch["image"])
                count += len(batch["image"])
                dead += int(getattr(crit, "last_dead_joints", 0))
                bar.set_postfix(loss=f"{total / count:.4g}")
            lr = opt.param_groups[0]["lr"]
            sched.step()
            train_time = time.time() - t0
            val = validate(net, cfg, val_recs, dev)
            row = {"train_loss": total / max(count, 1), "lr": lr, "epoch_time_s": train_time,
                   "images_per_s": count / max(train_time, 1e-9), **{f"val_{k}": v for k, v in val.items()}}
            if cfg["loss"] == "hdm":
                row["dead_heatmaps"] = dead
            history.append({"epoch": epoch, **row})
            mlflow.log_metrics(row, step=epoch)
            log.info("epoch %d/%d  %s", epoch, t["epochs"],
                     "  ".join(f"{k}={v:.4g}" for k, v in row.items()))
            state = {"epoch": epoch, "model": net.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "mlflow_run_id": run_id}
            with io.atomic_path(ckpt_dir / f"epoch_{epoch:03d}.pth") as tmp:
                torch.save(state, tmp)
        summary = {"run": cfg["name"], "mlflow_run_id": run_id, "epochs": t["epochs"], "history": history,
                   "num_parameters": n_params, "device": str(dev)}
        io.write_json(run_dir / "train_summary.json", summary)
        with io.atomic_path(paths.checkpoint(cfg["name"])) as tmp:
            torch.save({"model": net.state_dict(), "config": cfg, "mlflow_run_id": run_id,
                        "history": history}, tmp)
    return paths.checkpoint(cfg["name"])

