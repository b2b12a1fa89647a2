"""The one command line behind Snakemake, DVC and manual use: ``python -m pipeline <stage>``.

Stages (each writes its outputs atomically and can be run by hand):
  validate     check params.yaml against the schema
  data         synthesise (demo/smoke) or download + verify (paper) one dataset; writes its manifest
  mlflow-init  create the MLflow store and the profile's experiment, once, before parallel jobs
  pretrain     pretrain one architecture's backbone on the neutral shape task (demo/smoke; committed)
  train        train one run                 evaluate  evaluate one run
  report       write Tables 1–6 and figures  runs      list the run names
  bench        benchmarks (``bench loss``: the HDM loss engine; ``bench hdm-optimum``: the loss's optimum
               for both epsilon units; ``bench data``: loading; ``bench train``:
               training steps per run) -> reports/benchmarks/*.json
  testdev-scores  load the COCO server's test-dev scores of one run into MLflow (Table 2)
  paper-config    write docs/paper-config.md: every paper run's settings against its official config
A bad input stops with one line, ``error: <file or key>: <problem>``, and exit status 1.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn, Sequence

from . import io
from .config import (Paths, experiment_name, load_params, report_run_names, resolve_run, run_label, run_names,
                     seeds, tracking_uri)
from .errors import PipelineError, Terminated, shorten
from .progress import quiet_library_bars
from .report.beyond import table_numbers
from .termination import on_sigterm, run_child
from .tracking import check_server, init_store
from .tracking.metric_names import split_key

log = logging.getLogger("pipeline")
# Seconds torchrun gives its workers to stop after a SIGTERM before it kills them (torch's default: 30):
# one training step, or the end of an epoch (validation, checkpoint), with room to spare on a CPU
TORCHRUN_STOP_GRACE_S = 180
# Top-level names of this project's loggers; every other logger belongs to a library (MLflow, SQLAlchemy,
# alembic, urllib3, torch, ...)
OWN_LOGGERS = frozenset({"pipeline", "scripts", "__main__"})
# Stages that open the MLflow store: a tracking server is asked once before their work starts
TRACKING_STAGES = frozenset({"mlflow-init", "train", "evaluate", "report", "testdev-scores"})
# Characters of argparse's error message (it quotes a rejected argument whole)
MAX_ARGUMENT_ERROR = 300


class _OwnRecordsOnly(logging.Filter):
    """The console (stderr) shows this project's log records only; a library's go to the stage's log
    file, tracebacks included, or nowhere when the stage has none.

    A library's traceback (MLflow logs one for every failed SQLite write) belongs to an exception that
    reaches the CLI and ends as its one ``error:`` line; printed as well, it buries that line under dozens
    of lines of MLflow or SQLAlchemy internals, as urllib3's retry warnings do while a server is down.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] in OWN_LOGGERS


def _setup_logging(log_file: Path | None, *, mode: str = "w", level: int = logging.INFO,
                   prefix: str = "") -> None:
    """Log to stderr and, if given, to ``log_file``; a log that cannot be written is a one-line error.

    Libraries' records go to the log file only (:class:`_OwnRecordsOnly`).
    """
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(_OwnRecordsOnly())
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        io.make_dirs(log_file.parent)
        try:
            handlers.append(logging.FileHandler(log_file, mode=mode))
        except OSError as exc:
            raise PipelineError(str(log_file), f"cannot write the log ({exc.strerror or exc})") from None
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s",
                        handlers=handlers, force=True)


def _seed(args, params) -> int:
    """``--seed``, or the first of params.yaml's ``seeds``."""
    return seeds(params)[0] if args.seed is None else args.seed


def _tags(run: str) -> dict[str, str]:
    """MLflow tags from the report's own run-to-table mapping, so the UI can filter runs by paper table."""
    return {"tables": table_numbers(run)}


def cmd_validate(args, params) -> None:
    study = len(run_names(params, study=True)) - len(run_names(params))
    verdict = len(run_names(params, verdict=True)) - len(run_names(params, study=True))
    print(f"{args.params}: valid (profile {params['profile']}, {len(params['runs'])} runs, {study} study-only, "
          f"{verdict} verdict-only)")


def cmd_runs(args, params) -> None:
    """The main target's runs, or with ``--study`` the study target's (main + study.runs), or with
    ``--verdict`` the verdict target's (main + study.runs + verdict.runs)."""
    print("\n".join(run_names(params, study=args.study, verdict=args.verdict)))


def cmd_data(args, params) -> None:
    from .data.prepare import prepare_dataset

    profile = params["profile"]
    _setup_logging(Paths(profile).logs(f"data_{args.dataset}"))
    manifest = prepare_dataset(params, profile, args.dataset, progress=not args.quiet)
    print(f"{args.dataset}: {manifest}")


def cmd_mlflow_init(args, params) -> None:
    profile = params["profile"]
    _setup_logging(None)
    info = init_store(tracking_uri(params), experiment_name(params))
    io.write_json(Paths(profile).mlflow_marker, info)
    print(f"MLflow store ready: {info['tracking_uri']} (experiment {info['experiment']})")


def cmd_pretrain(args, params) -> None:
    """Pretrain one architecture's backbone -> pretrained/<profile>/<arch>/ (skipped when up to date)."""
    from .pretrain.train import pretrain_arch

    profile = params["profile"]
    _setup_logging(Paths(profile).logs(f"pretrain_{args.arch}"))
    out = pretrain_arch(params, profile, args.arch, tracking_uri=tracking_uri(params),
                        experiment=experiment_name(params), force=args.force)
    print(f"{args.arch}: {out}")


def cmd_train(args, params) -> None:
    """Train one run. With ``train.gpus`` > 1 it relaunches itself under torchrun (one process per GPU)
    unless already running under torchrun; a new start resumes from the run's checkpoints."""
    from .engine.train import dist_env, torchrun_command, train_run, under_torchrun

    cfg = resolve_run(params, args.run, seed=_seed(args, params))
    paths = Paths(cfg["profile"])
    run_dir = paths.run_dir(args.run, cfg["seed"])
    gpus = cfg["train"]["gpus"]
    if gpus > 1 and not under_torchrun():
        _setup_logging(None)
        cmd = torchrun_command(gpus, ["--params", str(args.params), "--profile", cfg["profile"],
                                      *(["--quiet"] if args.quiet else []), "train", "--run-name", args.run,
                                      "--seed", str(cfg["seed"])])
        log.info("train.gpus = %d: relaunching under torchrun: %s", gpus, " ".join(cmd))
        # a SIGTERM or Ctrl-C here reaches every worker through torchrun; they stop at their next step
        # boundary (an epoch's end goes on to its checkpoint first), given this long before torchrun kills them
        child_env = {**os.environ}
        grace = child_env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(TORCHRUN_STOP_GRACE_S))
        rc = run_child(cmd, env=child_env,
                       stop_timeout=(int(grace) if grace.isdigit() else TORCHRUN_STOP_GRACE_S) + 60)
        if rc != 0:
            raise PipelineError(f"train --run {args.run} --seed {cfg['seed']}",
                                f"torchrun exited with status {rc} (see {run_dir / 'train.log'})")
        return
    env = dist_env()
    if env.is_main:  # appended to: a resumed run keeps the log of its earlier attempts
        _setup_logging(run_dir / "train.log", mode="a")
    else:
        _setup_logging(None, level=logging.WARNING, prefix=f"[rank {env.rank}] ")
    t0 = time.time()
    ckpt = train_run(cfg, tracking_uri=tracking_uri(params), experiment=experiment_name(params),
                     extra_tags=_tags(args.run), progress=not args.quiet)
    if env.is_main:
        log.info("trained %s in %.1f s -> %s", run_label(args.run, cfg["seed"]), time.time() - t0, ckpt)


def cmd_evaluate(args, params) -> None:
    from .engine.evaluate import evaluate_run

    cfg = resolve_run(params, args.run, seed=_seed(args, params))
    paths = Paths(cfg["profile"])
    _setup_logging(paths.eval_dir(args.run, cfg["seed"]) / "evaluate.log")
    t0 = time.time()
    res = evaluate_run(cfg, tracking_uri=tracking_uri(params), experiment=experiment_name(params),
                       extra_tags=_tags(args.run), progress=not args.quiet)
    main = {k: round(v, 4) for k, v in res["metrics"].items() if k in ("coco_val/AP", "coco_testdev/AP",
                                                                         "mpii_val/Mean")}
    log.info("evaluated %s in %.1f s: %s", run_label(args.run, cfg["seed"]), time.time() - t0, json.dumps(main))


def cmd_report(args, params) -> None:
    from .report.build import build_report

    profile = params["profile"]
    paths = Paths(profile)
    target = "verdict" if args.verdict else "study" if args.study else None
    _setup_logging(paths.logs(f"report_{target}" if target else "report"))
    out_dir = {"verdict": paths.verdict_reports, "study": paths.study_reports}.get(target, paths.reports)
    # never a split: tune run in the tables; the verdict's tuning table reads them (with seeds)
    names = (run_names(params, verdict=True) if args.verdict else report_run_names(params, study=args.study))
    written = build_report(profile=profile, tracking_uri=tracking_uri(params), experiment=experiment_name(params),
                           run_names=names, seeds=seeds(params, study=args.study or args.verdict), out_dir=out_dir)
    print(f"wrote {len(written)} files to {out_dir}/")


def cmd_testdev_scores(args, params) -> None:
    """Log the COCO evaluation server's test-dev scores as ``coco_testdev/*`` on the run's MLflow run."""
    from .engine import builders
    from .metrics.coco_server import log_server_scores

    cfg = resolve_run(params, args.run, seed=_seed(args, params))
    if cfg["dataset"] != "coco":
        raise PipelineError(f"--run {args.run}", f"a {cfg['dataset']} run has no COCO test-dev scores")
    if builders.holdout_split(cfg) == builders.TUNE:
        raise PipelineError(f"--run {args.run}", "a split: tune run is evaluated on the tune split only: "
                                                 "it has no test-dev submission")
    _setup_logging(None)
    if args.variant and args.variant not in builders.eval_variants(cfg):
        raise PipelineError(f"--variant {args.variant}", f"run {args.run} is not decoded with {args.variant} "
                                                         "(only MSE runs have the DARK variant)")
    res = log_server_scores(args.scores, run=args.run, seed=cfg["seed"], tracking_uri=tracking_uri(params),
                            experiment=experiment_name(params),
                            eval_dir=Paths(cfg["profile"]).eval_dir(args.run, cfg["seed"]), variant=args.variant)
    shown = ", ".join(f"{split_key(k)[1]} {100 * v:.1f}" for k, v in res["metrics"].items())
    print(f"{args.run}: logged the server's test-dev scores to MLflow run {res['mlflow_run_id']}: {shown}")


def cmd_bench(args, params) -> None:
    from .bench import run_loss_benchmark
    from .bench.loss import parse_size

    if args.what == "loss":
        try:
            sizes = None if args.sizes is None else dict(parse_size(s) for s in args.sizes)
        except ValueError as exc:
            raise PipelineError("--sizes", str(exc)) from None
        if args.threads is not None and args.threads < 1:
            raise PipelineError("--threads", f"must be >= 1, got {args.threads}")
        run_loss_benchmark(sizes=sizes, threads=args.threads, repeats=max(1, args.repeats),
                           out_dir=Path(args.out_dir), params=params, profile=params["profile"])
    elif args.what == "hdm-optimum":
        from .bench.hdm_optimum import run_hdm_optimum_benchmark

        if not 0 < args.offset_step <= 1:
            raise PipelineError("--offset-step", f"must be in (0, 1], got {args.offset_step}")
        if args.steps < 11:
            raise PipelineError("--steps", f"must be >= 11, got {args.steps}")
        run_hdm_optimum_benchmark(params, profile=params["profile"], step=args.offset_step, steps=args.steps,
                                  out_dir=Path(args.out_dir))
    elif args.what == "data":
        from .bench.data import run_data_benchmark

        run_data_benchmark(params, dataset=args.dataset, workers=args.workers, seconds=args.seconds,
                           batches=args.batches, cv2_threads=args.cv2_threads, out_dir=Path(args.out_dir))
    else:
        from .bench.train import run_train_benchmark

        run_train_benchmark(params, profile=params["profile"], runs=args.runs, iters=args.iters,
                            warmup=args.warmup, device=args.device, out_dir=Path(args.out_dir),
                            progress=not args.quiet)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, with its error line (which quotes a mistyped argument whole) cut to a readable
    length; subparsers are made of the same class."""

    def error(self, message: str) -> NoReturn:
        super().error(shorten(message, MAX_ARGUMENT_ERROR, keep_end=MAX_ARGUMENT_ERROR // 3))


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def cmd_paper_config(args, params) -> None:
    """Write docs/paper-config.md (every paper run beside its official config), or with ``--check``
    fail when the file differs from what params.yaml gives now."""
    from .report.paper_config import differences, render

    text = render(params)
    out = Path(args.output)
    if args.check:
        if not out.is_file() or out.read_text() != text:
            raise PipelineError(str(out), "stale: regenerate it with `python -m pipeline paper-config`")
        print(f"{out}: current")
    else:
        io.write_text(out, text)
        print(f"wrote {out}")
    for line in differences(params):
        log.warning("undocumented difference from the reference: %s", line)


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """The ``bench`` stage: one sub-command for four benchmarks, each option naming the one it serves."""
    b = sub.add_parser("bench", help="benchmarks: speed and memory against a reference, JSON in reports/benchmarks/")
    b.add_argument("what", choices=["loss", "data", "train", "hdm-optimum"], help="loss: the HDM loss engine against "
                   "a naive autograd Sinkhorn | data: training-data loading, images/s per DataLoader worker count | "
                   "hdm-optimum: the loss's optimum over a free heatmap and its decoded bias, for both "
                   "hdm.epsilon_units (eps and stride of coco_hrnet_w48_hdm in the profile) | "
                   "train: training steps of each run at its own config (images/s, peak memory, GPU-hours)")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's setting)")
    b.add_argument("--sizes", nargs="+", default=None, metavar="HxW",
                   help="heatmap sizes, e.g. demo 64x48 96x72 (the default)")
    b.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement (median)")
    b.add_argument("--dataset", choices=["coco", "mpii"], default="coco", help="data: which dataset (default coco)")
    b.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="data: DataLoader worker counts")
    b.add_argument("--seconds", type=float, default=5.0, help="data: about how long each in-process timed loop runs")
    b.add_argument("--batches", type=int, default=None,
                   help="data: timed batches per worker count (overrides --seconds)")
    b.add_argument("--cv2-threads", nargs="+", default=["default", "0"], metavar="N|default",
                   help="data: cv2.setNumThreads in the loading processes ('default': untouched, as in training)")
    b.add_argument("--runs", nargs="+", default=None, metavar="RUN",
                   help="train: runs to measure (default: the COCO runs of Table 1)")
    b.add_argument("--iters", type=int, default=200, help="train: timed training steps per run")
    b.add_argument("--warmup", type=int, default=20, help="train: untimed steps first")
    b.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="train: override the profile's device")
    b.add_argument("--offset-step", type=float, default=0.125,
                   help="hdm-optimum: spacing of the dot's sub-pixel offsets in [0, 1)^2")
    b.add_argument("--steps", type=int, default=1000, help="hdm-optimum: Adam steps on the free heatmap's logits")
    b.add_argument("--out-dir", default="reports/benchmarks", help="output folder (default: reports/benchmarks)")
    b.set_defaults(func=cmd_bench)


def _add_testdev_scores_parser(sub: argparse._SubParsersAction) -> None:
    """The ``testdev-scores`` stage: scores from the COCO server, which the pipeline cannot compute."""
    t = sub.add_parser("testdev-scores", help="load the COCO server's test-dev scores of one run into MLflow")
    t.add_argument("--run", required=True, help="a COCO key of params.yaml's runs or study.runs")
    t.add_argument("--seed", type=_nonneg_int, default=None,
                   help="training seed of the evaluated run (default: the first of params.yaml's seeds)")
    t.add_argument("--scores", required=True, help="the server's scores: JSON (metrics or COCOeval.stats) or "
                                                    "COCOeval's printed summary; values > 1 are read as percent")
    t.add_argument("--variant", choices=["dark"], default=None,
                   help="the scores of the run's DARK-decoded submission (its own zip; Table 2's '+ DARK' line)")
    t.set_defaults(func=cmd_testdev_scores)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="configuration file (default: params.yaml)")
    p.add_argument("--profile", default=None, help="override params.yaml's profile switch")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="stage")
    sub.add_parser("validate", help="check params.yaml").set_defaults(func=cmd_validate)
    rn = sub.add_parser("runs", help="list the run names")
    rn.add_argument("--study", action="store_true", help="the study target's runs: runs and study.runs")
    rn.add_argument("--verdict", action="store_true",
                    help="the verdict target's runs: runs, study.runs and verdict.runs")
    rn.set_defaults(func=cmd_runs)
    d = sub.add_parser("data", help="synthesise, or download and verify, one dataset")
    d.add_argument("--dataset", required=True, choices=["coco", "mpii"])
    d.set_defaults(func=cmd_data)
    sub.add_parser("mlflow-init", help="create the MLflow store and experiment").set_defaults(func=cmd_mlflow_init)
    pt = sub.add_parser("pretrain", help="pretrain one architecture's backbone (demo/smoke profiles)")
    pt.add_argument("--arch", required=True, help="a key of profiles.<profile>.archs")
    pt.add_argument("--force", action="store_true", help="retrain even when the weights are up to date")
    pt.set_defaults(func=cmd_pretrain)
    for name, func in (("train", cmd_train), ("evaluate", cmd_evaluate)):
        s = sub.add_parser(name, help=f"{name} one run")
        # train also takes --run-name: torchrun's own argument parser rejects "--run" in the relaunch
        # command (an ambiguous abbreviation of its --run-path)
        s.add_argument("--run", *(["--run-name"] if name == "train" else []), dest="run", required=True,
                       help="a key of params.yaml's runs, study.runs or verdict.runs")
        s.add_argument("--seed", type=_nonneg_int, default=None,
                       help="training seed (default: the first of params.yaml's seeds)")
        s.set_defaults(func=func)
    r = sub.add_parser("report", help="write Tables 1-6, findings.md and figures")
    r.add_argument("--study", action="store_true",
                   help="the study target: every run and study.runs with study.seeds, into "
                        "reports/<profile>/study/")
    r.add_argument("--verdict", action="store_true",
                   help="the verdict target: every run, study.runs and verdict.runs with study.seeds, into "
                        "reports/<profile>/verdict/")
    r.set_defaults(func=cmd_report)
    _add_bench_parser(sub)
    c = sub.add_parser("paper-config", help="write docs/paper-config.md: each paper run against its official config")
    c.add_argument("--output", default="docs/paper-config.md", help="where (default: docs/paper-config.md)")
    c.add_argument("--check", action="store_true", help="only check that the file is current (exit 1 if stale)")
    c.set_defaults(func=cmd_paper_config)
    _add_testdev_scores_parser(sub)
    return p


def _stage(args: argparse.Namespace) -> str:
    run = getattr(args, "run", None)
    return f"{args.command} --run {run}" if run else args.command


def _os_error_line(exc: OSError) -> str:
    """``<file>: <cause>`` for an environment failure no lower layer turned into a PipelineError."""
    where = exc.filename if exc.filename is not None else "(file system)"
    cause = exc.strerror or type(exc).__name__
    if exc.filename2 is not None:
        cause += f" (to {exc.filename2})"
    return f"{where}: {cause}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one stage; every failure the user can fix ends as one ``error:`` line and a non-zero status."""
    args = build_parser().parse_args(argv)
    quiet_library_bars(not args.quiet)  # before a stage imports the libraries that draw bars
    # SIGTERM (SLURM's time limit, ``kill``) unwinds like Ctrl-C: temporary files are removed and the
    # MLflow run is marked KILLED before the process exits (held back during a store write; training
    # stops at its next step boundary, every process of a torchrun job at the same one)
    previous = signal.signal(signal.SIGTERM, on_sigterm) if _main_thread() else None
    try:
        params = load_params(args.params, args.profile)
        if args.command in TRACKING_STAGES:
            check_server(tracking_uri(params))  # a dead server ends here, not after the data is loaded
        args.func(args, params)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a read-only folder, a full disk, a file where a folder should be
        print(f"error: {_os_error_line(exc)}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"error: {_stage(args)}: stopped by SIGTERM; rerun the stage to continue "
              "(training resumes from its last epoch checkpoint)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"error: {_stage(args)}: interrupted; rerun the stage to continue", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
