# The report stage's files, marked for Snakemake's HTML report (`snakemake --report report.html`).
# The marks only annotate the output paths of stage_outputs("report"): the paths, and so the
# command, stay those of dvc.yaml. Every file's subcategory, title and caption come from the
# report's sections (sibnet.report.sections.SECTIONS, with summary.md and metrics.json from
# sibnet.report.summary); the caption files in workflow/report/ only look them up.
from sibnet.report.sections import SECTIONS
from sibnet.report.summary import METRICS_FILE, snakemake_results

# results/report/<stem>.<ext> and metrics.json → subcategory, title and caption (rendered with
# this run's params). The stems are unique, so the patterns' {name} wildcard tells the files apart.
REPORT_RESULTS = snakemake_results(PARAMS, SECTIONS)
# The caption templates (report_folder.rst, metrics.rst) see the workflow's config only, so the
# captions reach them there, under a key that is no params section.
config["_sibnet_report"] = {"captions": {k: v["caption"] for k, v in REPORT_RESULTS.items()}}


def _report_result(wildcards):
    return REPORT_RESULTS.get(wildcards.name, {"subcategory": "Other", "title": wildcards.name})


# The report stage's outputs, with the report() marks of `snakemake --report`. Figures may be
# missing (a skipped stage draws none): the patterns only list the files that exist.
REPORT_OUTPUTS = stage_outputs("report")
REPORT_OUTPUTS["report"] = report(
    REPORT_OUTPUTS["report"],
    patterns=["{name}.png", "{name}.csv", "{name}.md"],
    caption="../report/report_folder.rst",
    category="Results",
    subcategory=lambda wildcards: _report_result(wildcards)["subcategory"],
    labels=lambda wildcards: {"result": _report_result(wildcards)["title"]},
)
REPORT_OUTPUTS["metrics"] = report(
    REPORT_OUTPUTS["metrics"],
    caption="../report/metrics.rst",
    category="Results",
    subcategory=REPORT_RESULTS[METRICS_FILE]["subcategory"],
    labels={"result": REPORT_RESULTS[METRICS_FILE]["title"]},
)

RULE_OUTPUTS = {"report": REPORT_OUTPUTS}
"""Rule outputs that differ from stage_outputs(): the same paths with report() marks."""
