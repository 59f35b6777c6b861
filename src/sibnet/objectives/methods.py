"""The compared methods of the paper, the default ``methods`` table of ``params.yaml``."""

from __future__ import annotations

from sibnet.objectives.cross_entropy import CrossEntropyParams
from sibnet.objectives.registry import ObjectiveParams
from sibnet.objectives.sibnet import REFERENCE_FORMULATION, SIBNET_FORMULATION, SibnetParams

__all__ = ["DEFAULT_METHODS"]

DEFAULT_METHODS: dict[str, ObjectiveParams] = {
    "baseline": CrossEntropyParams(),
    "se": CrossEntropyParams(attention="se"),
    "cbam": CrossEntropyParams(attention="cbam"),
    "sibnet": SibnetParams(**SIBNET_FORMULATION),
    "sibnet_cd": SibnetParams(**{**SIBNET_FORMULATION, "lambda_sc": 0.0}),
    "sibnet_sc": SibnetParams(**{**SIBNET_FORMULATION, "lambda_cd": 0.0}),
    "sibnet_reference": SibnetParams(**REFERENCE_FORMULATION),
}
"""Cross-entropy, SE, CBAM, SIBnet and its two ablations, and ``sibnet_reference``, the original
code's loss (defined, not run by default)."""
