"""The reports layer: what a person decides from after (or during) a search.

* ``data``: one :class:`~qnas_hw.reports.data.ReportData` from the study's
  records: front, knee and most-accurate picks, hypervolume history,
  hardware results.
* ``plots``: the matplotlib figures.
* ``report``: the terminal table, CSV/JSON exports and ``summary.md``.

Imports run downward only: ``reports`` reads ``search`` (the study and
:mod:`qnas_hw.search.pareto`) and ``model``; only ``cli`` imports it
(checked by ``tests/test_layering.py``).
"""
