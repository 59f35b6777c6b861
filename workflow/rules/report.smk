# Every method × seed together: results/report/summary.md, figures, results/metrics.json.


rule report:
    input:
        **stage_inputs("report"),
    output:
        **stage_outputs("report"),
    log:
        stage_log("report"),
    params:
        watched=stage_params("report"),
    threads: stage_threads("report")
    resources:
        **stage_resources("report"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("report")
