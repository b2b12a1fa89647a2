"""Fault injection on the smoke profile: payload checkpoints, a held SQLite lock, a corrupt
store, unwritable folders, truncated images, invalid boxes, SIGTERM and SIGKILL at chosen points, late
evaluation failures, odd profile names.

Every case asserts what the user sees and what is left behind: a non-zero exit, no traceback, exactly
one ``error:`` line naming the file or key, no new files under ``results/`` or ``reports/`` (log files
aside: they are how the user finds out what happened), no RUNNING or duplicate MLflow runs, and metrics
in the training's own run.

One smoke project is built once per module (data, store, a COCO and an MPII run trained and
evaluated, in-process: seconds); each test breaks its own copy. The copy's SQLite store is pointed at
the copy's own artifact folder (``_copy``), as a project's store must be (see the copied-store test).
"Read-only" folders are simulated by putting a file where the folder must be, which fails for root
too (the tests run as root, which chmod does not stop); a chmod variant runs only for other users.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from project_copy import copy_project
from run_project import cli, copy_base, metric_steps, one_error

RUN = "coco_hrnet_w32_mse"
MPII = "mpii_hrnet_w32_mse"
OUTPUT_ROOTS = ("results", "reports")


# ----------------------------------------------------------------------------- helpers
def _edit_params(d: Path, edit) -> None:
    params = yaml.safe_load((d / "params.yaml").read_text())
    edit(params)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _smoke(params: dict) -> None:
    params["profile"] = "smoke"
    params["runs"] = {k: v for k, v in params["runs"].items() if k in (RUN, MPII)}
    params.pop("verdict", None)  # its fine-tune runs start from main runs left out here


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The smoke project after data, mlflow-init, train and evaluate of both runs."""
    d = tmp_path_factory.mktemp("fault_base")
    copy_project(d)
    _edit_params(d, _smoke)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        for args in (["data", "--dataset", "coco"], ["data", "--dataset", "mpii"], ["mlflow-init"],
                     ["train", "--run", RUN], ["train", "--run", MPII], ["evaluate", "--run", RUN],
                     ["evaluate", "--run", MPII]):
            assert main(["--quiet", *args]) == 0, args
    return d


@pytest.fixture
def proj(base, tmp_path, monkeypatch):
    """The test's own copy of the project, as the working directory."""
    d = copy_base(base, tmp_path / "p")
    monkeypatch.chdir(d)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
    monkeypatch.delenv("HDM_MLFLOW_BUSY_TIMEOUT", raising=False)
    return d


def _outputs(d: Path) -> dict[str, int]:
    """Every file under results/ and reports/ (logs aside) with its modification time."""
    out = {}
    for root in OUTPUT_ROOTS:
        for p in (d / root).rglob("*") if (d / root).exists() else []:
            if p.is_file() and p.suffix != ".log":
                out[str(p.relative_to(d))] = p.stat().st_mtime_ns
    return out


def _runs(d: Path) -> list[tuple[str, str, str]]:
    """(run, status, run id) of every MLflow run in the copy's store (MLflow names ``<run>-seed0``:
    the project's one seed here)."""
    con = sqlite3.connect(d / "mlflow.db")
    try:
        rows = con.execute("SELECT name, status, run_uuid FROM runs WHERE lifecycle_stage = 'active'")
        return sorted((name.removesuffix("-seed0"), status, run_id) for name, status, run_id in rows)
    finally:
        con.close()


def _run_id(d: Path, run: str) -> str:
    ids = [r for n, _, r in _runs(d) if n == run]
    assert len(ids) == 1, _runs(d)
    return ids[0]


def _no_running_or_duplicates(d: Path) -> None:
    runs = _runs(d)
    assert all(status != "RUNNING" for _, status, _ in runs), runs
    names = [n for n, _, _ in runs]
    assert len(names) == len(set(names)), runs


def _payload(path: Path, marker: Path) -> None:
    """A .pth file whose unpickling would create ``marker`` (a stand-in for any code)."""
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Payload(), "epoch": 2}, path)


# ----------------------------------------------------------------------------- 1. checkpoints
def test_payload_checkpoints_are_refused_and_never_run(proj, capsys):
    marker = proj / "PAYLOAD_RAN"
    # evaluation: the final checkpoint
    final = proj / f"results/smoke/runs/{RUN}/seed0/final.pth"
    shutil.rmtree(proj / f"results/smoke/eval/{RUN}/seed0")
    before = _outputs(proj)
    _payload(final, marker)
    before[str(final.relative_to(proj))] = final.stat().st_mtime_ns
    line = one_error(*cli(capsys, "evaluate", "--run", RUN), "final.pth", "refused")
    assert "posix.system" in line
    assert not marker.exists() and _outputs(proj) == before

    # HRFormer's ImageNet weights (the README sends users to the internet for them)
    from pipeline.errors import PipelineError
    from pipeline.models.hrformer import HRFormer, load_official_checkpoint

    weights = proj / "hrformer_base.pth"
    _payload(weights, marker)
    with pytest.raises(PipelineError, match="hrformer_base.pth: refused"):
        load_official_checkpoint(HRFormer(17, "demo", width=0.5), weights)
    assert not marker.exists()

    # resume: a payload in place of the last epoch checkpoint is skipped (one warning naming it), and
    # training continues from the epoch before, in the same MLflow run, each epoch logged once
    run_id = _run_id(proj, RUN)
    final.unlink()
    ckpt = proj / f"results/smoke/runs/{RUN}/seed0/checkpoints/epoch_002.pth"
    _payload(ckpt, marker)
    rc, err = cli(capsys, "train", "--run", RUN)
    assert rc == 0 and "Traceback" not in err
    refused = [ln for ln in err.splitlines() if "refused" in ln]
    assert len(refused) == 1 and "epoch_002.pth" in refused[0] and "WARNING" in refused[0]
    assert not marker.exists()
    assert _run_id(proj, RUN) == run_id and metric_steps(proj, run_id, "train/loss") == [1, 2]
    _no_running_or_duplicates(proj)


def test_checkpoints_hold_only_safe_types(base):
    import torch

    for path in (base / f"results/smoke/runs/{RUN}/seed0/final.pth",
                 base / f"results/smoke/runs/{RUN}/seed0/checkpoints/epoch_002.pth"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert "model" in state


# ----------------------------------------------------------------------------- 2. MLflow faults
def _hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    """Another process holding an exclusive lock on the store for ``seconds``."""
    code = ("import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\n"
            "time.sleep(float(sys.argv[2]))\nc.execute('ROLLBACK')\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_briefly_locked_store_keeps_metrics_in_the_training_run(proj, capsys):
    run_id = _run_id(proj, RUN)
    shutil.rmtree(proj / f"results/smoke/eval/{RUN}/seed0")
    locker = _hold_lock(proj / "mlflow.db", 3.0)
    t0 = time.time()
    rc, err = cli(capsys, "evaluate", "--run", RUN)
    locker.wait(timeout=30)
    assert rc == 0, err[-2000:]
    assert time.time() - t0 >= 2.5  # it waited for the lock instead of starting another run
    metrics = json.loads((proj / f"results/smoke/eval/{RUN}/seed0/metrics.json").read_text())
    assert metrics["mlflow_run_id"] == run_id and _run_id(proj, RUN) == run_id
    _no_running_or_duplicates(proj)
    # the rerun logged nothing twice: each metric once at step 0
    assert metric_steps(proj, run_id, "coco_val/AP") == [0]


def test_store_locked_too_long_stops_with_one_line(proj, capsys, monkeypatch):
    monkeypatch.setenv("HDM_MLFLOW_BUSY_TIMEOUT", "1")
    before, runs = _outputs(proj), _runs(proj)
    locker = _hold_lock(proj / "mlflow.db", 4.0)
    try:
        one_error(*cli(capsys, "evaluate", "--run", RUN), "mlflow.db", "locked")
    finally:
        locker.wait(timeout=30)
    assert _outputs(proj) == before and _runs(proj) == runs


def test_corrupt_store_stops_every_stage_with_one_line(proj, capsys):
    db = proj / "mlflow.db"
    db.write_bytes(os.urandom(4096))
    before = _outputs(proj)
    for stage in (["evaluate", "--run", RUN], ["report"], ["mlflow-init"]):
        one_error(*cli(capsys, *stage), "mlflow.db", "not a usable MLflow store")
    assert _outputs(proj) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_read_only_store_stops_with_one_line(proj, capsys):
    os.chmod(proj / "mlflow.db", 0o444)
    try:
        one_error(*cli(capsys, "evaluate", "--run", RUN), "mlflow.db", "read-only")
    finally:
        os.chmod(proj / "mlflow.db", 0o644)


def test_evaluation_never_replaces_a_missing_training_run(proj, capsys):
    """A store that lost the training's run: evaluation stops instead of logging to a new, empty run."""
    run_id = _run_id(proj, RUN)
    con = sqlite3.connect(proj / "mlflow.db")
    con.execute("UPDATE runs SET lifecycle_stage = 'deleted' WHERE run_uuid = ?", (run_id,))
    con.commit()
    con.execute("PRAGMA foreign_keys = ON")
    for table in ("metrics", "latest_metrics", "params", "tags"):
        con.execute(f"DELETE FROM {table} WHERE run_uuid = ?", (run_id,))
    con.execute("DELETE FROM runs WHERE run_uuid = ?", (run_id,))
    con.commit()
    con.close()
    before, runs = _outputs(proj), _runs(proj)
    one_error(*cli(capsys, "evaluate", "--run", RUN), "mlflow.db", run_id, "not in this store")
    assert _outputs(proj) == before and _runs(proj) == runs


def test_report_tolerates_a_run_without_params(proj, capsys):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{proj / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("hdm-benchmark-smoke")
    client = mlflow.tracking.MlflowClient()
    run = client.create_run(exp.experiment_id, run_name=f"{RUN}-seed0",
                            tags={"evaluated": "true", "row": RUN, "seed": "0"})
    client.log_metric(run.info.run_id, "coco_val/AP", 0.5)
    client.set_terminated(run.info.run_id, "FINISHED")
    rc, err = cli(capsys, "report")
    assert rc == 0 and "Traceback" not in err, err[-2000:]
    measured = json.loads((proj / "reports/smoke/measured.json").read_text())
    assert measured["runs"][RUN]["coco_val/AP"] == 0.5
    assert measured["run_info"][RUN]["backbone"] == ""


# ----------------------------------------------------------------------------- 3. unwritable places
def _block(path: Path) -> None:
    """Put a file where a folder must be: writing below it fails for every user, root included."""
    if path.is_dir():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("in the way\n")


@pytest.mark.parametrize("blocked, stage, named", [
    ("results", ["mlflow-init"], "results/smoke"),
    (f"results/smoke/runs/{RUN}/seed0/checkpoints", ["train", "--run", RUN], "checkpoints"),
    (f"results/smoke/eval/{RUN}/seed0", ["evaluate", "--run", RUN], f"results/smoke/eval/{RUN}/seed0"),
    ("reports/smoke", ["report"], "reports/smoke"),
])
def test_unwritable_output_folders_stop_with_one_line(proj, capsys, blocked, stage, named):
    if stage[0] == "train":  # a retrain from scratch, so the checkpoints folder is written
        (proj / f"results/smoke/runs/{RUN}/seed0/final.pth").unlink()
    _block(proj / blocked)
    before, runs = _outputs(proj), _runs(proj)
    one_error(*cli(capsys, *stage), named)
    assert _outputs(proj) == before
    _no_running_or_duplicates(proj)
    assert len(_runs(proj)) == len(runs)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_reports_folder_stops_with_one_line(proj, capsys):
    out = proj / "reports/smoke"
    out.mkdir(parents=True)
    os.chmod(out, 0o555)
    try:
        one_error(*cli(capsys, "report"), "reports/smoke", "ermission denied")
    finally:
        os.chmod(out, 0o755)


def test_stale_temporary_paths_are_removed_on_the_next_write(tmp_path):
    from pipeline import io

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".metrics.json.{io._HOST}-{dead.pid}.abc123.tmp"
    stale.mkdir()
    (stale / "metrics.json").write_text("half")
    live = tmp_path / f".metrics.json.{io._HOST}-{os.getppid()}.def456.tmp"  # a live writer's
    live.mkdir()
    other = tmp_path / ".other.json.somehost-1.abc.tmp"  # another output's: not ours to judge
    other.mkdir()
    io.write_json(tmp_path / "metrics.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "metrics.json"])


# ----------------------------------------------------------------------------- 4. mismatches
def test_backbone_typo_lists_the_valid_names(proj, capsys):
    _edit_params(proj, lambda p: p["profiles"]["smoke"]["archs"]["hrnet_w32"]["model"].update(backbone="hrnet_w18_smal"))
    shutil.rmtree(proj / f"results/smoke/runs/{RUN}/seed0")
    runs = _runs(proj)
    line = one_error(*cli(capsys, "train", "--run", RUN),
                      "profiles.smoke.archs.hrnet_w32.model.backbone", "'hrnet_w18_smal'", "hrnet_w18_small")
    assert "hrnet_w48" in line
    assert _runs(proj) == runs


def test_heatmap_size_mismatch_stops_before_the_mlflow_run_opens(proj, capsys):
    _edit_params(proj, lambda p: p["profiles"]["smoke"]["datasets"]["coco"].update(heatmap_size=[8, 12]))
    runs = _runs(proj)
    one_error(*cli(capsys, "train", "--run", RUN), "profiles.smoke.datasets.coco.heatmap_size", "[16, 24]")
    assert _runs(proj) == runs  # no run opened, none left FAILED


def test_checkpoint_of_another_run_names_both(proj, capsys):
    shutil.copy(proj / f"results/smoke/runs/{MPII}/seed0/final.pth", proj / f"results/smoke/runs/{RUN}/seed0/final.pth")
    before = _outputs(proj)
    one_error(*cli(capsys, "evaluate", "--run", RUN), "final.pth", f"'{MPII}'", "16 joints", f"'{RUN}'", "17 joints")
    assert _outputs(proj) == before


# ----------------------------------------------------------------------------- 5. corrupt data
def _truncate(path: Path, keep: float = 0.8) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_jpeg_stops_training_and_an_interrupted_retrain_leaves_no_stale_outputs(proj, capsys):
    ann = json.loads((proj / "data/smoke/coco/annotations/person_keypoints_train2017.json").read_text())
    image = proj / "data/smoke/coco/images/train2017" / ann["images"][0]["file_name"]
    saved = image.read_bytes()
    _truncate(image)
    run_id = _run_id(proj, RUN)
    run_dir = proj / f"results/smoke/runs/{RUN}/seed0"
    # a retrain to 3 epochs resumes from epoch 2 and meets the image in epoch 3
    _edit_params(proj, lambda p: p["profiles"]["smoke"]["train"].update(epochs=3))
    one_error(*cli(capsys, "train", "--run", RUN), image.name, "truncated JPEG")
    assert not (run_dir / "train_summary.json").exists() and not (run_dir / "final.pth").exists()
    assert [s for n, s, r in _runs(proj) if r == run_id] == ["FAILED"]
    _no_running_or_duplicates(proj)
    # the same with DataLoader worker processes: the worker's error still ends as one line
    _edit_params(proj, lambda p: p["profiles"]["smoke"]["train"].update(workers=1))
    one_error(*cli(capsys, "train", "--run", RUN), image.name, "truncated JPEG")
    # repaired: the rerun continues the same MLflow run to the end
    image.write_bytes(saved)
    rc, err = cli(capsys, "train", "--run", RUN)
    assert rc == 0, err[-2000:]
    assert _run_id(proj, RUN) == run_id and metric_steps(proj, run_id, "train/loss") == [1, 2, 3]
    _no_running_or_duplicates(proj)


def test_invalid_boxes_are_dropped_with_a_count(proj, caplog):
    import logging

    from pipeline.data.coco import load_coco_people

    root = proj / "data/smoke/coco"
    ann_file = root / "annotations/person_keypoints_val2017.json"
    data = json.loads(ann_file.read_text())
    people = [a for a in data["annotations"] if a.get("iscrowd", 0) == 0 and any(a["keypoints"][2::3])]
    people[0]["bbox"][2:] = [-5.0, -5.0]  # negative width and height: would be a point, scale [0, 0]
    people[1]["bbox"][2] = 0.0
    ann_file.write_text(json.dumps(data))
    det_file = root / "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"
    dets = json.loads(det_file.read_text())
    dets[0]["bbox"][2:] = [0.0, 0.0]
    dets[1]["bbox"][3] = -3.0
    det_file.write_text(json.dumps(dets))
    caplog.set_level(logging.WARNING)
    gt = load_coco_people(ann_file, root / "images/val2017", aspect_ratio=64 / 96)
    assert len(gt) == len(people) - 2
    assert all(min(r["scale"]) > 0 for r in gt)
    det = load_coco_people(ann_file, root / "images/val2017", aspect_ratio=64 / 96, use_gt_boxes=False,
                           det_file=det_file)
    assert all(min(r["scale"]) > 0 and r["area"] > 0 for r in det)
    warnings = [r.getMessage() for r in caplog.records]
    assert any("person_keypoints_val2017.json: dropped 2 ground-truth person boxes" in w for w in warnings)
    assert any("COCO_val2017_detections_AP_H_56_person.json: dropped 2 person detections" in w for w in warnings)


# ----------------------------------------------------------------------------- 6. signals
def _start(d: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}", "PYTHONPATH": str(d)}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--quiet", *args], cwd=d, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, timeout: float = 120.0) -> None:
    t0 = time.time()
    while not condition():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


def _slow_retrain(d: Path) -> None:
    """A fresh retrain of RUN whose epochs take a few seconds (batch 1), so a signal lands inside one."""
    shutil.rmtree(d / f"results/smoke/runs/{RUN}/seed0")
    _edit_params(d, lambda p: p["profiles"]["smoke"]["train"].update(batch_size=1, epochs=3))


def _leftovers(d: Path) -> list[Path]:
    return [p for root in OUTPUT_ROOTS for p in (d / root).rglob("*.tmp")]


def test_sigterm_marks_the_run_killed_and_the_rerun_resumes_it(proj):
    _slow_retrain(proj)
    ckpt_dir = proj / f"results/smoke/runs/{RUN}/seed0/checkpoints"
    p = _start(proj, "train", "--run", RUN)
    _wait_for(lambda: (ckpt_dir / "epoch_001.pth").exists() or p.poll() is not None)
    # then until epoch 1's metrics are committed, so the signal lands inside epoch 2's training (a signal
    # during the SQLite commit itself is not covered by this test)
    _wait_for(lambda: p.poll() is not None or any(
        n == RUN and s == "RUNNING" and metric_steps(proj, r, "train/loss") == [1] for n, s, r in _runs(proj)))
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    one_error(p.returncode, err, f"train --run {RUN}", "SIGTERM", status=143)
    new = [(n, s, r) for n, s, r in _runs(proj) if n == RUN and s != "FINISHED"]
    assert [s for _, s, _ in new] == ["KILLED"]
    assert not _leftovers(proj) and not (proj / f"results/smoke/runs/{RUN}/seed0/final.pth").exists()
    p = _start(proj, "train", "--run", RUN)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    status = {r: s for _, s, r in _runs(proj)}
    assert status[new[0][2]] == "FINISHED"
    assert metric_steps(proj, new[0][2], "train/loss") == [1, 2, 3]
    assert "resuming" in (proj / f"results/smoke/runs/{RUN}/seed0/train.log").read_text()


def test_sigkill_before_the_first_checkpoint_the_rerun_reuses_the_run(proj, capsys):
    _slow_retrain(proj)
    ckpt_dir = proj / f"results/smoke/runs/{RUN}/seed0/checkpoints"
    old = {r for n, _, r in _runs(proj) if n == RUN}
    p = _start(proj, "train", "--run", RUN)
    _wait_for(lambda: any(n == RUN and s == "RUNNING" for n, s, _ in _runs(proj)) or p.poll() is not None)
    p.kill()
    p.wait(timeout=60)
    assert not list(ckpt_dir.glob("epoch_*.pth")), "the kill came too late for this test"
    orphan = [r for n, s, r in _runs(proj) if n == RUN and r not in old]
    assert len(orphan) == 1
    rc, err = cli(capsys, "train", "--run", RUN)
    assert rc == 0, err[-2000:]
    assert {r for n, _, r in _runs(proj) if n == RUN} == old | set(orphan)  # reused, not a second one
    assert {r: s for _, s, r in _runs(proj)}[orphan[0]] == "FINISHED"
    assert metric_steps(proj, orphan[0], "train/loss") == [1, 2, 3]
    assert not _leftovers(proj)



def test_a_replaced_store_gets_the_checkpoint_curves_replayed(proj, capsys):
    """The store was replaced after training (moved away, a new mlflow-init): extending the run starts a
    new MLflow run and first logs the epochs its checkpoint holds, so the new run's curve is whole."""
    history = json.loads((proj / f"results/smoke/runs/{RUN}/seed0/train_summary.json").read_text())["history"]
    (proj / "mlflow.db").rename(proj / "replaced.db")
    rc, err = cli(capsys, "mlflow-init")
    assert rc == 0, err[-2000:]
    epochs = len(history) + 1
    _edit_params(proj, lambda p: p["profiles"]["smoke"]["train"].update(epochs=epochs))
    rc, err = cli(capsys, "train", "--run", RUN)
    assert rc == 0, err[-2000:]
    run_id = _run_id(proj, RUN)
    assert "starting a new run" in (proj / f"results/smoke/runs/{RUN}/seed0/train.log").read_text()
    assert metric_steps(proj, run_id, "train/loss") == list(range(1, epochs + 1))
    con = sqlite3.connect(proj / "mlflow.db")
    try:
        logged = dict(con.execute("SELECT step, value FROM metrics WHERE run_uuid = ? AND key = 'train/loss'",
                                  (run_id,)))
    finally:
        con.close()
    assert [logged[row["epoch"]] for row in history] == pytest.approx([row["train_loss"] for row in history])

# ----------------------------------------------------------------------------- 7. late evaluation failures
def test_gt_valid_with_another_person_count_fails_before_any_output(proj, capsys):
    from scipy.io import loadmat, savemat

    gt_file = proj / "data/smoke/mpii/annot/gt_valid.mat"
    gt = loadmat(gt_file)
    savemat(gt_file, {"dataset_joints": gt["dataset_joints"], "jnt_missing": gt["jnt_missing"][:, :-1],
                      "pos_gt_src": gt["pos_gt_src"][:, :, :-1], "headboxes_src": gt["headboxes_src"][:, :, :-1]})
    shutil.rmtree(proj / f"results/smoke/eval/{MPII}/seed0")
    before = _outputs(proj)
    one_error(*cli(capsys, "evaluate", "--run", MPII), "gt_valid.mat", "people")
    assert _outputs(proj) == before


def test_mlflow_failure_after_predictions_leaves_no_output(proj, capsys, monkeypatch):
    import mlflow

    def locked(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(mlflow, "log_artifact", locked)
    shutil.rmtree(proj / f"results/smoke/eval/{RUN}/seed0")
    before = _outputs(proj)
    one_error(*cli(capsys, "evaluate", "--run", RUN), "mlflow.db", "locked")
    assert _outputs(proj) == before and not _leftovers(proj)
    _no_running_or_duplicates(proj)


# ----------------------------------------------------------------------------- 8. outside the project
def test_odd_profile_names_are_refused(proj, capsys):
    one_error(*cli(capsys, "--profile", "../../../x", "data", "--dataset", "coco"), "profile", "'../../../x'")

    def evil(p):
        p["profiles"]["../x"] = p["profiles"].pop("smoke")
        p["profile"] = "../x"

    _edit_params(proj, evil)
    one_error(*cli(capsys, "data", "--dataset", "coco"), "params.yaml", "profiles", "'../x'")
    assert not (proj.parent / "x").exists() and not (proj / "data/x").exists()


def test_copied_store_never_writes_into_the_original(base, tmp_path, monkeypatch, capsys):
    d = tmp_path / "copy"
    shutil.copytree(base, d, symlinks=True)  # the store still names base/mlruns
    monkeypatch.chdir(d)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
    original = sorted(p for p in (base / "mlruns").rglob("*"))
    shutil.rmtree(d / f"results/smoke/eval/{RUN}/seed0")
    one_error(*cli(capsys, "evaluate", "--run", RUN), "mlflow.db", "outside this project", str(base))
    assert sorted(p for p in (base / "mlruns").rglob("*")) == original
