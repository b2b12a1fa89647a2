# Pretraining: each demo/smoke architecture's backbone on the neutral shape-scene task (pipeline/pretrain),
# the demo's analogue of ImageNet weights. The outputs are committed (pretrained/<profile>/<arch>/) and
# pinned by sha256 in params.yaml, so a fresh clone does not retrain them:
#   - the rule has no file inputs once its output exists (only params; the MLflow store only while the
#     output is missing, see pretrain_store), so Snakemake never reruns it for file dates; a checkout has
#     no .snakemake metadata, so no params trigger fires either;
#   - with metadata, a change of the arch's pretrain config (params below) reruns it; the new weights no
#     longer match the pinned sha256 and training stops with one line naming the file until it is pinned;
#   - without metadata, the data stage compares the sidecar's config with params.yaml and stops likewise.
# Only architectures that pin weights (model.backbone_weights) have jobs; the paper profile has none.
from pipeline.pretrain.spec import pinned_archs, pretrain_config


def pretrain_params(w):
    """Everything the weights depend on (not the sha256 pin, which is their result)."""
    return json.dumps(pretrain_config(config, w.profile, w.arch), sort_keys=True)


def pretrain_store(w):
    """The MLflow store, but only while the weights are missing. mlflow_init makes the store on a fresh
    clone, and an input that another job makes reruns its consumers even when `ancient`: the committed
    weights would be retrained. When they exist the store is left out (a rerun for changed params
    finds the store of the earlier run)."""
    if Paths(w.profile).pretrained_dir(w.arch).exists():
        return []
    return [f"results/{w.profile}/mlflow_store.json"]


def pretrained_outputs(profile, archs):
    """The pretrain outputs that training (and, for ordering, the data stage) of ``archs`` need."""
    return [str(Paths(profile).pretrained_dir(a)) for a in archs if a in pinned_archs(config, profile)]


rule pretrain:
    input:
        store=pretrain_store,
    output:
        # one folder (backbone.pth + backbone.json), as in dvc.yaml, where profiles without pretraining
        # (paper) get a folder holding only the JSON record of their backbone's source
        directory("pretrained/{profile}/{arch}"),
    wildcard_constraints:
        arch="[A-Za-z0-9_]+",
    params:
        config=pretrain_params,
    log:
        "logs/{profile}/pretrain_{arch}.log",
    threads: lambda w: config["profiles"][w.profile]["pretrain"]["threads"]
    resources:
        mem_mb=3000,
        runtime=60,
    shell:
        CLI + " pretrain --arch {wildcards.arch:q} 2> {log:q}"
