# Evaluation: the paper's test protocol on the final checkpoint, logged to the same MLflow run. A split: tune
# run is evaluated on the tune split only (no val, test-dev or submission files): its declared outputs,
# metrics.json (every metric) and headline.json (DVC's metric: the headline numbers), are the same files,
# so the rule serves both.
rule evaluate:
    input:
        "results/{profile}/runs/{run}/seed{seed}/final.pth",
    output:
        "results/{profile}/eval/{run}/seed{seed}/metrics.json",
        "results/{profile}/eval/{run}/seed{seed}/headline.json",
    params:
        config=run_config,
    log:
        "logs/{profile}/evaluate_{run}-seed{seed}.log",
    threads: 1
    resources:
        mem_mb=lambda w: 4000 if config["profiles"][w.profile]["device"] != "cuda" else 32000,
        gpu=lambda w: 1 if config["profiles"][w.profile]["device"] == "cuda" else 0,
    shell:
        CLI + " evaluate --run {wildcards.run:q} --seed {wildcards.seed:q} 2> {log:q}"
