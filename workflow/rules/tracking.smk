# MLflow: create the store and the profile's experiment once, before any parallel job
# (concurrent first use of a fresh SQLite store corrupts it).
rule mlflow_init:
    output:
        "results/{profile}/mlflow_store.json",
    log:
        "logs/{profile}/mlflow_init.log",
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        CLI + " mlflow-init 2> {log:q}"
