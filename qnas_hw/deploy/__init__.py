"""The deploy layer: from a study's pick to a self-contained bundle, and that bundle run on new data.

* ``bundle``: the bundle's files, its manifest and checksums, and :func:`~qnas_hw.deploy.bundle.open_bundle`,
  which refuses a bundle that is incomplete or was altered after export.
* ``export``: a study's pick (knee, most accurate, or a named architecture) written as a bundle, from the
  same transpilation, placement and cut plan the search priced and scored.
* ``runtime``: :func:`~qnas_hw.deploy.runtime.load_export`, the bundle as a torch module (no study needed).
* ``predict``: the bundle run on a backend through the job executor, ledger and spending guard.

Imports run downward only: ``deploy`` sits between ``cli`` and ``reports`` (it reads the picks of
:mod:`qnas_hw.reports.data`); only ``cli`` and the package root import it (``tests/test_layering.py``).
"""
