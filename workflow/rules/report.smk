# Report: Tables 1-5 (Markdown, LaTeX, CSV) and figures from the runs recorded in MLflow.
rule report:
    input:
        lambda w: [f"results/{w.profile}/eval/{run}/metrics.json" for run in RUNS],
    output:
        [f"reports/{{profile}}/{f}" for f in TABLE_FILES],
    log:
        "logs/{profile}/report.log",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        CLI + " report 2> {log}"
