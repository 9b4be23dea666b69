"""Wording shared by every layer that prints counts: one place decides "1 layer" vs "2 layers".

Reports, console lines and log messages say how many qubits, layers, candidates
or subcircuits something has; writing ``f"{n} layers"`` by hand gives "(2
qubits, 1 layers)".  :func:`plural` is the one helper they all use, so the
grammar is fixed in one place.  It sits in the bottom layer (next to
``atomic_write`` and ``locking``) so that ``model`` and ``hardware`` can use it
as well as ``reports`` and ``cli``.
"""

from __future__ import annotations


def plural(count: float, noun: str, plural_form: str | None = None) -> str:
    """``count`` and ``noun``, in the plural unless ``count`` is exactly one: ``1 layer``, ``2 layers``, ``0 layers``.

    ``plural_form`` is for nouns that do not just take an ``s`` (``plural(2, "candidate", ...)`` needs none;
    ``plural(3, "batch", "batches")`` does).  Integral floats print without a decimal point (``2 shots``, not
    ``2.0 shots``), so counts read back from JSON look the same as counted ones.
    """
    number = int(count) if float(count).is_integer() else count
    word = noun if number == 1 else (plural_form or f"{noun}s")
    return f"{number} {word}"
