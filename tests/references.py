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


def grid_hypervolume(Z: np.ndarray, reference: float) -> float:
    """Exact volume dominated by the rows of ``Z`` up to ``reference`` in every coordinate, by a cell grid.

    The union of the boxes ``[z, reference]`` is a union of cells of the grid
    spanned by every point's coordinates; a cell counts when some point is <=
    its lower corner.  O(n^(d+1)): for the handful of points in a test only.
    """
    Z = np.asarray(Z, dtype=float)
    Z = Z[np.all(reference > Z, axis=1)]
    if len(Z) == 0:
        return 0.0
    d = Z.shape[1]
    edges = [np.unique(np.append(Z[:, j], reference)) for j in range(d)]
    total = 0.0
    for cell in np.ndindex(*(len(e) - 1 for e in edges)):
        lower = np.array([edges[j][cell[j]] for j in range(d)])
        if np.any(np.all(lower >= Z, axis=1)):
            total += float(np.prod([edges[j][cell[j] + 1] - edges[j][cell[j]] for j in range(d)]))
    return total
