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
    ModelWrapValidatorHandler,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from sibnet.data.sources import (
    BUILT_IN_SOURCES,
    DEFAULT_SOURCE,
    SOURCES,
    SourceError,
    SourceParams,
)
from sibnet.errors import SibnetError
from sibnet.extensions import load_extensions
from sibnet.objectives import DEFAULT_METHODS, ObjectiveParams
from sibnet.schema import Name, Section, unique

__all__ = [
    "EvaluateParams",
    "MethodParams",
    "Params",
    "ParamsError",
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


class ParamsError(ValueError, SibnetError):
    """``params.yaml`` is missing, unreadable or invalid; the message names the key at fault."""


_Section = Section
"""Base of every section: unknown keys are errors, values are never coerced silently."""


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


def _error(kind: str, message: str, loc: tuple[Any, ...], value: Any) -> InitErrorDetails:
    """One validation error, as pydantic reported it, at ``loc`` (relative to the model)."""
    return {
        "type": PydanticCustomError(kind, "{message}", {"message": message}),
        "loc": loc,
        "input": value,
    }


def _with_sections(
    model: type[BaseModel],
    data: Any,
    handler: ModelWrapValidatorHandler[Any],
    sections: dict[str, type[BaseModel]],
) -> Any:
    """Validate a model (``extra="allow"``) whose extra keys are sections of registries.

    Each of ``sections`` is validated with its class (absent: its defaults) and kept as an
    extra; a key that is neither a field nor a section is an unknown key. Errors keep their
    locations (``<section>.<key>``) and are reported together with the model's own.
    """
    if not isinstance(data, dict):
        return handler(data)
    data = dict(data)
    errors = [
        _error("extra_forbidden", "Extra inputs are not permitted", (key,), data[key])
        for key in data
        if key not in model.model_fields and key not in sections
    ]
    for name, params in sections.items():
        try:
            data[name] = params.model_validate(data.get(name, {}))
        except ValidationError as error:
            data[name] = params()  # so that the other keys are still checked
            errors += [
                _error(e["type"], e["msg"], (name, *e["loc"]), e.get("input"))
                for e in error.errors()
            ]
    try:
        validated = handler(data)
    except ValidationError as error:
        if not errors:
            raise
        errors += [_error(e["type"], e["msg"], e["loc"], e.get("input")) for e in error.errors()]
    if errors:
        raise ValidationError.from_exception_data(model.__name__, errors)
    return validated


class PrepareParams(_Section):
    """The ``prepare`` stage: which dataset, from which source, split how.

    ``source`` names a source of the registry (:mod:`sibnet.data.sources`); each registered
    source has its own section ``prepare.<source>``, validated by its params class (every
    registered source's section, with its defaults, whichever source is selected), and dumped
    after ``source`` in registration order. ``size``, ``resize`` and ``workers`` apply to the
    sources that read image files: every image is brought to ``size`` × ``size`` by ``resize``
    (``pad``: keep the aspect ratio and pad with black; ``stretch``; ``crop``: keep the aspect
    ratio and centre-crop; see :mod:`sibnet.data.images`), decoded by ``workers`` processes.
    ``skip_invalid`` leaves rows with problems out (listed in ``rejects.csv``) instead of
    failing; ``sibnet prepare --skip-invalid`` sets it for one run.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)  # the sources' sections

    dataset: Name = "phantom"  # not "report" or "plots": those are folders of results/
    source: str = DEFAULT_SOURCE
    size: int = Field(224, ge=16, le=2048)
    resize: Literal["pad", "stretch", "crop"] = "pad"
    workers: int = Field(2, ge=1, le=256)
    skip_invalid: bool = False
    split: SplitParams = Field(default_factory=SplitParams)
    shard_size: int = Field(1024, ge=1, le=1_000_000)

    @model_validator(mode="wrap")
    @classmethod
    def _sections(cls, data: Any, handler: ModelWrapValidatorHandler[PrepareParams]) -> Any:
        """Validate ``prepare.<source>`` of every registered source with its params class."""
        sources = {name: SOURCES.params(name) for name in SOURCES.names()}
        return _with_sections(cls, data, handler, sources)

    @field_validator("source")
    @classmethod
    def _registered_source(cls, source: str) -> str:
        if source not in SOURCES:
            raise ValueError(
                f"unknown source {source!r}; the source registry ({SOURCES.name}) holds "
                f"{SOURCES.names()}"
            )
        return source

    @model_validator(mode="after")
    def _source_is_configured(self) -> PrepareParams:
        missing = self.section().missing()
        if missing:
            raise ValueError(
                f"source {self.source!r} needs prepare.{self.source}."
                + f", prepare.{self.source}.".join(missing)
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``dataset``, ``source``, then the sources' sections in registration order (the
        built-in sources' and the selected one's: :data:`~sibnet.data.sources.BUILT_IN_SOURCES`),
        then the other keys: the order of ``params.yaml``."""
        data = handler(self)
        head = {key: data.pop(key) for key in ("dataset", "source")}
        sections = {name: data.pop(name) for name in SOURCES.names() if name in data}
        shown = {
            name: section
            for name, section in sections.items()
            if name in BUILT_IN_SOURCES or name == self.source
        }
        return {**head, **shown, **data}

    def section(self, source: str | None = None) -> SourceParams:
        """The section ``prepare.<source>`` (default: of the selected source)."""
        name = self.source if source is None else source
        section = (self.__pydantic_extra__ or {}).get(name)
        if section is None:
            SOURCES.params(name)  # raises SourceError naming the registry: an unknown source
            raise SourceError(
                f"prepare.{name}: the source was registered after these params were validated; "
                "validate them again"
            )
        return section

    def organs(self) -> list[str]:
        """Organ (segmentation) masks the selected source provides."""
        return self.section().provided_organs()

    def task(self) -> Literal["multiclass", "multilabel"] | None:
        """The dataset's task where the params decide it (the phantom's ``mode``); ``None``
        where it is known only after preparing."""
        return self.section().known_task()


RESERVED_DATASET_NAMES = ("report", "plots")
"""Folders of ``results/`` that hold the cross-run report, so no dataset may take their name."""

MethodParams = ObjectiveParams
"""One compared method of the ``methods`` table: architecture + attention block + objective.

The base of every objective's params class (:class:`sibnet.objectives.ObjectiveParams`):
validating a mapping with it picks the class registered for its ``objective`` key
(:mod:`sibnet.objectives.registry`), whose keys and checks are the objective's own. The default
table is :data:`sibnet.objectives.DEFAULT_METHODS`.
"""

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
    ``reference`` only (one of ``pipeline.methods``, like ``report.reference``; ``null`` with
    ``reference_modes: []`` for none), to show the trade-off once without paying for it per
    method. It is a key of its own, apart from ``report.reference``: the report's comparison
    method is not one the segment stage reads.
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
    reference: Name | None = "baseline"
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
        return unique(values)


class ReportParams(_Bootstrap):
    """The ``report`` stage: tables and figures over every method and seed.

    ``reference`` is the method every other is compared with (paired bootstrap differences over
    the same test images); it must be one of ``pipeline.methods``. ``pairs`` adds comparisons
    of clean test macro AUC beyond those with the reference: each ``[method, against]`` (two
    different methods of ``pipeline.methods``) gives ``method − against`` with the same
    interval, and Holm's correction runs over the pairs (the report's *Paired comparisons*).
    """

    reference: Name = "baseline"
    pairs: list[Annotated[list[Name], Field(min_length=2, max_length=2)]] = Field(
        default_factory=list
    )

    @field_validator("pairs")
    @classmethod
    def _distinct_pairs(cls, pairs: list[list[str]]) -> list[list[str]]:
        same = [p for p in pairs if p[0] == p[1]]
        if same:
            raise ValueError(f"a pair compares two different methods; got {same}")
        if len({tuple(p) for p in pairs}) != len(pairs):
            raise ValueError(f"pairs must not repeat, got {pairs}")
        return pairs


class PipelineParams(_Section):
    """What the DAG expands over: every listed method is trained once per seed."""

    methods: list[Name] = Field(default_factory=lambda: list(DEFAULT_PIPELINE), min_length=1)
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("methods", "seeds")
    @classmethod
    def _unique(cls, values: list[Any]) -> list[Any]:
        return unique(values)


class TrackingParams(_Section):
    """MLflow settings. The store itself comes from ``MLFLOW_TRACKING_URI`` or the local default."""

    experiment: Annotated[str, Field(min_length=1, max_length=200)] = "sibnet"
    enabled: bool = True


class Params(_Section):
    """The whole of ``params.yaml``: the declared sections, then (as extras, validated by their
    own classes) the sections of stages registered from extensions."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)  # the stages' sections

    prepare: PrepareParams = Field(default_factory=PrepareParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    robustness: RobustnessParams = Field(default_factory=RobustnessParams)
    saliency: SaliencyParams = Field(default_factory=SaliencyParams)
    segment: SegmentParams = Field(default_factory=SegmentParams)
    report: ReportParams = Field(default_factory=ReportParams)
    methods: dict[Name, SerializeAsAny[MethodParams]] = Field(
        default_factory=lambda: dict(DEFAULT_METHODS)
    )
    pipeline: PipelineParams = Field(default_factory=PipelineParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)

    @model_validator(mode="wrap")
    @classmethod
    def _stage_sections(cls, data: Any, handler: ModelWrapValidatorHandler[Params]) -> Any:
        """Validate the sections of stages registered with a params class of their own
        (:attr:`sibnet.dag.Stage.section`), each with that class; the rest as declared."""
        return _with_sections(cls, data, handler, _stage_section_classes(cls))

    def section(self, name: str) -> BaseModel:
        """The params section ``name``: a declared one, or a registered stage's own."""
        if name in type(self).model_fields:
            return getattr(self, name)
        extra = self.__pydantic_extra__ or {}
        if name not in extra:
            raise ParamsError(
                f"no params section {name!r}; sections: {[*type(self).model_fields, *extra]} "
                "(a stage's own section exists once the stage is registered in "
                "sibnet.dag.STAGES)"
            )
        return extra[name]

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
        segment = self.segment
        if segment.reference is not None and segment.reference not in self.pipeline.methods:
            raise ValueError(
                f"segment.reference = {segment.reference!r} is not one of pipeline.methods "
                f"{self.pipeline.methods}; accepted: one of them, or null"
            )
        if segment.reference is None and segment.reference_modes:
            raise ValueError(
                f"segment.reference_modes = {segment.reference_modes} needs segment.reference, "
                f"the method to train them for; set it to one of pipeline.methods "
                f"{self.pipeline.methods}, or reference_modes: []"
            )
        if self.report.reference not in self.pipeline.methods:
            raise ValueError(
                f"report.reference = {self.report.reference!r} is not one of pipeline.methods "
                f"{self.pipeline.methods}"
            )
        strangers = sorted({m for p in self.report.pairs for m in p} - set(self.pipeline.methods))
        if strangers:
            raise ValueError(
                f"report.pairs names {strangers}, which are not in pipeline.methods "
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
            method.check(name, self)
        for name in self.pipeline.methods:
            self.methods[name].check_unlabeled(name, self)
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


def _stage_section_classes(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Params classes of the registered stages' own sections, by section name (the stage's).

    Raises:
        ValueError: a registered stage's section takes the name of a declared section.
    """
    from sibnet.dag import STAGES

    sections = {name: spec.section for name, spec in STAGES.items() if spec.section is not None}
    clash = [name for name in sections if name in model.model_fields]
    if clash:
        raise ValueError(
            f"stages {clash} bring a params section of their own, but params.yaml declares "
            f"sections of those names already: {list(model.model_fields)}"
        )
    return sections


def segment_modes(params: Params, method: str) -> list[str]:
    """The segmentation modes trained for ``method``: ``segment.modes``, plus
    ``segment.reference_modes`` for the method ``segment.reference`` (none where it is null)."""
    modes = list(params.segment.modes)
    if method == params.segment.reference:
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
        if item["type"] == "extra_forbidden" and len(item["loc"]) == 1:
            message = (
                "unknown section; check its spelling against the documented params (a stage's "
                "own section is known once the stage is registered in sibnet.dag.STAGES by "
                "sibnet.dag.register_stage)"
            )
        elif item["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against the documented params"
        elif "input" in item and item["type"] != "missing" and not isinstance(item["input"], dict):
            message = f"{message} (got {item['input']!r})"
        lines.append(f"  - {key}: {message}")
    return "\n".join(lines)


def validate_params(raw: Any, source: str = "params") -> Params:
    """Validate a parsed params mapping; raise :class:`ParamsError` naming every bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    load_extensions()  # an extension's stage may bring a section of its own
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
