"""SuperCircuit: inherited slices, real sharing, checkpoint/resume, architecture sampling."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from qnas_hw.data import DatasetSplits, load_dataset
from qnas_hw.model.simulator import SimulatorPlan
from qnas_hw.model.space import GENES, Architecture, SearchSpace, SpaceError
from qnas_hw.model.supercircuit import ArchSampler, SuperCircuit, SuperTrainConfig, train_supercircuit

SPACE = SearchSpace(qubits=(2, 4), layers=(1, 3))
ARCHS = [
    Architecture("angle-y", 4, 3, "rx-ry-rz", "full"),
    Architecture("amplitude", 3, 2, "rx-ry", "ring"),
    Architecture("iqp", 2, 1, "ry", "none"),
    Architecture("angle-z", 3, 2, "ry-rz", "sparse"),
    Architecture("angle-x", 2, 3, "ry", "linear"),
]


@pytest.fixture(scope="module")
def iris() -> DatasetSplits:
    return load_dataset("iris", seed=0)


def _images(n: int = 48, seed: int = 0) -> DatasetSplits:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 1, 8, 8), generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    ds = TensorDataset(x, y)
    return DatasetSplits("tiny-images", ds, ds, ds, 3, (1, 8, 8))


@pytest.mark.parametrize("frontend", ["linear", "mlp"])
def test_extract_gives_the_same_logits_as_forward(iris, frontend):
    sc = SuperCircuit(SPACE, iris.input_shape, iris.n_classes, frontend=frontend, seed=3).eval()
    x = iris.val.tensors[0]
    for arch in ARCHS:
        model = sc.extract(arch)
        assert torch.equal(model(x), sc(x, arch)), arch
        # a copy: changing the extracted model leaves the SuperCircuit alone
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        assert not torch.equal(model(x), sc(x, arch))


def test_extract_matches_forward_with_cnn_frontend():
    data = _images()
    space = SearchSpace(embeddings=("angle-y", "amplitude"), qubits=(2, 3), layers=(1, 2))
    sc = SuperCircuit(space, data.input_shape, data.n_classes, frontend="cnn", seed=1).eval()
    x = data.train.tensors[0][:16]
    for arch in (Architecture("amplitude", 3, 2, "ry", "ring"), Architecture("angle-y", 2, 1, "rx-ry", "none")):
        assert torch.equal(sc.extract(arch)(x), sc(x, arch))


def test_forward_uses_the_documented_slices(iris):
    """Independent recomputation from the shared tensors: prefix rows/columns and the circuit's w order."""
    sc = SuperCircuit(SPACE, iris.input_shape, iris.n_classes, frontend="linear", seed=5).eval()
    arch = Architecture("angle-y", 3, 2, "ry-rz", "ring")
    sd = sc.state_dict()
    W, b = sd["classical.frontend__1__weight"], sd["classical.frontend__1__bias"]
    H, hb = sd["classical.head__weight"], sd["classical.head__bias"]
    Q = sd["quantum.ry_rz"]
    assert W.shape[0] == 2**4  # amplitude on 4 qubits is the widest front-end output
    assert Q.shape == (3, 4, 2) and H.shape == (3, 4)
    x = iris.val.tensors[0]
    angles = math.pi * torch.tanh(x @ W[:3].T + b[:3])
    w = torch.stack([Q[layer, q, r] for layer in range(2) for q in range(3) for r in range(2)])
    z = SimulatorPlan(arch).expectations(angles, w)
    ref = z @ H[:, :3].T + hb
    assert torch.allclose(sc(x, arch), ref, atol=1e-6)


def test_a_step_for_one_architecture_moves_the_overlapping_slice_of_another(iris):
    sc = SuperCircuit(SPACE, iris.input_shape, iris.n_classes, seed=0).train()
    big = Architecture("angle-y", 4, 2, "ry", "linear")
    small = Architecture("iqp", 2, 1, "ry", "none")
    other_rotation = Architecture("iqp", 2, 1, "ry-rz", "none")
    before_small = sc.quantum_slice(small).detach().clone()
    before_other = sc.quantum_slice(other_rotation).detach().clone()
    before_small_model = sc.extract(small).state_dict()
    x, y = iris.train.tensors
    opt = torch.optim.SGD(sc.parameters(), lr=0.5)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(sc(x, big), y).backward()
    opt.step()
    after_small = sc.quantum_slice(small).detach()
    assert not torch.equal(after_small, before_small)
    # small's slice *is* the leading block of big's: same numbers after the step
    assert torch.equal(after_small, sc.quantum_slice(big).detach().reshape(2, 4)[:1, :2].reshape(-1))
    # another rotation choice has its own tensor, untouched by SGD
    assert torch.equal(sc.quantum_slice(other_rotation).detach(), before_other)
    after_small_model = sc.extract(small).state_dict()
    for name in ("frontend.1.weight", "head.weight"):
        assert not torch.equal(after_small_model[name], before_small_model[name])


def test_architecture_outside_the_space_is_refused(iris):
    sc = SuperCircuit(SPACE, iris.input_shape, iris.n_classes)
    with pytest.raises(SpaceError, match="n_qubits=5"):
        sc.extract(Architecture("angle-y", 5, 1, "ry", "none"))


def test_save_load_round_trip(iris, tmp_path):
    sc = SuperCircuit(SPACE, iris.input_shape, iris.n_classes, frontend="mlp", seed=2)
    train_supercircuit(sc, iris, SuperTrainConfig(epochs=1, sampling="uniform", seed=1))
    path = sc.save(tmp_path / "sc.pt")
    back = SuperCircuit.load(path).eval()
    assert back.fingerprint() == sc.fingerprint()
    x = iris.val.tensors[0]
    for arch in ARCHS[:2]:
        assert torch.equal(back(x, arch), sc.eval()(x, arch))
    with pytest.raises(FileNotFoundError, match="no SuperCircuit file"):
        SuperCircuit.load(tmp_path / "missing.pt")


def test_fingerprint_changes_with_weights(iris):
    a = SuperCircuit(SPACE, iris.input_shape, iris.n_classes, seed=0)
    assert a.fingerprint() == SuperCircuit(SPACE, iris.input_shape, iris.n_classes, seed=0).fingerprint()
    assert a.fingerprint() != SuperCircuit(SPACE, iris.input_shape, iris.n_classes, seed=1).fingerprint()
    before = a.fingerprint()
    with torch.no_grad():
        a.quantum["ry"][0, 0, 0] += 1e-3
    assert a.fingerprint() != before


@pytest.mark.parametrize("sampling", ["sandwich", "restricted"])
def test_interrupted_training_resumes_to_the_uninterrupted_weights(iris, tmp_path, sampling):
    cfg = SuperTrainConfig(epochs=3, batch_size=32, sampling=sampling, restricted_genes=2, seed=7)
    straight = SuperCircuit(SPACE, iris.input_shape, iris.n_classes, seed=4)
    full = train_supercircuit(straight, iris, cfg)

    ck = tmp_path / "train.ckpt"
    resumed = SuperCircuit(SPACE, iris.input_shape, iris.n_classes, seed=4)
    first = train_supercircuit(resumed, iris, SuperTrainConfig(**{**cfg.__dict__, "epochs": 1}), checkpoint=ck)
    assert first.epochs_run == 1 and ck.is_file()
    fresh = SuperCircuit(SPACE, iris.input_shape, iris.n_classes, seed=4)  # a new process: nothing in memory
    rest = train_supercircuit(fresh, iris, cfg, checkpoint=ck)
    assert rest.resumed_from_epoch == 1 and rest.epochs_run == 2
    assert fresh.fingerprint() == straight.fingerprint() == full.fingerprint
    assert [h["loss"] for h in rest.history] == [h["loss"] for h in full.history]
    assert [h["train_acc"] for h in rest.history] == [h["train_acc"] for h in full.history]
    assert all(0.0 <= h["train_acc"] <= 1.0 for h in full.history)
    # training helped: lower training loss than the initial shared weights, over fixed architectures (the epoch
    # losses themselves average over randomly drawn architectures and are too noisy to compare in 3 epochs)
    untrained = SuperCircuit(SPACE, iris.input_shape, iris.n_classes, seed=4)
    probe = [SPACE.largest(), SPACE.smallest(), *(SPACE.sample(np.random.default_rng(k)) for k in range(4))]
    assert _mean_train_loss(straight, probe, iris) < _mean_train_loss(untrained, probe, iris)


def _mean_train_loss(sc: SuperCircuit, archs, splits) -> float:
    x, y = splits.train.tensors
    with torch.no_grad():
        losses = [float(torch.nn.functional.cross_entropy(sc.extract(a).eval()(x), y)) for a in archs]
    return sum(losses) / len(losses)


def test_checkpoint_of_another_training_is_refused(iris, tmp_path):
    ck = tmp_path / "train.ckpt"
    sc = SuperCircuit(SPACE, iris.input_shape, iris.n_classes, seed=0)
    train_supercircuit(sc, iris, SuperTrainConfig(epochs=1, sampling="uniform"), checkpoint=ck)
    other = SuperCircuit(SPACE, iris.input_shape, iris.n_classes, seed=0)
    with pytest.raises(ValueError, match="different training"):
        train_supercircuit(other, iris, SuperTrainConfig(epochs=2, sampling="uniform", lr=0.1), checkpoint=ck)


def _changed_genes(space: SearchSpace, a: Architecture, b: Architecture) -> int:
    return sum(x != y for x, y in zip(space.encode(a), space.encode(b), strict=True))


@pytest.mark.parametrize("k", [1, 2])
def test_restricted_sampling_changes_at_most_k_genes(k):
    sampler = ArchSampler(SPACE, "restricted", k, np.random.default_rng(0))
    archs = [sampler.step()[0] for _ in range(300)]
    changes = [_changed_genes(SPACE, a, b) for a, b in itertools.pairwise(archs)]
    assert max(changes) == k  # reaches k, never more
    assert len({a.canonical() for a in archs}) > 20  # still explores
    for a in archs:
        SPACE.check(a)


def test_uniform_and_sandwich_sampling_cover_the_space():
    uniform = ArchSampler(SPACE, "uniform", 1, np.random.default_rng(0))
    drawn = [uniform.step() for _ in range(400)]
    assert all(len(d) == 1 for d in drawn)
    flat = [d[0] for d in drawn]
    for i, gene in enumerate(GENES):
        lo, hi = SPACE.bounds
        assert {SPACE.encode(a)[i] for a in flat} == set(range(lo[i], hi[i] + 1)), gene
    sandwich = ArchSampler(SPACE, "sandwich", 1, np.random.default_rng(0))
    corners: list = []
    for _ in range(200):
        big, small, rand = sandwich.step()
        assert (big.n_qubits, big.n_layers) == (SPACE.qubits[1], SPACE.layers[1])
        assert (small.n_qubits, small.n_layers) == (SPACE.qubits[0], SPACE.layers[0])
        SPACE.check(rand)
        corners += [big, small]
    # categorical genes of the corners are drawn, not fixed: every option shows up, none dominates
    for gene, options in (
        ("embedding", SPACE.embeddings),
        ("rotation", SPACE.rotations),
        ("entangler", SPACE.entanglers),
    ):
        counts = {o: sum(getattr(c, gene) == o for c in corners) for o in options}
        assert min(counts.values()) > 0.5 * len(corners) / len(options), (gene, counts)


def test_sampler_state_round_trips():
    a = ArchSampler(SPACE, "restricted", 1, np.random.default_rng(3))
    for _ in range(5):
        a.step()
    b = ArchSampler(SPACE, "restricted", 1, np.random.default_rng(99))
    b.load_state(a.state())
    assert [a.step() for _ in range(10)] == [b.step() for _ in range(10)]


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="unknown sampling 'greedy'"):
        SuperTrainConfig(sampling="greedy")
    with pytest.raises(ValueError, match="restricted_genes"):
        SuperTrainConfig(restricted_genes=0)


def test_a_training_checkpoint_loads_as_a_supercircuit(iris, tmp_path):
    ck = tmp_path / "train.ckpt"
    sc = SuperCircuit(SPACE, iris.input_shape, iris.n_classes, seed=0)
    train_supercircuit(sc, iris, SuperTrainConfig(epochs=1, sampling="uniform"), checkpoint=ck)
    assert SuperCircuit.load(ck).fingerprint() == sc.fingerprint()


def test_cached_templates_stay_bounded(iris):
    sc = SuperCircuit(SPACE, iris.input_shape, iris.n_classes, max_cached=3).eval()
    x = iris.val.tensors[0][:4]
    first = sc(x, ARCHS[0])
    for arch in ARCHS:
        sc(x, arch)
        assert len(sc._templates) <= 3
    assert torch.equal(sc(x, ARCHS[0]), first)  # rebuilt after eviction, same numbers


def test_in_place_distillation_teaches_the_small_subnets_the_largest_s_predictions(iris):
    """``distill``: in a sandwich step the largest subnet learns from the labels and the others from its detached
    softmax. Checked against a hand-computed step: the shared tensors' gradient equals that of CE(largest, labels)
    plus the soft cross-entropy of the other two against the largest's probabilities."""
    space = SearchSpace(qubits=(2, 3), layers=(1, 2))
    cfg = SuperTrainConfig(epochs=1, batch_size=len(iris.train), sampling="sandwich", seed=3, distill=True, lr=0.1)
    with pytest.raises(ValueError, match="sandwich"):
        SuperTrainConfig(sampling="uniform", distill=True)
    trained = SuperCircuit(space, iris.input_shape, iris.n_classes, seed=4)
    manual = SuperCircuit(space, iris.input_shape, iris.n_classes, seed=4)
    sampler = ArchSampler(space, "sandwich", 1, np.random.default_rng(3))
    archs = sampler.step()  # the one step's draws (the generator is seeded alike)
    X, y = iris.train.tensors
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(3))
    xb, yb = X[perm], y[perm]
    opt = torch.optim.Adam(manual.parameters(), lr=0.1)
    opt.zero_grad()
    big = manual(xb, archs[0])
    teacher = torch.softmax(big.detach(), dim=1)
    loss = torch.nn.functional.cross_entropy(big, yb)
    label_losses = [float(loss.detach())]
    for arch in archs[1:]:
        logits = manual(xb, arch)
        label_losses.append(float(torch.nn.functional.cross_entropy(logits, yb).detach()))
        loss = loss - (teacher * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss.backward()
    opt.step()
    result = train_supercircuit(trained, iris, cfg)
    for (name, a), b in zip(trained.state_dict().items(), manual.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    plain = SuperCircuit(space, iris.input_shape, iris.n_classes, seed=4)
    train_supercircuit(plain, iris, SuperTrainConfig(**{**cfg.__dict__, "distill": False}))
    assert plain.fingerprint() != trained.fingerprint()  # the soft targets changed the step
    # the reported loss is every subnet's cross-entropy against the labels, distilled or not
    assert result.history[0]["loss"] == pytest.approx(sum(label_losses) / 3, rel=1e-5)
