"""The objective registry: a method's ``objective:`` key → the objective's params and loss.

An objective is two halves joined by name in one registry:

* its **params**, a subclass of :class:`ObjectiveParams` (pydantic, torch-free, so that
  ``sibnet.config`` and the stages without networks never import torch) whose ``objective``
  field is a one-value ``Literal`` (the name) with that value as default, registered with
  :func:`register_objective`. It holds the objective's keys, their checks (``check`` sees the
  whole params file), the terms it may report (:attr:`ObjectiveParams.terms`) and the keys its
  dump leaves out (:meth:`ObjectiveParams.inapplicable_keys`);
* its **implementation**, a :class:`sibnet.losses.Objective` subclass (torch) registered for the
  params class with :func:`implements`; :func:`sibnet.losses.build_objective` builds it from a
  method's params with its ``from_params``.

The two halves live apart (``sibnet.objectives.<name>`` and ``sibnet.losses.<module>``) so that
the stages' import closures (:mod:`sibnet.imports`, which decide the DVC code dependencies)
keep the losses out of the stages that never train. Validating a mapping with
:class:`ObjectiveParams` picks the class by ``objective`` (:data:`DEFAULT_OBJECTIVE` when the
key is absent). Nothing falls back silently: an unknown name is a ``ParamsError`` that lists the
registered objectives; a params class that was defined but never registered, or an objective
without implementation, is an error naming this registry and the missing call.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from sibnet.registry import Registry, RegistryError
from sibnet.schema import Section

if TYPE_CHECKING:
    from sibnet.config import Params

__all__ = [
    "DEFAULT_OBJECTIVE",
    "REGISTRY_NAME",
    "ObjectiveParams",
    "ObjectiveRegistryError",
    "ObjectiveSpec",
    "implements",
    "known_objectives",
    "objective_spec",
    "register_objective",
    "unregister_objective",
]

REGISTRY_NAME = "sibnet.objectives.registry"
"""How errors name this registry."""

DEFAULT_OBJECTIVE = "cross_entropy"
"""The objective of a method without an ``objective`` key (the documented default)."""

ATTENTION_KEYS = ("attention_reduction", "attention_min_hidden")
"""The shared keys that apply only with an attention block."""

UNLABELED_KEYS = ("unlabeled", "unlabeled_ratio")
"""The shared keys on unlabeled training images, dumped last and only where they apply."""


class ObjectiveRegistryError(RegistryError):
    """An objective is defined but not registered, or registered twice or incompletely."""


@dataclass
class ObjectiveSpec:
    """One registered objective.

    Attributes:
        name: the ``objective:`` value.
        params: its params class (a subclass of :class:`ObjectiveParams`).
        implementation: its :class:`sibnet.losses.Objective` subclass, once :func:`implements`
            registered one (``None`` before).
    """

    name: str
    params: type[ObjectiveParams]
    implementation: type | None = None


_REGISTRY: Registry[ObjectiveSpec] = Registry(REGISTRY_NAME, "objective", "@register_objective")
"""The registered objectives by name."""


class ObjectiveParams(Section):
    """One compared method: architecture + attention block + objective; the base of every
    objective's params class.

    The shared keys: ``architecture``, ``attention`` and, with ``attention: se`` or ``cbam``,
    the widths of its channel MLPs ``C → h → C`` with
    ``h = min(C, max(attention_min_hidden, C // attention_reduction))`` (see
    :mod:`sibnet.models.attention`). The SE paper's ``r = 16`` was chosen for ImageNet widths
    64–2048; on ``resnet10_small``'s 16–128 channels ``C // 16`` alone gives widths 1 to 8, so
    the width has a floor, 8 by default, after timm's SE and CBAM, which round it up to a
    multiple of 8 (``rd_divisor=8``). These two keys are errors under ``attention: none``.

    Unlabeled training images (a prepared dataset's ``labeled`` flag, SIBnet+): ``unlabeled``
    says what the method does with them. ``ignore`` (the default): it trains on the labeled
    images alone and its log says how many it left out. ``use``: each step takes a batch of
    ``round(unlabeled_ratio · train.batch_size)`` unlabeled images beside the labeled batch
    (``0.5``: one unlabeled image for two labeled ones); the task loss sees the labeled ones
    only and the objective's label-free terms (:attr:`uses_unlabeled`) see both. ``oracle``:
    the unlabeled images train as labeled ones with the labels the dataset withheld (the
    study's upper bound, "every image labeled"). ``unlabeled_ratio`` is an error unless
    ``unlabeled: use``; both keys are left out of the dump while ``unlabeled: ignore`` (so a
    method's hash is what it was before they existed). A method of ``pipeline.methods`` that
    uses them on a source yielding no unlabeled images (or ``oracle`` on images without withheld
    labels) is refused before any work; ``sibnet train`` checks the prepared dataset too.

    ``ObjectiveParams.model_validate(mapping)`` validates with the class registered for the
    mapping's ``objective``; the base itself is never instantiated. A subclass declares
    ``objective: Literal["<name>"] = "<name>"`` and its own keys, and may override
    :attr:`terms`, :meth:`inapplicable_keys` and :meth:`check`. Its dump (also the input of
    :func:`sibnet.models.classifier.params_hash`) holds the shared keys, ``objective``, then the
    objective's keys, then the attention widths where they apply.
    """

    architecture: Literal["resnet10_small", "resnet18", "densenet121"] = "resnet10_small"
    attention: Literal["none", "se", "cbam"] = "none"
    objective: str
    attention_reduction: int = Field(16, ge=1)
    attention_min_hidden: int = Field(8, ge=1)
    unlabeled: Literal["ignore", "use", "oracle"] = "ignore"
    unlabeled_ratio: float = Field(0.5, gt=0.0, le=16.0)

    terms: ClassVar[tuple[str, ...]] = ("task",)
    """Every term the objective may report (``train_<term>`` history columns, MLflow metrics),
    the task loss first; a built objective reports these or a subset
    (:attr:`sibnet.losses.Objective.term_names`)."""

    uses_unlabeled: ClassVar[bool] = False
    """Whether the objective has a term that learns from unlabeled images (``unlabeled: use``
    is refused for one that has none)."""

    def __init__(self, /, **data: Any) -> None:
        if type(self) is ObjectiveParams:
            raise TypeError(
                "ObjectiveParams is the base of the objectives' params: construct an "
                "objective's own class (e.g. CrossEntropyParams(), SibnetParams(...)) or "
                "validate a mapping with ObjectiveParams.model_validate"
            )
        super().__init__(**data)

    @model_validator(mode="wrap")
    @classmethod
    def _by_objective(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """On the base, validate a mapping with the class its ``objective`` names."""
        if cls is not ObjectiveParams or not isinstance(data, dict):
            return handler(data)
        spec = objective_spec(data.get("objective", DEFAULT_OBJECTIVE))
        _refuse_other_objectives_keys(spec, data)
        return spec.params.model_validate(data)

    @model_validator(mode="after")
    def _attention_keys(self) -> ObjectiveParams:
        if self.attention == "none":
            self.refuse_keys(
                ATTENTION_KEYS, "attention 'se' or 'cbam'", "attention: se or attention: cbam"
            )
        return self

    @model_validator(mode="after")
    def _unlabeled_keys(self) -> ObjectiveParams:
        if self.unlabeled != "use":
            self.refuse_keys(("unlabeled_ratio",), "unlabeled: use", "unlabeled: use")
        if self.unlabeled == "use" and not self.uses_unlabeled:
            able = sorted(s.name for s in _REGISTRY.values() if s.params.uses_unlabeled)
            raise ValueError(
                f"unlabeled: use needs an objective with a term that learns from unlabeled "
                f"images; objective {self.objective!r} has none (its task loss needs labels). "
                f"Accepted: unlabeled: ignore or oracle, or one of the objectives {able}"
            )
        return self

    def refuse_keys(self, keys: tuple[str, ...], which: str, remedy: str) -> None:
        """Raise ``ValueError`` if any of ``keys`` was set although it does not apply (to
        ``which``; ``remedy`` is what would make it apply)."""
        stray = sorted(set(keys) & self.model_fields_set)
        if stray:
            raise ValueError(f"{stray} apply only to {which}; remove them or set {remedy}")

    def unlabeled_added(self, unlabeled: int, withheld: int) -> tuple[int, int]:
        """What the method adds to the labeled training images of a dataset with ``unlabeled``
        unlabeled images, ``withheld`` of them with withheld labels: ``(as labeled, as
        unlabeled)`` images — ``(0, 0)`` for ``ignore``, ``(0, unlabeled)`` for ``use``,
        ``(withheld, 0)`` for ``oracle``."""
        return {"ignore": (0, 0), "use": (0, unlabeled), "oracle": (withheld, 0)}[self.unlabeled]

    def unlabeled_batch_size(self, batch_size: int, processes: int = 1) -> int:
        """Unlabeled images per step beside ``train.batch_size`` labeled ones (``unlabeled:
        use``; 0 otherwise): ``round(unlabeled_ratio · batch_size)``, at least one per
        data-parallel process (the same for any number of processes below that)."""
        if self.unlabeled != "use":
            return 0
        return max(processes, round(self.unlabeled_ratio * batch_size))

    def inapplicable_keys(self) -> tuple[str, ...]:
        """The objective's keys that do not apply with these values (left out of the dump, so
        a dump validates again)."""
        return ()

    def check(self, name: str, params: Params) -> None:
        """Checks against the rest of the params file, for method ``name``; raise
        ``ValueError`` naming ``methods.<name>.<key>`` and what is accepted."""

    def check_unlabeled(self, name: str, params: Params) -> None:
        """The ``unlabeled`` keys against the configured source, for method ``name`` of
        ``pipeline.methods`` (``sibnet.config.Params`` calls it for every such method, whatever
        the objective); ``ValueError`` naming the key when the source yields no unlabeled
        images, or none with withheld labels for ``oracle``."""
        if self.unlabeled == "ignore":
            return
        section = f"prepare.{params.prepare.source}"
        has, withheld = params.prepare.section().unlabeled_images()
        if not has:
            raise ValueError(
                f"methods.{name}.unlabeled = {self.unlabeled!r} asks for unlabeled training "
                f"images, but {section} yields none; add some (prepare.phantom.unlabeled_images, "
                "or unlabeled_fraction / unlabeled_csv of a folder or chexpert source) or set "
                f"methods.{name}.unlabeled: ignore"
            )
        if self.unlabeled == "oracle" and not withheld:
            raise ValueError(
                f"methods.{name}.unlabeled = 'oracle' trains with the withheld labels of the "
                f"unlabeled images, but some of {section}'s unlabeled images have none "
                "(an unlabeled_csv has no labels); accepted: use or ignore"
            )

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dump only the keys that apply, the attention widths last."""
        data = handler(self)
        for key in self.inapplicable_keys():
            data.pop(key, None)
        widths = {key: data.pop(key) for key in ATTENTION_KEYS if key in data}
        if self.attention != "none":
            data.update(widths)
        unlabeled = {key: data.pop(key) for key in UNLABELED_KEYS if key in data}
        if self.unlabeled != "ignore":  # absent when ignored: older dumps and hashes hold
            data["unlabeled"] = unlabeled["unlabeled"]
        if self.unlabeled == "use":
            data["unlabeled_ratio"] = unlabeled["unlabeled_ratio"]
        return data


def _refuse_other_objectives_keys(spec: ObjectiveSpec, data: dict[str, Any]) -> None:
    """A key of another registered objective is an error that names that objective (an
    unknown key is left to the class's ``extra="forbid"``)."""
    owners: dict[str, list[str]] = {}
    for key in data:
        if key not in spec.params.model_fields:
            for other in _REGISTRY.values():
                if key in other.params.model_fields:
                    owners.setdefault(other.name, []).append(key)
    if owners:
        keys = sorted({key for found in owners.values() for key in found})
        which = " or ".join(f"objective {name!r}" for name in sorted(owners))
        first = sorted(owners)[0]
        raise ValueError(f"{keys} apply only to {which}; remove them or set objective: {first}")


def _declared_name(params: type[ObjectiveParams]) -> str:
    """The name a params class declares: its ``objective`` field's one ``Literal`` value."""
    field = params.model_fields["objective"]
    values = (
        typing.get_args(field.annotation) if typing.get_origin(field.annotation) is Literal else ()
    )
    if len(values) != 1 or field.default != values[0]:
        raise ObjectiveRegistryError(
            f"{params.__module__}.{params.__qualname__} must declare its name as "
            'objective: Literal["<name>"] = "<name>" to be registered in the objective '
            f"registry ({REGISTRY_NAME})"
        )
    return values[0]


P = TypeVar("P", bound=type[ObjectiveParams])
T = TypeVar("T", bound=type)


def register_objective(params: P) -> P:
    """Class decorator: register an objective's params class under its declared name.

    Raises:
        ObjectiveRegistryError: the class declares no name, or another class has the name.
    """
    if not (isinstance(params, type) and issubclass(params, ObjectiveParams)):
        raise ObjectiveRegistryError(
            f"register_objective takes an ObjectiveParams subclass, got {params!r}"
        )
    name = _declared_name(params)
    if name in _REGISTRY and _REGISTRY[name].params is not params:
        raise ObjectiveRegistryError(
            f"objective {name!r} is already registered in {REGISTRY_NAME} by "
            f"{_REGISTRY[name].params.__module__}.{_REGISTRY[name].params.__qualname__}"
        )
    if name not in _REGISTRY:
        _REGISTRY.register(name, ObjectiveSpec(name, params))
    return params


def implements(params: type[ObjectiveParams]) -> Callable[[T], T]:
    """Class decorator: register a :class:`sibnet.losses.Objective` subclass as the
    implementation of the objective whose params class is ``params`` (registered first).

    Raises:
        ObjectiveRegistryError: ``params`` is not registered, or already has another
            implementation.
    """
    name = _declared_name(params)
    spec = _REGISTRY.get(name)
    if spec is None or spec.params is not params:
        raise ObjectiveRegistryError(
            f"{params.__qualname__} is not registered in {REGISTRY_NAME}: decorate it with "
            "@register_objective before registering an implementation for it"
        )

    def register(implementation: T) -> T:
        if spec.implementation not in (None, implementation):
            raise ObjectiveRegistryError(
                f"objective {name!r} already has the implementation "
                f"{spec.implementation.__qualname__} in {REGISTRY_NAME}"
            )
        spec.implementation = implementation
        return implementation

    return register


def unregister_objective(name: str) -> None:
    """Remove objective ``name`` from the registry (for tests); unknown names are ignored."""
    _REGISTRY.unregister(name)


def known_objectives() -> list[str]:
    """The registered objective names, sorted."""
    return sorted(_REGISTRY)


def _subclasses(base: type) -> list[type]:
    found = []
    for sub in base.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def objective_spec(name: Any) -> ObjectiveSpec:
    """The registered objective ``name``.

    Raises:
        ParamsError: no objective of that name is registered; the message lists the
            registered ones, and names a params class that declares ``name`` but was never
            registered.
    """
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    from sibnet.config import ParamsError

    message = (
        f"unknown objective {name!r}; the objective registry ({REGISTRY_NAME}) knows "
        f"{known_objectives()}"
    )
    for params in _subclasses(ObjectiveParams):
        field = params.model_fields.get("objective")
        if field is not None and name in typing.get_args(field.annotation):
            message += (
                f"; {params.__module__}.{params.__qualname__} declares objective {name!r} but "
                "was never registered: decorate it with @register_objective"
            )
    raise ParamsError(message)
