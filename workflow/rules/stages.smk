# One rule per stage of sibnet.dag.STAGES (what each does: `sibnet --help`), all built the same
# way from its definition; dvc.yaml comes from the same definitions. A stage whose outputs carry
# `snakemake --report` marks takes them from RULE_OUTPUTS (report.smk). The shell string is a
# literal: Snakemake evaluates a rule's shell expression when the job runs, by which time the
# loop variable names the last stage, so the command comes in through params (evaluated now).


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
            command=stage_command(_name),
        threads: stage_threads(_name)
        resources:
            **stage_resources(_name),
        conda:
            CONDA_ENV
        shell:
            "{params.command} > {log} 2>&1"
