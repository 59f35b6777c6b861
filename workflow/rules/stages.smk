# One rule per stage of sibnet.dag.STAGES (what each does: `sibnet --help`), all built the same
# way from its definition; dvc.yaml comes from the same definitions. A stage whose outputs carry
# `snakemake --report` marks takes them from RULE_OUTPUTS (report.smk).


for _name in STAGES:

    rule:
        name:
            _name
        input:
            **stage_inputs(_name),
        output:
            **RULE_OUTPUTS.get(_name, stage_outputs(_name)),
        log:
            stage_log(_name),
        params:
            watched=stage_params(_name),
        threads: stage_threads(_name)
        resources:
            **stage_resources(_name),
        conda:
            CONDA_ENV
        shell:
            stage_shell(_name)
