# Raw source → data/prepared/<dataset>/ (images, masks, manifest.parquet, dataset.json).


rule prepare:
    input:
        **stage_inputs("prepare"),
    output:
        **stage_outputs("prepare"),
    log:
        stage_log("prepare"),
    params:
        watched=stage_params("prepare"),
    threads: stage_threads("prepare")
    resources:
        **stage_resources("prepare"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("prepare")
