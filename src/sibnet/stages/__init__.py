"""Pipeline stages: plain functions that wire data, models, metrics and tracking together.

Each stage takes the validated :class:`~sibnet.config.Params` first, then every input and
output path as a keyword argument named as in :mod:`sibnet.dag`, and writes its outputs
atomically. ``sibnet <stage>`` (:mod:`sibnet.cli`) is a thin wrapper around each.
"""
