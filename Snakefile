# HDM benchmark workflow. Default target: every table of the active profile (params.yaml).
#   snakemake --cores all                          # demo profile (synthetic data, CPU, minutes)
#   snakemake --cores all --config profile=paper   # the paper's setting (real data, GPUs)
#   snakemake --profile workflow/profiles/slurm --config profile=paper   # on a SLURM cluster
# Every rule calls the same CLI as dvc.yaml: `python -m pipeline <stage>`; see workflow/rules/.
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)
from pipeline.config import (TABLE_FILES, Paths, is_tuning_run, read_yaml, report_run_names, resolve_run, run_names,
                             run_specs, seeds, validate_params)
from pipeline.errors import PipelineError

# read with the project's loader first: it refuses a file whose YAML aliases expand beyond reason,
# which Snakemake's own loader would build and hand on
try:
    read_yaml(Path("params.yaml"))
except PipelineError as exc:
    sys.exit(f"error: {exc}")

configfile: "params.yaml"

try:
    validate_params(config, "params.yaml (with --config overrides)")
except PipelineError as exc:
    sys.exit(f"error: {exc}")

PROFILE = config["profile"]
RUNS = run_names(config)                     # the main target's runs (Tables 1-5, Table 6's stride-4 lines)
STUDY_RUNS = run_names(config, study=True)  # the study target's: RUNS + study.runs (beyond the paper)
VERDICT_RUNS = run_names(config, verdict=True)  # the verdict target's: STUDY_RUNS + verdict.runs
RUN_SPECS = run_specs(config, verdict=True)   # every run a rule may be asked for
# split: tune runs choose hyperparameters on the tune split of the training data: never in a table,
# trained and evaluated (on tune only) by the `tune` target (with seeds) and read by the verdict's
# tuning table
REPORT_RUNS = report_run_names(config)
STUDY_REPORT_RUNS = report_run_names(config, study=True)
VERDICT_REPORT_RUNS = report_run_names(config, verdict=True)
TUNE_RUNS = [r for r in VERDICT_RUNS if is_tuning_run(config, r)]
SEEDS = seeds(config)                   # the main target's training seeds
STUDY_SEEDS = seeds(config, study=True) # the study target's
# The interpreter running Snakemake (the project's virtualenv), quoted for the shell: the project folder
# that holds .venv may have spaces or shell characters in its path. Every path and wildcard a rule puts
# into its command is quoted likewise ({log:q}, {wildcards.run:q}).
PY = shlex.quote(sys.executable)
CLI = f"{PY} -m pipeline --profile {{wildcards.profile:q}}"

wildcard_constraints:
    profile="[A-Za-z0-9_-]+",
    run="[a-z0-9_]+",
    seed="[0-9]+",


def run_config(wildcards):
    """The run's fully resolved configuration (its seed included): a change to it reruns the run."""
    return json.dumps(resolve_run(config, wildcards.run, wildcards.profile, int(wildcards.seed)), sort_keys=True)


include: "workflow/rules/data.smk"
include: "workflow/rules/tracking.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/bench.smk"


rule all:
    default_target: True
    input:
        [str(Paths(PROFILE).reports / f) for f in TABLE_FILES],


# Every run, and the study-only study.runs, with study.seeds (>= 3): `snakemake --cores all study`;
# tables in reports/<profile>/study/.
rule study:
    input:
        [str(Paths(PROFILE).study_reports / f) for f in TABLE_FILES],


# The study plus verdict.runs (the objections that do not fit the study's time budget), with study.seeds:
# `snakemake --cores all verdict`; tables and findings.md (its verdict on top) in reports/<profile>/verdict/.
rule verdict:
    input:
        [str(Paths(PROFILE).verdict_reports / f) for f in TABLE_FILES],


# Every split: tune run (of any run set) with seeds, evaluated on the tune split:
# `snakemake --cores all tune`; compare their coco_tune/* / mpii_tune/* in MLflow or in
# results/<profile>/eval/<run>/seed<k>/metrics.json (the verdict's tuning table lists them).
rule tune:
    input:
        [str(Paths(PROFILE).eval_metrics(run, seed)) for run in TUNE_RUNS for seed in SEEDS],
