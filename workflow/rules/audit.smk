# The last stage: lineage of every artifact, results/audit/lineage.{json,md}.


rule audit:
    input:
        **stage_inputs("audit"),
    output:
        **stage_outputs("audit"),
    log:
        stage_log("audit"),
    params:
        watched=stage_params("audit"),
    threads: stage_threads("audit")
    resources:
        **stage_resources("audit"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("audit")
