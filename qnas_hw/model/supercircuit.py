"""One weight-shared model for the whole search space (one-shot NAS for HQNNs).

Training every candidate from scratch is what makes architecture search
expensive.  A :class:`SuperCircuit` owns one set of weights large enough for
every architecture of a :class:`~qnas_hw.model.space.SearchSpace`; an architecture
*inherits* the slice it needs, so scoring it costs a forward pass (plus an
optional short fine-tune, see :mod:`qnas_hw.search.evaluation`) instead of a training.

What is shared, and how it is sliced:

* **Front-end** (the classical feature extractor, built by
  :func:`qnas_hw.model.hqnn.build_frontend`): one instance whose output width is the
  largest ``n_inputs`` in the space (``2**max_qubits`` when amplitude embedding is
  in it); an architecture uses the first ``n_inputs`` outputs.  Every tensor
  whose shape depends on the width is sliced as a prefix.
* **Quantum weights**: one tensor of shape ``(max_layers, max_qubits, R)`` *per
  rotation choice* (``R`` = rotations in the block); an architecture takes
  ``[:n_layers, :n_qubits, :]`` flattened, which is exactly the circuit's
  ``w[(layer * n + q) * R + r]`` order.  The tensors are shared across
  embeddings and entanglers.  Why one tensor per rotation choice rather than one
  ``(L, Q, 3)`` superset for rx/ry/rz: in ``rx-ry`` the RY acts *after* an RX,
  in ``ry`` it acts on the bare embedding, so the same angle would have to serve
  two different functions and the shared weight would be pulled two ways
  (weight-sharing NAS uses separate weights per operation choice for the same
  reason).  The cost is four small tensors instead of one.
* **Head** (the linear readout of ``<Z>``): ``in = max_qubits``, an architecture
  uses the first ``n_qubits`` columns.

The computation itself is never re-implemented here: for each architecture a
*template* :class:`~qnas_hw.model.hqnn.HQNN` (the standalone model, with its angle scaling and
its :class:`~qnas_hw.model.simulator.QuantumLayer`/``SimulatorPlan``) is built once and
run with :func:`torch.func.functional_call` on views of the shared tensors.  So
``forward(x, arch)`` and the standalone model returned by :meth:`extract` run the
same code on the same numbers, and gradients of ``forward`` flow into the shared
tensors.  Templates (and the simulator plans inside them) are cached per
architecture inside the object, bounded LRU.

Training (:func:`train_supercircuit`) samples one sub-architecture per batch:
``uniform``, ``sandwich`` (the largest and smallest qubit/layer corners, their
categorical genes drawn at random, + one random architecture each step,
gradients accumulated: the corners bound what every other architecture sees,
which is what makes inherited weights a usable ranking proxy) or
``restricted`` (at most ``restricted_genes`` genes change from the previous
step's architecture, a smoother curriculum).  Training checkpoints after every
epoch so an interrupted run resumes where it stopped, bit-for-bit.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from qnas_hw.atomic_write import DamagedFileError, atomic_write_torch, read_torch
from qnas_hw.model.hqnn import HQNN
from qnas_hw.model.space import GENES, Architecture, SearchSpace, SpaceError, expert_genes
from qnas_hw.progress import track

logger = logging.getLogger(__name__)

SAMPLING_MODES: tuple[str, ...] = ("uniform", "sandwich", "restricted")
#: How the SuperCircuit's weights are shared: ``prefix`` (one set for the whole space, sliced by width) or
#: ``experts`` (one set per embedding, each with its own front-end, quantum tensors and one head per width).


_CHECKPOINT_FORMAT = 1
_QUANTUM_PREFIX = "quantum_"


def _rotation_key(rotation: str) -> str:
    """ParameterDict key of a rotation choice (module names may not contain '.')."""
    return rotation.replace("-", "_")


def _max_inputs_arch(space: SearchSpace, embedding: str | None = None) -> Architecture:
    """The architecture with the widest front-end output and the most qubits in ``space`` (of ``embedding``)."""
    candidates = [
        Architecture(emb, space.qubits[1], space.layers[0], space.rotations[0], space.entanglers[0])
        for emb in ([embedding] if embedding is not None else space.embeddings)
    ]
    return max(candidates, key=lambda a: a.n_inputs)  # first of the widest, in the space's order


class SuperCircuit(nn.Module):
    """Shared-weight HQNN over a whole :class:`SearchSpace` (see the module docstring).

    ``seed`` fixes the initial weights; the model never touches the global RNG.
    """

    def __init__(
        self,
        space: SearchSpace,
        input_shape: tuple[int, ...],
        n_classes: int,
        frontend: str = "linear",
        seed: int = 0,
        max_cached: int = 32,
        sharing: str = "prefix",
    ) -> None:
        super().__init__()
        self._expert_genes = expert_genes(sharing)
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        if max_cached < 1:
            raise ValueError(f"max_cached must be >= 1, got {max_cached}")
        self.space = space
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_classes = int(n_classes)
        self.frontend_kind = frontend
        self.seed = int(seed)
        self.max_cached = int(max_cached)
        self.sharing = sharing
        self._templates: OrderedDict[str, tuple[HQNN, str | None]] = OrderedDict()

        # Classical tensors (front-end + head) at their widest, initialised by the models module's own code:
        # an HQNN of the widest architecture (per embedding group), whose quantum weight is dropped.
        self.classical = nn.ParameterDict()
        self._classical_names: dict[str, str] = {}
        self._buffer_names: dict[str, str] = {}
        for group in self._groups():
            widest = self._new_template(_max_inputs_arch(space, group), seed=self.seed)
            qname = self._quantum_param_name(widest)
            for name, p in widest.named_parameters():
                if name == qname:
                    continue
                if self._expert_genes and name.startswith("head."):
                    self._add_heads(group, name, p)
                    continue
                key = self._group_prefix(group) + name.replace(".", "__")
                self._classical_names[self._group_prefix(group) + name] = key
                self.classical[key] = nn.Parameter(p.detach().clone())
            for name, b in widest.named_buffers():
                key = "buf__" + self._group_prefix(group) + name.replace(".", "__")
                self._buffer_names[self._group_prefix(group) + name] = key
                self.register_buffer(key, b.detach().clone())

        gen = torch.Generator().manual_seed(self.seed)
        L, Q = space.layers[1], space.qubits[1]
        self.quantum = nn.ParameterDict(
            {
                self._group_prefix(group) + _rotation_key(rot): nn.Parameter(
                    torch.rand((L, Q, len(rot.split("-"))), generator=gen, dtype=torch.float32) * (2 * torch.pi)
                )
                for group in self._quantum_groups()
                for rot in space.rotations
            }
        )

    # ------------------------------------------------------------ sharing
    def _groups(self) -> list[str | None]:
        """Front-end groups: one for the whole space, or one per embedding when experts split by it."""
        return list(self.space.embeddings) if "embedding" in self._expert_genes else [None]

    def _group_of(self, arch: Architecture) -> str | None:
        return arch.embedding if "embedding" in self._expert_genes else None

    def _gene_values(self, gene: str) -> list[str]:
        sp = self.space
        values = {
            "embedding": list(sp.embeddings),
            "entangler": list(sp.entanglers),
            "n_layers": [str(v) for v in range(sp.layers[0], sp.layers[1] + 1)],
            "n_qubits": [str(v) for v in range(sp.qubits[0], sp.qubits[1] + 1)],
        }
        return values[gene]

    def _quantum_groups(self) -> list[str | None]:
        """Quantum-weight groups: one, or one per combination of the experts' genes."""
        if not self._expert_genes:
            return [None]
        return ["/".join(c) for c in itertools.product(*(self._gene_values(g) for g in self._expert_genes))]

    def _quantum_group_of(self, arch: Architecture) -> str | None:
        if not self._expert_genes:
            return None
        return "/".join(str(getattr(arch, g)) for g in self._expert_genes)

    @staticmethod
    def _group_prefix(group: str | None) -> str:
        return "" if group is None else group.replace("-", "_").replace("/", "_") + "__"

    def _add_heads(self, group: str | None, name: str, widest: torch.Tensor) -> None:
        """``experts``: one head per width, so <Z_q> of an n-qubit circuit never shares a readout with another n."""
        for n in range(self.space.qubits[0], self.space.qubits[1] + 1):
            key = f"{self._group_prefix(group)}head{n}__{name.removeprefix('head.')}"
            block = widest[:, :n] if name.endswith("weight") else widest
            self.classical[key] = nn.Parameter(block.detach().clone())

    def _classical_tensor(self, arch: Architecture, name: str, shape: torch.Size) -> torch.Tensor:
        group = self._group_of(arch)
        if self._expert_genes and name.startswith("head."):
            return self.classical[f"{self._group_prefix(group)}head{arch.n_qubits}__{name.removeprefix('head.')}"]
        full = self._group_prefix(group) + name
        return _prefix_slice(self.classical[self._classical_names[full]], shape, name)

    # ------------------------------------------------------------ templates
    def _new_template(self, arch: Architecture, seed: int = 0) -> HQNN:
        return HQNN(arch, self.input_shape, self.n_classes, frontend=self.frontend_kind, quantum="simulator", seed=seed)

    @staticmethod
    def _quantum_param_name(model: HQNN) -> str | None:
        """Name of the HQNN parameter holding its circuit weights (None for the classical-only ablation)."""
        names = [f"quantum.{n}" for n, _ in model.quantum.named_parameters()]
        if len(names) > 1:
            raise RuntimeError(f"quantum layer has {len(names)} parameter tensors {names}; expected one weight vector")
        return names[0] if names else None

    def _template(self, arch: Architecture) -> tuple[HQNN, str | None]:
        """Cached (template HQNN, quantum parameter name) for ``arch``; bounded LRU."""
        key = arch.canonical()
        hit = self._templates.get(key)
        if hit is not None:
            self._templates.move_to_end(key)
            return hit
        self.space.check(arch)
        model = self._new_template(arch)
        model.train(self.training)
        entry = (model, self._quantum_param_name(model))
        self._templates[key] = entry
        while len(self._templates) > self.max_cached:
            self._templates.popitem(last=False)
        return entry

    def _arch_tensors(self, arch: Architecture, model: HQNN, qname: str | None) -> dict[str, torch.Tensor]:
        """Views of the shared tensors, shaped like ``model``'s own parameters and buffers."""
        out: dict[str, torch.Tensor] = {}
        for name, p in model.named_parameters():
            if name == qname:
                out[name] = self.quantum_slice(arch)
            else:
                out[name] = self._classical_tensor(arch, name, p.shape)
        for name, b in model.named_buffers():
            full = self._group_prefix(self._group_of(arch)) + name
            out[name] = _prefix_slice(getattr(self, self._buffer_names[full]), b.shape, name)
        return out

    def set_noise(self, arch: Architecture, noise: Any) -> None:
        """Simulate ``arch``'s template under ``noise`` (noise-aware training); ``None`` for exact."""
        model, _ = self._template(arch)
        model.quantum.set_noise(noise)

    def clear_noise(self) -> None:
        """Every cached template back to exact simulation (after noise-aware training)."""
        for model, _ in self._templates.values():
            model.quantum.set_noise(None)

    def quantum_slice(self, arch: Architecture) -> torch.Tensor:
        """The inherited quantum weights of ``arch``, in the circuit's ``w`` order (a view for autograd)."""
        shared = self.quantum[self._group_prefix(self._quantum_group_of(arch)) + _rotation_key(arch.rotation)]
        return shared[: arch.n_layers, : arch.n_qubits, :].reshape(-1)

    # ------------------------------------------------------------ public API
    def forward(self, x: torch.Tensor, arch: Architecture) -> torch.Tensor:  # type: ignore[override]
        """Logits of ``arch`` with its inherited weights; differentiable w.r.t. the shared tensors."""
        model, qname = self._template(arch)
        model.train(self.training)
        return functional_call(model, self._arch_tensors(arch, model, qname), (x,))

    def extract(self, arch: Architecture) -> HQNN:
        """A standalone HQNN holding a *copy* of ``arch``'s inherited weights (same logits as ``forward``)."""
        self.space.check(arch)
        model = self._new_template(arch)
        model_q = self._quantum_param_name(model)
        with torch.no_grad():
            tensors = self._arch_tensors(arch, model, model_q)
            state = {k: v.detach().clone() for k, v in tensors.items()}
        model.load_state_dict(state, strict=True)
        model.train(self.training)
        return model

    def fresh(self, arch: Architecture, seed: int) -> HQNN:
        """A standalone HQNN of ``arch`` at its own seeded initialisation, shaped like :meth:`extract`'s.

        What a from-scratch proxy trains: the same model family as the inherited one (front-end, head, circuit),
        so one weights file format and one loader serve every proxy.
        """
        self.space.check(arch)
        return self._new_template(arch, seed=seed)

    def fingerprint(self) -> str:
        """Content hash of the weights and the structure: a cache key that changes whenever the weights do."""
        h = hashlib.sha256()
        h.update(json.dumps(self._identity(), sort_keys=True).encode())
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def _identity(self) -> dict[str, Any]:
        return {
            "space": self.space.to_dict(),
            "input_shape": list(self.input_shape),
            "n_classes": self.n_classes,
            "frontend": self.frontend_kind,
            "seed": self.seed,
            **({"sharing": self.sharing} if self.sharing != "prefix" else {}),  # older files: prefix
        }

    def save(self, path: str | Path) -> Path:
        """Write weights + structure atomically (a crash never leaves a half-written file)."""
        state = {"format": _CHECKPOINT_FORMAT, **self._identity(), "state": self.state_dict()}
        return atomic_write_torch(path, state)

    @classmethod
    def load(cls, path: str | Path) -> SuperCircuit:
        """A SuperCircuit from :meth:`save` output or from a :func:`train_supercircuit` checkpoint."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no SuperCircuit file at {path}; train one first (train_supercircuit / save)")
        data = read_torch(path, "SuperCircuit file")
        if not isinstance(data, dict) or data.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a SuperCircuit file of format {_CHECKPOINT_FORMAT}")
        sc = cls._from_identity(data)
        sc.load_state_dict(data["state"])
        return sc

    @classmethod
    def _from_identity(cls, data: dict[str, Any]) -> SuperCircuit:
        return cls(
            SearchSpace.from_dict(data["space"]),
            tuple(data["input_shape"]),
            int(data["n_classes"]),
            frontend=str(data["frontend"]),
            seed=int(data["seed"]),
            sharing=str(data.get("sharing", "prefix")),
        )


def _prefix_slice(shared: torch.Tensor, shape: torch.Size, name: str) -> torch.Tensor:
    """The leading ``shape`` block of ``shared`` (front-end/head tensors only grow in their width dims)."""
    if shared.dim() != len(shape) or any(s > m for s, m in zip(shape, shared.shape, strict=True)):
        raise SpaceError(
            f"shared tensor {name} of shape {tuple(shared.shape)} cannot hold an architecture's {tuple(shape)}; "
            "the front-end must only grow in its output width"
        )
    if tuple(shape) == tuple(shared.shape):
        return shared
    return shared[tuple(slice(0, s) for s in shape)]


# ====================================================================== training
@dataclass(frozen=True)
class SuperTrainConfig:
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-2
    sampling: str = "sandwich"
    restricted_genes: int = 1
    seed: int = 0
    #: noise-aware training: arch -> GateNoise of its placement on the target (None: exact)
    noise: Any = field(default=None, compare=False, repr=False)
    noise_key: str = ""  # what identifies the noise (target and its calibration), for the checkpoint signature
    #: in-place distillation (BigNAS / Once-for-All): with ``sandwich`` sampling the largest subnet learns from the
    #: labels and every other subnet of the step from the largest's (detached) predictions
    distill: bool = False

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling {self.sampling!r}; choose one of {', '.join(SAMPLING_MODES)}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 1 <= self.restricted_genes <= len(GENES):
            raise ValueError(f"restricted_genes must be in 1..{len(GENES)}, got {self.restricted_genes}")
        if self.distill and self.sampling != "sandwich":
            raise ValueError(
                f"distill needs sampling='sandwich' (the largest subnet is the teacher), got {self.sampling!r}"
            )


@dataclass
class SuperTrainResult:
    epochs_run: int
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    resumed_from_epoch: int = 0
    fingerprint: str = ""


class ArchSampler:
    """Per-step architecture choice for the three sampling modes, driven by one numpy Generator.

    Its whole state (the generator's bit state and the previous architecture)
    round-trips through :meth:`state`/:meth:`load_state`, so a resumed training
    draws exactly the architectures an uninterrupted one would have.
    """

    def __init__(self, space: SearchSpace, mode: str, restricted_genes: int, rng: np.random.Generator) -> None:
        if mode not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling {mode!r}; choose one of {', '.join(SAMPLING_MODES)}")
        self.space, self.mode, self.k, self.rng = space, mode, restricted_genes, rng
        self.previous: Architecture | None = None

    def step(self) -> list[Architecture]:
        """Architectures to train on in one optimizer step (gradients are accumulated over them)."""
        if self.mode == "sandwich":
            rng = self.rng
            return [self.space.corner("largest", rng), self.space.corner("smallest", rng), self.space.sample(rng)]
        if self.mode == "restricted" and self.previous is not None:
            arch = self.neighbour(self.previous)
        else:
            arch = self.space.sample(self.rng)
        self.previous = arch
        return [arch]

    def neighbour(self, arch: Architecture) -> Architecture:
        """Resample ``k`` randomly chosen genes uniformly (a gene may keep its value: at most ``k`` change)."""
        genome = self.space.encode(arch)
        lo, hi = self.space.bounds
        for g in self.rng.choice(len(GENES), size=self.k, replace=False):
            genome[int(g)] = int(self.rng.integers(lo[g], hi[g] + 1))
        return self.space.decode(genome)

    def state(self) -> dict[str, Any]:
        return {
            "bit_generator": self.rng.bit_generator.state,
            "previous": None if self.previous is None else self.previous.canonical(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
        prev = state["previous"]
        self.previous = None if prev is None else Architecture.parse(prev)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size]


def _train_signature(sc: SuperCircuit, splits: Any, cfg: SuperTrainConfig) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed (anything else would mix two different trainings).

    ``epochs`` is left out on purpose: resuming with a larger ``epochs``
    extends a finished training, and an interrupted one resumes identically.
    """
    config = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in ("epochs", "noise")}
    if not cfg.distill:  # trainings from before the option existed keep their signature (and their checkpoints)
        config.pop("distill")
    return {
        **sc._identity(),
        "config": config,
        "dataset": str(getattr(splits, "name", "?")),
        "n_train": len(splits.train),
    }


def _readable_checkpoint(checkpoint: Path | str | None) -> dict[str, Any] | None:
    """The training checkpoint to resume from; a damaged one is named, set aside, and training starts over.

    Training is deterministic for a given seed, data and thread count, so
    starting over reproduces the same SuperCircuit (the study checks its
    fingerprint against the one its candidates were scored with).
    """
    if checkpoint is None or not Path(checkpoint).is_file():
        return None
    try:
        ck = read_torch(checkpoint, "SuperCircuit checkpoint")
    except DamagedFileError as exc:
        damaged = Path(checkpoint).with_name(Path(checkpoint).name + ".damaged")
        Path(checkpoint).replace(damaged)
        logger.warning("%s; moved it to %s and training the SuperCircuit again from the start", exc, damaged)
        return None
    return ck if isinstance(ck, dict) else None


def train_supercircuit(
    sc: SuperCircuit,
    splits: Any,
    cfg: SuperTrainConfig,
    progress: bool = False,
    checkpoint: Path | None = None,
) -> SuperTrainResult:
    """Train the shared weights on ``splits.train`` with per-batch architecture sampling.

    Deterministic given ``cfg.seed`` (shuffling, architecture draws) and the
    SuperCircuit's own initial seed.  With ``checkpoint``, the model, optimizer,
    samplers' RNG states and history are written atomically after every epoch;
    if the file exists and was written by the same training (same space,
    model, data size and config) training resumes from it, and if it was not,
    this raises instead of overwriting it.  The validation and test splits are
    not read.  It trains where ``sc`` is (``sc.to(device)``); the data stays on
    the CPU and moves a batch at a time.
    """
    X, y = splits.train.tensors
    signature = _train_signature(sc, splits, cfg)
    opt = torch.optim.Adam(sc.parameters(), lr=cfg.lr)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed)
    sampler = ArchSampler(sc.space, cfg.sampling, cfg.restricted_genes, np.random.default_rng(cfg.seed))
    history: list[dict[str, Any]] = []
    start_epoch, steps, seconds = 0, 0, 0.0

    ck = _readable_checkpoint(checkpoint)
    if ck is not None:
        if ck.get("signature") != signature:
            raise ValueError(
                f"checkpoint {checkpoint} was written by a different training "
                f"({ck.get('signature')} != {signature}); use another --checkpoint path or delete it"
            )
        sc.load_state_dict(ck["state"])
        opt.load_state_dict(ck["optimizer"])
        shuffle_gen.set_state(ck["shuffle_gen"])
        sampler.load_state(ck["sampler"])
        history, start_epoch, steps, seconds = ck["history"], ck["epoch"], ck["steps"], ck["seconds"]
        logger.info("resuming SuperCircuit training from %s at epoch %d/%d", checkpoint, start_epoch, cfg.epochs)

    loss_fn = nn.CrossEntropyLoss()
    device = next(sc.parameters()).device  # the data stays on the CPU; each batch goes where sc.to() put the model
    sc.train()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        total, count, correct, archs_seen = 0.0, 0, 0, set()
        batches = list(_batches(len(X), cfg.batch_size, shuffle_gen))
        # running figures of the sampled subnets on their training batches (read late, within this epoch, on
        # purpose): a bar on a terminal, plain lines in a log
        running = lambda: f"loss={total / max(count, 1):.3f} acc={correct / max(count, 1):.3f}"  # noqa: E731, B023
        desc = f"supercircuit epoch {epoch + 1}/{cfg.epochs}"
        for idx in track(batches, desc, unit="batches", enabled=progress, status=running):
            xb, yb = X[idx].to(device), y[idx].to(device)
            opt.zero_grad(set_to_none=True)
            archs = sampler.step()
            teacher = None
            for arch in archs:
                if cfg.noise is not None:
                    sc.set_noise(arch, cfg.noise(arch))
                logits = sc(xb, arch)
                label_loss = loss_fn(logits, yb)
                if teacher is None:
                    loss = label_loss
                    if cfg.distill:  # the first of a sandwich is the largest subnet
                        teacher = torch.softmax(logits.detach(), dim=1)
                else:
                    loss = -(teacher * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
                loss.backward()
                total += float(label_loss.detach()) * len(idx)  # reported against the labels, distilled or not
                correct += int((logits.detach().argmax(dim=1) == yb).sum())
                count += len(idx)
                archs_seen.add(arch.canonical())
            opt.step()
            steps += 1
        dt = time.perf_counter() - t0
        seconds += dt
        history.append(
            {
                "epoch": epoch + 1,
                "loss": total / max(count, 1),
                "train_acc": correct / max(count, 1),
                "seconds": dt,
                "n_archs": len(archs_seen),
            }
        )
        logger.info(
            "supercircuit epoch %d/%d loss %.4f, training accuracy of the sampled subnets %.3f (%.1f s)",
            epoch + 1,
            cfg.epochs,
            history[-1]["loss"],
            history[-1]["train_acc"],
            dt,
        )
        if checkpoint is not None:
            state = {
                # the SuperCircuit.save fields first, so SuperCircuit.load reads a training checkpoint too
                "format": _CHECKPOINT_FORMAT,
                **sc._identity(),
                "state": sc.state_dict(),
                "signature": signature,
                "optimizer": opt.state_dict(),
                "shuffle_gen": shuffle_gen.get_state(),
                "sampler": sampler.state(),
                "history": history,
                "epoch": epoch + 1,
                "steps": steps,
                "seconds": seconds,
            }
            atomic_write_torch(checkpoint, state)
    if cfg.noise is not None:
        sc.clear_noise()
    sc.eval()
    return SuperTrainResult(
        epochs_run=max(0, cfg.epochs - start_epoch),
        steps=steps,
        history=copy.deepcopy(history),
        train_seconds=seconds,
        resumed_from_epoch=start_epoch,
        fingerprint=sc.fingerprint(),
    )
