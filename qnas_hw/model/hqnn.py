"""Hybrid quantum-classical models: classical front-end -> angles -> quantum layer -> <Z> -> linear head.

The model is split into :meth:`HQNN.encode` (front-end and angle scaling),
the quantum layer, and :meth:`HQNN.decode` (the head) because hardware
evaluation replaces only the middle part: it runs ``encode`` here, sends the
angles with :meth:`HQNN.quantum_weights` to a device, and feeds the measured
<Z> back through ``decode``.  Anything the simulator-trained model does between
those points would be lost on hardware, so there is nothing else in between.

Initialisation draws only from ``torch.Generator`` objects derived from
``seed`` (one independent stream per part, so the classical-only ablation,
``quantum="identity"``, starts from exactly the same front-end and head as the
quantum model of the same width); the global torch RNG is neither read nor
advanced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from qnas_hw.model.simulator import QuantumLayer
from qnas_hw.model.space import FRONTENDS, Architecture, SpaceError

QUANTUM_KINDS: tuple[str, ...] = ("simulator", "identity")

#: Hidden width of the "mlp" front-end and of the CNN's fully connected layer.
HIDDEN = 64
CNN_CHANNELS = (16, 32)


class ModelError(ValueError):
    """A model that cannot be built as asked, with a message saying how to fix it."""


# ------------------------------------------------------------------ init
def _uniform_(tensor: Tensor, bound: float, generator: torch.Generator) -> None:
    with torch.no_grad():
        tensor.uniform_(-bound, bound, generator=generator)


def _reset(module: nn.Linear | nn.Conv2d, generator: torch.Generator) -> None:
    """PyTorch's default layer init (kaiming-uniform a=sqrt(5), fan-in bias), but from ``generator``."""
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
    if module.bias is not None:
        fan_in = module.weight[0].numel()
        _uniform_(module.bias, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, generator)


def _linear(n_in: int, n_out: int, generator: torch.Generator) -> nn.Linear:
    # skip_init builds on the meta device, so the global RNG is never touched.
    layer = nn.utils.skip_init(nn.Linear, n_in, n_out)
    _reset(layer, generator)
    return layer


def _linear_no_bias(n_in: int, n_out: int, generator: torch.Generator) -> nn.Linear:
    layer = nn.utils.skip_init(nn.Linear, n_in, n_out, bias=False)
    _reset(layer, generator)
    return layer


def _conv(c_in: int, c_out: int, generator: torch.Generator) -> nn.Conv2d:
    layer = nn.utils.skip_init(nn.Conv2d, c_in, c_out, kernel_size=3, padding=1)
    _reset(layer, generator)
    return layer


def derive_generators(seed: int, n: int) -> list[torch.Generator]:
    """``n`` independent torch generators from one seed (via numpy's SeedSequence spawning)."""
    states = np.random.SeedSequence(seed).spawn(n)
    return [torch.Generator().manual_seed(int(s.generate_state(1, dtype=np.uint64)[0] >> 1)) for s in states]


# -------------------------------------------------------------- front-ends
def _flat(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


class _Identity(nn.Module):
    """Flattens; the width check happens in :func:`build_frontend`."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class _ZeroPad(nn.Module):
    """``none``: the data's features, flattened and zero-padded to what the embedding loads (no parameters)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        return nn.functional.pad(flat, (0, self.width - flat.shape[1])) if flat.shape[1] < self.width else flat


def build_frontend(
    kind: str, input_shape: tuple[int, ...], out_features: int, generator: torch.Generator | None = None
) -> nn.Module:
    """Classical feature extractor mapping a batch of ``input_shape`` samples to ``out_features``.

    ``identity`` (flatten only; the flattened size must equal ``out_features``),
    ``linear``, ``mlp`` (one hidden ReLU layer of 64) or ``cnn`` (two 3x3
    conv+ReLU+2x2-maxpool blocks with 16 and 32 channels, then 64 hidden units;
    needs a (C, H, W) input shape).
    """
    if kind not in FRONTENDS:
        raise ModelError(f"unknown front-end {kind!r}; choose one of {', '.join(FRONTENDS)}")
    if out_features < 1:
        raise ModelError(f"out_features={out_features} must be >= 1")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    n_in = _flat(input_shape)
    if kind == "none":
        if n_in > out_features:
            raise ModelError(
                f"front-end 'none' feeds the {n_in} features to the circuit unchanged, but it loads {out_features}; "
                "use an embedding that loads them all (e.g. '4x4-ryzxy' or amplitude), or a front-end"
            )
        return _ZeroPad(out_features)
    if kind == "identity":
        if n_in != out_features:
            raise ModelError(
                f"identity front-end passes {n_in} features ({input_shape}) but {out_features} are needed; "
                "use the 'linear', 'mlp' or 'cnn' front-end or an architecture of matching width"
            )
        return _Identity()
    if kind == "linear":
        return nn.Sequential(nn.Flatten(), _linear(n_in, out_features, g))
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), _linear(n_in, HIDDEN, g), nn.ReLU(), _linear(HIDDEN, out_features, g))
    if len(input_shape) != 3:
        raise ModelError(f"cnn front-end needs image input (C, H, W), got shape {input_shape}; use 'linear' or 'mlp'")
    c, h, w = input_shape
    c1, c2 = CNN_CHANNELS
    if h < 4 or w < 4:
        raise ModelError(f"cnn front-end needs images of at least 4x4 pixels, got {h}x{w}")
    flat = c2 * (h // 2 // 2) * (w // 2 // 2)
    return nn.Sequential(
        _conv(c, c1, g),
        nn.ReLU(),
        nn.MaxPool2d(2),
        _conv(c1, c2, g),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        _linear(flat, HIDDEN, g),
        nn.ReLU(),
        _linear(HIDDEN, out_features, g),
    )


# ------------------------------------------------------------------- HQNN
def to_angles(features: Tensor, embedding: str, frontend: str = "linear") -> Tensor:
    """Squash front-end features into circuit inputs.

    Angle and IQP embeddings get ``pi * tanh(f)`` in (-pi, pi): one period of
    the rotation, so nearby features never alias to the same angle and the
    gradient never vanishes at the origin.  Amplitude embedding takes the raw
    features (the simulator normalises them).  Without a front-end
    (``none``, pure quantum) the features are pooled intensities in [0, 1] and
    become angles ``pi * f`` (QuantumNAS's convention).
    """
    if embedding == "amplitude":
        return features
    return math.pi * features if frontend == "none" else math.pi * torch.tanh(features)


class IdentityLayer(nn.Module):
    """The classical-only ablation's stand-in for the quantum layer: passes n_qubits features through."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def forward(self, inputs: Tensor) -> Tensor:
        if inputs.shape[-1] != self.width:
            raise ModelError(f"identity layer of width {self.width} got {inputs.shape[-1]} features")
        return inputs


class HQNN(nn.Module):
    """Front-end -> :func:`to_angles` -> quantum layer (<Z> per qubit) -> linear head.

    ``quantum="identity"`` is the classical-only ablation: the quantum layer is
    replaced by an identity of width ``n_qubits`` (the front-end then outputs
    ``n_qubits`` features for every embedding).  Sub-modules are public
    (``frontend``, ``quantum``, ``head``) so weights can be copied in and out
    (e.g. from a SuperCircuit).
    """

    def __init__(
        self,
        arch: Architecture,
        input_shape: tuple[int, ...],
        n_classes: int,
        frontend: str = "linear",
        quantum: str = "simulator",
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if quantum not in QUANTUM_KINDS:
            raise ModelError(f"unknown quantum layer {quantum!r}; choose one of {', '.join(QUANTUM_KINDS)}")
        if n_classes < 2:
            raise ModelError(f"n_classes={n_classes} must be >= 2")
        self.arch = arch
        self.input_shape = tuple(int(d) for d in input_shape)
        self.n_classes = n_classes
        self.frontend_kind = frontend
        self.quantum_kind = quantum
        self.seed = seed
        g_front, g_quantum, g_head = derive_generators(seed, 3)
        self.n_features = self._feature_width(arch, frontend, quantum)
        self.frontend = build_frontend(frontend, self.input_shape, self.n_features, g_front)
        self.quantum_dtype = dtype
        if quantum == "simulator":
            self.quantum: nn.Module = QuantumLayer(arch, generator=g_quantum, dtype=dtype)
        else:
            self.quantum = IdentityLayer(arch.n_qubits)
        self.head = _linear(arch.n_outputs, n_classes, g_head)
        if frontend == "none":  # pure quantum: <Z> -> logits through n_qubits x classes weights, nothing more
            self.head = _linear_no_bias(arch.n_outputs, n_classes, g_head)

    def _feature_width(self, arch: Architecture, frontend: str, quantum: str) -> int:
        if quantum == "identity":
            width = arch.n_qubits
        elif frontend == "none":
            try:
                return arch.padded_features(_flat(self.input_shape))
            except SpaceError as exc:
                raise ModelError(str(exc)) from None
        elif frontend == "identity":
            width = _flat(self.input_shape)
        else:
            width = arch.n_inputs
        if quantum == "simulator":
            try:
                arch.check_features(width)
            except SpaceError as exc:
                raise ModelError(f"{arch.canonical()} with front-end {frontend!r}: {exc}") from None
        return width

    def encode(self, x: Tensor) -> Tensor:
        """Exactly the inputs the quantum layer takes: angles, or raw features for amplitude embedding."""
        return to_angles(self.frontend(x), self.arch.embedding, self.frontend_kind)

    def quantum_weights(self) -> Tensor:
        """A detached copy of the circuit weights (shape ``(n_weights,)``; empty for the identity ablation)."""
        params = list(self.quantum.parameters())
        if not params:
            return torch.zeros(0)
        if len(params) != 1:
            raise ModelError(f"quantum layer has {len(params)} parameter tensors; expected one weight vector")
        return params[0].detach().clone().reshape(-1)

    def decode(self, z: Tensor) -> Tensor:
        """Logits from measured or simulated <Z> (shape ``(B, n_qubits)``)."""
        return self.head(z.to(self.head.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.quantum(self.encode(x).to(self.quantum_dtype)))

    def n_classical_params(self) -> int:
        """Trainable parameters of the front-end and head (the quantum weights excluded)."""
        return sum(p.numel() for m in (self.frontend, self.head) for p in m.parameters())

    def n_quantum_params(self) -> int:
        return sum(p.numel() for p in self.quantum.parameters())

    def describe(self) -> dict[str, object]:
        return {
            "architecture": self.arch.canonical(),
            "frontend": self.frontend_kind,
            "quantum": self.quantum_kind,
            "input_shape": list(self.input_shape),
            "n_classes": self.n_classes,
            "seed": self.seed,
            "n_classical_params": self.n_classical_params(),
            "n_quantum_params": self.n_quantum_params(),
        }
