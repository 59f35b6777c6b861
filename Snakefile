# sibnet pipeline. Run with `snakemake --cores all` (profile: workflow/profiles/default).
# The rules are built from the stage definitions in src/sibnet/dag.py, which also generate
# dvc.yaml; params.yaml is validated before anything is scheduled.

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
