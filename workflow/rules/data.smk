# Data: synthesise (demo/smoke) or verify (paper) one dataset; the manifest is the output
# that downstream rules depend on (a user's own dataset folder is never a declared output).
rule data:
    output:
        "data/{profile}/{dataset}.manifest.json",
    wildcard_constraints:
        dataset="coco|mpii",
    params:
        source=lambda w: json.dumps(config["profiles"][w.profile]["data"], sort_keys=True),
        seed=config["seed"],
    log:
        "logs/{profile}/data_{dataset}.log",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        CLI + " data --dataset {wildcards.dataset} 2> {log}"
