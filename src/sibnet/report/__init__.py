"""The report of every method and seed, as a list of sections.

- :mod:`sibnet.report.section`: what a section is and returns, and the registry of sections;
- :mod:`sibnet.report.context`: what sections read through (paths, shared loads, inputs);
- :mod:`sibnet.report.common`: comparison tables, Markdown cells and JSON entries they share;
- :mod:`sibnet.report.summary`: ``summary.md`` around the sections' blocks, and the captions
  of ``summary.md`` and ``metrics.json``;
- :mod:`sibnet.report.sections`: the sections, registered in report order.

:mod:`sibnet.stages.report` runs them (``sibnet report``).
"""
