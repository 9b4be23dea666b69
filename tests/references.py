"""Independent references the tests compare the package against.

The package computes fronts with pymoo; comparing it against pymoo again
would be a test that cannot fail, so the reference here is the definition of
dominance written out pairwise.
"""

from __future__ import annotations

import numpy as np


def naive_front(F: np.ndarray) -> list[int]:
    """Rows of ``F`` (finite ones only) that no other row dominates under minimisation, by definition."""
    F = np.asarray(F, dtype=float)
    finite = [i for i in range(len(F)) if np.isfinite(F[i]).all()]
    out = []
    for i in finite:
        dominated = any(np.all(F[j] <= F[i]) and np.any(F[j] < F[i]) for j in finite if j != i)
        if not dominated:
            out.append(i)
    return out
