# Training: one job per run of params.yaml, with its threads, memory and GPUs declared.



rule train:
    input:
        data=lambda w: f"data/{w.profile}/{config['runs'][w.run]['dataset']}.manifest.json",
        store="results/{profile}/mlflow_store.json",
    output:
        "results/{profile}/runs/{run}/final.pth",
    params:
        config=run_config,
    log:
        "logs/{profile}/train_{run}.log",
    threads: lambda w: resolve_run(config, w.run, w.profile)["train"]["threads"]
    resources:
        mem_mb=lambda w: 4000 if config["profiles"][w.profile]["device"] != "cuda" else 64000,
        gpu=lambda w: resolve_run(config, w.run, w.profile)["train"]["gpus"],
        runtime=lambda w: 30 if config["profiles"][w.profile]["device"] != "cuda" else 4320,
    shell:
        CLI + " train --run {wildcards.run} 2> {log}"
