# Benchmark of the HDM loss engine: time, peak memory and accuracy against a naive
# autograd Sinkhorn measured in the same run. Not part of the default target; run it with
#   snakemake --cores 2 bench_loss
rule bench_loss:
    output:
        "reports/benchmarks/loss_cpu.json",
    log:
        "logs/bench_loss.log",
    threads: 2
    resources:
        mem_mb=4000,
    shell:
        PY + " -m pipeline bench loss --threads {threads} > {log:q} 2>&1"
