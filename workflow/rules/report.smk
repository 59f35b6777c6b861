# The report stage's key figures and tables, marked for Snakemake's HTML report
# (`snakemake --report report.html`, captions in workflow/report/). The marks only annotate the
# output paths of stage_outputs("report"): the paths, and so the command, stay those of dvc.yaml.

# results/report/<stem>.<ext> → (subcategory of the report's "Results" category, title shown in
# the report). The stems are unique, so the patterns' {name} wildcard is enough to tell the files
# apart; workflow/report/report_folder.rst holds each one's caption.
REPORT_RESULTS = {
    "summary": ("Summary", "All tables and figures (Markdown)"),
    "clean_auc": ("Classification", "Clean test macro AUC (table)"),
    "auc_under_noise": ("Classification", "Macro AUC under Gaussian noise (table)"),
    "auc_vs_noise": ("Classification", "Macro AUC against noise σ (figure)"),
    "training_curves": ("Training", "Training loss and validation AUC (figure)"),
    "saliency": ("Saliency", "Saliency agreement with the lesion masks (table)"),
    "saliency_distributions": ("Saliency", "Saliency score distributions (figure)"),
    "saliency_overlay": ("Saliency", "Grad-CAM overlays (figure)"),
    "segmentation": ("Segmentation transfer", "Segmentation from the encoders (table)"),
    "segmentation_overlay": ("Segmentation transfer", "Segmentation overlays (figure)"),
}


# The report stage's outputs, with the report() marks of `snakemake --report`. Figures may be
# missing (a skipped stage draws none): the patterns only list the files that exist.
REPORT_OUTPUTS = stage_outputs("report")
REPORT_OUTPUTS["report"] = report(
    REPORT_OUTPUTS["report"],
    patterns=["{name}.png", "{name}.csv", "{name}.md"],
    caption="../report/report_folder.rst",
    category="Results",
    subcategory=lambda wildcards: REPORT_RESULTS.get(wildcards.name, ("Other",))[0],
    labels=lambda wildcards: {
        "result": REPORT_RESULTS.get(wildcards.name, ("Other", wildcards.name))[1]
    },
)
REPORT_OUTPUTS["metrics"] = report(
    REPORT_OUTPUTS["metrics"],
    caption="../report/metrics.rst",
    category="Results",
    subcategory="Summary",
    labels={"result": "Headline numbers (JSON)"},
)

RULE_OUTPUTS = {"report": REPORT_OUTPUTS}
"""Rule outputs that differ from stage_outputs(): the same paths with report() marks."""
