# Report: Tables 1-6 (Markdown, LaTeX, CSV), findings.md and figures from the runs recorded in MLflow.
def _evaluated(profile, runs, seed_list):
    return [f"results/{profile}/eval/{run}/seed{seed}/metrics.json" for run in runs for seed in seed_list]


rule report:
    input:
        lambda w: _evaluated(w.profile, REPORT_RUNS, SEEDS),
    output:
        [f"reports/{{profile}}/{f}" for f in TABLE_FILES],
    log:
        "logs/{profile}/report.log",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        CLI + " report 2> {log:q}"


# The study target: the same tables over study.seeds, plus the study-only study.runs (not a DVC stage:
# there, dvc exp run -S 'seeds=[0,1,2]' for the main runs).
rule report_study:
    input:
        lambda w: _evaluated(w.profile, STUDY_REPORT_RUNS, STUDY_SEEDS),
    output:
        [f"reports/{{profile}}/study/{f}" for f in TABLE_FILES],
    log:
        "logs/{profile}/report_study.log",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        CLI + " report --study 2> {log:q}"


# The verdict target: the study's runs and verdict.runs over study.seeds (not a DVC stage either).
rule report_verdict:
    input:
        lambda w: _evaluated(w.profile, VERDICT_REPORT_RUNS, STUDY_SEEDS) + _evaluated(w.profile, TUNE_RUNS, SEEDS),
    output:
        [f"reports/{{profile}}/verdict/{f}" for f in TABLE_FILES],
    log:
        "logs/{profile}/report_verdict.log",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        CLI + " report --verdict 2> {log:q}"
