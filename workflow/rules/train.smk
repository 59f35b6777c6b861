# Every method × seed: train a classifier, then score it on the test split (clean, under
# noise, and its saliency maps against the lesion masks), and reuse its encoder for segmentation.


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


rule robustness:
    input:
        **stage_inputs("robustness"),
    output:
        **stage_outputs("robustness"),
    log:
        stage_log("robustness"),
    params:
        watched=stage_params("robustness"),
    threads: stage_threads("robustness")
    resources:
        **stage_resources("robustness"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("robustness")


rule saliency:
    input:
        **stage_inputs("saliency"),
    output:
        **stage_outputs("saliency"),
    log:
        stage_log("saliency"),
    params:
        watched=stage_params("saliency"),
    threads: stage_threads("saliency")
    resources:
        **stage_resources("saliency"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("saliency")


rule segment:
    input:
        **stage_inputs("segment"),
    output:
        **stage_outputs("segment"),
    log:
        stage_log("segment"),
    params:
        watched=stage_params("segment"),
    threads: stage_threads("segment")
    resources:
        **stage_resources("segment"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("segment")
