"""Run configuration: one validated object for everything a search, a retrain or a hardware evaluation reads.

A study stores the *resolved* configuration (``RunConfig.model_dump(mode="json")``)
so a run can be resumed or reproduced from the study alone.  Every model forbids
unknown keys: a typo such as ``pop_sise`` would otherwise be ignored silently
and the user would search with the default they meant to override.

Errors name the offending key and value and say what to use instead;
:func:`load_config` adds the file name, so a message points straight at the line
to edit.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from qnas_hw.data import DATASET_NAMES
from qnas_hw.model.space import (
    CLASSIC_EMBEDDINGS,
    ENTANGLERS,
    FRONTENDS,
    MAX_LAYERS,
    MAX_QUBITS,
    ROTATIONS,
    SearchSpace,
    SpaceError,
    expert_genes,
)

#: Learning rate used when ``supercircuit.lr`` is left out, per front-end.  A CNN front-end at 2e-2 drives its
#: outputs into the ``pi*tanh`` angle saturation and the angle-embedded MNIST model stays at chance on validation
#: (11.2%), while 3e-3 trains it (96.9% validation; 10k images, 2 epochs: benchmarks/results/cnn_lr.json, chosen
#: on validation only).  The small linear/MLP front-ends train faster at 5e-2.
DEFAULT_LR: dict[str, float] = {"identity": 5e-2, "linear": 5e-2, "mlp": 5e-2, "cnn": 3e-3, "none": 5e-2}
#: Objectives the search knows how to build, in the order they are reported.
KNOWN_OBJECTIVES: tuple[str, ...] = ("val_error", "runtime_s", "subcircuits", "cost_usd")
#: What a search minimises when ``search.objectives`` is left out (``cost_usd`` needs a priced backend: opt-in).
DEFAULT_OBJECTIVES: tuple[str, ...] = ("val_error", "runtime_s", "subcircuits")
#: How ``val_error`` is measured: exact simulator, the target's noise model offline, or the target itself.
ACCURACY_MODES: tuple[str, ...] = ("ideal", "noisy", "device")
#: Where a search's candidate evaluations run (``compute.engine``).
ENGINES: tuple[str, ...] = ("local", "ray")
#: How ``val_error`` is estimated for a candidate (``search.proxy``): the SuperCircuit's weights plus
#: ``finetune_epochs`` of fine-tuning (``inherited``), ``K`` epochs of training from scratch (``scratch-K``, K may be
#: fractional: the first batches of an epoch), or successive halving over rungs of such training (``halving``, see
#: :class:`HalvingConfig`).  The default is the proxy that ranks best per second in
#: ``benchmarks/results/proxy_quality.json`` (README, "Which proxy scores val_error").
PROXY_CHOICES: tuple[str, ...] = ("inherited", "scratch-K", "halving")
DEFAULT_PROXY = "scratch-3"
#: Training-free screens (``search.screen``): NSGA-II proposes ``screen_factor`` times its offspring and only the
#: best by the screen are evaluated.
SCREENS: tuple[str, ...] = ("none", "cnr-repcap")
#: Local simulators without a device's error data: ``noisy`` cannot be their default.
_NOISELESS_BACKENDS = frozenset({"aer_ideal", "braket_local_sv", "braket_local_dm"})

log = logging.getLogger(__name__)


def scratch_epochs(proxy: str) -> float | None:
    """``K`` of a ``scratch-K`` proxy (``scratch-1`` -> 1.0, ``scratch-0.5`` -> 0.5); None for other proxies."""
    if not proxy.startswith("scratch-"):
        return None
    try:
        epochs = float(proxy.removeprefix("scratch-"))
    except ValueError:
        epochs = math.nan
    if not (math.isfinite(epochs) and epochs > 0):
        raise ValueError(
            f"search.proxy={proxy!r} needs a positive number of epochs after 'scratch-' (e.g. 'scratch-1', "
            "'scratch-0.5')"
        )
    return epochs


def check_proxy(proxy: str) -> str:
    """``proxy`` itself when it names a proxy, else a message that lists the choices."""
    if proxy in ("inherited", "halving") or scratch_epochs(proxy) is not None:
        return proxy
    raise ValueError(
        f"search.proxy={proxy!r} is not a proxy; use 'inherited' (SuperCircuit weights + finetune_epochs), "
        "'scratch-K' (K epochs from scratch, e.g. 'scratch-1') or 'halving' (successive halving, see "
        "[search.halving])"
    )


def default_accuracy(backend: str) -> str:
    """``noisy`` for any backend that describes a device's errors (snapshots, devices, aer_noisy), else ``ideal``.

    Decided from the name so that resolving a config never contacts a cloud:
    IBM devices and Braket QPUs publish their errors (``braket_local_dm``
    simulates a snapshot's noise but has no device ``Target`` to place on).
    """
    return "ideal" if backend in _NOISELESS_BACKENDS else "noisy"


@functools.cache
def device_qubits(backend: str) -> int | None:
    """How many qubits ``backend`` has, read offline; None where only the cloud knows (``ibm:<device>``).

    Cached because a command validates its config several times (file, then
    overrides) and building a snapshot parses its calibration data.
    """
    if backend.startswith("ibm:"):
        return None
    import warnings

    from qnas_hw.hardware.backends import BackendError, get_backend  # lazy: the providers are heavy to import

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a snapshot's construction notes belong to `devices`, not to a config
            return int(get_backend(backend).num_qubits)
    except (BackendError, ImportError) as exc:  # the search names the problem when it builds the backend itself
        log.debug("qubit count of %s unknown offline: %s", backend, exc)
        return None


def device_qubit_budget(backend: str, widest: int) -> int:
    """The qubit budget that follows the device: all its qubits, but no more than the widest candidate needs.

    A device whose size is unknown offline (``ibm:<device>``: every current
    IBM QPU is far wider than the space) gets the widest candidate's width.
    """
    n = device_qubits(backend)
    return max(2, widest if n is None else min(n, widest))


class ConfigError(ValueError):
    """A configuration file or value that cannot be used, with a message that says how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not supported; use one of {', '.join(map(repr, choices))}")
    return value


class DataConfig(_Section):
    """Which dataset and how the validation split is carved out of the training set."""

    dataset: str = "iris"
    data_dir: Path | None = None
    val_fraction: float = 0.2
    limit_train: int | None = None
    #: fetch missing MNIST / Fashion-MNIST files from the public mirrors (checked against their SHA-256)
    download: bool = False

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        return _one_of("dataset", v, DATASET_NAMES)

    @field_validator("val_fraction")
    @classmethod
    def _val_fraction(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"val_fraction={v} must be strictly between 0 and 1 (e.g. 0.1)")
        return v

    @field_validator("limit_train")
    @classmethod
    def _limit(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"limit_train={v} must be a positive number of samples, or omitted for all")
        return v


class ModelConfig(_Section):
    """The classical part shared by every candidate (not a searched gene)."""

    frontend: str = "linear"

    @field_validator("frontend")
    @classmethod
    def _frontend(cls, v: str) -> str:
        return _one_of("frontend", v, FRONTENDS)


class SpaceConfig(_Section):
    """The searched box; mirrors :class:`qnas_hw.model.space.SearchSpace` and is validated by it."""

    embeddings: list[str] = Field(default_factory=lambda: list(CLASSIC_EMBEDDINGS))
    qubits: tuple[int, int] = (2, 6)
    layers: tuple[int, int] = (1, 3)
    rotations: list[str] = Field(default_factory=lambda: list(ROTATIONS))
    entanglers: list[str] = Field(default_factory=lambda: list(ENTANGLERS))

    @model_validator(mode="after")
    def _valid_space(self) -> SpaceConfig:
        try:
            self.to_space()
        except SpaceError as exc:
            raise ValueError(str(exc)) from None
        return self

    def to_space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.model_dump())


class SuperCircuitConfig(_Section):
    """Weight-shared SuperCircuit training (once per study).

    ``lr`` (also the fine-tune and retrain learning rate) may be left out:
    :class:`RunConfig` then fills in :data:`DEFAULT_LR` for the configured
    front-end, so the stored (resolved) config always holds the number used.
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float | None = None
    sampling: Literal["uniform", "sandwich", "restricted"] = "sandwich"
    restricted_genes: int = 1
    noise_aware: bool = False  # train under the target's dominant noise on each sampled architecture's placement
    #: ``prefix``: one weight set for the whole space, sliced by width; ``experts``: one per embedding (its own
    #: front-end, quantum tensors and a head per width); ``experts:<gene>+<gene>``: quantum tensors split by those
    #: genes too (embedding, entangler, n_layers, n_qubits); see benchmarks/results/supercircuit_quality.json
    sharing: str = "prefix"

    @field_validator("sharing")
    @classmethod
    def _sharing(cls, v: str) -> str:
        try:
            expert_genes(v)
        except ValueError as exc:
            raise ValueError(f"supercircuit.{exc}") from None
        return v

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"supercircuit epochs={v} must be >= 0 (0 = use the initial shared weights)")
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"batch_size={v} must be >= 1 (e.g. 32)")
        return v

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise ValueError(f"lr={v} must be a positive learning rate (e.g. 0.01)")
        return v

    @field_validator("restricted_genes")
    @classmethod
    def _genes(cls, v: int) -> int:
        if not 1 <= v <= 5:
            raise ValueError(f"restricted_genes={v} must be in 1..5 (genes changed per restricted sample)")
        return v


class ConstraintsConfig(_Section):
    """Hard limits, enforced as NSGA-II inequality constraints (infeasible candidates never reach the front)."""

    max_qubits: int | None = None
    max_sampling_overhead: float | None = None

    @field_validator("max_qubits")
    @classmethod
    def _maxq(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= MAX_QUBITS:
            raise ValueError(f"max_qubits={v} must be in 1..{MAX_QUBITS}, or omitted for no limit")
        return v

    @field_validator("max_sampling_overhead")
    @classmethod
    def _maxo(cls, v: float | None) -> float | None:
        if v is not None and v < 1.0:
            raise ValueError(
                f"max_sampling_overhead={v} must be >= 1 (1 = no cutting allowed; each gate cut multiplies it by 9)"
            )
        return v


class DeviceJobsConfig(_Section):
    """``accuracy = "device"``: how each generation's jobs are submitted, and the spending guard.

    The guard prices each generation's jobs with the calibrated cost model
    and refuses, before anything is submitted, when they exceed what is
    left of the budget; ``max_cost_usd = 0`` (the default) refuses any
    billed run.  Fake backends and local simulators bill nothing.
    """

    max_cost_usd: float | None = 0.0
    max_qpu_seconds: float | None = None
    max_shots: int | None = None
    concurrency: int = 4
    chunk_rows: int | None = None  # validation samples per job (None: one job per candidate)
    max_attempts: int = 5
    timeout_s: float | None = None  # per job; None: 600 s on local backends, a day on cloud QPUs

    @field_validator("max_cost_usd", "max_qpu_seconds", "timeout_s")
    @classmethod
    def _non_negative(cls, v: float | None, info: Any) -> float | None:
        if v is not None and v < 0:
            raise ValueError(f"search.device {info.field_name}={v} must be >= 0 (or omitted for no limit)")
        return v

    @field_validator("max_shots", "chunk_rows")
    @classmethod
    def _optional_positive(cls, v: int | None, info: Any) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"search.device {info.field_name}={v} must be >= 1, or omitted")
        return v

    @field_validator("concurrency", "max_attempts")
    @classmethod
    def _positive(cls, v: int, info: Any) -> int:
        if v < 1:
            raise ValueError(f"search.device {info.field_name}={v} must be >= 1")
        return v


class HalvingConfig(_Section):
    """Successive halving (``search.proxy = "halving"``) over the new candidates of each generation.

    Every candidate trains from scratch to ``rungs[0]`` epochs and is scored; the best ``keep`` fraction (at least
    one) trains on, in the same run, to the next rung and is scored again, and so on.  Only candidates scored at
    the last rung can be feasible: one left at a lower rung stores its rung and score and is marked by the
    ``top_rung`` constraint, so it never reaches the front or a pick.
    """

    rungs: list[float] = Field(default_factory=lambda: [0.25, 1.0])
    keep: float = 0.33
    #: a training-free first stage: ``esp`` keeps the ``keep`` fraction with the highest estimated success
    #: probability of the placed circuit (free: the runtime objective transpiles and places every candidate) and
    #: only those train; the rest are stored unscored at rung 0
    screen: Literal["none", "esp"] = "none"
    #: validation samples the rungs *below the top* are scored on under ``noisy``/``device`` (a stratified subset of
    #: the ``val_samples`` the top rung scores on); None: all of them.  Scoring, not training, is most of a rung's
    #: cost under noise, and a rung that only decides who goes on needs less resolution than the stored value
    low_rung_samples: int | None = None

    @field_validator("low_rung_samples")
    @classmethod
    def _low_samples(cls, v: int | None) -> int | None:
        if v is not None and v < 8:
            raise ValueError(
                f"search.halving.low_rung_samples={v} is too few to rank candidates by; give at least 8 (e.g. 128), "
                "or leave it out to score every rung on all val_samples"
            )
        return v

    @field_validator("rungs")
    @classmethod
    def _rungs(cls, v: list[float]) -> list[float]:
        increasing = all(b > a for a, b in itertools.pairwise(v))
        if len(v) < 1 or not increasing or any(not (math.isfinite(r) and r > 0) for r in v):
            raise ValueError(
                f"search.halving.rungs={v} must be increasing positive epoch counts (e.g. [0.25, 1]; one rung "
                "with a screen)"
            )
        return [float(r) for r in v]

    @model_validator(mode="after")
    def _stages(self) -> HalvingConfig:
        if len(self.rungs) < 2 and self.screen == "none":
            raise ValueError(
                f"search.halving.rungs={self.rungs} has one rung and no screen, so nothing is halved; give two or "
                'more rungs (e.g. [0.25, 1]) or a first stage (screen = "esp")'
            )
        return self

    @field_validator("keep")
    @classmethod
    def _keep(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError(f"search.halving.keep={v} must be a fraction in (0, 1) (e.g. 0.33)")
        return v


class SearchConfig(_Section):
    """NSGA-II settings.  ``generations`` counts the initial population as one: every output numbers them 1..N.

    ``accuracy`` decides what ``val_error`` measures: ``ideal`` (exact
    statevector, infinite shots), ``noisy`` (the fine-tuned model's quantum
    layer transpiled and placed for the target, run under its noise model
    with ``shots`` shots on ``val_samples`` validation samples) or ``device``
    (the same circuits submitted to the backend itself, see
    :class:`DeviceJobsConfig`).  Left out, it resolves to ``noisy`` for a
    backend with a noise model and ``ideal`` otherwise, and the resolved mode
    is what the study stores.
    """

    pop_size: int = 12
    generations: int = 5
    finetune_epochs: int = 1
    #: how val_error is estimated (:data:`PROXY_CHOICES`); ``finetune_epochs`` applies to ``inherited`` only
    proxy: str = DEFAULT_PROXY
    halving: HalvingConfig = Field(default_factory=HalvingConfig)
    screen: Literal["none", "cnr-repcap"] = "none"
    #: with a screen: candidates proposed per candidate evaluated (NSGA-II's offspring are the best of them)
    screen_factor: int = 4
    objectives: list[str] = Field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    constraints: ConstraintsConfig = Field(default_factory=ConstraintsConfig)
    accuracy: Literal["ideal", "noisy", "device"] | None = None
    shots: int = 1024
    val_samples: int | None = 512
    readout_mitigation: bool = True
    noise_aware_finetune: bool = False  # fine-tune each candidate under the target's dominant noise (QuantumNAS)
    cut_shots: Literal["scaled", "fixed"] = "scaled"
    #: a cut candidate with more subexperiment circuits than this is not scored under noise (left infeasible)
    cut_max_experiments: int = 128
    #: what simulates ``noisy``: the batched torch simulator (exact density matrix up to 5 qubits, quantum
    #: trajectories beyond; ``qnas_hw.hardware.trajectories``) or Aer's density matrix per sample (``aer``, the
    #: reference)
    noisy_simulator: Literal["trajectories", "aer"] = "trajectories"
    #: relax qubits that wait while others run: each placed circuit is scheduled with the target's durations
    #: (``idle_schedule``: as late or as soon as possible) and every idle gap gets the qubit's T1/T2 relaxation
    idle_noise: bool = True
    idle_schedule: Literal["alap", "asap"] = "alap"
    #: candidates with fewer two-qubit gates are infeasible: 1 requires an entangling circuit (0 allows product
    #: states, which a classical model computes exactly)
    min_two_qubit_gates: int = 0
    device: DeviceJobsConfig = Field(default_factory=DeviceJobsConfig)

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, v: str) -> str:
        return check_proxy(v)

    @field_validator("screen_factor")
    @classmethod
    def _screen_factor(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"search.screen_factor={v} must be >= 2 (candidates proposed per candidate evaluated)")
        return v

    @field_validator("min_two_qubit_gates")
    @classmethod
    def _min_2q(cls, v: int) -> int:
        if v < 0:
            raise ValueError(
                f"search.min_two_qubit_gates={v} must be >= 0 (0: any circuit; 1: require an entangling circuit)"
            )
        return v

    @field_validator("shots")
    @classmethod
    def _shots(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"search.shots={v} must be >= 1 (shots per validation sample, e.g. 1024)")
        return v

    @field_validator("cut_max_experiments")
    @classmethod
    def _cut_max(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"search.cut_max_experiments={v} must be >= 1 (subexperiment circuits per sample)")
        return v

    @field_validator("val_samples")
    @classmethod
    def _val_samples(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"search.val_samples={v} must be >= 1, or omitted to score every validation sample")
        return v

    @model_validator(mode="after")
    def _low_rungs(self) -> SearchConfig:
        low, top = self.halving.low_rung_samples, self.val_samples
        if low is not None and top is not None and low >= top:
            raise ValueError(
                f"search.halving.low_rung_samples={low} must be fewer than search.val_samples={top} (the lower rungs "
                "score on a subset of the top rung's samples); lower it, or leave it out"
            )
        return self

    @field_validator("pop_size")
    @classmethod
    def _pop(cls, v: int) -> int:
        if v < 4:
            raise ValueError(f"pop_size={v} is too small for NSGA-II's tournament selection; use at least 4")
        return v

    @field_validator("generations")
    @classmethod
    def _gens(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"generations={v} must be >= 1 (1 = evaluate the initial population only)")
        return v

    @field_validator("finetune_epochs")
    @classmethod
    def _ft(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"finetune_epochs={v} must be >= 0 (0 = score inherited weights as they are)")
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        if len(v) < 2:
            raise ValueError(f"objectives={v} needs at least two entries for a multi-objective search")
        if len(set(v)) != len(v):
            raise ValueError(f"objectives={v} lists an objective twice")
        for name in v:
            _one_of("objective", name, KNOWN_OBJECTIVES)
        return v


class HardwareConfig(_Section):
    """The target device: what the runtime objective is calibrated for and what cutting plans fit."""

    backend: str = "fake_kolkata"
    #: qubits per subcircuit (wider candidates are cut).  Left out, it follows the device: its number of qubits,
    #: capped by the space's widest candidate (:func:`device_qubit_budget`), so a 5-qubit device is not searched
    #: with another device's budget; it then stays marked as unset, like ``search.accuracy``.
    qubit_budget: int | None = None
    optimization_level: int = 1
    shots: int = 1024
    n_circuits: int = 32
    layout: Literal["calibrated", "default"] = "calibrated"
    #: constraints: a candidate whose evaluation workload (n_circuits x shots, as its cut plan runs it) is
    #: predicted to take longer / cost more than this is infeasible (None: no cap).  A sampling-overhead cap alone
    #: admitted plans needing weeks of QPU time; an hour of QPU time (IBM pay-as-you-go bills it by the second)
    #: and 100 USD per candidate are already far beyond what a user would pay to run one candidate.
    max_candidate_runtime_s: float | None = 3600.0
    max_candidate_usd: float | None = 100.0

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        v = v.strip()
        if v.startswith(("ibm:", "braket:")) and len(v.split(":", 1)[1]) > 0:
            return v
        # listing the names imports no provider SDK (known_backend_names): validating a config stays fast
        from qnas_hw.hardware.backends import known_backend_names, unknown_backend_message

        known = known_backend_names()
        if v not in known:
            raise ValueError(unknown_backend_message(v, known))
        return v

    @field_validator("qubit_budget")
    @classmethod
    def _budget(cls, v: int | None) -> int | None:
        if v is not None and not 2 <= v <= MAX_QUBITS:
            raise ValueError(f"qubit_budget={v} must be in 2..{MAX_QUBITS} (qubits per subcircuit after cutting)")
        return v

    @field_validator("optimization_level")
    @classmethod
    def _opt(cls, v: int) -> int:
        if v not in (0, 1, 2, 3):
            raise ValueError(f"optimization_level={v} must be 0, 1, 2 or 3")
        return v

    @field_validator("shots", "n_circuits")
    @classmethod
    def _positive(cls, v: int, info: Any) -> int:
        if v < 1:
            raise ValueError(f"{info.field_name}={v} must be >= 1")
        return v

    @field_validator("max_candidate_runtime_s", "max_candidate_usd")
    @classmethod
    def _cap(cls, v: float | None, info: Any) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"hardware.{info.field_name}={v} must be a positive number, or omitted for no cap")
        return v


class HwEvalConfig(_Section):
    """Hardware-in-the-loop evaluation of picked candidates and its spending guard.

    ``qnas-hw hw-eval`` reads these as defaults for its flags; ``enabled = true``
    makes ``qnas-hw search`` run the same evaluation on the final front (or
    every candidate, ``which = "all"``) once the search is saved.  The measured
    accuracy is a reported column (``hw_acc@<backend>``), not a search
    objective: noisy hardware accuracy per candidate per generation would cost
    a device job for every evaluation.
    """

    enabled: bool = False
    which: Literal["front", "all"] = "front"
    shots: int = 1024
    max_samples: int | None = None  # evaluate on the first N validation samples only (None: all)
    chunk_rows: int = 64  # validation samples per job (one PUB of parameter rows)
    max_cost_usd: float | None = 0.0
    max_qpu_seconds: float | None = None
    max_shots: int | None = None
    concurrency: int = 4
    timeout_s: float = 600.0
    max_attempts: int = 3
    dry_run: bool = False
    readout_mitigation: bool = True  # mthree, from calibration circuits run as one more job per qubit set

    @model_validator(mode="before")
    @classmethod
    def _legacy_as_objective(cls, data: Any) -> Any:
        """Studies stored before ``as_objective`` was removed still open; asking for it is refused."""
        if isinstance(data, dict) and "as_objective" in data:
            if data["as_objective"] is not False:
                raise ValueError(
                    f"hw_eval.as_objective={data['as_objective']!r} is not supported: to score every candidate on the "
                    "backend during the search set search.accuracy = 'device' (or 'noisy' for its noise model "
                    "offline); remove the key"
                )
            data = {k: v for k, v in data.items() if k != "as_objective"}
        return data

    @field_validator("shots", "concurrency", "max_attempts", "chunk_rows")
    @classmethod
    def _positive(cls, v: int, info: Any) -> int:
        if v < 1:
            raise ValueError(f"hw_eval {info.field_name}={v} must be >= 1")
        return v

    @field_validator("max_cost_usd", "max_qpu_seconds", "timeout_s")
    @classmethod
    def _non_negative(cls, v: float | None, info: Any) -> float | None:
        if v is not None and v < 0:
            raise ValueError(f"hw_eval {info.field_name}={v} must be >= 0 (or omitted for no limit)")
        return v

    @field_validator("max_shots", "max_samples")
    @classmethod
    def _optional_positive(cls, v: int | None, info: Any) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"hw_eval {info.field_name}={v} must be >= 1, or omitted for no limit")
        return v


#: ``compute.device`` values: ``auto`` is CUDA when torch sees a CUDA device, else the CPU.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def resolve_device(requested: str) -> str:
    """The torch device a run computes on for ``compute.device = requested`` (``cpu`` or ``cuda``).

    Resolved when a run starts, never stored: a study keeps the value asked
    for, so one made with the default ``auto`` on a CPU machine resumes on the
    CPU there, and a study that asked for ``cuda`` still opens (for a report,
    say) on a machine without one; only running it there is refused, here.
    """
    import torch

    if requested not in DEVICES:
        raise ConfigError(f"compute.device {requested!r} is not supported; use one of {', '.join(map(repr, DEVICES))}")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        build = "" if torch.version.cuda else " (this torch build has no CUDA support)"
        raise ConfigError(
            f"compute.device = 'cuda' was asked for, but no CUDA device is visible to torch {torch.__version__}"
            f"{build}; use device 'cpu', or 'auto' (CUDA when available, else the CPU)"
        )
    return requested


class ComputeConfig(_Section):
    """Where the arithmetic runs.  ``threads`` is part of a run's recipe: floating-point sums differ with the
    number of threads, so a resumed search (or a retrained SuperCircuit) reproduces the stored values only with the
    same count.  Left out, a new study records the count torch uses at its start."""

    threads: int | None = None
    #: where the models train and the simulator runs: ``auto``, ``cpu`` or ``cuda`` (see :func:`resolve_device`)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("threads")
    @classmethod
    def _threads(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"compute.threads={v} must be >= 1 (torch intra-op threads), or omitted")
        return v

    #: where candidate evaluations run: ``local`` (this process) or ``ray`` (one Ray task per candidate, same
    #: values: ``pip install 'qnas-hw[ray]'``).  This and the three below may change when a study is resumed.
    engine: str = "local"
    #: ``ray``: empty for a local Ray instance (or the one this process is connected to), ``auto`` for the cluster
    #: this machine belongs to, ``ray://host:port`` for a remote cluster's Ray Client server
    address: str = ""
    #: ``ray``: what each candidate's task reserves (it runs with ``threads`` torch threads)
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: str) -> str:
        return _one_of("compute.engine", v, ENGINES)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        v = v.strip()
        if v in ("", "auto"):
            return v
        host, sep, port = v.removeprefix("ray://").rpartition(":")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536) or "/" in host:
            raise ValueError(
                f"compute.address {v!r} is not a Ray address; use '' (a local Ray instance), 'auto' (the cluster "
                "this machine belongs to) or 'ray://host:port' (a remote cluster's Ray Client server, port 10001)"
            )
        return v

    @field_validator("num_cpus", "num_gpus")
    @classmethod
    def _resources(cls, v: float, info: Any) -> float:
        positive = info.field_name == "num_cpus"  # a task reserving no CPU would let every candidate start at once
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise ValueError(f"compute.{info.field_name}={v} must be a number {'> 0' if positive else '>= 0'}")
        return v


class RunConfig(_Section):
    """Everything one run reads; ``model_dump(mode="json")`` is the resolved config stored with the study."""

    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    supercircuit: SuperCircuitConfig = Field(default_factory=SuperCircuitConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    hw_eval: HwEvalConfig = Field(default_factory=HwEvalConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"seed={v} must be a non-negative integer")
        return v

    @model_validator(mode="after")
    def _default_lr(self) -> RunConfig:
        """Resolve a left-out ``supercircuit.lr`` from the front-end; it stays marked as unset (see with_overrides)."""
        if self.supercircuit.lr is None:
            self.supercircuit.lr = DEFAULT_LR[self.model.frontend]
            self.supercircuit.__pydantic_fields_set__.discard("lr")
        return self

    @model_validator(mode="after")
    def _default_accuracy(self) -> RunConfig:
        """Resolve a left-out ``search.accuracy`` from the backend; it stays marked as unset (see with_overrides)."""
        if self.search.accuracy is None:
            self.search.accuracy = default_accuracy(self.hardware.backend)  # type: ignore[assignment]
            self.search.__pydantic_fields_set__.discard("accuracy")
        return self

    def qubit_budget_is_default(self) -> bool:
        """True when ``hardware.qubit_budget`` follows the device (or is the default job's), not the user's."""
        return "qubit_budget" not in self.hardware.model_fields_set

    def qubit_budget_follows_device(self) -> bool:
        """True when ``hardware.qubit_budget`` was derived from the device (see :func:`device_qubit_budget`)."""
        hw = self.hardware
        return self.qubit_budget_is_default() and hw.qubit_budget == device_qubit_budget(
            hw.backend, self.space.qubits[1]
        )

    def qubit_budget_reason(self) -> str:
        """Why the budget is what it is, for the start line: ``follows fake_belem's 5 qubits``, or set."""
        hw = self.hardware
        if not self.qubit_budget_is_default():
            return "set by hardware.qubit_budget"
        if not self.qubit_budget_follows_device():
            return f"the default job's, for {hw.backend}"
        n = device_qubits(hw.backend)
        widest = self.space.qubits[1]
        if n is None:
            return f"follows {hw.backend}, whose size is known only online: the widest candidate's {widest}"
        capped = f", capped by the widest candidate's {widest}" if n > widest else ""
        return f"follows {hw.backend}'s {n} qubits{capped}"

    def accuracy_is_default(self) -> bool:
        """True when ``search.accuracy`` came from the backend rather than from the user."""
        return "accuracy" not in self.search.model_fields_set

    def lr_is_default(self) -> bool:
        """True when ``supercircuit.lr`` came from :data:`DEFAULT_LR` rather than from the user."""
        return "lr" not in self.supercircuit.model_fields_set

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        c = self.search.constraints
        if c.max_qubits is not None and c.max_qubits < self.space.qubits[0]:
            raise ValueError(
                f"search.constraints.max_qubits={c.max_qubits} is below the smallest width in the space "
                f"(space.qubits={list(self.space.qubits)}): every candidate would be infeasible; raise it or "
                "lower space.qubits"
            )
        if self.model.frontend == "cnn" and self.data.dataset in ("iris", "mnist4", "fashion4", "mnist2"):
            raise ValueError(
                f"model.frontend='cnn' needs image data (full images); dataset {self.data.dataset!r} has a vector "
                "of features: use 'none' (pure quantum), 'linear' or 'mlp'"
            )
        noise_aware = self.supercircuit.noise_aware or self.search.noise_aware_finetune
        if noise_aware and self.hardware.backend in _NOISELESS_BACKENDS:
            raise ValueError(
                f"noise-aware training needs the target's noise model, and backend {self.hardware.backend!r} has none; "
                "set supercircuit.noise_aware and search.noise_aware_finetune to false, or use a backend with one "
                "(e.g. fake_kolkata, fake_quito)"
            )
        if self.search.accuracy == "noisy" and self.hardware.backend in _NOISELESS_BACKENDS:
            from qnas_hw.hardware.backends.braket import snapshot_names  # lazy: the providers are heavy to import

            braket = ", ".join(f"braket_{s}" for s in snapshot_names())
            raise ValueError(
                f"search.accuracy='noisy' needs the target's noise model, and backend {self.hardware.backend!r} has "
                "none (no device error rates); use accuracy 'ideal', or a backend with one: any fake_* IBM snapshot "
                f"(e.g. fake_kolkata, fake_quito), aer_noisy, {braket}, or a real ibm:<device> / braket:<ARN>"
            )
        h = self.search.halving
        if (
            self.search.proxy == "halving"
            and h.screen == "esp"
            and (self.hardware.backend in _NOISELESS_BACKENDS or self.search.accuracy == "ideal")
        ):
            raise ValueError(
                "search.halving.screen='esp' keeps the candidates whose placed circuits are most likely to run "
                f"without an error, which only means something for a noisy score (accuracy is "
                f"{self.search.accuracy!r} on {self.hardware.backend!r}); use accuracy 'noisy' or 'device' on a "
                'backend with a noise model, or search.halving.screen = "none"'
            )
        if self.search.screen != "none" and (
            self.hardware.backend in _NOISELESS_BACKENDS or "val_error" not in self.search.objectives
        ):
            raise ValueError(
                f"search.screen={self.search.screen!r} ranks proposals under the target's noise (CNR) on val_error's "
                f"data (RepCap), so it needs a backend with a noise model (backend is {self.hardware.backend!r}) and "
                'val_error among the objectives; use e.g. fake_kolkata, or set search.screen = "none"'
            )
        if "cost_usd" in self.search.objectives:
            problem = _unpriced_backend(self.hardware.backend)
            if problem is not None:
                raise ValueError(problem)
        if self.space.layers[1] > MAX_LAYERS:  # pragma: no cover - SearchSpace already rejects it
            raise ValueError(f"space.layers upper bound must be <= {MAX_LAYERS}")
        return self

    @model_validator(mode="after")
    def _default_budget(self, info: ValidationInfo) -> RunConfig:
        """Resolve a left-out ``hardware.qubit_budget`` from the device; it stays marked as unset (see
        with_overrides), so ``--backend`` re-derives it and :meth:`qubit_budget_reason` can say where it came from.
        Runs after the cross-checks: reading the device's size builds the backend (seconds), which a config that
        is refused anyway should not wait for.  Deferred (left None) when validation says so: a file that command-
        line overrides will change is checked without its device first (see :func:`with_overrides`)."""
        if self.hardware.qubit_budget is None and not (info.context or {}).get("defer_budget"):
            self.hardware.qubit_budget = device_qubit_budget(self.hardware.backend, self.space.qubits[1])
            self.hardware.__pydantic_fields_set__.discard("qubit_budget")
        return self

    def search_space(self) -> SearchSpace:
        return self.space.to_space()

    def resolved(self) -> dict[str, Any]:
        """The JSON-safe dict stored in a study (paths as strings)."""
        return self.model_dump(mode="json")


def _unpriced_backend(name: str) -> str | None:
    """Why ``cost_usd`` cannot be an objective on backend ``name`` (None when the backend publishes prices).

    Asks the backend itself (``Backend.pricing``), so the rule is the one the
    objective applies; building a backend by name never contacts a cloud.  An
    unknown name is left to the backend validator's own message.
    """
    from qnas_hw.hardware.backends import BackendError, get_backend  # lazy: the providers are heavy to import
    from qnas_hw.hardware.backends.braket import load_snapshot, snapshot_names

    try:
        if get_backend(name).pricing is not None:
            return None
    except BackendError:
        return None
    priced = [f"braket_{s}" for s in snapshot_names() if load_snapshot(s).get("pricing")]
    return (
        f"search.objectives lists 'cost_usd', but backend {name!r} publishes no per-task/per-shot prices (IBM bills "
        f"QPU time, simulators are free); use 'runtime_s' instead, or a priced Braket backend: "
        f"{', '.join(priced) or 'none found'} (or its braket:<ARN>)"
    )


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model at ``loc`` (a section path), so a typo's error lists the right spelling."""
    model: Any = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None or not hasattr(field.annotation, "model_fields"):
            break
        model = field.annotation
    return sorted(model.model_fields)


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(err["loc"][:-1])
            msg = f"unknown key {loc.rsplit('.', 1)[-1]!r}; allowed here: {', '.join(allowed)}"
        elif "input" in err and err["type"] not in ("value_error", "assertion_error"):
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "configuration", defer_budget: bool = False) -> RunConfig:
    """Validate a plain dict (e.g. a study's stored config); errors name every bad key at once.

    ``defer_budget``: leave a left-out ``hardware.qubit_budget`` None instead of asking the device (which builds
    the backend: seconds); :func:`with_overrides` resolves it once the overrides are known to be valid.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of sections, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data, context={"defer_budget": defer_budget})
    except ValidationError as exc:
        raise ConfigError(f"invalid {source}:\n{_format_errors(exc)}") from None


#: Settings added after studies were already being stored, with the value that reproduces how such a study was
#: scored: a study that stored no ``noisy_simulator`` ran Aer without idle noise, and resuming it (or evaluating
#: its picks) must not silently switch to another simulator.
_BEFORE_THE_KEY_EXISTED: dict[tuple[str, str], Any] = {
    ("search", "noisy_simulator"): "aer",
    ("search", "idle_noise"): False,
    ("search", "proxy"): "inherited",
}


def stored_config(data: dict[str, Any], source: str) -> RunConfig:
    """A study's stored configuration; keys it predates take the values it was scored with (see above)."""
    if isinstance(data, dict):
        data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
        for (section, key), value in _BEFORE_THE_KEY_EXISTED.items():
            if isinstance(data.get(section), dict):
                data[section].setdefault(key, value)
    return config_from_dict(data, source=source)


#: The embedded offline default job (``qnas-hw search`` with no arguments), as overrides of the section defaults.
#: Chosen so its three objectives really trade off on a 2-core laptop in under 3 minutes: scikit-learn's 8x8 digits
#: 0-3 pooled to 16 features (bundled, no download; 30% validation so one sample is 0.6 points), 2-5 qubits behind a
#: linear front-end (accuracy grows with the qubits the head reads), and a 2-qubit cut budget on fake_kolkata so
#: 3-5 qubit candidates run as real 2- and 3-piece cut plans (measured: a 3-point front with 1, 2 and 3
#: subcircuits at 5.3 s, 8.7 s and 12.0 s; Iris, the earlier default, tied 17 of 90 candidates at val_error 0).
#: Its budget of 2 belongs to this job on fake_kolkata: a config file that leaves the budget out, and ``--backend``
#: on the default job, get the budget that follows the device instead (see :meth:`RunConfig.qubit_budget_reason`).
DEFAULT_JOB: dict[str, Any] = {
    "data": {"dataset": "digits4", "val_fraction": 0.3},
    "space": {"qubits": [2, 5], "layers": [1, 3]},
    "supercircuit": {"epochs": 20},
    "search": {"finetune_epochs": 6},
    "hardware": {"backend": "fake_kolkata", "qubit_budget": 2},
}


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, table by table (a key set in ``over`` always wins)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: Path | str, defer_budget: bool = False) -> RunConfig:
    """Read a TOML config; missing sections/keys take the default job's values (:func:`default_config`).

    Except ``hardware.qubit_budget``: the default job's 2 was chosen for its
    own space on fake_kolkata, so a file that leaves the budget out gets the
    one that follows its device (:func:`device_qubit_budget`); ``defer_budget``: see :func:`config_from_dict`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing TOML file (see examples/)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from None
    if not isinstance(data, dict):  # pragma: no cover - tomllib always returns a table
        raise ConfigError(f"config file {path}: expected a table of sections")
    base = {**DEFAULT_JOB, "hardware": {k: v for k, v in DEFAULT_JOB["hardware"].items() if k != "qubit_budget"}}
    return config_from_dict(_merged(base, data), source=f"config file {path}", defer_budget=defer_budget)


def default_config() -> RunConfig:
    """The embedded offline default job: :data:`DEFAULT_JOB` over the section defaults (see its comment for why).

    Its qubit budget stays marked as unset: it is the job's choice for its
    backend, not the user's, so :func:`with_overrides` with another backend
    re-derives it from that device.
    """
    config = config_from_dict(DEFAULT_JOB, source="the default job")
    config.hardware.__pydantic_fields_set__.discard("qubit_budget")
    return config


def _applied(data: dict[str, Any], overrides: dict[str, Any], check: bool = False) -> dict[str, Any]:
    """``data`` with the dotted-key ``overrides`` set (None: left as it is); ``check``: validate the result without
    asking any device (:func:`config_from_dict` with ``defer_budget``), so a bad value is refused before that."""
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"unknown config section {p!r} in override {dotted!r}")
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"unknown config key {dotted!r}")
        node[leaf] = value
    if check:
        probe = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
        if overrides.get("hardware.qubit_budget") is None:  # the budget the device gives is not asked for here
            probe["hardware"]["qubit_budget"] = None
        config_from_dict(probe, source="configuration with command-line overrides", defer_budget=True)
    return data


def with_overrides(config: RunConfig, **overrides: Any) -> RunConfig:
    """A copy with dotted-key overrides (``{"hardware.backend": "aer_ideal"}``), validated like a file.

    The overridden values are checked first without the device (a bad flag is refused in a fraction of a second);
    only then does a budget that follows the device ask the backend for its size.  ``config`` may hold a deferred
    (None) budget (``load_config(..., defer_budget=True)``): it is resolved here, once.
    """
    _applied(config.model_dump(mode="json"), overrides, check=True)
    data = config.model_dump(mode="json")
    if config.hardware.qubit_budget is None:  # deferred: resolved below from the (overridden) device
        overrides = {k: v for k, v in overrides.items() if k != "hardware.qubit_budget" or v is not None}
        out = config_from_dict(_applied(data, overrides), source="configuration with command-line overrides")
        if "hardware.qubit_budget" not in overrides:
            out.hardware.__pydantic_fields_set__.discard("qubit_budget")
        return out
    if config.lr_is_default() and overrides.get("supercircuit.lr") is None:
        data["supercircuit"]["lr"] = None  # re-derive it: an overridden front-end changes the default
    if config.accuracy_is_default() and overrides.get("search.accuracy") is None:
        data["search"]["accuracy"] = None  # re-derive it: an overridden backend changes the default
    # a budget the user did not set follows the device again; the default job's keeps its 2 on its own backend
    keep_budget = config.qubit_budget_is_default() and overrides.get("hardware.qubit_budget") is None
    backend = overrides.get("hardware.backend")
    new_backend = backend is not None and str(backend).strip() != config.hardware.backend
    if keep_budget and (new_backend or config.qubit_budget_follows_device()):
        data["hardware"]["qubit_budget"] = None
        keep_budget = False
    out = config_from_dict(_applied(data, overrides), source="configuration with command-line overrides")
    if keep_budget:  # still the default job's, not the user's
        out.hardware.__pydantic_fields_set__.discard("qubit_budget")
    return out
