"""The search layer: NSGA-II over architectures, with the device in the loop.

* ``objectives``: the objective interface, the calibrated runtime/cost and
  the cut-plan subcircuit count.
* ``evaluation``: validation error with SuperCircuit weights (+ fine-tune).
* ``scoring``: that error measured ``noisy`` (the device's noise model) or on
  the ``device`` itself, through the job ledger and executor.
* ``problem``: what pymoo searches: the variables, NSGA-II's operators with
  archive-wide duplicate elimination, the constraints.
* ``building``: the search's parts built from its config: hardware,
  objectives, accuracy scorer, constraints, the trained SuperCircuit.
* ``evaluator``: candidates evaluated through the study (the cache).
* ``preflight``: checks before any expense, and the cost estimate.
* ``nsga``: the NSGA-II loop (ask, evaluate, tell, commit), resume.
* ``pareto``: the one definition of the front, hypervolume and knee.
* ``fronts``: that front of a study's records, the one the console line, the
  generation records, ``hw-eval --which front`` and the reports all show.
* ``study``: the SQLite study (one writer, checksummed rows).
* ``hw_eval``: hardware evaluation of chosen candidates after a search.

Imports run downward only: ``search`` imports ``jobs``, ``config``,
``hardware``, ``model`` and ``data``, never ``reports`` or ``cli``
(checked by ``tests/test_layering.py``).
"""
