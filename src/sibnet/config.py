"""The one configuration file, ``params.yaml``: its schema, loading and validation.

``params.yaml`` is at once Snakemake's configfile and DVC's params file. It has one section per
stage (``prepare``, ``train``, ``evaluate``), a ``methods`` table (each compared method is data:
architecture + attention block + objective), a ``pipeline`` section that says which methods and
seeds the DAG expands over, and a ``tracking`` section for MLflow. Every stage validates the
whole file before it does any work: an unknown key, a wrong type or an out-of-range value stops
it with a :class:`ParamsError` that names the file, the key and what is accepted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from sibnet.data.phantom import DEFAULT_LESION_CONTRAST, DEFAULT_NOISE_STD, FINDINGS, ORGANS
from sibnet.errors import SibnetError

__all__ = [
    "CHEXPERT_COMPETITION",
    "CHEXPERT_OBSERVATIONS",
    "REFERENCE_FORMULATION",
    "SIBNET_KEYS",
    "ChexpertParams",
    "EvaluateParams",
    "FolderParams",
    "MedmnistParams",
    "MethodParams",
    "Params",
    "ParamsError",
    "PhantomParams",
    "PipelineParams",
    "PrepareParams",
    "ReportParams",
    "RobustnessParams",
    "SaliencyParams",
    "SegmentParams",
    "SplitParams",
    "TrackingParams",
    "TrainParams",
    "load_params",
    "lookup",
    "read_yaml",
    "segment_modes",
    "validate_params",
]

Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64)]
"""Names used in paths and stage names: a letter, then letters, digits or underscores."""


class ParamsError(ValueError, SibnetError):
    """``params.yaml`` is missing, unreadable or invalid; the message names the key at fault."""


class _Section(BaseModel):
    """Base of every section: unknown keys are errors, values are never coerced silently."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PhantomParams(_Section):
    """Options of the built-in phantom dataset (see :func:`sibnet.data.phantom.make_phantom`)."""

    n_images: int = Field(2400, ge=10, le=1_000_000)
    size: int = Field(128, ge=32, le=1024)
    seed: int = Field(0, ge=0)
    mode: Literal["multiclass", "multilabel"] = "multiclass"
    findings: list[str] = Field(
        default_factory=lambda: ["nodule", "effusion", "cardiomegaly", "consolidation"],
        min_length=1,
    )
    prevalence: float = Field(0.3, gt=0.0, lt=1.0)
    lesion_contrast: float = Field(DEFAULT_LESION_CONTRAST, ge=0.0)
    noise_std: float = Field(DEFAULT_NOISE_STD, ge=0.0)
    shortcut_class: str | None = None
    shortcut_rate: float = Field(0.9, ge=0.0, le=1.0)
    sites: Literal["anywhere", "typical"] = "anywhere"
    """Where nodules and consolidation sit: anywhere in the lungs, or at a class-typical site
    (see :func:`sibnet.data.phantom.make_phantom`)."""

    @field_validator("findings")
    @classmethod
    def _known_findings(cls, findings: list[str]) -> list[str]:
        unknown = [f for f in findings if f not in FINDINGS]
        if unknown:
            raise ValueError(f"unknown finding(s) {unknown}; accepted: {list(FINDINGS)}")
        if len(set(findings)) != len(findings):
            raise ValueError(f"findings must not repeat, got {findings}")
        return findings


class SplitParams(_Section):
    """Fractions of images (of patients, where patient ids exist) for validation and test.

    Rounded per label stratum; a split that rounding leaves empty still gets one patient where
    there are enough (see :func:`sibnet.data.splits.stratified_split`).
    """

    val: float = Field(0.15, gt=0.0, lt=1.0)
    test: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitParams:
        if self.val + self.test >= 0.9:
            raise ValueError(
                f"val + test = {self.val + self.test:g} leaves too little for training; "
                "accepted: val + test < 0.9"
            )
        return self


CHEXPERT_OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""The 14 observation columns of CheXpert's ``train.csv`` and ``valid.csv``."""

CHEXPERT_COMPETITION = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
"""The five competition labels (the paper's setting), the default classes."""

ClassName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^/\\\x00]+$")]
"""A class name: also a mask file name (``<class>.png``), so no slashes."""


def _unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError(f"entries must not repeat, got {values}")
    return values


class ChexpertParams(_Section):
    """The CheXpert adapter (:mod:`sibnet.data.adapters.chexpert`).

    ``root`` is the folder the CSVs' ``Path`` entries are relative to (the parent of
    ``CheXpert-v1.0/``); ``train_csv`` and ``valid_csv`` are relative to it. Relative ``root``
    and mask folders are relative to the working directory (the repository root).
    """

    root: str | None = None
    train_csv: str = "CheXpert-v1.0/train.csv"
    valid_csv: str = "CheXpert-v1.0/valid.csv"
    classes: list[ClassName] = Field(
        default_factory=lambda: list(CHEXPERT_COMPETITION), min_length=1
    )
    uncertainty: Literal["ones", "zeros", "ignore"] = "ones"
    frontal_only: bool = True
    lesion_masks: str | None = None

    @field_validator("classes")
    @classmethod
    def _known_observations(cls, classes: list[str]) -> list[str]:
        unknown = [c for c in classes if c not in CHEXPERT_OBSERVATIONS]
        if unknown:
            raise ValueError(
                f"unknown CheXpert observation(s) {unknown}; "
                f"accepted: {list(CHEXPERT_OBSERVATIONS)}"
            )
        return _unique(classes)


class MedmnistParams(_Section):
    """The MedMNIST adapter (:mod:`sibnet.data.adapters.medmnist`): one 2D ``.npz`` file.

    ``task: auto`` reads it from the labels: one column → multi-class (binary datasets are
    two-class multi-class), several 0/1 columns → multi-label. ``classes`` names the classes
    (``null``: ``class_0``, ``class_1``, ...).
    """

    path: str | None = None
    task: Literal["auto", "multiclass", "multilabel"] = "auto"
    classes: list[ClassName] | None = None

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, classes: list[str] | None) -> list[str] | None:
        return None if classes is None else _unique(classes)


class FolderParams(_Section):
    """The folder adapter (:mod:`sibnet.data.adapters.folder`): a CSV plus image files.

    Multi-label: one 0/1 column per class, named as the class. Multi-class: ``label_column``
    holds a class name per row. ``patient_column`` and ``split_column`` are optional.

    Masks come one of two ways per kind (a params error to set both for one kind):

    - folders: ``lesion_masks`` / ``organ_masks`` hold
      ``<image path without suffix>/<class or organ>.png``;
    - columns of the CSV: ``lesion_mask_columns`` maps a class to the column holding its mask
      path, ``organ_mask_columns`` every organ to its column; paths relative to ``root`` (as
      image paths), an empty cell an empty mask (no mask at all when the row's every mask cell
      is empty).

    ``organs`` names the organs and goes with ``organ_masks`` or ``organ_mask_columns``.
    """

    root: str | None = None
    csv: str = "labels.csv"
    path_column: str = "path"
    task: Literal["multilabel", "multiclass"] = "multilabel"
    classes: list[ClassName] = Field(default_factory=list)
    label_column: str = "label"
    patient_column: str | None = None
    split_column: str | None = None
    lesion_masks: str | None = None
    organ_masks: str | None = None
    lesion_mask_columns: dict[ClassName, Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1
    )
    organ_mask_columns: dict[Name, Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1
    )
    organs: list[Name] = Field(default_factory=list)
    intensity: Literal["dtype", "minmax"] = "dtype"

    @field_validator("classes", "organs")
    @classmethod
    def _unique_names(cls, values: list[str]) -> list[str]:
        return _unique(values)

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dump the mask-column keys only when set, so that params without them dump (and hash,
        see :func:`sibnet.models.classifier.params_hash`) as before those keys existed."""
        data = handler(self)
        for key in ("lesion_mask_columns", "organ_mask_columns"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    @model_validator(mode="after")
    def _masks_one_way(self) -> FolderParams:
        for kind in ("lesion", "organ"):
            if getattr(self, f"{kind}_masks") is not None and getattr(self, f"{kind}_mask_columns"):
                raise ValueError(
                    f"{kind}_masks (a mask folder) and {kind}_mask_columns (mask paths in the "
                    f"CSV) are two ways to give the {kind} masks: set one, not both"
                )
        if self.lesion_mask_columns:
            unknown = [c for c in self.lesion_mask_columns if c not in self.classes]
            if unknown:
                raise ValueError(
                    f"lesion_mask_columns names {unknown}, which are not classes; "
                    f"accepted: {self.classes}"
                )
        given = self.organ_masks is not None or bool(self.organ_mask_columns)
        if bool(self.organs) != given:
            raise ValueError(
                "organs and organ_masks go together: set both or neither (or organs and "
                "organ_mask_columns)"
            )
        if self.organ_mask_columns:
            missing = [o for o in self.organs if o not in self.organ_mask_columns]
            unknown = [o for o in self.organ_mask_columns if o not in self.organs]
            if missing or unknown:
                raise ValueError(
                    "organ_mask_columns must map every organ of organs to a column: "
                    f"missing {missing}, unknown {unknown}; accepted keys: {self.organs}"
                )
        return self


class PrepareParams(_Section):
    """The ``prepare`` stage: which dataset, from which source, split how.

    ``size``, ``resize`` and ``workers`` apply to the real sources (the phantom has its own
    ``phantom.size``): every image is brought to ``size`` × ``size`` by ``resize`` (``pad``:
    keep the aspect ratio and pad with black; ``stretch``; ``crop``: keep the aspect ratio and
    centre-crop; see :mod:`sibnet.data.images`), decoded by ``workers`` processes.
    ``skip_invalid`` leaves rows with problems out (listed in ``rejects.csv``) instead of
    failing; ``sibnet prepare --skip-invalid`` sets it for one run.
    """

    dataset: Name = "phantom"  # not "report" or "plots": those are folders of results/
    source: Literal["phantom", "chexpert", "medmnist", "folder"] = "phantom"
    phantom: PhantomParams = Field(default_factory=PhantomParams)
    chexpert: ChexpertParams = Field(default_factory=ChexpertParams)
    medmnist: MedmnistParams = Field(default_factory=MedmnistParams)
    folder: FolderParams = Field(default_factory=FolderParams)
    size: int = Field(224, ge=16, le=2048)
    resize: Literal["pad", "stretch", "crop"] = "pad"
    workers: int = Field(2, ge=1, le=256)
    skip_invalid: bool = False
    split: SplitParams = Field(default_factory=SplitParams)
    shard_size: int = Field(1024, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _source_is_configured(self) -> PrepareParams:
        needed = {"chexpert": ("root",), "medmnist": ("path",), "folder": ("root", "classes")}
        section = getattr(self, self.source)
        missing = [key for key in needed.get(self.source, ()) if not getattr(section, key)]
        if missing:
            raise ValueError(
                f"source {self.source!r} needs prepare.{self.source}."
                + f", prepare.{self.source}.".join(missing)
            )
        return self

    def organs(self) -> list[str]:
        """Organ (segmentation) masks this source provides."""
        if self.source == "phantom":
            return list(ORGANS)
        return list(self.folder.organs) if self.source == "folder" else []


RESERVED_DATASET_NAMES = ("report", "plots")
"""Folders of ``results/`` that hold the cross-run report, so no dataset may take their name."""

SIBNET_KEYS = (
    "lambda_cd",
    "lambda_sc",
    "lambda_faith",
    "normalize_terms",
    "normalize_task",
    "task_weighting",
    "sc_kernel",
    "cam_relu",
    "cam_alpha_grad",
    "sc_resolution",
    "sc_upsample",
    "sc_erosion_border",
    "sc_window_border",
    "sc_regions",
    "sc_reduction",
    "warmup",
    "warmup_epochs",
)
"""The keys of a method that apply only to ``objective: sibnet``: its formulation."""
_SIBNET_ONLY = SIBNET_KEYS
_ATTENTION_ONLY = ("attention_reduction", "attention_min_hidden")


class MethodParams(_Section):
    """One compared method: network architecture + attention block + training objective.

    ``objective: sibnet`` adds the SIBnet terms to the task loss (see
    :class:`sibnet.objectives.SibnetObjective` for the exact formula):
    ``lambda_cd`` · class distinctiveness + ``lambda_sc`` · spatial coherence (paper defaults
    1.2 and 0.9) + ``lambda_faith`` · the faithfulness term, each divided by its value at the
    first training step when ``normalize_terms`` is true, the task loss too when
    ``normalize_task`` is. The formulation keys (each the choice of the original code
    ``ubern-mia/sibnet`` where it differs, in brackets):

    * ``cam_relu``: ReLU'd maps, or signed (``false``; captum's default);
    * ``cam_alpha_grad``: the gradient flows through Grad-CAM's ``α`` (``false``: a constant);
    * ``sc_resolution``: SC on the layer's maps (``layer``) or upsampled to the input
      (``input``), by ``sc_upsample`` (``nearest``, captum's, or ``bilinear``);
    * ``sc_erosion_border``: beyond the map's edge the erosion sees ``background``
      (scipy) or ``foreground`` (scikit-image);
    * ``sc_window_border``: the window's positions beyond the edge hold ``zero`` or are left
      out (``clip``);
    * ``sc_regions``: the ``whole`` salient region, each of its ``components``, or
      ``components_skip_last`` (the original loop skips the last component);
    * ``sc_reduction``: ``mean`` or ``sum`` over the batch's images;
    * ``task_weighting``: ``none``, or ``batch_inverse_frequency`` (multi-class only);
    * ``warmup``: ``none``; ``delay`` (the saliency terms off for the first ``warmup_epochs``
      epochs) or ``ramp`` (their weight rising linearly to 1 over them).

    Setting a weight to 0 gives the ablations. These keys are errors under
    ``objective: cross_entropy``; ``sc_upsample`` needs ``sc_resolution: input`` and
    ``warmup_epochs`` a warm-up; ``warmup_epochs`` must leave at least one epoch of training
    with the terms on (checked against ``train.epochs``).

    ``attention: se`` or ``cbam`` inserts attention blocks whose channel MLPs are ``C → h → C``
    with ``h = min(C, max(attention_min_hidden, C // attention_reduction))`` (see
    :mod:`sibnet.models.attention`). The SE paper's ``r = 16`` was chosen for ImageNet widths
    64–2048; on ``resnet10_small``'s 16–128 channels ``C // 16`` alone gives widths 1 to 8, so
    the width has a floor, 8 by default, after timm's SE and CBAM, which round it up to a
    multiple of 8 (``rd_divisor=8``). These two keys are errors under ``attention: none``.
    """

    architecture: Literal["resnet10_small", "resnet18", "densenet121"] = "resnet10_small"
    attention: Literal["none", "se", "cbam"] = "none"
    objective: Literal["cross_entropy", "sibnet"] = "cross_entropy"
    lambda_cd: float = Field(1.2, ge=0.0, le=1000.0)
    lambda_sc: float = Field(0.9, ge=0.0, le=1000.0)
    lambda_faith: float = Field(0.0, ge=0.0, le=1000.0)
    normalize_terms: bool = True
    normalize_task: bool = False
    task_weighting: Literal["none", "batch_inverse_frequency"] = "none"
    sc_kernel: int = Field(9, ge=3, le=63)
    cam_relu: bool = True
    cam_alpha_grad: bool = True
    sc_resolution: Literal["layer", "input"] = "layer"
    sc_upsample: Literal["nearest", "bilinear"] = "nearest"
    sc_erosion_border: Literal["background", "foreground"] = "background"
    sc_window_border: Literal["zero", "clip"] = "zero"
    sc_regions: Literal["whole", "components", "components_skip_last"] = "whole"
    sc_reduction: Literal["mean", "sum"] = "mean"
    warmup: Literal["none", "delay", "ramp"] = "none"
    warmup_epochs: int = Field(0, ge=0, le=10_000)
    attention_reduction: int = Field(16, ge=1)
    attention_min_hidden: int = Field(8, ge=1)

    def _refuse_keys(self, keys: tuple[str, ...], which: str, remedy: str) -> None:
        """Raise if any of ``keys`` was set although it does not apply (``which``)."""
        stray = sorted(set(keys) & self.model_fields_set)
        if stray:
            raise ValueError(f"{stray} apply only to {which}; remove them or set {remedy}")

    @model_validator(mode="after")
    def _objective_keys(self) -> MethodParams:
        if self.attention == "none":
            self._refuse_keys(
                _ATTENTION_ONLY, "attention 'se' or 'cbam'", "attention: se or attention: cbam"
            )
        if self.objective == "cross_entropy":
            self._refuse_keys(_SIBNET_ONLY, "objective 'sibnet'", "objective: sibnet")
            return self
        if self.lambda_cd == 0 and self.lambda_sc == 0 and self.lambda_faith == 0:
            raise ValueError(
                "objective 'sibnet' needs lambda_cd > 0, lambda_sc > 0 or lambda_faith > 0"
            )
        if self.sc_kernel % 2 == 0:
            raise ValueError(f"sc_kernel must be odd, got {self.sc_kernel}")
        if self.sc_resolution == "layer":
            self._refuse_keys(("sc_upsample",), "sc_resolution 'input'", "sc_resolution: input")
        if self.warmup == "none" and self.warmup_epochs:
            raise ValueError(
                f"warmup_epochs = {self.warmup_epochs} needs a warm-up; set warmup: delay or "
                "warmup: ramp, or warmup_epochs: 0"
            )
        if self.warmup != "none" and not self.warmup_epochs:
            raise ValueError(f"warmup {self.warmup!r} needs warmup_epochs >= 1")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dump only the keys that apply, so a dump validates again."""
        data = handler(self)
        if self.objective == "cross_entropy":
            for key in _SIBNET_ONLY:
                data.pop(key, None)
        elif self.sc_resolution == "layer":
            data.pop("sc_upsample", None)
        if self.attention == "none":
            for key in _ATTENTION_ONLY:
                data.pop(key, None)
        return data


REFERENCE_FORMULATION: dict[str, Any] = {
    "lambda_cd": 1.0,
    "lambda_sc": 1.0,
    "normalize_terms": True,
    "normalize_task": True,
    "task_weighting": "batch_inverse_frequency",
    "cam_relu": False,
    "cam_alpha_grad": False,
    "sc_resolution": "input",
    "sc_upsample": "nearest",
    "sc_erosion_border": "foreground",
    "sc_window_border": "clip",
    "sc_regions": "components_skip_last",
    "sc_reduction": "sum",
}
"""The original SIBnet code's training loss (``ubern-mia/sibnet``), as method keys."""

SIBNET_FORMULATION: dict[str, Any] = {
    "lambda_cd": 0.012,
    "lambda_sc": 0.009,
    "lambda_faith": 0.0,
    "normalize_terms": True,
    "normalize_task": False,
    "task_weighting": "none",
    "sc_kernel": 9,
    "cam_relu": True,
    "cam_alpha_grad": True,
    "sc_resolution": "layer",
    "sc_erosion_border": "background",
    "sc_window_border": "zero",
    "sc_regions": "whole",
    "sc_reduction": "mean",
    "warmup": "none",
    "warmup_epochs": 0,
}
"""The shipped ``sibnet`` method: the configuration ``studies/fidelity.yaml`` selected by
validation macro AUC (``sib_lambda_0p01``; README, *What the evidence says*). The field defaults of
:class:`MethodParams` stay the formulation shipped before that study, which the study calls
``sib_today``."""


DEFAULT_METHODS: dict[str, MethodParams] = {
    "baseline": MethodParams(),
    "se": MethodParams(attention="se"),
    "cbam": MethodParams(attention="cbam"),
    "sibnet": MethodParams(objective="sibnet", **SIBNET_FORMULATION),
    "sibnet_cd": MethodParams(objective="sibnet", **{**SIBNET_FORMULATION, "lambda_sc": 0.0}),
    "sibnet_sc": MethodParams(objective="sibnet", **{**SIBNET_FORMULATION, "lambda_cd": 0.0}),
    "sibnet_reference": MethodParams(objective="sibnet", **REFERENCE_FORMULATION),
}
"""The compared methods of the paper: cross-entropy, SE, CBAM, SIBnet and its two ablations, and
``sibnet_reference``, the original code's loss (defined, not run by default)."""

DEFAULT_PIPELINE = ("baseline", "se", "cbam", "sibnet", "sibnet_cd", "sibnet_sc")
"""The methods the default DAG runs."""


class TrainParams(_Section):
    """The ``train`` stage: optimisation settings shared by every method and seed."""

    epochs: int = Field(5, ge=1, le=10_000)
    batch_size: int = Field(16, ge=1, le=65_536)
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    class_weights: bool = False
    num_workers: int = Field(0, ge=0, le=64)
    threads: int = Field(1, ge=1, le=256)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: CUDA when ``torch.cuda.is_available()``, else the CPU; ``cuda`` without a GPU
    is an error at start-up (see :func:`sibnet.engine.resolve_device`)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """``bf16``: forward pass and task loss under ``torch.autocast(dtype=torch.bfloat16)``
    (SIBnet's saliency terms stay in float32); on the CPU it works but is slow."""
    channels_last: bool = False
    """Model and input batches in ``torch.channels_last`` memory format (faster convolutions on
    tensor-core GPUs)."""
    processes: int = Field(1, ge=1, le=64)
    """Data-parallel training processes on one node (:mod:`sibnet.distributed`): more than one
    runs training under ``torchrun`` with DistributedDataParallel, one GPU per process on CUDA
    (the ``train`` rule then asks the cluster for that many GPUs and ``threads × processes``
    CPUs), gloo processes on the CPU. ``batch_size`` stays the global batch and must be a
    multiple of it; ``threads`` is per process."""

    @model_validator(mode="after")
    def _batch_shared(self) -> TrainParams:
        if self.batch_size % self.processes:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of processes "
                f"{self.processes} (batch_size is the global batch, split evenly)"
            )
        return self


class _Bootstrap(_Section):
    """Percentile-bootstrap settings shared by the scoring stages."""

    bootstrap: int = Field(1000, ge=0, le=100_000)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    seed: int = Field(0, ge=0)


class EvaluateParams(_Bootstrap):
    """The ``evaluate`` stage: bootstrap confidence intervals and decision threshold."""

    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    batch_size: int = Field(128, ge=1, le=65_536)
    threads: int = Field(1, ge=1, le=256)


class RobustnessParams(_Bootstrap):
    """The ``robustness`` stage: test macro AUC under additive Gaussian noise.

    Noise ``N(0, σ²)`` is added to the test images in their [0, 1] intensity space (the models'
    input space: no normalisation follows), then clipped to [0, 1] when ``clip`` is true. The
    noise of each σ comes from a generator seeded by ``noise_seed`` and σ's index, identical for
    every method and seed, so the methods see the same noisy images.
    """

    sigmas: list[Annotated[float, Field(ge=0.0, le=10.0)]] = Field(
        default_factory=lambda: [0.0, 0.005, 0.01, 0.05, 0.1], min_length=1
    )
    clip: bool = True
    noise_seed: int = Field(0, ge=0)
    batch_size: int = Field(128, ge=1, le=65_536)
    threads: int = Field(1, ge=1, le=256)

    @field_validator("sigmas")
    @classmethod
    def _distinct_sigmas(cls, sigmas: list[float]) -> list[float]:
        if len(set(sigmas)) != len(sigmas):
            raise ValueError(f"sigmas must not repeat, got {sigmas}")
        return sigmas


class SaliencyParams(_Bootstrap):
    """The ``saliency`` stage: Grad-CAM maps scored against the lesion masks.

    ``threshold`` binarises each map scaled to [0, 1]: ``otsu``, a number in [0, 1], or
    ``top<k>%`` (see :mod:`sibnet.metrics.saliency`). ``max_images`` caps the annotated test
    images scored (the first ones in manifest order; ``null``: all). ``overlay_images`` is how
    many of them the report's overlay figure shows, the same ones for every method.
    """

    threshold: float | str = "otsu"
    max_images: int | None = Field(None, ge=1)
    overlay_images: int = Field(6, ge=0, le=64)
    layer: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
    """The module whose output the scored Grad-CAM maps are built on, as a dotted name
    (``layer3``, ``features.denseblock3``); ``null``: the last feature map before pooling
    (:func:`sibnet.saliency.gradcam.default_cam_layer`). An earlier layer has a finer map
    (``resnet10_small`` at 128 px: ``layer4`` 8×8, ``layer3`` 16×16). Scoring only: training
    keeps its own layer."""
    negligible: float = Field(1e-3, ge=0.0, lt=1.0)
    """A map is flagged ``negligible`` when its maximum before scaling is at most this fraction
    of the median maximum of the run's maps."""
    batch_size: int = Field(64, ge=1, le=65_536)
    threads: int = Field(1, ge=1, le=256)

    @field_validator("threshold")
    @classmethod
    def _known_threshold(cls, threshold: float | str) -> float | str:
        from sibnet.metrics.saliency import check_threshold

        return check_threshold(threshold)


class SegmentParams(_Bootstrap):
    """The ``segment`` stage: the paper's transfer recipe, a decoder under a trained encoder.

    ``structures`` are organ masks of the prepared dataset (``dataset.json`` ``organs``), one
    sigmoid output each. Modes: ``frozen`` (the trained encoder fixed, only the decoder learns:
    the paper's recipe), ``finetune`` (the trained encoder learns too) and ``scratch`` (the same
    network from random initialisation, end to end), all trained with the same settings.
    ``modes`` are trained for every method; ``reference_modes`` in addition for the method
    ``report.reference`` only, to show the trade-off once without paying for it per method.
    An empty ``structures`` list skips segmentation (for datasets without organ masks): the
    stage then writes empty outputs that say so, and the report leaves segmentation out.
    Training uses the first ``max_train_images`` annotated training images and the first
    ``max_val_images`` validation images (``null``: all), keeping the epoch with the best
    validation Dice; every annotated test image is scored.
    """

    structures: list[Name] = Field(default_factory=lambda: ["lung_left", "lung_right"])
    modes: list[Literal["frozen", "finetune", "scratch"]] = Field(
        default_factory=lambda: ["frozen"], min_length=1
    )
    reference_modes: list[Literal["frozen", "finetune", "scratch"]] = Field(
        default_factory=lambda: ["finetune", "scratch"]
    )
    epochs: int = Field(4, ge=1, le=10_000)
    batch_size: int = Field(8, ge=1, le=65_536)
    learning_rate: float = Field(3e-3, gt=0.0, le=1.0)
    max_train_images: int | None = Field(160, ge=1)
    max_val_images: int | None = Field(64, ge=1)
    figure_images: int = Field(4, ge=0, le=64)
    threads: int = Field(1, ge=1, le=256)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the decoders train and predict, as ``train.device`` (float32 throughout)."""

    @field_validator("structures", "modes", "reference_modes")
    @classmethod
    def _unique_entries(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError(f"entries must not repeat, got {values}")
        return values


class ReportParams(_Bootstrap):
    """The ``report`` stage: tables and figures over every method and seed.

    ``reference`` is the method every other is compared with (paired bootstrap differences over
    the same test images); it must be one of ``pipeline.methods``.
    """

    reference: Name = "baseline"


class PipelineParams(_Section):
    """What the DAG expands over: every listed method is trained once per seed."""

    methods: list[Name] = Field(default_factory=lambda: list(DEFAULT_PIPELINE), min_length=1)
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("methods", "seeds")
    @classmethod
    def _unique(cls, values: list[Any]) -> list[Any]:
        if len(set(values)) != len(values):
            raise ValueError(f"entries must not repeat, got {values}")
        return values


class TrackingParams(_Section):
    """MLflow settings. The store itself comes from ``MLFLOW_TRACKING_URI`` or the local default."""

    experiment: Annotated[str, Field(min_length=1, max_length=200)] = "sibnet"
    enabled: bool = True


class Params(_Section):
    """The whole of ``params.yaml``."""

    prepare: PrepareParams = Field(default_factory=PrepareParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    robustness: RobustnessParams = Field(default_factory=RobustnessParams)
    saliency: SaliencyParams = Field(default_factory=SaliencyParams)
    segment: SegmentParams = Field(default_factory=SegmentParams)
    report: ReportParams = Field(default_factory=ReportParams)
    methods: dict[Name, MethodParams] = Field(default_factory=lambda: dict(DEFAULT_METHODS))
    pipeline: PipelineParams = Field(default_factory=PipelineParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        missing = [m for m in self.pipeline.methods if m not in self.methods]
        if missing:
            raise ValueError(
                f"pipeline.methods names {missing}, which the methods table does not define; "
                f"defined: {sorted(self.methods)}"
            )
        if self.prepare.dataset in RESERVED_DATASET_NAMES:
            raise ValueError(
                f"prepare.dataset = {self.prepare.dataset!r} is reserved (results/"
                f"{self.prepare.dataset}/ holds the report); choose another name"
            )
        if self.report.reference not in self.pipeline.methods:
            raise ValueError(
                f"report.reference = {self.report.reference!r} is not one of pipeline.methods "
                f"{self.pipeline.methods}"
            )
        organs = self.prepare.organs()
        unknown = [s for s in self.segment.structures if s not in organs]
        if unknown:
            raise ValueError(
                f"segment.structures names {unknown}, but source {self.prepare.source!r} "
                f"provides organ masks {organs}; set segment.structures to some of those, or to "
                "[] to skip segmentation"
            )
        for name, method in self.methods.items():
            if method.objective == "sibnet" and method.warmup_epochs >= self.train.epochs:
                raise ValueError(
                    f"methods.{name}.warmup_epochs = {method.warmup_epochs} leaves no epoch with "
                    f"the SIBnet terms on (train.epochs = {self.train.epochs}); accepted: "
                    f"0 .. {self.train.epochs - 1}"
                )
            if method.lambda_faith > 0 and self.train.processes > 1:
                raise ValueError(
                    f"methods.{name}.lambda_faith > 0 runs a second forward pass per step, which "
                    "data-parallel training does not support; set train.processes: 1"
                )
            if method.task_weighting == "batch_inverse_frequency" and self.train.class_weights:
                raise ValueError(
                    f"methods.{name}.task_weighting = batch_inverse_frequency and "
                    "train.class_weights = true both weight the task loss; choose one"
                )
        phantom = self.prepare.phantom
        if self.prepare.source == "phantom" and phantom.mode == "multilabel":
            weighted = [
                n for n, m in self.methods.items() if m.task_weighting == "batch_inverse_frequency"
            ]
            if weighted:
                raise ValueError(
                    f"methods.{weighted[0]}.task_weighting = batch_inverse_frequency needs a "
                    "multiclass task, but prepare.phantom.mode is multilabel; set "
                    "task_weighting: none"
                )
        if phantom.shortcut_class is not None:
            classes = (["normal"] if phantom.mode == "multiclass" else []) + phantom.findings
            if phantom.shortcut_class not in classes:
                raise ValueError(
                    f"prepare.phantom.shortcut_class = {phantom.shortcut_class!r} is not a class "
                    f"of this dataset; accepted: {classes} or null"
                )
        return self

    def method(self, name: str) -> MethodParams:
        """The method called ``name``; a :class:`ParamsError` lists the defined ones."""
        if name not in self.methods:
            raise ParamsError(f"unknown method {name!r}; params define {sorted(self.methods)}")
        return self.methods[name]


def lookup(params: Params, key: str) -> Any:
    """The value of a dotted params key, e.g. ``methods.baseline`` or ``train.threads``, as it
    is written in a params file (JSON types)."""
    value: Any = params.model_dump(mode="json")
    for part in key.split("."):
        value = value[part]
    return value


def segment_modes(params: Params, method: str) -> list[str]:
    """The segmentation modes trained for ``method``: ``segment.modes``, plus
    ``segment.reference_modes`` for the reference method ``report.reference``."""
    modes = list(params.segment.modes)
    if method == params.report.reference:
        modes += [m for m in params.segment.reference_modes if m not in modes]
    return modes


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3`` as a float (YAML 1.2) as DVC and most users do."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file with :class:`_Yaml12Loader`; a :class:`ParamsError` names a bad file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    try:
        return yaml.load(text, Loader=_Yaml12Loader)
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None


def _format_error(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid parameters ({error.error_count()} problem(s)):"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against the documented params"
        elif "input" in item and item["type"] != "missing" and not isinstance(item["input"], dict):
            message = f"{message} (got {item['input']!r})"
        lines.append(f"  - {key}: {message}")
    return "\n".join(lines)


def validate_params(raw: Any, source: str = "params") -> Params:
    """Validate a parsed params mapping; raise :class:`ParamsError` naming every bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_format_error(source, error)) from None


def load_params(path: str | Path) -> Params:
    """Read and validate a params file (YAML).

    Args:
        path: the params file, normally ``params.yaml`` at the repository root.

    Returns:
        The validated, immutable parameters.

    Raises:
        ParamsError: the file is missing, is not YAML, or holds an invalid value.
    """
    path = Path(path)
    raw = read_yaml(path)
    return validate_params(raw if raw is not None else {}, source=str(path))
