"""Training objectives as data: a method's ``objective:`` key names a registered objective.

Torch-free (``sibnet.config`` and every stage import it): the registry
(:mod:`sibnet.objectives.registry`), the shared base of every objective's params
(:class:`ObjectiveParams`) and the built-in objectives' params, one module each:
``cross_entropy`` (:mod:`sibnet.objectives.cross_entropy`, the task loss alone), ``sibnet``
(:mod:`sibnet.objectives.sibnet`, the task loss plus the SIBnet saliency terms) and
``entropy_minimization`` (:mod:`sibnet.objectives.entropy_minimization`, the task loss plus
the unlabeled images' prediction entropy). Their losses,
the ``torch.nn.Module`` s, are in :mod:`sibnet.losses`, which builds a method's with
:func:`sibnet.losses.build_objective`.

Adding an objective: a module here with its params class (``@register_objective``), imported
below, and its loss in :mod:`sibnet.losses` (an ``Objective`` subclass with ``from_params``,
``@implements(<params class>)``), re-exported there. An objective outside the package does the
same in a module of its own distribution declared as a ``sibnet.extensions`` entry point
(:mod:`sibnet.extensions`), which every process imports before it validates the params.
"""

from __future__ import annotations

from sibnet.objectives.cross_entropy import CrossEntropyParams
from sibnet.objectives.entropy_minimization import EntropyMinimizationParams
from sibnet.objectives.methods import DEFAULT_METHODS
from sibnet.objectives.registry import (
    DEFAULT_OBJECTIVE,
    REGISTRY_NAME,
    ObjectiveParams,
    ObjectiveRegistryError,
    ObjectiveSpec,
    implements,
    known_objectives,
    objective_spec,
    register_objective,
    unregister_objective,
)
from sibnet.objectives.sibnet import REFERENCE_FORMULATION, SIBNET_FORMULATION, SibnetParams

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_OBJECTIVE",
    "REFERENCE_FORMULATION",
    "REGISTRY_NAME",
    "SIBNET_FORMULATION",
    "CrossEntropyParams",
    "EntropyMinimizationParams",
    "ObjectiveParams",
    "ObjectiveRegistryError",
    "ObjectiveSpec",
    "SibnetParams",
    "implements",
    "known_objectives",
    "objective_spec",
    "register_objective",
    "unregister_objective",
]
