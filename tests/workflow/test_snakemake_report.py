"""`snakemake --report` on the tiny run: the HTML report with the captioned figures and tables."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from sibnet.config import load_params
from sibnet.report.sections import SECTIONS
from sibnet.report.summary import snakemake_results
from sibnet.stages.report import CONDITIONAL_FILES, REPORT_FILES
from tests.workflow.repo import ROOT, TINY_PARAMS, clean_env, run

pytestmark = pytest.mark.slow

CAPTIONS = ROOT / "workflow" / "report"
CAPTION_FILES = ("workflow.rst", "report_folder.rst", "metrics.rst")
"""The caption files of workflow/report/; only workflow.rst holds text of its own."""

# A phrase of each caption, as it reads in the report (one line of its .rst, no markup).
PHRASES = {
    "summary.md": "The whole report in Markdown",
    "validation_auc.csv": "Validation macro AUC of the epoch each run kept",
    "clean_auc.csv": "Clean test macro AUC per method",
    "auc_under_noise.csv": "Test macro AUC under Gaussian noise",
    "auc_vs_noise.png": "Macro AUC against the noise level",
    "training_curves.png": "Training curves",
    "saliency.csv": "Saliency agreement with the lesion masks",
    "saliency_distributions.png": "Distribution of the saliency scores",
    "saliency_overlay.png": "Grad-CAM overlays",
    "segmentation.csv": "Segmentation from the classifiers",
    "segmentation_overlay.png": "Segmentation overlays",
    "metrics.json": "Headline numbers",
}


def _results(html: str) -> dict[str, dict]:
    """The report's results: path → name, caption, labels... (a JSON object in the page)."""
    match = re.search(r"var results = (\{.*?\});?\n", html)
    assert match, "no results object in the report"
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def html_report(snakemake_run: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The self-contained HTML report, written outside the run (which stays as it was)."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    run(["snakemake", "--report", str(path)], snakemake_run, env=clean_env())
    return path.read_text(encoding="utf-8")


def test_every_report_file_is_in_the_html_report(html_report: str) -> None:
    results = _results(html_report)
    names = {entry["name"] for entry in results.values()}
    assert names == {*REPORT_FILES, "metrics.json"} - CONDITIONAL_FILES
    # Figures and tables are embedded (self-contained), not linked.
    figure = next(e for e in results.values() if e["name"] == "auc_vs_noise.png")
    assert figure["mime_type"] == "image/png"
    assert figure["data_uri"].startswith("data:image/png")


def test_each_result_has_its_own_caption(html_report: str) -> None:
    results = {entry["name"]: entry for entry in _results(html_report).values()}
    for name, phrase in PHRASES.items():
        caption = results[name]["caption"]
        assert phrase in caption, (name, caption)
        # ... and no other result's caption (one caption file serves results/report/).
        others = [n for n, p in PHRASES.items() if n != name and p in caption]
        assert not others, (name, others)
    # The captions name the reference method and the confidence of the tiny params.
    assert "baseline" in results["clean_auc.csv"]["caption"]
    assert "95% percentile-bootstrap" in results["clean_auc.csv"]["caption"]


def test_results_are_grouped_and_labelled(html_report: str) -> None:
    results = {entry["name"]: entry for entry in _results(html_report).values()}
    assert results["auc_vs_noise.png"]["labels"] == {"result": "Macro AUC against noise σ (figure)"}
    titles = [entry["labels"]["result"] for entry in results.values()]
    assert len(set(titles)) == len(titles)  # the report keys its tables by these titles
    for subcategory in ("Classification", "Saliency", "Segmentation transfer", "Training"):
        assert subcategory in html_report


def test_the_workflow_description_is_rendered(html_report: str) -> None:
    assert "interpretability-guided training of medical image classifiers" in html_report
    assert "This report covers the dataset" in html_report
    assert "baseline, sibnet" in html_report


def test_the_zip_report_holds_the_files(snakemake_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "report.zip"
    run(["snakemake", "--report", str(path)], snakemake_run, env=clean_env())
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert "report/report.html" in names
    for name in {*REPORT_FILES, "metrics.json"} - CONDITIONAL_FILES:
        assert any(n.endswith("/" + name) for n in names), name


def test_the_phrases_come_from_the_report_sections() -> None:
    """Each caption is written once, in its section; the caption files only look it up."""
    results = snakemake_results(load_params(TINY_PARAMS), SECTIONS)
    for name, phrase in PHRASES.items():
        key = name if name == "metrics.json" else Path(name).stem
        assert phrase in results[key]["caption"], (name, phrase)
    sources = {name: (CAPTIONS / name).read_text(encoding="utf-8") for name in CAPTION_FILES}
    for name, phrase in PHRASES.items():
        assert not any(phrase in source for source in sources.values()), (name, phrase)
    assert "report.reference" in sources["workflow.rst"]
