# sibnet pipeline. Run with `snakemake --cores all` (profile: workflow/profiles/default).
# The rules are built from the registered stages (sibnet.dag.STAGES: src/sibnet/dag.py and any
# installed extension's), which also generate dvc.yaml; params.yaml is validated before
# anything is scheduled.

configfile: "params.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset=r"[A-Za-z][A-Za-z0-9_]*",
    method=r"[A-Za-z][A-Za-z0-9_]*",
    seed=r"\d+",


include: "workflow/rules/report.smk"
include: "workflow/rules/stages.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        final_outputs(),
    default_target: True
