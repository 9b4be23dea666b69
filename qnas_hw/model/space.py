"""The HQNN architecture search space.

An :class:`Architecture` is the genotype that every other module consumes:
circuits are built from it, the simulator runs it, objectives score it and the
study stores it by its canonical string.  It is frozen and hashable so it can be
a cache key, and it round-trips to the integer vector that NSGA-II mutates.

Invalid combinations raise :class:`SpaceError` (a ``ValueError``) naming the bad
value and how to fix it; nothing is silently clamped, because a silently changed
architecture would corrupt the search's bookkeeping.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: The embeddings of a default search space (one feature per qubit, amplitude, IQP).
CLASSIC_EMBEDDINGS: tuple[str, ...] = ("angle-x", "angle-y", "angle-z", "amplitude", "iqp")
#: QuantumNAS's 4x4 encoder: four rotation layers (RY, RZ, RX, RY), each loading one feature per qubit.
ENCODER_4X4 = "4x4-ryzxy"
#: Suffix of a data re-uploading embedding: its block is repeated before every trainable layer.
REUPLOAD_SUFFIX = "-ru"
EMBEDDINGS: tuple[str, ...] = (
    *CLASSIC_EMBEDDINGS,
    ENCODER_4X4,
    "angle-x" + REUPLOAD_SUFFIX,
    "angle-y" + REUPLOAD_SUFFIX,
    "angle-z" + REUPLOAD_SUFFIX,
    ENCODER_4X4 + REUPLOAD_SUFFIX,
)


def base_embedding(name: str) -> str:
    """The encoding block of an embedding (``angle-y-ru`` -> ``angle-y``)."""
    return name[: -len(REUPLOAD_SUFFIX)] if name.endswith(REUPLOAD_SUFFIX) else name


def reuploads(name: str) -> bool:
    """True for data re-uploading embeddings (the block precedes every trainable layer)."""
    return name.endswith(REUPLOAD_SUFFIX)


ROTATIONS: tuple[str, ...] = ("ry", "rx-ry", "ry-rz", "rx-ry-rz")
#: The classical front-ends (``model.frontend``: shared by every candidate, not a searched gene); ``none``: no
#: front-end (pure quantum), the features are the circuit's angles (x pi).  Defined here rather than next to the
#: torch modules (:mod:`qnas_hw.model.hqnn`) so that validating a config does not import torch.
FRONTENDS: tuple[str, ...] = ("identity", "linear", "mlp", "cnn", "none")
ENTANGLERS: tuple[str, ...] = ("none", "linear", "ring", "full", "sparse")
READOUTS: tuple[str, ...] = ("z",)

#: The widest circuit simulated: the torch simulator holds 2**n amplitudes per sample, so at 20 qubits a single
#: state is 8 MiB per sample in complex64 and a training batch needs gigabytes (the simulator checks the memory
#: before it allocates: :mod:`qnas_hw.model.memory`).
MIN_QUBITS, MAX_QUBITS = 2, 20
#: Upper end of a :class:`SearchSpace` left at its default: what a laptop trains a SuperCircuit for in minutes.
#: Wider spaces are asked for explicitly (``space.qubits``).
DEFAULT_MAX_QUBITS = 12
MIN_LAYERS, MAX_LAYERS = 1, 6

#: Gene order of the integer encoding. Kept in one place so the search, the
#: study and the reports agree on what column i of a genome means.
GENES: tuple[str, ...] = ("embedding", "n_qubits", "n_layers", "rotation", "entangler")


class SpaceError(ValueError):
    """A value outside the search space, with a message that says how to fix it."""


#: How a SuperCircuit shares its weights (``supercircuit.sharing``): ``prefix`` (one set for the whole space,
#: sliced by width) or ``experts`` (one set per embedding, each with its own front-end, quantum tensors and one
#: head per width); ``experts:<gene>+<gene>`` also splits the quantum tensors by those genes.  Defined with the
#: genes (no torch here) so that validating a config stays cheap.
SHARING_MODES: tuple[str, ...] = ("prefix", "experts")
#: Genes an ``experts:<genes>`` sharing may split the quantum weights by (``experts`` alone: the embedding).
EXPERT_GENES: tuple[str, ...] = ("embedding", "entangler", "n_layers", "n_qubits")


def expert_genes(sharing: str) -> tuple[str, ...]:
    """The genes of a ``sharing`` mode's experts: ``()`` for ``prefix``, ``("embedding",)`` for ``experts``."""
    if sharing == "prefix":
        return ()
    if sharing == "experts":
        return ("embedding",)
    mode, _, genes = sharing.partition(":")
    names = tuple(g for g in genes.split("+") if g)
    if mode != "experts" or not names or any(g not in EXPERT_GENES for g in names):
        raise SpaceError(
            f"sharing={sharing!r} is not a sharing mode; choose 'prefix', 'experts' or 'experts:<genes>' with "
            f"genes from {', '.join(EXPERT_GENES)} (e.g. 'experts:embedding+entangler')"
        )
    return names


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise SpaceError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")


def _check_range(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpaceError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    if not lo <= value <= hi:
        raise SpaceError(f"{name}={value} is out of range; use a value in {lo}..{hi}")


@dataclass(frozen=True, order=True)
class Architecture:
    """One quantum-layer design: embedding, width, depth, rotations, entangler, readout.

    The classical front-end and head are not genes: they are fixed per study
    and sliced by :attr:`n_inputs` / :attr:`n_outputs`, which is what lets one
    SuperCircuit share them across the whole space.
    """

    embedding: str
    n_qubits: int
    n_layers: int
    rotation: str
    entangler: str
    readout: str = field(default="z")

    def __post_init__(self) -> None:
        _check_choice("embedding", self.embedding, EMBEDDINGS)
        _check_range("n_qubits", self.n_qubits, MIN_QUBITS, MAX_QUBITS)
        _check_range("n_layers", self.n_layers, MIN_LAYERS, MAX_LAYERS)
        _check_choice("rotation", self.rotation, ROTATIONS)
        _check_choice("entangler", self.entangler, ENTANGLERS)
        _check_choice("readout", self.readout, READOUTS)

    # ------------------------------------------------------------------ sizes
    @property
    def n_inputs(self) -> int:
        """Classical features the embedding consumes (2**n for amplitude, 4n for the 4x4 encoder)."""
        base = base_embedding(self.embedding)
        if base == "amplitude":
            return 2**self.n_qubits
        if base == ENCODER_4X4:
            return 4 * self.n_qubits
        return self.n_qubits

    @property
    def n_outputs(self) -> int:
        """Expectation values read out (<Z> on every qubit)."""
        return self.n_qubits

    @property
    def rotations_per_qubit(self) -> int:
        return len(self.rotation.split("-"))

    @property
    def n_weights(self) -> int:
        return self.n_layers * self.n_qubits * self.rotations_per_qubit

    def check_features(self, n_features: int) -> None:
        """Reject a feature count the embedding cannot take.

        Angle and IQP embeddings need exactly one feature per qubit; amplitude
        embedding takes up to 2**n (zero-padded), never more.
        """
        if self.embedding == "amplitude":
            if not 1 <= n_features <= self.n_inputs:
                raise SpaceError(
                    f"amplitude embedding on {self.n_qubits} qubits takes at most "
                    f"{self.n_inputs} features, got {n_features}; use at least "
                    f"{max(MIN_QUBITS, (max(n_features, 1) - 1).bit_length())} qubits "
                    "or reduce the features with a front-end"
                )
        elif n_features != self.n_inputs:
            raise SpaceError(
                f"{self.embedding} embedding on {self.n_qubits} qubits takes exactly "
                f"{self.n_inputs} features, got {n_features}; add a front-end that "
                f"maps to {self.n_inputs} features or change n_qubits"
            )

    def padded_features(self, n_features: int) -> int:
        """Features a front-end-less model feeds the circuit: the data's, zero-padded up to what the embedding
        loads (a zero angle is no rotation); more than the embedding loads is an error naming the fix."""
        if n_features > self.n_inputs:
            raise SpaceError(
                f"{self.canonical()} loads {self.n_inputs} features and the data has {n_features}; with "
                "model.frontend = 'none' use an embedding that loads them all (e.g. '4x4-ryzxy' on "
                f"{max(MIN_QUBITS, -(-n_features // 4))}+ qubits, or amplitude), or a front-end"
            )
        return self.n_inputs

    # ------------------------------------------------------------ identities
    def canonical(self) -> str:
        """Stable text form, e.g. ``angle-y|q8|l2|ry-rz|ring|z``; parse with :meth:`parse`."""
        return f"{self.embedding}|q{self.n_qubits}|l{self.n_layers}|{self.rotation}|{self.entangler}|{self.readout}"

    def __str__(self) -> str:
        return self.canonical()

    def key(self) -> str:
        """Short content hash of the canonical form, used as cache and study key."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]

    @classmethod
    def parse(cls, text: str) -> Architecture:
        parts = text.strip().split("|")
        if len(parts) not in (5, 6) or not parts[1].startswith("q") or not parts[2].startswith("l"):
            raise SpaceError(
                f"cannot parse architecture {text!r}; expected "
                "'EMBEDDING|qN|lL|ROTATION|ENTANGLER[|READOUT]', e.g. 'angle-y|q8|l2|ry-rz|ring|z'"
            )
        try:
            n_qubits, n_layers = int(parts[1][1:]), int(parts[2][1:])
        except ValueError as exc:
            raise SpaceError(f"cannot parse qubits/layers in {text!r}: {exc}") from None
        readout = parts[5] if len(parts) == 6 else "z"
        return cls(parts[0], n_qubits, n_layers, parts[3], parts[4], readout)

    def to_dict(self) -> dict[str, Any]:
        return {
            "embedding": self.embedding,
            "n_qubits": self.n_qubits,
            "n_layers": self.n_layers,
            "rotation": self.rotation,
            "entangler": self.entangler,
            "readout": self.readout,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        unknown = set(data) - {*GENES, "readout"}
        if unknown:
            raise SpaceError(f"unknown architecture field(s) {sorted(unknown)}; known: {[*GENES, 'readout']}")
        return cls(**data)


@dataclass(frozen=True)
class SearchSpace:
    """A (possibly restricted) box of the full space, and its integer encoding.

    Restricting the space (e.g. ``qubits=(2, 8)`` for an 8-qubit budget) keeps
    the encoding dense so the genetic operators never produce an invalid gene.
    """

    embeddings: tuple[str, ...] = CLASSIC_EMBEDDINGS
    qubits: tuple[int, int] = (MIN_QUBITS, DEFAULT_MAX_QUBITS)
    layers: tuple[int, int] = (MIN_LAYERS, MAX_LAYERS)
    rotations: tuple[str, ...] = ROTATIONS
    entanglers: tuple[str, ...] = ENTANGLERS

    def __post_init__(self) -> None:
        for name, values, allowed in (
            ("embeddings", self.embeddings, EMBEDDINGS),
            ("rotations", self.rotations, ROTATIONS),
            ("entanglers", self.entanglers, ENTANGLERS),
        ):
            if not values:
                raise SpaceError(f"search space {name} is empty; list at least one of {allowed}")
            if len(set(values)) != len(values):
                raise SpaceError(f"search space {name} {values} has duplicates")
            for v in values:
                _check_choice(name[:-1], v, allowed)
        for name, (lo, hi), (mn, mx) in (
            ("qubits", self.qubits, (MIN_QUBITS, MAX_QUBITS)),
            ("layers", self.layers, (MIN_LAYERS, MAX_LAYERS)),
        ):
            _check_range(f"{name} lower bound", lo, mn, mx)
            _check_range(f"{name} upper bound", hi, mn, mx)
            if lo > hi:
                raise SpaceError(f"search space {name} range ({lo}, {hi}) is empty; lower bound must be <= upper")

    # ------------------------------------------------------------- encoding
    @property
    def bounds(self) -> tuple[list[int], list[int]]:
        """Inclusive integer bounds per gene, in :data:`GENES` order."""
        lower = [0, self.qubits[0], self.layers[0], 0, 0]
        upper = [
            len(self.embeddings) - 1,
            self.qubits[1],
            self.layers[1],
            len(self.rotations) - 1,
            len(self.entanglers) - 1,
        ]
        return lower, upper

    @property
    def size(self) -> int:
        lo, hi = self.bounds
        n = 1
        for a, b in zip(lo, hi, strict=True):
            n *= b - a + 1
        return n

    def encode(self, arch: Architecture) -> list[int]:
        self.check(arch)
        return [
            self.embeddings.index(arch.embedding),
            arch.n_qubits,
            arch.n_layers,
            self.rotations.index(arch.rotation),
            self.entanglers.index(arch.entangler),
        ]

    def decode(self, genome: Sequence[int | float]) -> Architecture:
        if len(genome) != len(GENES):
            raise SpaceError(f"genome {list(genome)} has {len(genome)} genes; expected {len(GENES)} ({GENES})")
        lo, hi = self.bounds
        ints = []
        for name, g, a, b in zip(GENES, genome, lo, hi, strict=True):
            gi = round(float(g))
            if abs(float(g) - gi) > 1e-9 or not a <= gi <= b:
                raise SpaceError(f"gene {name}={g!r} is not an integer in {a}..{b}")
            ints.append(gi)
        return Architecture(
            embedding=self.embeddings[ints[0]],
            n_qubits=ints[1],
            n_layers=ints[2],
            rotation=self.rotations[ints[3]],
            entangler=self.entanglers[ints[4]],
        )

    def check(self, arch: Architecture) -> None:
        """Raise if ``arch`` lies outside this (restricted) space."""
        if arch.embedding not in self.embeddings:
            raise SpaceError(f"embedding {arch.embedding!r} is not in this search space {self.embeddings}")
        if arch.rotation not in self.rotations:
            raise SpaceError(f"rotation {arch.rotation!r} is not in this search space {self.rotations}")
        if arch.entangler not in self.entanglers:
            raise SpaceError(f"entangler {arch.entangler!r} is not in this search space {self.entanglers}")
        if not self.qubits[0] <= arch.n_qubits <= self.qubits[1]:
            raise SpaceError(f"n_qubits={arch.n_qubits} is outside this search space {self.qubits}")
        if not self.layers[0] <= arch.n_layers <= self.layers[1]:
            raise SpaceError(f"n_layers={arch.n_layers} is outside this search space {self.layers}")

    def sample(self, rng: Any) -> Architecture:
        """Uniform sample; ``rng`` is a ``numpy.random.Generator`` (no global RNG state)."""
        lo, hi = self.bounds
        return self.decode([int(rng.integers(a, b + 1)) for a, b in zip(lo, hi, strict=True)])

    def largest(self) -> Architecture:
        """The 'sandwich' upper corner: most qubits, layers, rotations and entangling."""
        return Architecture(
            embedding=self.embeddings[0],
            n_qubits=self.qubits[1],
            n_layers=self.layers[1],
            rotation=max(self.rotations, key=lambda r: len(r.split("-"))),
            entangler="full" if "full" in self.entanglers else self.entanglers[-1],
        )

    def smallest(self) -> Architecture:
        """The 'sandwich' lower corner: fewest qubits, layers, rotations, no/least entangling."""
        return Architecture(
            embedding=self.embeddings[0],
            n_qubits=self.qubits[0],
            n_layers=self.layers[0],
            rotation=min(self.rotations, key=lambda r: len(r.split("-"))),
            entangler="none" if "none" in self.entanglers else self.entanglers[0],
        )

    def corner(self, which: str, rng: Any) -> Architecture:
        """A sandwich corner: qubits and layers at their ``largest``/``smallest`` ends, categorical genes at random.

        Embedding, rotation and entangler have no order, so a fixed corner
        value (the first embedding) would train that one category two steps
        in three and bias every inherited-weight score toward it (measured:
        4 of 5 published picks used the first embedding).
        """
        if which not in ("largest", "smallest"):
            raise SpaceError(f"unknown sandwich corner {which!r}; use 'largest' or 'smallest'")
        end = 1 if which == "largest" else 0
        return Architecture(
            embedding=self.embeddings[int(rng.integers(len(self.embeddings)))],
            n_qubits=self.qubits[end],
            n_layers=self.layers[end],
            rotation=self.rotations[int(rng.integers(len(self.rotations)))],
            entangler=self.entanglers[int(rng.integers(len(self.entanglers)))],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "embeddings": list(self.embeddings),
            "qubits": list(self.qubits),
            "layers": list(self.layers),
            "rotations": list(self.rotations),
            "entanglers": list(self.entanglers),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        known = {"embeddings", "qubits", "layers", "rotations", "entanglers"}
        unknown = set(data) - known
        if unknown:
            raise SpaceError(f"unknown search-space field(s) {sorted(unknown)}; known: {sorted(known)}")
        kw: dict[str, Any] = {}
        for k, v in data.items():
            kw[k] = tuple(v)
        return cls(**kw)
