# Training: one job per run of params.yaml (runs, and study.runs for the study target) and training
# seed, with its threads, memory and GPUs declared.
#
# GPU runs (train.gpus > 0) take their SLURM resources from profiles.<p>.cluster, per GPU:
#   gpu=<train.gpus>, gpu_model=<cluster.gpu_model>  -> sbatch --gpus=<model>:<n> (--gpus=<n> without a model)
#   cpus_per_gpu=<cluster.cpus_per_gpu>               -> sbatch --cpus-per-gpu=<c>
#   mem_mb=<cluster.mem_mb_per_gpu> × gpus            -> sbatch --mem <m>
#   runtime=<cluster.runtime_min>                     -> sbatch -t <minutes>
# (snakemake-executor-plugin-slurm's conventions; `tasks` is left out: the job is one launcher that
# starts one process per GPU under torchrun). Clusters that want --gres instead can set
# `gres: "gpu:<model>:<n>"` for train with set-resources in their profile and drop gpu/gpu_model there.
# Locally, `--resources gpu=N` caps the GPUs that concurrent training jobs use.


def _train_cfg(w):
    return resolve_run(config, w.run, w.profile, int(w.seed))["train"]


def _cluster(w):
    return config["profiles"][w.profile].get("cluster") or {}


def _gpu_job(w):
    return _train_cfg(w)["gpus"] > 0 and config["profiles"][w.profile]["device"] != "cpu"


def _train_mem_mb(w):
    if not _gpu_job(w):
        return 4000
    return _cluster(w).get("mem_mb_per_gpu", 16000) * _train_cfg(w)["gpus"]


def _train_priority(w):
    """Longest-first scheduling: a rough training cost (epochs × input pixels × train images of the
    synthetic data; 1 image for real data), so the big runs start early and the short runs and the
    evaluations fill the cores at the end instead of one long run finishing alone."""
    cfg = resolve_run(config, w.run, w.profile, int(w.seed))
    data = config["profiles"][w.profile]["data"]
    images = 1
    if data.get("source") == "synthetic":
        images = data["synthetic"][cfg["dataset"]]["train_images"]
    width, height = cfg["data"]["input_size"]
    return 1 + int(cfg["train"]["epochs"] * width * height * images // 1_000_000)


def _train_runtime(w):
    if not _gpu_job(w):
        return 30
    return _cluster(w).get("runtime_min", 4320)


def _init_checkpoint(w):
    """A run with init_from starts from that run's final.pth of the same seed: train it first."""
    init = RUN_SPECS[w.run].get("init_from")
    return [str(Paths(w.profile).checkpoint(init, int(w.seed)))] if init else []


rule train:
    input:
        data=lambda w: f"data/{w.profile}/{RUN_SPECS[w.run]['dataset']}.manifest.json",
        store="results/{profile}/mlflow_store.json",
        pretrained=lambda w: pretrained_outputs(w.profile, [RUN_SPECS[w.run]["arch"]]),
        init=_init_checkpoint,
    output:
        "results/{profile}/runs/{run}/seed{seed}/final.pth",
    params:
        config=run_config,
    log:
        "logs/{profile}/train_{run}-seed{seed}.log",
    threads: lambda w: resolve_run(config, w.run, w.profile, int(w.seed))["train"]["threads"]
    priority: _train_priority
    resources:
        mem_mb=_train_mem_mb,
        runtime=_train_runtime,
        gpu=lambda w: _train_cfg(w)["gpus"] if _gpu_job(w) else 0,
        gpu_model=lambda w: _cluster(w).get("gpu_model", "") if _gpu_job(w) else "",
        cpus_per_gpu=lambda w: _cluster(w).get("cpus_per_gpu", _train_cfg(w)["threads"]) if _gpu_job(w) else 0,
    shell:
        CLI + " train --run {wildcards.run:q} --seed {wildcards.seed:q} 2> {log:q}"
