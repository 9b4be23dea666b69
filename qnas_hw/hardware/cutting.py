"""Circuit-cutting plans: how many subcircuits, cuts and subexperiments a candidate needs on a small device.

A candidate wider than the device's qubit budget can still run, as several
narrower subcircuits whose results are recombined classically; the price is
a sampling overhead (more shots) and many more circuit executions.  The
search uses that price as an objective and a constraint, so it comes from
qiskit-addon-cutting itself, never from a formula of our own:

1. ``find_cuts`` (the addon's best-first cut finder, seeded) places gate and
   wire cuts so every subcircuit fits ``qubit_budget`` qubits;
2. ``cut_wires`` / ``expand_observables`` / ``partition_problem`` build the
   real subcircuits (their widths are what the device must hold);
3. the addon's own exact quasi-probability enumeration
   (``generate_qpd_weights(..., num_samples=inf)``, the function
   ``generate_cutting_experiments`` calls) times the number of qubit-wise
   commuting observable groups per subcircuit gives the number of
   subexperiments.  ``materialize=True`` calls ``generate_cutting_experiments``
   itself and counts the circuits it returns (slower, same number; the tests
   check both against direct addon calls).

Parameter values: the cut finder needs each two-qubit gate's QPD basis, and
an ``RZZ(x_i x_j)`` gate's overhead depends on its angle (``kappa = 1 + 2|sin|``).
A plan has to hold for every input sample, so inputs are bound so that every
product ``x_i x_j = pi/2``, the worst case (``kappa = 3``, the same as a CNOT).
Weights only enter single-qubit gates and cannot change a plan; they are
drawn from the planner's seed so the bound circuit is reproducible.

Connected pieces of the cut circuit that fit together are packed into one
subcircuit (first-fit decreasing), so an unentangled 8-qubit circuit on a
4-qubit budget is 2 device runs, not 8.  Packing never adds cuts.

When the cheapest plan the optimiser finds has ``gamma > max_gamma`` (the
addon then falls back to its greedy plan), the plan is returned with
``feasible=False``: the search treats it as a constraint violation.  Its
subexperiment count is then the size of the exact decomposition (product of
the bases' term counts), not enumerated, because it can be astronomically
large.

Proving "no plan within max_gamma" is what makes the addon slow: its
best-first search must exhaust every partial plan below ``max_gamma`` (or
its backjump limit), 10-50 s for an 8-qubit amplitude embedding with ~250
CNOTs.  :func:`relaxed_gamma_bound` is a cheap, provably valid lower bound on
the gamma of *any* plan (see its docstring); when it already exceeds
``max_gamma`` the planner skips the search and asks ``find_cuts`` for its
greedy plan only (``max_backjumps=0``).  That is exactly the plan the full
search returns in this case: the search can only return plans with
``gamma <= max_gamma``, none exist, so ``find_cuts`` falls back to the same
deterministic greedy plan whatever its backjump limit.  Every figure and
verdict is therefore unchanged (the tests and ``benchmarks/objectives.py``
compare both paths); only ``minimum_reached`` is the greedy call's and
``infeasible_proven`` is set.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import time
import warnings
from collections.abc import Hashable
from dataclasses import dataclass, field, fields, replace
from importlib.metadata import version as _version
from pathlib import Path
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterExpression
from qiskit.quantum_info import PauliList
from qiskit_addon_cutting import (
    PartitionedCuttingProblem,
    cut_wires,
    expand_observables,
    generate_cutting_experiments,
    partition_problem,
)
from qiskit_addon_cutting.automated_cut_finding import DeviceConstraints, OptimizationParameters, find_cuts
from qiskit_addon_cutting.qpd import QPDBasis, TwoQubitQPDGate, generate_qpd_weights
from qiskit_addon_cutting.utils.observable_grouping import ObservableCollection

from qnas_hw.atomic_write import atomic_write_text
from qnas_hw.model.circuits import INPUT_NAME, build_circuit, observables
from qnas_hw.model.space import Architecture

log = logging.getLogger(__name__)

#: Input angle whose pairwise products are pi/2: the worst case for RZZ cutting overhead.
WORST_CASE_INPUT = math.sqrt(math.pi / 2)


class CuttingError(ValueError):
    """A planner setting that cannot work, with a message saying how to fix it."""


def json_count(count: int) -> int | float:
    """A count as JSON and SQLite can hold it: exact below 2**53, else a float, else inf.

    Infeasible plans of wide circuits can need more subexperiments than a double can hold
    (the addon's own overhead already overflows to inf there); the study must still store them.
    """
    if count < 2**53:
        return int(count)
    try:
        return float(count)
    except OverflowError:
        return math.inf


@dataclass(frozen=True)
class CutPlan:
    """The addon's cutting plan for one architecture under one qubit budget.

    ``sampling_overhead`` is the factor by which shots grow for the same
    precision (gamma squared); ``n_subexperiments`` counts circuit executions
    per original circuit (all subcircuits, all QPD terms, all observable
    groups).  ``feasible`` is False when no plan with gamma <= max_gamma was
    found; the other figures then describe the addon's greedy fallback plan.
    """

    n_subcircuits: int
    n_cuts: int
    sampling_overhead: float
    n_subexperiments: int
    subcircuit_widths: tuple[int, ...]
    gate_cuts: int = 0
    wire_cuts: int = 0
    subcircuit_depths: tuple[int, ...] = ()
    feasible: bool = True
    minimum_reached: bool = True
    qubit_budget: int = 0
    plan_seconds: float = 0.0
    reason: str = ""
    infeasible_proven: bool = False
    #: distinct QPD term probabilities p_j = |c_j| / gamma with their multiplicities (feasible plans only)
    term_probabilities: tuple[tuple[float, int], ...] = ()
    #: circuits per QPD term: commuting observable groups summed over the subcircuits
    experiments_per_term: int = 1

    @property
    def gamma(self) -> float:
        return math.sqrt(self.sampling_overhead)

    @property
    def is_cut(self) -> bool:
        """True when the candidate runs as subexperiments rather than as itself."""
        return self.n_subcircuits > 1 or self.n_cuts > 0

    def shots_per_row(self, shots: int, policy: str = "scaled") -> float:
        """Shots one input sample costs on the device when every subexperiment gets its allotment.

        ``scaled`` (default) keeps the uncut circuit's precision: term ``j``
        gets ``ceil(shots * gamma**2 * p_j)`` shots in each of its circuits
        (``sum_j`` of that is about ``shots * gamma**2``); ``fixed`` spreads
        ``shots`` over the terms (``round(shots * p_j)``).  An infeasible plan
        is not enumerated: its figure is ``shots * overhead`` per circuit
        group (may be inf).
        """
        if not self.is_cut:
            return float(shots)
        if not self.term_probabilities:
            return float(shots) * float(self.sampling_overhead) * self.experiments_per_term
        return float(
            self.experiments_per_term
            * sum(count * allot_shots(p, self.sampling_overhead, shots, policy) for p, count in self.term_probabilities)
        )

    def min_fixed_shots(self) -> int:
        """Fewest ``fixed``-policy shots per sample that give every QPD term at least one shot."""
        if not self.is_cut or not self.term_probabilities:
            return 1
        return math.ceil(1.0 / min(p for p, _ in self.term_probabilities) - 1e-9)

    def to_dict(self) -> dict[str, Any]:
        """Every field, exactly (for the on-disk cache; :meth:`details` is the study's view)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CutPlan:
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ValueError(f"cut plan fields {sorted(set(data) ^ names)} missing or unknown")
        values = dict(data)
        for name in ("subcircuit_widths", "subcircuit_depths"):
            values[name] = tuple(values[name])
        values["term_probabilities"] = tuple((float(p), int(c)) for p, c in values["term_probabilities"])
        return cls(**values)

    def figures(self) -> tuple[Any, ...]:
        """Everything a plan reports except how it was found (time, proof flags, wording).

        Two planners (the precheck vs the addon's full search, a disk cache vs a fresh plan) agree when
        their figures are equal.
        """
        return (
            self.feasible,
            self.n_subcircuits,
            self.n_cuts,
            self.gate_cuts,
            self.wire_cuts,
            self.sampling_overhead,
            self.n_subexperiments,
            self.subcircuit_widths,
            self.subcircuit_depths,
        )

    def details(self) -> dict[str, Any]:
        """JSON-friendly figures for the study (huge counts as floats so JSON and SQLite can hold them)."""
        n_sub = json_count(self.n_subexperiments)
        return {
            "n_subcircuits": self.n_subcircuits,
            "n_cuts": self.n_cuts,
            "gate_cuts": self.gate_cuts,
            "wire_cuts": self.wire_cuts,
            "sampling_overhead": self.sampling_overhead,
            "n_subexperiments": n_sub,
            "subcircuit_widths": list(self.subcircuit_widths),
            "subcircuit_depths": list(self.subcircuit_depths),
            "feasible": self.feasible,
            "minimum_reached": self.minimum_reached,
            "qubit_budget": self.qubit_budget,
            "plan_seconds": self.plan_seconds,
            "reason": self.reason,
            "infeasible_proven": self.infeasible_proven,
            "experiments_per_term": self.experiments_per_term,
            "qpd_terms": sum(c for _, c in self.term_probabilities) or None,
        }


def representative_circuit(arch: Architecture, seed: int = 0) -> QuantumCircuit:
    """The architecture's circuit bound for planning: worst-case inputs, seeded weights (see module docstring).

    Each gate's expression is bound on its own rather than through
    ``assign_parameters``: an amplitude tree's angles are sums over up to
    2**n inputs, and qiskit's circuit-wide substitution took ~3 s for 8
    qubits (against ~0.1 s here); the tests check both give equal circuits.
    """
    qc = build_circuit(arch)
    rng = np.random.default_rng(seed)
    params = list(qc.parameters)
    weights = rng.uniform(0.0, 2 * np.pi, size=len(params))
    values = {
        p: (WORST_CASE_INPUT if p.vector.name == INPUT_NAME else float(w)) for p, w in zip(params, weights, strict=True)
    }
    return bind_each_gate(qc, values)


def bind_each_gate(circuit: QuantumCircuit, values: dict[Parameter, float]) -> QuantumCircuit:
    """``circuit`` with every parameter bound to ``values`` (the same circuit ``assign_parameters`` gives)."""
    out = circuit.copy_empty_like()
    for inst in circuit.data:
        params = inst.operation.params
        if any(isinstance(p, ParameterExpression) for p in params):
            op = inst.operation.to_mutable()
            op.params = [
                float(p.bind({q: values[q] for q in p.parameters})) if isinstance(p, ParameterExpression) else p
                for p in params
            ]
            inst = inst.replace(operation=op)
        out.append(inst)
    return out


def observable_list(arch: Architecture) -> PauliList:
    """The readout observables (Z on every qubit) as the PauliList the addon takes."""
    return PauliList([op.paulis[0] for op in observables(arch)])


def pack_components(circuit: QuantumCircuit, budget: int) -> list[int]:
    """Partition labels: connected pieces of ``circuit`` (ignoring cut gates) packed into bins of <= budget qubits.

    First-fit decreasing, ties broken by lowest qubit, so labels are
    deterministic.  A piece wider than the budget would mean the cut finder
    failed; it gets its own bin and the caller reports the width honestly.
    """
    parent = list(range(circuit.num_qubits))

    def find(q: int) -> int:
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    for inst in circuit.data:
        if isinstance(inst.operation, TwoQubitQPDGate) or len(inst.qubits) < 2:
            continue
        ids = [circuit.find_bit(q).index for q in inst.qubits]
        for other in ids[1:]:
            parent[find(other)] = find(ids[0])
    groups: dict[int, list[int]] = {}
    for q in range(circuit.num_qubits):
        groups.setdefault(find(q), []).append(q)
    pieces = sorted(groups.values(), key=lambda g: (-len(g), min(g)))
    bins: list[list[int]] = []
    for piece in pieces:
        for b in bins:
            if len(b) + len(piece) <= budget:
                b.extend(piece)
                break
        else:
            bins.append(list(piece))
    labels = [0] * circuit.num_qubits
    for label, b in enumerate(sorted(bins, key=min)):
        for q in b:
            labels[q] = label
    return labels


#: Bumped whenever this module changes what a plan contains or how it is computed (invalidates disk caches).
PLAN_FORMAT = 2
#: How a cut candidate's shots are allotted to its QPD terms (see :meth:`CutPlan.shots_per_row`).
SHOT_POLICIES: tuple[str, ...] = ("scaled", "fixed")


def allot_shots(probability: float, overhead: float, shots: int, policy: str) -> int:
    """Shots for each circuit of a QPD term of probability ``p`` (``|c_j| / gamma``)."""
    if policy == "scaled":
        value = shots * overhead * probability  # a stored probability carries 12 digits: ignore that last bit
        return max(1, math.ceil(value - 1e-9 * max(1.0, value)))
    if policy == "fixed":
        return max(1, round(shots * probability))
    raise CuttingError(f"cut shot policy {policy!r} is unknown; use one of {', '.join(SHOT_POLICIES)}")


def _term_histogram(bases: list[QPDBasis]) -> tuple[tuple[float, int], ...]:
    """Distinct term probabilities of the exact decomposition (12 significant digits) and their counts."""
    hist: dict[float, int] = {}
    for weight, _ in generate_qpd_weights(bases, num_samples=np.inf).values():
        p = float(f"{float(weight):.12g}")
        hist[p] = hist.get(p, 0) + 1
    return tuple(sorted(hist.items(), reverse=True))


#: Gamma of one LO wire cut in the addon's cut finder (``gamma_UB *= 4``; cutting both wires of a gate is 16).
WIRE_CUT_GAMMA = 4.0


class _NodeLimit(Exception):
    """The bound's search ran out of its node budget: no verdict, the caller runs the addon."""


def pair_log_gammas(circuit: QuantumCircuit) -> np.ndarray:
    """Symmetric matrix: sum of ``log(kappa)`` over the two-qubit gates between each pair of qubits.

    ``kappa`` comes from ``QPDBasis.from_instruction``, the call the addon's
    cut finder uses for a gate's cut cost, so the bound prices gates exactly
    as ``find_cuts`` does (a gate with kappa 1 is free to cut and adds 0).
    """
    n = circuit.num_qubits
    weights = np.zeros((n, n))
    for inst in circuit.data:
        if len(inst.qubits) != 2:
            continue
        kappa = float(QPDBasis.from_instruction(inst.operation).kappa)
        a, b = (circuit.find_bit(q).index for q in inst.qubits)
        weights[a, b] += math.log(kappa)
        weights[b, a] += math.log(kappa)
    return weights


def relaxed_gamma_bound(
    circuit: QuantumCircuit,
    qubit_budget: int,
    cap: float = math.inf,
    node_limit: int = 50_000,
    first_below_cap: bool = False,
) -> float | None:
    """A lower bound on the gamma of every gate-and-wire-cut plan that fits ``qubit_budget``.

    Why it is valid: take any plan the addon could return, with ``w`` wire
    cuts and a set ``C`` of cut gates; its gamma is
    ``4**w * prod(kappa(g) for g in C)`` (LO cuts: the cut finder's cost,
    and also the gamma the planner reports, from the QPD bases: a wire cut's
    ``Move`` basis has kappa 4, a gate's the kappa used here; a test pins both).
    Wire cuts split qubit ``q``'s timeline into segments; the uncut gates join
    segments into connected pieces, each of at most ``qubit_budget`` segments
    (its width).  Let ``S_i`` be the set of qubits with a segment in piece
    ``i``.  Then (1) ``|S_i| <= qubit_budget``, (2) ``sum |S_i| <= n + w``
    (each of the ``n + w`` segments lies in one piece), and (3) every uncut
    gate's two qubits lie together in some ``S_i``.  So
    ``gamma >= 4**(sum |S_i| - n) * prod(kappa(g) for gates whose qubits
    share no S_i)``, and the minimum of the right-hand side over *all* covers
    of the qubits by sets of at most ``qubit_budget`` qubits is a lower bound
    for every plan.  The cover ignores time order (a real wire cut only
    separates earlier from later gates), which can only make the bound
    smaller, never invalid.

    That minimum is found by branch and bound: qubits are placed one by one
    (most entangled with the placed ones first) into one or more sets, some
    already opened by earlier qubits and any number of new ones (a qubit may
    need a separate set with each of several later qubits); a
    placement's cost (extra memberships x log 4, plus the log kappa of every
    gate to an already-placed qubit it no longer shares a set with) never
    decreases as more qubits are placed, so branches above the best (or
    ``cap``) are pruned.  Returns the bound as a gamma when it is <= ``cap``
    (with ``first_below_cap`` the first cover found at or below ``cap``,
    enough to say "not excluded"), ``math.inf`` when every cover exceeds
    ``cap`` (no plan within ``cap`` exists), and None when ``node_limit``
    placements were not enough to decide.
    """
    weights = pair_log_gammas(circuit)
    n = weights.shape[0]
    log_cap = math.log(cap) if math.isfinite(cap) else math.inf
    order = _placement_order(weights)
    wire = math.log(WIRE_CUT_GAMMA)
    bins: list[set[int]] = []
    member: dict[int, list[int]] = {}
    best = [log_cap]
    found = [False]
    nodes = [0]

    def place(i: int, cost: float) -> bool:
        """Returns True to stop the whole search (a cover at or below cap when first_below_cap)."""
        if i == n:
            best[0], found[0] = cost, True
            return first_below_cap
        v = order[i]
        placed = order[:i]
        open_bins = [j for j, b in enumerate(bins) if len(b) < qubit_budget]
        # every membership beyond the first is a wire cut: only as many as the best cost so far leaves room for
        # (and never more than one per other qubit: a set beyond that cannot cover another gate)
        room = (best[0] - cost) / wire
        max_members = max(1, n - 1) if room >= n else min(max(1, n - 1), 1 + int(room + 1e-9))
        seen: set[tuple[frozenset[int], ...]] = set()
        for k in range(min(max_members, len(open_bins)) + 1):
            for chosen in itertools.combinations(open_bins, k):
                # sets with equal contents are interchangeable: try one of them
                contents = tuple(sorted((frozenset(bins[b]) for b in chosen), key=sorted))
                if contents in seen:
                    continue
                seen.add(contents)
                c = cost
                for u in placed:
                    if c > best[0]:
                        break
                    if weights[u, v] > 0 and not any(b in member[u] for b in chosen):
                        c += weights[u, v]
                # v may also open new sets that later qubits join (several: it may need one with each of them)
                for n_new in range(0 if chosen else 1, max_members - k + 1):
                    total = c + (k + n_new - 1) * wire
                    if total > best[0] or (found[0] and total >= best[0]):
                        break
                    nodes[0] += 1
                    if nodes[0] > node_limit:
                        raise _NodeLimit
                    for b in chosen:
                        bins[b].add(v)
                    bins.extend({v} for _ in range(n_new))
                    member[v] = [*chosen, *range(len(bins) - n_new, len(bins))]
                    stop = place(i + 1, total)
                    for b in chosen:
                        bins[b].discard(v)
                    del bins[len(bins) - n_new :]
                    del member[v]
                    if stop:
                        return True
        return False

    try:
        place(0, 0.0)
    except _NodeLimit:
        return None
    return math.exp(best[0]) if found[0] else math.inf


def _placement_order(weights: np.ndarray) -> list[int]:
    """Heaviest qubit first, then always the one most entangled with those already placed (prunes early)."""
    n = weights.shape[0]
    order = [int(np.argmax(weights.sum(axis=1)))] if n else []
    while len(order) < n:
        rest = [q for q in range(n) if q not in order]
        order.append(max(rest, key=lambda q: (weights[q, order].sum(), weights[q].sum(), -q)))
    return order


def _groups(subobservables: dict[Hashable, PauliList]) -> int:
    return sum(len(ObservableCollection(obs).groups) for obs in subobservables.values())


def count_subexperiments(
    subcircuits: dict[Hashable, QuantumCircuit],
    bases: list[QPDBasis],
    subobservables: dict[Hashable, PauliList],
    materialize: bool = False,
) -> int:
    """Circuit executions the addon would generate with ``num_samples=inf``.

    ``materialize`` builds them with ``generate_cutting_experiments``;
    otherwise the same exact enumeration of QPD terms is done without
    building circuits (terms x observable groups, exactly what that
    function loops over).
    """
    if materialize:
        experiments, _ = generate_cutting_experiments(
            circuits=subcircuits, observables=subobservables, num_samples=np.inf
        )
        return sum(len(v) for v in experiments.values())
    return len(generate_qpd_weights(bases, num_samples=np.inf)) * _groups(subobservables)


def decomposition_size(bases: list[QPDBasis], subobservables: dict[Hashable, PauliList]) -> int:
    """Size of the exact decomposition without enumerating it (for plans too large to enumerate)."""
    terms = math.prod(int(np.count_nonzero(np.asarray(b.probabilities))) for b in bases)
    return terms * _groups(subobservables)


@dataclass
class CutPlanner:
    """Seeded, cached cut planning for a device that holds ``qubit_budget`` qubits.

    ``max_qubits`` is the device's size where known: a budget above it would
    plan subcircuits the device cannot run.  The cache lives in this object
    (one per study), keyed by architecture and every setting that changes a
    plan.

    ``precheck`` (default on) runs :func:`relaxed_gamma_bound` first and, when
    it proves no plan within ``max_gamma`` exists, takes the addon's greedy
    plan instead of its full search (same plan, see the module docstring);
    ``precheck_node_limit`` caps the bound's effort (beyond it the full
    search runs, as without the precheck).  Neither changes a plan's figures
    or verdict, so neither is part of :meth:`settings_key`.

    ``cache_dir`` (optional) also keeps plans as JSON files there, shared by
    every planner and study pointed at it: a plan depends only on the
    architecture, the settings and the code versions, all in the file's key
    (:meth:`disk_key`), never on the dataset.  Files are written to a
    temporary name and renamed, so concurrent readers and writers are safe
    (two writers of one key write the same plan).  ``hits``/``misses`` count
    the in-memory cache; ``disk_hits`` the misses served from files.
    """

    qubit_budget: int
    seed: int = 0
    max_gamma: float = 1024
    max_backjumps: int | None = 10000
    max_qubits: int | None = None
    materialize: bool = False
    precheck: bool = True
    precheck_node_limit: int = 50_000
    cache_dir: Path | None = None
    hits: int = field(default=0, init=False)
    disk_hits: int = field(default=0, init=False)
    misses: int = field(default=0, init=False)
    _cache: dict[tuple[Any, ...], CutPlan] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        b = self.qubit_budget
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or b < 1:
            raise CuttingError(
                f"qubit_budget={b!r} is not a positive integer; set it to the number of qubits one subcircuit "
                "may use on the device (e.g. hardware.qubit_budget = 5)"
            )
        if self.max_qubits is not None and b > self.max_qubits:
            raise CuttingError(
                f"qubit_budget={b} exceeds the device's {self.max_qubits} qubits; use a budget of at most "
                f"{self.max_qubits}"
            )
        if not self.max_gamma >= 1:
            raise CuttingError(f"max_gamma={self.max_gamma!r} must be >= 1 (1 forbids any cut)")
        if self.max_backjumps is not None and self.max_backjumps < 0:
            raise CuttingError(f"max_backjumps={self.max_backjumps!r} must be >= 0 or None (unlimited)")
        if self.precheck_node_limit < 0:
            raise CuttingError(f"precheck_node_limit={self.precheck_node_limit!r} must be >= 0 (0 disables the bound)")
        self.qubit_budget = int(b)

    def settings_key(self) -> str:
        return (
            f"budget{self.qubit_budget}|seed{self.seed}|gamma{self.max_gamma:g}|bj{self.max_backjumps}"
            f"|{'gen' if self.materialize else 'enum'}"
        )

    def cache_key(self, arch: Architecture) -> tuple[Any, ...]:
        return (arch.key(), self.qubit_budget, self.seed, self.settings_key())

    def plan(self, arch: Architecture) -> CutPlan:
        key = self.cache_key(arch)
        cached = self._cache.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        plan = self._read_disk(arch)
        if plan is None:
            start = time.perf_counter()
            plan = self._trivial(arch) if arch.n_qubits <= self.qubit_budget else self._cut(arch)
            plan = _with_time(plan, time.perf_counter() - start)
            self._write_disk(arch, plan)
        else:
            self.disk_hits += 1
        self._cache[key] = plan
        log.debug("cut plan %s budget %d: %s", arch.canonical(), self.qubit_budget, plan)
        return plan

    def disk_key(self, arch: Architecture) -> str:
        """Everything a stored plan depends on: architecture, settings, and the code that made it."""
        return (
            f"{arch.key()}|{self.settings_key()}|precheck{self.precheck}|format{PLAN_FORMAT}"
            f"|addon{_version('qiskit-addon-cutting')}|qiskit{_version('qiskit')}"
        )

    def _disk_path(self, arch: Architecture) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(self.disk_key(arch).encode()).hexdigest()[:32]
        return Path(self.cache_dir) / f"plan-{digest}.json"

    def _read_disk(self, arch: Architecture) -> CutPlan | None:
        """A stored plan for exactly this key, or None (absent, unreadable or for another key: recomputed)."""
        path = self._disk_path(arch)
        if path is None or not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            if record.get("key") != self.disk_key(arch):
                return None
            return CutPlan.from_dict(record["plan"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable cut-plan cache file %s (%s); recomputing", path, exc)
            return None

    def _write_disk(self, arch: Architecture, plan: CutPlan) -> None:
        """Write-then-rename, so a concurrent reader sees the old file, no file, or the whole new one."""
        path = self._disk_path(arch)
        if path is None:
            return
        atomic_write_text(path, json.dumps({"key": self.disk_key(arch), "plan": plan.to_dict()}))

    def _trivial(self, arch: Architecture) -> CutPlan:
        """A circuit that fits runs as itself: one subcircuit, no overhead, one experiment."""
        depth = representative_circuit(arch, self.seed).depth()
        return CutPlan(
            n_subcircuits=1,
            n_cuts=0,
            sampling_overhead=1.0,
            n_subexperiments=1,
            subcircuit_widths=(arch.n_qubits,),
            subcircuit_depths=(depth,),
            qubit_budget=self.qubit_budget,
        )

    def proves_infeasible(self, circuit: QuantumCircuit) -> bool:
        """True when :func:`relaxed_gamma_bound` shows every plan for ``circuit`` needs gamma > max_gamma.

        The cap carries a 1e-6 relative margin, far above the rounding of
        sums of logs, so a plan at exactly ``max_gamma`` is never excluded.
        """
        bound = relaxed_gamma_bound(
            circuit,
            self.qubit_budget,
            cap=self.max_gamma * (1 + 1e-6),
            node_limit=self.precheck_node_limit,
            first_below_cap=True,
        )
        return bound == math.inf

    def cut_problem(
        self, circuit: QuantumCircuit, obs: PauliList, greedy_only: bool = False
    ) -> tuple[PartitionedCuttingProblem, list[tuple[str, int]], bool]:
        """Cut a bound circuit for this budget: (partitioned problem, cut list, optimum proven).

        Planning calls it on the representative circuit; hardware execution
        and the reconstruction test call it on a real sample's circuit, so
        what is costed and what runs go through the same pipeline (for
        CNOT-only circuits the cuts are identical; for IQP, a sample's RZZ
        angles can only make the overhead smaller than the planned worst case).
        ``greedy_only`` asks for the addon's greedy plan (``max_backjumps=0``).
        """
        backjumps = 0 if greedy_only else self.max_backjumps
        with warnings.catch_warnings():
            # the addon squares an overflowing gamma for hopeless plans; inf is the right figure and is handled
            warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
            cut_circuit, meta = find_cuts(
                circuit,
                OptimizationParameters(seed=self.seed, max_gamma=self.max_gamma, max_backjumps=backjumps),
                DeviceConstraints(qubits_per_subcircuit=self.qubit_budget),
            )
        wired = cut_wires(cut_circuit)
        problem = partition_problem(
            circuit=wired,
            partition_labels=pack_components(wired, self.qubit_budget),
            observables=expand_observables(obs, circuit, wired),
        )
        return problem, list(meta["cuts"]), bool(meta.get("minimum_reached", True))

    def _cut(self, arch: Architecture) -> CutPlan:
        circuit = representative_circuit(arch, self.seed)
        proven = self.precheck and self.proves_infeasible(circuit)
        problem, cuts, minimum_reached = self.cut_problem(circuit, observable_list(arch), greedy_only=proven)
        kinds = [kind for kind, _ in cuts]
        gate_cuts, wire_cuts = kinds.count("Gate Cut"), kinds.count("Wire Cut")
        overhead = math.prod((float(b.overhead) for b in problem.bases), start=1.0)
        gamma = math.sqrt(overhead)
        feasible = gamma <= self.max_gamma * (1 + 1e-9)
        subobs = problem.subobservables or {}
        groups = _groups(subobs)
        histogram: tuple[tuple[float, int], ...] = ()
        if feasible:
            n_sub = count_subexperiments(problem.subcircuits, problem.bases, subobs, self.materialize)
            histogram = _term_histogram(problem.bases)
            reason = ""
        else:
            n_sub = decomposition_size(problem.bases, subobs)
            found = "no plan within max_gamma exists (lower bound); greedy plan" if proven else "cheapest plan found"
            reason = (
                f"{found} needs gamma={gamma:.3g} > max_gamma={self.max_gamma:g} "
                f"({len(kinds)} cuts for a {self.qubit_budget}-qubit budget); raise the budget or max_gamma"
            )
        labels = sorted(problem.subcircuits, key=str)
        widths = tuple(problem.subcircuits[k].num_qubits for k in labels)
        if max(widths) > self.qubit_budget:
            feasible = False
            reason = f"subcircuit widths {widths} exceed the budget {self.qubit_budget}"
        return CutPlan(
            n_subcircuits=len(problem.subcircuits),
            n_cuts=len(kinds),
            sampling_overhead=overhead,
            n_subexperiments=int(n_sub),
            subcircuit_widths=widths,
            gate_cuts=gate_cuts,
            wire_cuts=wire_cuts,
            subcircuit_depths=tuple(problem.subcircuits[k].depth() for k in labels),
            feasible=feasible,
            minimum_reached=minimum_reached,
            qubit_budget=self.qubit_budget,
            reason=reason,
            infeasible_proven=proven,
            term_probabilities=histogram,
            experiments_per_term=groups,
        )

    def cache_info(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "disk_hits": self.disk_hits, "size": len(self._cache)}

    def execution(self, arch: Architecture) -> CutExecution:
        """The subexperiments that run a cut candidate, parameterised by its inputs and weights.

        The cuts are the plan's own: ``find_cuts`` is called again on the same
        representative circuit with the same seed (deterministic), and the
        cut circuit is re-parameterised instruction by instruction, so the
        subexperiments carry the candidate's ``x``/``w`` parameters and one
        parameterised circuit serves every input sample.
        """
        plan = self.plan(arch)
        if not plan.is_cut:
            raise CuttingError(f"{arch.canonical()} fits the {self.qubit_budget}-qubit budget; it runs uncut")
        if not plan.feasible:
            raise CuttingError(f"{arch.canonical()} has no executable cut plan: {plan.reason}")
        bound = representative_circuit(arch, self.seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
            cut_circuit, _ = find_cuts(
                bound,
                OptimizationParameters(seed=self.seed, max_gamma=self.max_gamma, max_backjumps=self.max_backjumps),
                DeviceConstraints(qubits_per_subcircuit=self.qubit_budget),
            )
        template, sources = _reparameterise(cut_circuit, build_circuit(arch))
        wired = cut_wires(template)
        cut_ops = [
            sources.get(str(inst.operation.label)) if isinstance(inst.operation, TwoQubitQPDGate) else None
            for inst in wired.data
            if isinstance(inst.operation, TwoQubitQPDGate)
        ]
        problem = partition_problem(
            circuit=wired,
            partition_labels=pack_components(wired, self.qubit_budget),
            observables=expand_observables(observable_list(arch), template, wired),
        )
        execution = CutExecution.build(arch, plan, problem, cut_ops)
        if execution.n_experiments != plan.n_subexperiments:
            raise CuttingError(
                f"{arch.canonical()}: the executed decomposition has {execution.n_experiments} subexperiments but "
                f"the plan counted {plan.n_subexperiments}; the plan cache may be stale (clear cache_dir)"
            )
        return execution


_CUT_LABEL = "qnas_cut_"


def _reparameterise(cut: QuantumCircuit, original: QuantumCircuit) -> tuple[QuantumCircuit, dict[str, Any]]:
    """``cut`` (find_cuts' output on a *bound* circuit) with every uncut instruction taken from ``original``.

    ``find_cuts`` keeps the instruction order of its input, replacing cut
    gates by ``TwoQubitQPDGate`` and inserting ``CutWire`` markers, so the
    two lists align one to one.  Gate cuts keep the worst-case basis of the
    bound circuit (every QPD term present) and are labelled, with the
    parameterised gate they replace returned by label: a gate whose angle
    depends on the input (IQP's ``RZZ(x_i x_j)``) has the same QPD circuits at
    every angle, only its coefficients change (:meth:`CutExecution.coefficients`).
    """
    out = original.copy_empty_like()
    sources: dict[str, Any] = {}
    remaining = iter(original.data)
    for inst in cut.data:
        if inst.operation.name == "cut_wire":
            out.append(inst)
            continue
        orig = next(remaining, None)
        if orig is None or (
            orig.operation.name != inst.operation.name and not isinstance(inst.operation, TwoQubitQPDGate)
        ):
            raise CuttingError(
                f"cut circuit and {original.name} do not align at {inst.operation.name}; cannot re-parameterise"
            )
        if isinstance(inst.operation, TwoQubitQPDGate):
            label = f"{_CUT_LABEL}{len(sources)}"
            sources[label] = orig.operation
            gate = TwoQubitQPDGate(inst.operation.basis, label=label)
            out.append(gate, orig.qubits, orig.clbits)
        else:
            out.append(orig)
    return out, sources


@dataclass
class CutExecution:
    """A cut candidate as circuits to run and the rule that rebuilds ``<Z_q>`` from their counts.

    ``experiments[label]`` are the addon's subexperiments of subcircuit
    ``label`` (``generate_cutting_experiments`` with ``num_samples=inf``),
    ordered term-major: experiment ``k`` belongs to QPD term ``k // groups``.
    ``coefficients`` gives each term's coefficient per input sample (constant
    for CNOT and wire cuts; per sample for a cut input-dependent gate), and
    :meth:`reconstruct` calls ``reconstruct_expectation_values`` sample by sample.
    """

    arch: Architecture
    plan: CutPlan
    experiments: dict[Hashable, list[QuantumCircuit]]
    subobservables: dict[Hashable, PauliList]
    groups: dict[Hashable, int]
    bases: list[QPDBasis]
    term_map_ids: list[tuple[int, ...]]
    cut_ops: list[Any]  # per basis: the parameterised gate a gate cut replaces, or None (wire cut / constant gate)
    addon_coefficients: list[tuple[float, Any]]

    @classmethod
    def build(
        cls, arch: Architecture, plan: CutPlan, problem: PartitionedCuttingProblem, cut_ops: list[Any]
    ) -> CutExecution:
        subobs = problem.subobservables or {}
        experiments, coefficients = generate_cutting_experiments(
            circuits=problem.subcircuits, observables=subobs, num_samples=np.inf
        )
        # the same term order generate_cutting_experiments uses (descending weight, stable)
        weights = generate_qpd_weights(problem.bases, num_samples=np.inf)
        ordered = sorted(weights.items(), key=lambda item: item[1][0], reverse=True)
        groups = {label: len(ObservableCollection(obs).groups) for label, obs in subobs.items()}
        ops = [
            op if op is not None and any(isinstance(p, ParameterExpression) for p in op.params) else None
            for op in cut_ops
        ]
        return cls(
            arch=arch,
            plan=plan,
            experiments={k: list(v) for k, v in experiments.items()},
            subobservables=dict(subobs),
            groups=groups,
            bases=list(problem.bases),
            term_map_ids=[tuple(m) for m, _ in ordered],
            cut_ops=ops,
            addon_coefficients=list(coefficients),
        )

    @property
    def labels(self) -> list[Hashable]:
        return sorted(self.experiments, key=str)

    @property
    def n_terms(self) -> int:
        return len(self.term_map_ids)

    @property
    def n_experiments(self) -> int:
        return sum(len(v) for v in self.experiments.values())

    def term_of(self, label: Hashable, k: int) -> int:
        return k // self.groups[label]

    def shots(self, label: Hashable, k: int, shots: int, policy: str = "scaled") -> int:
        """Shots for experiment ``k`` of subcircuit ``label``: its term's allotment (see :func:`allot_shots`)."""
        p = abs(float(self.addon_coefficients[self.term_of(label, k)][0])) / math.sqrt(self.plan.sampling_overhead)
        return allot_shots(p, self.plan.sampling_overhead, shots, policy)

    def coefficients(self, inputs: np.ndarray) -> np.ndarray:
        """``(rows, n_terms)`` QPD coefficients: the product over cuts of each cut's coefficient for the term.

        ``inputs`` are the circuit's ``x`` values per sample (angles, as
        :func:`qnas_hw.model.circuits.circuit_inputs` gives them).  A gate cut of
        an input-dependent gate (``RZZ(x_i x_j)``) gets the coefficients of its
        own angle on each sample; every other cut uses its fixed basis.
        """
        rows = np.asarray(inputs, dtype=float).reshape(len(inputs), -1)
        per_basis = []
        for basis, op in zip(self.bases, self.cut_ops, strict=True):
            if op is None:
                per_basis.append(np.broadcast_to(np.asarray(basis.coeffs, dtype=float), (len(rows), len(basis.coeffs))))
                continue
            coeffs = np.empty((len(rows), len(basis.coeffs)))
            for r, x in enumerate(rows):
                bound = op.to_mutable()
                bound.params = [_bind_inputs(p, x) for p in op.params]
                sample_basis = QPDBasis.from_instruction(bound)
                if [tuple(m) for m in sample_basis.maps] != [tuple(m) for m in basis.maps]:
                    raise CuttingError(f"the QPD circuits of {op.name} depend on its angle; cannot share them")
                coeffs[r] = sample_basis.coeffs
            per_basis.append(coeffs)
        out = np.ones((len(rows), self.n_terms))
        for t, map_ids in enumerate(self.term_map_ids):
            for b, m in enumerate(map_ids):
                out[:, t] *= per_basis[b][:, m]
        return out

    def reconstruct(self, dists: dict[Hashable, list[list[dict[int, float]]]], coefficients: np.ndarray) -> np.ndarray:
        """``<Z_q>`` per sample from each experiment's outcome distribution, via the addon's reconstruction.

        ``dists[label][k][row]`` maps an outcome (the integer of the
        experiment's classical bits, qiskit order: ``observable_measurements``
        in the low bits, ``qpd_measurements`` above) to its probability;
        quasi-probabilities from readout mitigation are accepted.  They are
        handed to ``reconstruct_expectation_values`` as ``SamplerResult``
        quasi-distributions, the addon's per-outcome path (its bit-array path
        loops over every shot: 2.6 us a shot, minutes per candidate here).
        """
        from qiskit.primitives import SamplerResult
        from qiskit.result import QuasiDistribution
        from qiskit_addon_cutting import reconstruct_expectation_values
        from qiskit_addon_cutting.qpd import WeightType

        n_rows = coefficients.shape[0]
        out = np.empty((n_rows, len(observable_list(self.arch))))
        for r in range(n_rows):
            results = {
                label: SamplerResult(
                    quasi_dists=[QuasiDistribution(rows[r]) for rows in dists[label]],
                    metadata=[{} for _ in dists[label]],
                )
                for label in self.experiments
            }
            coeffs = [(float(c), WeightType.EXACT) for c in coefficients[r]]
            out[r] = reconstruct_expectation_values(results, coeffs, self.subobservables)
        return out


def _bind_inputs(param: Any, x: np.ndarray) -> Any:
    if not isinstance(param, ParameterExpression):
        return param
    values = {}
    for p in param.parameters:
        if p.vector.name != INPUT_NAME:
            raise CuttingError(
                f"cut gate angle {param} depends on a weight; only input-dependent cut gates are handled"
            )
        values[p] = float(x[p.index])
    return float(param.bind(values).numeric())


def _with_time(plan: CutPlan, seconds: float) -> CutPlan:
    return replace(plan, plan_seconds=seconds)


__all__ = [
    "CutPlan",
    "CutPlanner",
    "CuttingError",
    "bind_each_gate",
    "count_subexperiments",
    "decomposition_size",
    "observable_list",
    "pack_components",
    "pair_log_gammas",
    "relaxed_gamma_bound",
    "representative_circuit",
]
