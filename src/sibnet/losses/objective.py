"""The base of every training objective, and :func:`build_objective`, a method's objective.

An objective runs the model on a batch (:class:`sibnet.data.tensors.Batch`: the whole mapping,
so an objective may use lesion masks or the ``labeled`` flags where the loader provides them)
and returns the loss to minimise together with its terms for logging. Which objective a method
trains with is its ``objective:`` key, looked up in the objective registry
(:mod:`sibnet.objectives.registry`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sibnet.data.tensors import Batch
from sibnet.objectives.registry import (
    REGISTRY_NAME,
    ObjectiveParams,
    ObjectiveRegistryError,
    objective_spec,
)

__all__ = ["Objective", "Terms", "build_objective"]

Terms = dict[str, torch.Tensor]
"""An objective's terms: name → detached scalar."""

NO_SHARES = {"labeled": 1.0, "unlabeled": 1.0, "images": 1.0}
"""The data-parallel shares of a single-process step (:attr:`Objective.shares`)."""


class Objective(nn.Module):
    """``forward(model, batch) -> (loss, terms)``; terms are detached scalars.

    Every objective holds its task loss as ``task`` (validation scores that loss alone) and
    names the terms it reports in :attr:`term_names` (the history's ``train_<term>`` columns,
    the MLflow metrics, the checkpoint's ``terms``): its params class's
    :attr:`~sibnet.objectives.ObjectiveParams.terms` or some of them. :meth:`begin_epoch` is
    called before each training epoch. A subclass builds itself from a method's params with
    :meth:`from_params` and is registered for its params class with
    :func:`sibnet.objectives.implements`.
    """

    task: nn.Module

    @classmethod
    def from_params(
        cls, params: ObjectiveParams, task: str, class_weights: torch.Tensor | None
    ) -> Objective:
        """The objective of a method with ``params``, for a ``multiclass`` or ``multilabel``
        task; ``class_weights`` ``(C,)`` weight the task loss (``None``: unweighted)."""
        raise NotImplementedError(f"{cls.__qualname__} does not define from_params")

    @property
    def term_names(self) -> tuple[str, ...]:
        """The names of the terms :meth:`forward` may report, in a fixed order."""
        return ("task",)

    def __init__(self) -> None:
        super().__init__()
        self.shares: dict[str, float] = dict(NO_SHARES)
        """Data-parallel weights of the next step's terms by the images each is a mean over:
        ``labeled``, ``unlabeled``, ``images`` (both); all 1 with one process or without
        unlabeled images. :func:`sibnet.engine.train_epoch` sets them (:meth:`set_shares`)
        before each step of a data-parallel run with unlabeled images, and then does not scale
        the loss itself."""

    def shared(self, value: torch.Tensor, kind: str) -> torch.Tensor:
        """``value`` (a mean over the ``kind`` images of the step) times its share (itself
        when the share is 1, so single-process results stay bit-identical)."""
        share = self.shares[kind]
        return value if share == 1.0 else value * share

    def set_shares(self, shares: dict[str, float]) -> None:
        """Set :attr:`shares` for the next step (see :func:`sibnet.distributed` and
        ``engine._shares``)."""
        self.shares = dict(shares)

    def begin_epoch(self, epoch: int, steps: int) -> None:
        """Training epoch ``epoch`` (from 1) of ``steps`` optimiser steps starts."""

    def forward(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]:
        raise NotImplementedError

    def scales(self) -> dict[str, float]:
        """Normalisation scales of the terms (none here)."""
        return {}

    def resume_state(self) -> dict[str, Any]:
        """State beyond the model's that training must carry over a restart (none here)."""
        return {}

    def load_resume_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`resume_state` returned."""


def build_objective(
    method: ObjectiveParams, task: str, class_weights: torch.Tensor | None = None
) -> Objective:
    """The objective a method trains with, for a ``multiclass`` or ``multilabel`` task.

    Raises:
        ParamsError: the method's objective is not registered.
        ObjectiveRegistryError: it has no implementation (``@implements`` forgotten), or the
            built objective reports a term its params class does not declare.
    """
    spec = objective_spec(method.objective)
    if spec.implementation is None:
        raise ObjectiveRegistryError(
            f"objective {spec.name!r} ({spec.params.__module__}.{spec.params.__qualname__}) "
            f"has no implementation in the objective registry ({REGISTRY_NAME}): decorate its "
            f"Objective subclass with @implements({spec.params.__qualname__}) and import its "
            "module (sibnet.losses re-exports the built-in ones)"
        )
    objective = spec.implementation.from_params(method, task, class_weights)
    undeclared = [t for t in objective.term_names if t not in spec.params.terms]
    if undeclared:
        raise ObjectiveRegistryError(
            f"objective {spec.name!r} reports terms {undeclared} that "
            f"{spec.params.__qualname__}.terms {list(spec.params.terms)} does not declare"
        )
    return objective
