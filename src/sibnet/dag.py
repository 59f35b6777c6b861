"""The pipeline's stages, defined once: the Snakemake rules and ``dvc.yaml`` both come from here.

Each :class:`Stage` names its inputs and outputs (path templates), the params keys it reads, the
wildcards it is expanded over and the resources it needs; its code dependencies
(:attr:`Stage.code`) are the package files it can run, from the import graph
(:mod:`sibnet.imports`). From these:

- ``workflow/rules/stages.smk`` makes one rule per stage in a loop, its ``input``, ``output``,
  ``log``, ``params``, ``resources`` and shell command (:func:`command`) built by
  ``workflow/rules/common.smk``, with Snakemake wildcards ``{method}``, ``{seed}`` and the
  dataset name from params;
- :func:`dvc_yaml` renders ``dvc.yaml`` with DVC's templating: the dataset is
  ``${prepare.dataset}`` and per-method stages use ``matrix`` over ``${pipeline.methods}`` ×
  ``${pipeline.seeds}``, so editing the methods or seeds in ``params.yaml`` needs no
  regeneration (run ``sibnet dvc-yaml`` after changing the stage definitions or the package's
  imports, which decide each stage's code dependencies);
- :mod:`sibnet.cli` builds each stage's subcommand: its help, paths and switches
  (:class:`Option`).

Both engines therefore run the same command lines, and a test compares them job by job.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sibnet.extensions import extension_files
from sibnet.imports import PACKAGE, import_closure, imports_in_source, is_module, module_file
from sibnet.registry import Registry

__all__ = [
    "DVC_PLOTS",
    "ENTRY",
    "EVERY_STAGE",
    "MODELS",
    "PREPARED",
    "RESULTS",
    "STAGES",
    "Option",
    "Stage",
    "code_files",
    "command",
    "dvc_yaml",
    "expand",
    "gathered",
    "register_stage",
    "stage",
]

_PLACEHOLDERS = ("dataset", "method", "seed")


@dataclass(frozen=True)
class Option:
    """A command-line switch of one stage, beyond its paths, ``--params``, ``--method`` and
    ``--seed`` (``store_true``, or a path where ``metavar`` is set; unset it is ``None``, so a
    params default can apply).

    Attributes:
        flag: e.g. ``--skip-invalid``.
        help: its help text.
        keyword: the stage function's keyword argument it is passed as (``None``: not passed).
        runs: the function of the stage module to run instead of the stage when the switch is
            given, with the stage's paths as keywords (``None`` where not given); it returns the
            exit status. A stage with such a switch needs none of its paths otherwise. It
            also gets the values of the stage's other options, by :attr:`dest`.
        metavar: the option takes a path, shown as this in the help (``None``: a switch).
    """

    flag: str
    help: str
    keyword: str | None = None
    runs: str | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        """The attribute of the parsed arguments."""
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Stage:
    """One pipeline stage, as both workflow engines see it.

    Attributes:
        name: stage name, also the ``sibnet`` subcommand.
        help: what it does, one line (``sibnet --help``).
        inputs: CLI option name → path template (placeholders ``{dataset}``, ``{method}``,
            ``{seed}``).
        outputs: CLI option name → path template.
        params: params keys the stage reads (``{method}`` allowed), for rerun decisions.
        per_method: expanded over methods × seeds (passes ``--method`` and ``--seed``).
        directories: output names that are folders rather than files.
        metrics: output names that are JSON metrics (shown by ``dvc metrics show``).
        plots: output name → DVC plot properties (``x``, ``y``, ...).
        gathers: stages whose outputs (for every method × seed, where per method) this stage
            reads through its folder inputs (``RESULTS``, ``MODELS``), or :data:`EVERY_STAGE`.
            Snakemake gets those files as the rule's inputs; DVC gets the folders as
            dependencies.
        threads_key: params key holding the thread count (also the rule's ``threads``).
        processes_key: params key holding the number of data-parallel processes of the stage:
            the rule's ``threads`` and ``gpu`` are multiplied by it.
        mem_mb, runtime, gpu: resources requested from a cluster (runtime in minutes; ``gpu``
            per process).
        options: its extra command-line switches.
        implementation: the module whose function ``<name>`` runs the stage (default
            ``sibnet.stages.<name>``; a stage registered from outside the package names its own).
        section: the pydantic class of the stage's own params section ``<name>:``, for a stage
            registered from outside the package (the shipped stages' sections are fields of
            :class:`sibnet.config.Params`); ``None``: the stage has no section of its own.
    """

    name: str
    help: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    params: tuple[str, ...]
    per_method: bool = False
    directories: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: dict[str, dict[str, Any]] = field(default_factory=dict)
    gathers: tuple[str, ...] = ()
    threads_key: str | None = None
    processes_key: str | None = None
    mem_mb: int = 2000
    runtime: int = 30
    gpu: int = 0
    options: tuple[Option, ...] = ()
    implementation: str | None = None
    section: type | None = None

    @property
    def module(self) -> str:
        """The module whose function ``<name>`` runs the stage."""
        return self.implementation or f"{PACKAGE}.stages.{self.name}"

    @property
    def code(self) -> tuple[str, ...]:
        """The package source files the stage's command can run, relative to the repository
        root (``src/sibnet/...``): the import closure (:func:`sibnet.imports.import_closure`)
        of the command line and the stage module, and the files of the extension modules
        loaded (:func:`sibnet.extensions.extension_files`: an extension can register an
        objective, source or section any stage may run). Both engines take them as
        dependencies, so an edit re-runs exactly the stages that can execute it."""
        files = code_files((ENTRY, self.module))
        extensions = [_dependency(path) for path in extension_files()]
        return files + tuple(dict.fromkeys(p for p in extensions if p not in files))

    @property
    def gathered(self) -> tuple[str, ...]:
        """The stages whose outputs this stage reads (:attr:`gathers`, with
        :data:`EVERY_STAGE` resolved to every other registered stage)."""
        if self.gathers == EVERY_STAGE:
            return tuple(name for name in STAGES if name != self.name)
        return self.gathers

    @property
    def log(self) -> str:
        """Log file template (Snakemake ``log:``)."""
        if self.per_method:
            return f"logs/{self.name}/{{dataset}}/{{method}}/seed{{seed}}.log"
        return f"logs/{self.name}/{{dataset}}.log"


ENTRY = "sibnet.cli"
"""The module of the ``sibnet`` command, which every stage runs first."""
SOURCE = "src"
"""Folder of the repository that holds the package (the dependency paths start with it)."""

PREPARED = "data/prepared/{dataset}"
RESULTS = "results/{dataset}"
MODELS = "models/{dataset}"
RUN = "{method}/seed{seed}"


def _scoring_stage(
    name: str,
    help: str,
    outputs: dict[str, str],
    metrics: tuple[str, ...] = (),
    also_reads: tuple[str, ...] = (),
) -> Stage:
    """A per-method stage that scores one trained classifier on the prepared test split
    (``also_reads``: params keys outside its own section that it reads)."""
    return Stage(
        name=name,
        help=help,
        inputs={"prepared": PREPARED, "checkpoint": f"{MODELS}/{RUN}/classifier.pt"},
        outputs=outputs,
        params=(name, "methods.{method}", *also_reads),
        per_method=True,
        metrics=metrics,
        threads_key=f"{name}.threads",
        mem_mb=2000,
        runtime=30,
    )


EVERY_STAGE = ("*",)
"""``Stage.gathers`` value: the outputs of every other registered stage, whichever they are (the
audit's: it runs last and covers everything)."""

STAGES: Registry[Stage] = Registry("sibnet.dag.STAGES", "stage", "sibnet.dag.register_stage")
"""The registered stages by name, in pipeline order (:func:`register_stage`)."""

_RESERVED_NAMES = ("dvc-yaml",)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_stage(spec: Stage) -> Stage:
    """Add a stage to :data:`STAGES`, in pipeline order: a stage that gathers nothing goes before
    the first stage that gathers, one that gathers some stages before the first that gathers
    :data:`EVERY_STAGE`, and one of those last (so the audit, which covers every other stage's
    outputs, stays the last stage and the default target of both engines).

    Both engines and the command line are built from :data:`STAGES`, so a registered stage gets
    its Snakemake rule, its ``dvc.yaml`` stage (``sibnet dvc-yaml``) and its subcommand with no
    other edit. A stage outside the package is registered by an extension module
    (:mod:`sibnet.extensions`).

    Raises:
        RegistryError: the name is taken.
        ValueError: the name is malformed, its module cannot be found, a per-method stage's
            outputs lack ``{method}``/``{seed}``, or ``gathers`` names a stage that is not
            registered.
    """
    if not _NAME.match(spec.name) or spec.name in _RESERVED_NAMES:
        raise ValueError(
            f"stage name {spec.name!r}: accepted are lower-case letters, digits and underscores, "
            f"starting with a letter, not {list(_RESERVED_NAMES)}"
        )
    if importlib.util.find_spec(spec.module) is None:
        raise ValueError(
            f"stage {spec.name!r}: no module {spec.module} to run it (a function "
            f"{spec.name}(params, ...) there); set Stage.implementation to the module"
        )
    if spec.per_method:
        loose = [k for k, t in spec.outputs.items() if "{method}" not in t or "{seed}" not in t]
        if loose:
            raise ValueError(
                f"stage {spec.name!r} is per method, but outputs {loose} do not contain both "
                "{method} and {seed}: the runs would overwrite each other"
            )
    if spec.gathers != EVERY_STAGE:
        wrong = [g for g in spec.gathers if g not in STAGES]
        if wrong:
            raise ValueError(
                f"stage {spec.name!r} gathers {wrong}, which are not registered stages; "
                f"accepted: {list(STAGES)} (or EVERY_STAGE)"
            )
    rank = _order(spec)
    later = next((name for name, s in STAGES.items() if _order(s) > rank), None)
    return STAGES.register(spec.name, spec, before=later)


def _order(spec: Stage) -> int:
    """Where a stage goes in the pipeline: 0 gathers nothing, 1 gathers some stages, 2 gathers
    every stage."""
    if spec.gathers == EVERY_STAGE:
        return 2
    return 1 if spec.gathers else 0


for _spec in (
    Stage(
        name="prepare",
        help="build the prepared dataset (images, masks, manifest) from the configured source",
        inputs={},
        outputs={"prepared": PREPARED},
        params=("prepare",),
        directories=("prepared",),
        mem_mb=1500,
        runtime=60,
        options=(
            Option(
                "--skip-invalid",
                "leave rows with problems out and list them in rejects.csv, instead of "
                "failing (default: prepare.skip_invalid)",
                keyword="skip_invalid",
            ),
        ),
    ),
    Stage(
        name="train",
        help="train one method with one seed; keep the best checkpoint by validation AUC",
        inputs={"prepared": PREPARED},
        outputs={
            "checkpoint": f"{MODELS}/{RUN}/classifier.pt",
            "history": f"{MODELS}/{RUN}/history.csv",
        },
        params=("prepare", "train", "methods.{method}"),
        per_method=True,
        plots={"history": {"x": "epoch", "y": "val_auc", "title": "validation macro AUC"}},
        threads_key="train.threads",
        processes_key="train.processes",
        mem_mb=3000,
        runtime=240,
        gpu=1,
    ),
    _scoring_stage(
        "evaluate",
        "score a trained classifier on the test split",
        {
            "metrics": f"{RESULTS}/{RUN}/metrics.json",
            "predictions": f"{RESULTS}/{RUN}/predictions.parquet",
        },
        metrics=("metrics",),
    ),
    _scoring_stage(
        "robustness",
        "test macro AUC under Gaussian noise of every configured sigma",
        {
            "robustness": f"{RESULTS}/{RUN}/robustness.parquet",
            "predictions": f"{RESULTS}/{RUN}/robustness_predictions.parquet",
        },
    ),
    _scoring_stage(
        "saliency",
        "score Grad-CAM maps against the lesion masks (Dice, HD95, SSIM, pointing game)",
        {
            "saliency": f"{RESULTS}/{RUN}/saliency.parquet",
            "summary": f"{RESULTS}/{RUN}/saliency.json",
            "examples": f"{RESULTS}/{RUN}/saliency_examples.npz",
        },
        metrics=("summary",),
        also_reads=("evaluate.threshold",),
    ),
    Stage(
        name="segment",
        help="train and score segmentation decoders on the trained encoder (frozen, "
        "finetune, scratch)",
        inputs={"prepared": PREPARED, "checkpoint": f"{MODELS}/{RUN}/classifier.pt"},
        outputs={
            "segmenters": f"{MODELS}/{RUN}/segmenters",
            "segmentation": f"{RESULTS}/{RUN}/segmentation.parquet",
            "summary": f"{RESULTS}/{RUN}/segmentation.json",
            "examples": f"{RESULTS}/{RUN}/segmentation_examples.npz",
        },
        params=("segment", "methods.{method}"),
        per_method=True,
        directories=("segmenters",),
        metrics=("summary",),
        threads_key="segment.threads",
        mem_mb=3000,
        runtime=120,
        gpu=1,
    ),
    Stage(
        name="report",
        help="tables, figures and metrics.json over every method and seed",
        inputs={"results": RESULTS, "models": MODELS, "prepared": PREPARED},
        outputs={
            "report": "results/report",
            "metrics": "results/metrics.json",
            "noise_plot": "results/plots/auc_vs_noise.csv",
            "saliency_plot": "results/plots/saliency.csv",
        },
        params=("report", "pipeline"),
        directories=("report",),
        metrics=("metrics",),
        gathers=("train", "evaluate", "robustness", "saliency", "segment"),
        mem_mb=2000,
        runtime=30,
    ),
    Stage(
        name="audit",
        help="lineage of every artifact (results/audit/lineage.json, .md); --verify: check "
        "the files against it",
        inputs={
            "prepared": PREPARED,
            "models": MODELS,
            "results": RESULTS,
            "report": "results/report",
            "metrics": "results/metrics.json",
            "noise_plot": "results/plots/auc_vs_noise.csv",
            "saliency_plot": "results/plots/saliency.csv",
        },
        outputs={"lineage": "results/audit"},
        params=("prepare.dataset", "pipeline"),
        directories=("lineage",),
        gathers=EVERY_STAGE,
        mem_mb=1000,
        runtime=30,
        options=(
            Option(
                "--verify",
                "re-hash every artifact listed in <lineage>/lineage.json (default lineage: "
                "results/audit), report each that changed, vanished or was added to a folder "
                "output, and compare the audited hashes with the job records and the MLflow "
                "runs; exit 1 on any finding",
                runs="verify_command",
            ),
            Option(
                "--public-key",
                "with --verify: also check the Ed25519 signature of the audit folder "
                "(<lineage>.sig.json, written by --sign) with this public key (PEM or OpenSSH)",
                metavar="PUB",
            ),
            Option(
                "--sign",
                "sign the audit folder (<lineage>/*, default results/audit) with this Ed25519 "
                "private key (PEM or OpenSSH; passphrase from SIBNET_SIGNING_KEY_PASSPHRASE); "
                "writes <lineage>.sig.json beside the folder. The key is only read",
                runs="sign_command",
                metavar="KEY",
            ),
            Option(
                "--prov",
                "write the lineage of <lineage>/lineage.json as W3C PROV to this file "
                "(PROV-JSON for .json, PROV-N for .provn)",
                runs="prov_command",
                metavar="FILE",
            ),
        ),
    ),
):
    register_stage(_spec)

DVC_PLOTS: list[dict[str, Any]] = [
    {
        "AUC against Gaussian noise σ (mean over seeds)": {
            "template": "linear",
            "x": "sigma",
            "y": {"results/plots/auc_vs_noise.csv": "${pipeline.methods}"},
            "x_label": "noise σ (intensity in [0, 1])",
            "y_label": "test macro AUC",
        }
    },
    {
        "Saliency Dice (convex hull of the binarised Grad-CAM map)": {
            "template": "bar_horizontal",
            "x": "dice",
            "y": {"results/plots/saliency.csv": "method"},
            "x_label": "mean Dice",
            "y_label": "method",
        }
    },
]
"""Top-level ``dvc plots`` definitions over the report's plot data (one column per method)."""


def gathered(spec: Stage, root_template: str, output: str, method: str, seed: int | str) -> str:
    """Path, relative to a gathering stage's folder input, of one run's output of ``spec``.

    E.g. ``gathered(stage("evaluate"), RESULTS, "metrics", "baseline", 0)`` is
    ``baseline/seed0/metrics.json``.
    """
    template = spec.outputs[output]
    if not template.startswith(root_template + "/"):
        raise ValueError(f"{spec.name}.{output} ({template}) is not under {root_template}")
    return expand(template.removeprefix(root_template + "/"), method=method, seed=str(seed))


def _external_file(name: str) -> Path:
    """The source file of module ``name``, outside the package (an extension's stage module)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise KeyError(f"stage module {name} has no Python source file to depend on")
    return Path(spec.origin).resolve()


def _dependency(path: Path) -> str:
    """A code dependency's path as both engines get it: relative to the working directory
    where it lies under it, else absolute (an extension installed elsewhere)."""
    here = Path.cwd()
    return path.relative_to(here).as_posix() if path.is_relative_to(here) else str(path)


def code_files(roots: tuple[str, ...]) -> tuple[str, ...]:
    """Repository paths (``src/sibnet/...py``) of the import closure of modules ``roots``.

    A root outside the package (an extension's stage module) adds its own file (relative to
    the working directory where it lies under it, else absolute) and the closure of the package
    modules it imports.
    """
    package = module_file(PACKAGE).parent
    inside = [name for name in roots if name.split(".")[0] == PACKAGE]
    outside: list[str] = []
    for name in roots:
        if name.split(".")[0] == PACKAGE:
            continue
        path = _external_file(name)
        found = imports_in_source(path.read_text(encoding="utf-8"), name, filename=str(path))
        inside += [n for n in sorted(found) if n.split(".")[0] == PACKAGE and is_module(n)]
        outside.append(_dependency(path))
    return tuple(
        f"{SOURCE}/{PACKAGE}/{module_file(name).relative_to(package).as_posix()}"
        for name in import_closure(inside)
    ) + tuple(outside)


def stage(name: str) -> Stage:
    """The stage called ``name``; a :class:`~sibnet.registry.RegistryError` lists the stages."""
    return STAGES[name]


def command(
    spec: Stage, paths: dict[str, str], *, params_file: str, method: str = "", seed: str = ""
) -> str:
    """The ``sibnet`` command line of one stage.

    Args:
        spec: the stage.
        paths: input and output option name → path (already formatted for the engine).
        params_file: path of the params file passed as ``--params``.
        method, seed: values (or engine placeholders) for per-method stages.
    """
    parts = ["sibnet", spec.name, "--params", params_file]
    for option in (*spec.inputs, *spec.outputs):
        parts += [f"--{option}", paths[option]]
    if spec.per_method:
        parts += ["--method", method, "--seed", seed]
    return " ".join(parts)


def expand(template: str, **values: str) -> str:
    """Fill the placeholders of a path or params-key template, leaving other braces alone."""
    for key in _PLACEHOLDERS:
        if key in values:
            template = template.replace("{" + key + "}", values[key])
    return template


def _dvc_stage(spec: Stage) -> dict[str, Any]:
    """One ``dvc.yaml`` stage. Every output is cached, metrics and plots included, so that
    ``dvc push`` / ``dvc pull`` carry all of them (the results folders are not in git)."""
    values = {"dataset": "${prepare.dataset}", "method": "${item.method}", "seed": "${item.seed}"}
    inputs = {k: expand(v, **values) for k, v in spec.inputs.items()}
    outputs = {k: expand(v, **values) for k, v in spec.outputs.items()}
    entry: dict[str, Any] = {}
    if spec.per_method:
        entry["matrix"] = {"method": "${pipeline.methods}", "seed": "${pipeline.seeds}"}
    entry["cmd"] = command(
        spec,
        {**inputs, **outputs},
        params_file="params.yaml",
        method=values["method"],
        seed=values["seed"],
    )
    entry["deps"] = [*inputs.values(), *spec.code]
    entry["params"] = [expand(key, **values) for key in spec.params]
    outs: list[Any] = []
    metrics: list[Any] = []
    plots: list[Any] = []
    for name, path in outputs.items():
        if name in spec.metrics:
            metrics.append(path)
        elif name in spec.plots:
            plots.append({path: spec.plots[name]})
        else:
            outs.append(path)
    for key, items in (("outs", outs), ("metrics", metrics), ("plots", plots)):
        if items:
            entry[key] = items
    return entry


def dvc_yaml() -> str:
    """The text of ``dvc.yaml`` for :data:`STAGES` (deterministic, with a do-not-edit header)."""
    document = {
        "stages": {name: _dvc_stage(spec) for name, spec in STAGES.items()},
        "plots": DVC_PLOTS,
    }
    header = (
        "# Generated by `sibnet dvc-yaml` from the registered stages (src/sibnet/dag.py and any\n"
        "# installed extension's): edit those, not this file.\n"
        "# Methods, seeds and the dataset come from params.yaml at `dvc repro` time.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, width=1000, allow_unicode=True)
