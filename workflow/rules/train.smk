# Every method × seed: train a classifier, then score it on the test split.


rule train:
    input:
        **stage_inputs("train"),
    output:
        **stage_outputs("train"),
    log:
        stage_log("train"),
    params:
        watched=stage_params("train"),
    threads: stage_threads("train")
    resources:
        **stage_resources("train"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("train")


rule evaluate:
    input:
        **stage_inputs("evaluate"),
    output:
        **stage_outputs("evaluate"),
    log:
        stage_log("evaluate"),
    params:
        watched=stage_params("evaluate"),
    threads: stage_threads("evaluate")
    resources:
        **stage_resources("evaluate"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("evaluate")
