"""``qnas-hw`` command line: search, train, report, devices, calibrate, hw-eval, export, inspect, predict.

One module per command family, each registering its commands on the shared
``app`` of :mod:`~qnas_hw.cli.common` when this package is imported (in the
order ``qnas-hw --help`` lists them):

* ``search``: run or resume a search; ``--dry-run`` prices it.
* ``train``: retrain one architecture from scratch.
* ``report``: a study's Pareto report.
* ``devices``: the backends; ``calibrate``: a backend's cost model.
* ``hw_eval``: a study's candidates on a backend.
* ``deploy``: ``export`` a pick as a bundle, ``inspect`` and ``predict`` with it.

Every command imports the library inside its body, once its options are
parsed, so ``--version``, ``--help`` and a config error answer without
importing torch, qiskit or pymoo (``tests/test_cli_imports.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qnas_hw.cli.common import app

# isort: off
# each command module registers its commands on `app` as it is imported: this order is the order of `qnas-hw --help`
from qnas_hw.cli import search, train, report, devices, hw_eval, deploy

# isort: on
from qnas_hw.cli.devices import _NON_GATES


def main(argv: list[str] | None = None) -> Callable[..., Any] | None:
    """Console entry point (``python -m qnas_hw.cli``)."""
    return app(args=argv)


__all__ = ["_NON_GATES", "app", "deploy", "devices", "hw_eval", "main", "report", "search", "train"]
