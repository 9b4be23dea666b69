"""What a search is told before it spends anything: the refusals that need no trained model, and its cost.

:func:`check_before_training` runs before the SuperCircuit trains (minutes
saved): the compute device, the data set's files, the backend's cost model,
:func:`check_setup` (the space fits the device, ``noisy`` has the target's
noise model, ``fixed`` cut shots reach every QPD term), and a budget for a
paid ``device`` search's first generation.  :func:`estimate_search_cost`
prices generation 0 exactly and extrapolates (:class:`SearchCostEstimate`):
what ``qnas-hw search --dry-run`` prints, and the predicted job time a
``device`` search announces before it starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qnas_hw.config import RunConfig
from qnas_hw.search.building import Hardware, load_splits
from qnas_hw.search.problem import ArchitectureProblem, SearchError, decode, make_algorithm
from qnas_hw.search.study import generation_number
from qnas_hw.text import plural


def check_before_training(config: RunConfig, hw: Hardware | None) -> None:
    """Every refusal that needs no trained model, raised before the SuperCircuit trains (minutes saved).

    A ``cuda`` compute device must be visible; the data set's files must be
    there (checksummed); the backend's cost model must load (a bad calibration
    file is named now, not after training); then
    :func:`check_setup`; then a paid ``device`` search must have a budget for
    its first generation (the message gives the predicted cost).
    """
    from qnas_hw.config import resolve_device
    from qnas_hw.data import check_data_files

    device = resolve_device(config.compute.device)  # `cuda` on a machine without one is refused before anything runs
    c = config.compute
    if c.engine == "ray" and device == "cuda" and not c.num_gpus:
        raise SearchError(
            f"compute.device {c.device!r} computes on CUDA here, but Ray tasks reserve no GPU (compute.num_gpus = "
            f"{c.num_gpus}), so a worker would find none; set compute.num_gpus (e.g. 1, or 0.5 to share one) or "
            "compute.device = 'cpu'"
        )
    check_data_files(config.data.dataset, config.data.data_dir, config.data.download)
    check_setup(config, hw)
    if hw is None:
        return
    s = config.search
    if "runtime_s" in s.objectives or s.accuracy == "device":
        from qnas_hw.hardware.cost import CostModel

        CostModel.for_backend(hw.backend)
    if "val_error" in s.objectives and s.accuracy == "device":
        hw.backend.preflight()  # an unreachable provider fails here, not after the SuperCircuit trained
    if "val_error" in s.objectives and s.accuracy == "device" and not hw.backend.is_simulator:
        from qnas_hw.jobs import BudgetExceeded

        estimate = estimate_search_cost(config, hw)
        d = s.device
        if d.max_cost_usd is not None and d.max_cost_usd <= 0 and estimate.first_generation_usd > 0:
            raise BudgetExceeded(
                f"refusing a device search on paid backend {hw.backend.name} with no budget: its first generation "
                f"is predicted at ${estimate.first_generation_usd:.2f} ({estimate.first_generation_seconds:.1f} QPU "
                f"s) and the whole search at about ${estimate.total_usd:.2f}; set --max-cost "
                "(search.device.max_cost_usd) to what you accept to pay, and see `qnas-hw search --dry-run`"
            )


def check_setup(config: RunConfig, hw: Hardware | None) -> None:
    """Refusals that need neither data nor a price: the space must fit the device, ``noisy`` needs the target's
    noise model, and ``fixed`` cut shots must reach every QPD term of a plan the constraints admit."""
    space = config.search_space()
    if hw is None:
        return
    backend = hw.backend
    if space.qubits[1] > backend.num_qubits:
        raise SearchError(
            f"space.qubits upper bound {space.qubits[1]} exceeds {backend.name}'s {backend.num_qubits} qubits; "
            f"lower space.qubits to at most {backend.num_qubits}"
        )
    s = config.search
    if "val_error" not in s.objectives or s.accuracy == "ideal":
        return
    if s.accuracy == "noisy":
        from qnas_hw.hardware.noise import require_noise_model

        require_noise_model(backend)
    if s.cut_shots == "fixed":
        _check_fixed_cut_shots(config, hw)


def _check_fixed_cut_shots(config: RunConfig, hw: Hardware) -> None:
    """``cut_shots = "fixed"`` spreads a sample's shots over the QPD terms: every admitted plan needs enough."""
    gamma_cap = hw.planner.max_gamma
    c = config.search.constraints.max_sampling_overhead
    if c is not None:
        gamma_cap = min(gamma_cap, math.sqrt(c))
    cuts = math.floor(math.log(max(gamma_cap, 1.0), 3.0) + 1e-9)  # CNOT gate cuts: gamma 3, 6 terms each
    minimum = 6**cuts
    if cuts > 0 and config.search.shots < minimum:
        raise SearchError(
            f"search.shots={config.search.shots} is too few for cut_shots='fixed': plans with up to {cuts} CNOT "
            f"cuts (gamma <= {gamma_cap:g}) have {minimum} QPD terms and each needs a shot; use shots >= {minimum}, "
            "a smaller search.constraints.max_sampling_overhead, or cut_shots='scaled'"
        )


# ------------------------------------------------------------ cost estimate
@dataclass(frozen=True)
class SearchCostEstimate:
    """Predicted device spend of a search's accuracy jobs (SuperCircuit training and fine-tunes excluded)."""

    backend: str
    paid: bool
    timing_source: str
    first_generation: list[Any]  # PlanLines of generation 0's candidates (exact: that population is known now)
    evaluations: int
    per_candidate_seconds: float
    per_candidate_usd: float
    max_candidate_seconds: float
    first_generation_seconds: float
    first_generation_usd: float
    total_seconds: float
    total_usd: float
    total_shots: int
    skipped: list[str] = field(default_factory=list)
    generations: int = 1
    #: the jobs' predicted wall-clock seconds (generation 0, whole search) where the cost model has a wall fit for
    #: this machine (a local simulator, or a snapshot simulated locally; None for a real QPU, whose queue no model
    #: predicts), and the file it comes from
    wall_first_generation_seconds: float | None = None
    wall_total_seconds: float | None = None
    wall_source: str = ""
    local: bool = False  # the jobs run on this machine (a simulator or a snapshot), not at a provider

    def wall_seconds_left(self, done_generations: int = 0) -> float | None:
        """Predicted wall seconds of the jobs of the generations after the first ``done_generations``."""
        first, total = self.wall_first_generation_seconds, self.wall_total_seconds
        if first is None or total is None:
            return None
        if done_generations <= 0:
            return total
        later = max(1, self.generations - 1)  # every later generation at the same predicted time
        return max(0, self.generations - done_generations) * (total - first) / later

    def wall_line(self, done_generations: int = 0) -> str:
        """How long the device jobs will take, as the calibrated cost model predicts it (one line, before a run)."""
        first = generation_number(0)
        scope = f"the whole search ({plural(self.generations, 'generation')})"
        if self.wall_first_generation_seconds is not None and self.wall_total_seconds is not None:
            text = (
                f"predicted wall time of the device jobs on {self.backend}: generation {first} "
                f"{_duration(self.wall_first_generation_seconds)}, {scope} {_duration(self.wall_total_seconds)}"
            )
            left = self.wall_seconds_left(done_generations)
            if done_generations > 0 and left is not None:
                text += f", the {plural(self.generations - done_generations, 'generation')} left {_duration(left)}"
            return text + f" (cost model: {self.wall_source}; SuperCircuit training and fine-tunes come on top)"
        if self.local:
            return (
                f"no wall-clock prediction for the device jobs on {self.backend}: its cost model has no fit for this "
                f"machine; `qnas-hw calibrate --backend {self.backend}` makes one"
            )
        return (
            f"predicted QPU time of the device jobs on {self.backend}: generation {first} "
            f"{_duration(self.first_generation_seconds)}, {scope} {_duration(self.total_seconds)} (cost model; the "
            "wait in the provider's queue comes on top and is not predicted)"
        )

    def lines(self) -> list[str]:
        unit = "QPU s" if self.timing_source == "device" else "local s"
        first = generation_number(0)
        out = [
            f"device search on {self.backend} ({'PAID' if self.paid else 'free'}); SuperCircuit training excluded",
            f"generation {first} ({plural(len(self.first_generation), 'candidate')}, exact):",
        ]
        for ln in self.first_generation:
            usd = "n/a" if ln.device_usd is None else f"${ln.device_usd:.2f}"
            out.append(f"  {ln.label:<44} jobs {ln.jobs:>3} shots {ln.shots:>10} {ln.seconds:>10.2f} {unit} {usd}")
        out += [f"  not run (cut plan infeasible or too large): {a}" for a in self.skipped]
        out.append(
            f"whole search: at most {plural(self.evaluations, 'evaluation')}; predicted {self.total_seconds:.1f} "
            f"{unit}, {plural(self.total_shots, 'shot')}, billed ${self.total_usd:.2f} (later generations at "
            f"generation {first}'s mean per candidate, {self.per_candidate_seconds:.2f} {unit}; the costliest "
            f"candidate seen: {self.max_candidate_seconds:.2f} {unit}). The guard re-checks every generation "
            "against what is left."
        )
        return out


def estimate_search_cost(config: RunConfig, hw: Hardware) -> SearchCostEstimate:
    """Price generation 0 exactly and extrapolate: what ``search --dry-run`` prints, before any training.

    Generation 0 is pymoo's seeded initial sampling, known without training;
    each runnable candidate is priced from its real program (placement, cut
    subexperiments and shots) on ``val_samples`` rows, plus one readout
    calibration per distinct qubit set when mitigation is on.
    """
    import copy

    from qnas_hw.hardware.backends.base import SamplerPub
    from qnas_hw.hardware.cost import CostModel
    from qnas_hw.hardware.execution import CAL_SHOTS, ProgramBuilder, calibration_circuits
    from qnas_hw.jobs import JobSpec, plan_spend

    s = config.search
    problem = ArchitectureProblem(config.search_space(), len(s.objectives), 1)
    algorithm = make_algorithm(s.pop_size)
    algorithm.setup(problem, termination=("n_gen", s.generations), seed=config.seed, verbose=False)
    pop = copy.deepcopy(algorithm).ask()
    space = config.search_space()
    archs = [decode(x, space) for x in pop.get("X")]
    builder = ProgramBuilder(
        hw.backend, hw.transpiler, hw.planner, s.shots, s.cut_shots, max_cut_experiments=s.cut_max_experiments
    )
    rows = _scored_rows(config)
    groups: dict[str, list[Any]] = {}
    skipped, qubit_sets = [], set()
    for arch in archs:
        if builder.unrunnable(arch):
            skipped.append(arch.canonical())
            continue
        program = builder.build(arch)
        pubs = tuple(
            SamplerPub(
                r.circuit,
                np.zeros((rows, r.circuit.num_parameters)) if r.circuit.num_parameters else None,
                shots=r.shots,
            )
            for r in program.runs
        )
        groups[arch.canonical()] = [JobSpec(pubs, s.shots, label=arch.canonical())]
        qubit_sets.add(tuple(sorted({q for r in program.runs for q in r.measured_qubits if q is not None})))
    if s.readout_mitigation and hw.backend.target is not None:
        for qubits in sorted(qubit_sets):
            cal = tuple(SamplerPub(c) for c in calibration_circuits(hw.backend, qubits))
            groups[f"readout-cal{list(qubits)}"] = [JobSpec(cal, CAL_SHOTS, label="cal")]
    model = CostModel.for_backend(hw.backend)
    plan = plan_spend(hw.backend, groups, cost_model=model)
    wall_model = _wall_model(model, hw.backend)
    wall = plan_spend(hw.backend, groups, cost_model=wall_model) if wall_model is not None else None
    cand = [ln for ln in plan.lines if not ln.label.startswith("readout-cal")]
    n = max(1, len(cand))
    per_s = sum(ln.seconds for ln in cand) / n
    per_usd = sum((ln.device_usd or 0.0) for ln in cand) / n
    evaluations = s.pop_size * s.generations
    later = max(0, evaluations - len(archs))
    billed = (lambda usd: usd) if plan.paid else (lambda usd: 0.0)
    cal_usd = sum((ln.device_usd or 0.0) for ln in plan.lines if ln.label.startswith("readout-cal"))
    return SearchCostEstimate(
        backend=hw.backend.name,
        paid=plan.paid,
        timing_source=plan.timing_source,
        first_generation=plan.lines,
        evaluations=evaluations,
        per_candidate_seconds=per_s,
        per_candidate_usd=per_usd,
        max_candidate_seconds=max((ln.seconds for ln in cand), default=0.0),
        first_generation_seconds=plan.seconds,
        first_generation_usd=billed(plan.device_usd or 0.0),
        total_seconds=_whole_search_seconds(plan, later),
        total_usd=billed((plan.device_usd or 0.0) + later * per_usd + cal_usd * later / n),
        total_shots=int(plan.shots + later * sum(ln.shots for ln in cand) / n),
        skipped=skipped,
        generations=s.generations,
        wall_first_generation_seconds=wall.seconds if wall is not None else None,
        wall_total_seconds=_whole_search_seconds(wall, later) if wall is not None else None,
        wall_source=wall.cost_model_source if wall is not None else "",
        local=bool(hw.backend.is_simulator),
    )


def _whole_search_seconds(plan: Any, later: int) -> float:
    """Generation 0's seconds (exact) plus ``later`` evaluations at its mean per candidate, each with its share of
    the readout calibrations: how :func:`estimate_search_cost` extrapolates."""
    cand = [ln.seconds for ln in plan.lines if not ln.label.startswith("readout-cal")]
    cal = sum(ln.seconds for ln in plan.lines if ln.label.startswith("readout-cal"))
    n = max(1, len(cand))
    return plan.seconds + later * sum(cand) / n + cal * later / n


def _wall_model(model: Any, backend: Any) -> Any | None:
    """The cost model in this machine's wall-clock seconds, where it has them: a simulator's own model, or the wall
    fit a snapshot's calibration file carries besides its device model (its jobs are simulated here)."""
    if model.timing_source == "wall":
        return model
    if backend.is_simulator and model.wall is not None:
        import dataclasses

        return dataclasses.replace(model, timing_source="wall")
    return None


def _duration(seconds: float) -> str:
    """``42 s``, ``3.6 min``, ``2.1 h``: a predicted time as a person reads it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _scored_rows(config: RunConfig) -> int:
    """How many validation samples each candidate is scored on (without loading data for Iris-sized sets)."""
    splits = load_splits(config)
    n_val = len(splits.val)
    v = config.search.val_samples
    return n_val if v is None else min(v, n_val)


__all__ = ["SearchCostEstimate", "check_before_training", "check_setup", "estimate_search_cost"]
