# Data: synthesise (demo/smoke) or download + verify (paper) one dataset; the manifest is the output
# that downstream rules depend on (a user's own dataset folder is never a declared output).
# Downloads (source: download) resume where they stopped, so a job cut by its time limit loses little.
rule data:
    input:
        # ordering only (ancient): the stage verifies the pinned pretrained weights before generating data
        pretrained=lambda w: [ancient(p) for p in pretrained_outputs(w.profile, config["profiles"][w.profile]["archs"])],
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
        runtime=lambda w: 24 * 60 if config["profiles"][w.profile]["data"]["source"] == "download" else 60,
    shell:
        CLI + " data --dataset {wildcards.dataset:q} 2> {log:q}"
