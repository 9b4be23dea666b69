"""The val_error proxies (inherited, scratch-K, halving), their training rungs, and the training-free screens.

References: the package's one training loop (``train_epoch``) for the staged trainer; a fresh ``scratch-K``
objective for every halving survivor's stored value; qiskit's ``Statevector`` and the torch simulator for the
screens' ideal sides and fidelities.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from qnas_hw.config import DEFAULT_PROXY, ConfigError, config_from_dict, scratch_epochs
from qnas_hw.data import load_dataset
from qnas_hw.model.hqnn import HQNN
from qnas_hw.model.space import Architecture, SearchSpace
from qnas_hw.model.supercircuit import SuperCircuit
from qnas_hw.model.training import StagedTrainer, TrainingError, train_epoch
from qnas_hw.search.evaluation import ProxySpec, ValidationErrorObjective
from qnas_hw.search.nsga import run_search
from qnas_hw.search.problem import Constraints
from qnas_hw.search.screens import _ideal_z, representational_capacity

SMALL = {
    "seed": 2,
    "data": {"dataset": "digits4", "val_fraction": 0.3},
    "space": {"qubits": [2, 3], "layers": [1, 2], "embeddings": ["angle-y", "iqp"]},
    "supercircuit": {"epochs": 1},
    "search": {"pop_size": 6, "generations": 2, "objectives": ["val_error", "runtime_s"], "accuracy": "ideal"},
    "hardware": {"backend": "fake_quito", "qubit_budget": 5},
    "compute": {"threads": 1},
}


def _config(**search: object) -> object:
    return config_from_dict({**SMALL, "search": {**SMALL["search"], **search}})


@pytest.fixture(scope="module")
def splits() -> object:
    return load_dataset("digits4", val_fraction=0.3, seed=2)


# ------------------------------------------------------------------ config
def test_proxy_names_parse_and_bad_ones_are_refused_with_the_fix() -> None:
    assert scratch_epochs("scratch-1") == 1.0 and scratch_epochs("scratch-0.5") == 0.5
    assert scratch_epochs("inherited") is None
    for bad in ("scratch-0", "scratch-x", "scratch--1", "fine-tune", "halving2"):
        with pytest.raises(ConfigError, match=f"search.proxy='{bad}'") as exc:
            _config(proxy=bad)
        assert "scratch-1" in str(exc.value)  # names a valid choice
    for rungs in ([1.0], [1.0, 0.5], [0, 1], [1, 1]):
        with pytest.raises(ConfigError, match=r"search\.halving\.rungs"):
            _config(proxy="halving", halving={"rungs": rungs, "keep": 0.5})
    with pytest.raises(ConfigError, match=r"search\.halving\.keep=1\.5"):
        _config(proxy="halving", halving={"rungs": [0.5, 1], "keep": 1.5})


def test_a_screen_without_a_noise_model_is_refused_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match=r"search\.screen='cnr-repcap'.*aer_ideal"):
        config_from_dict(
            {**SMALL, "search": {**SMALL["search"], "screen": "cnr-repcap"}, "hardware": {"backend": "aer_ideal"}}
        )


def test_studies_from_before_the_proxy_key_keep_inheriting() -> None:
    from qnas_hw.config import stored_config

    old = {k: dict(v) if isinstance(v, dict) else v for k, v in SMALL.items()}
    assert stored_config(old, "test").search.proxy == "inherited"
    assert config_from_dict(SMALL).search.proxy == DEFAULT_PROXY


# ------------------------------------------------------------------ staged training
def test_staged_trainer_rungs_are_the_first_epochs_of_one_run(splits: object) -> None:
    """Stopping at 0.25 and 1 epochs then going to 2 gives the weights of two plain ``train_epoch`` passes."""
    arch = Architecture("angle-y", 3, 2, "ry-rz", "ring")
    staged = HQNN(arch, splits.input_shape, splits.n_classes, seed=5)
    reference = HQNN(arch, splits.input_shape, splits.n_classes, seed=5)
    trainer = StagedTrainer(staged, splits.train, lr=0.05, batch_size=16, seed=11)
    for rung in (0.25, 1.0, 2.0):
        trainer.advance(rung)
    X, y = splits.train.tensors
    gen = torch.Generator().manual_seed(11)
    opt = torch.optim.Adam(reference.parameters(), lr=0.05)
    for epoch in (1, 2):
        train_epoch(reference, opt, X, y, 16, gen, False, epoch)
    for (name, a), b in zip(staged.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert trainer.epochs_done == 2.0
    with pytest.raises(TrainingError, match="cannot go back"):
        trainer.advance(1.0)


def test_a_fractional_rung_trains_the_first_batches_of_an_epoch(splits: object) -> None:
    arch = Architecture("angle-y", 2, 1, "ry", "linear")
    model = HQNN(arch, splits.input_shape, splits.n_classes, seed=1)
    trainer = StagedTrainer(model, splits.train, lr=0.05, batch_size=10, seed=3)
    trainer.advance(0.25)
    assert trainer.batches_done == math.ceil(trainer.batches_per_epoch / 4)


# ------------------------------------------------------------------ objectives
def _objective(splits: object, proxy: ProxySpec) -> ValidationErrorObjective:
    sc = SuperCircuit(SearchSpace(qubits=(2, 3), layers=(1, 2)), splits.input_shape, splits.n_classes, seed=2)
    return ValidationErrorObjective(sc, splits, finetune_epochs=1, lr=0.05, batch_size=16, seed=2, proxy=proxy)


def test_scratch_proxy_trains_a_fresh_model_not_the_inherited_one(splits: object) -> None:
    arch = Architecture("iqp", 3, 2, "rx-ry", "ring")
    scratch = _objective(splits, ProxySpec("scratch", 1.0))
    inherited = _objective(splits, ProxySpec("inherited"))
    r1, r2 = scratch.evaluate(arch), scratch.evaluate(arch)
    assert r1.value == r2.value  # deterministic in (seed, architecture)
    assert r1.details["proxy"] == "scratch-1" and r1.details["epochs"] == 1.0
    assert inherited.evaluate(arch).details["proxy"] == "inherited"
    assert "proxy=scratch-1" in scratch.settings_key() and "proxy=" not in inherited.settings_key()


def test_halving_keeps_the_best_fraction_and_their_values_equal_scratch_at_the_top_rung(splits: object) -> None:
    archs = [
        Architecture("angle-y", 2, 1, "ry", "none"),
        Architecture("angle-y", 3, 2, "ry-rz", "ring"),
        Architecture("iqp", 2, 2, "rx-ry", "linear"),
        Architecture("iqp", 3, 1, "ry", "full"),
        Architecture("angle-y", 3, 1, "rx-ry-rz", "sparse"),
        Architecture("iqp", 3, 2, "ry-rz", "none"),
    ]
    halving = _objective(splits, ProxySpec("halving", 1.0, (0.25, 1.0), 0.5))
    results = halving.evaluate_batch(archs)
    low = _objective(splits, ProxySpec("scratch", 0.25))
    top = _objective(splits, ProxySpec("scratch", 1.0))
    rung1 = {a.key(): low.evaluate(a).value for a in archs}
    survivors = sorted(archs, key=lambda a: (rung1[a.key()], a.key()))[:3]
    for arch, result in zip(archs, results, strict=True):
        rung = result.details["rung"]
        assert rung["history"][0]["val_error"] == rung1[arch.key()]
        if arch in survivors:
            assert rung["level"] == 2 and result.value == top.evaluate(arch).value
        else:
            assert rung["level"] == 1 and result.value == rung1[arch.key()]
    constraints = Constraints(cut_plan=False, top_rung=True)
    g = [constraints.values(a, {"rung": r.details["rung"]})[-1] for a, r in zip(archs, results, strict=True)]
    assert sorted(g) == [0.0, 0.0, 0.0, 0.75, 0.75, 0.75]


def test_a_halving_search_puts_only_top_rung_candidates_on_the_front(tmp_path: Path) -> None:
    from qnas_hw.reports.report import write_report

    cfg = _config(proxy="halving", halving={"rungs": [0.25, 1.0], "keep": 0.5})
    study = run_search(cfg, tmp_path / "run", progress=False)
    cands = study.candidates()
    levels = [c.details["val_error"]["rung"]["level"] for c in cands]
    assert levels.count(2) == len(cands) // 2  # two generations of 6 new candidates, half kept each time
    for c in cands:
        assert c.feasible == (c.details["val_error"]["rung"]["level"] == 2)
    report = write_report(study, tmp_path / "report")
    import json

    data = json.loads(report.report_json.read_text())
    assert data["proxy"] == "halving"
    assert data["supercircuit"] == {"trained": False, "epochs": 0, "final_loss": None, "chance_loss": math.log(4)}
    assert all(c["rung"]["level"] == 2 for c in data["front"])
    for c in data["candidates"]:
        e, n = c["objectives"]["val_error"], c["details"]["val_error"]["n_scored"]
        assert c["val_error_se"] == pytest.approx(math.sqrt(e * (1 - e) / n))
        assert c["details"]["val_error"]["val_error_se"] == c["val_error_se"]  # stored beside the score
    assert "stopped at a lower halving rung" in json.dumps(data["infeasible_reasons"])


def test_inherited_report_states_the_supercircuit_loss_against_chance(tmp_path: Path) -> None:
    import json

    from qnas_hw.reports.report import write_report

    study = run_search(_config(proxy="inherited", generations=1), tmp_path / "run", progress=False)
    data = json.loads(write_report(study, tmp_path / "report").report_json.read_text())
    sc = data["supercircuit"]
    assert sc["trained"] is True and sc["epochs"] == 1 and sc["chance_loss"] == pytest.approx(math.log(4))
    assert 0 < sc["final_loss"] < 3
    assert "against chance" in data["proxy_description"]


# ------------------------------------------------------------------ screens
def test_cnr_ideal_side_agrees_with_the_torch_simulator() -> None:
    """The CNR's ideal <Z> (qiskit Statevector) equals the package's own simulator on Clifford angles."""
    arch = Architecture("angle-y", 3, 2, "ry-rz", "ring")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (4, arch.n_qubits)) * (math.pi / 2)
    w = rng.integers(0, 4, (4, arch.n_weights)) * (math.pi / 2)
    z = _ideal_z(arch, x, w)
    from qnas_hw.model.simulator import QuantumLayer

    layer = QuantumLayer(arch, dtype=torch.float64)
    for r in range(4):
        want = layer.plan.expectations(torch.as_tensor(x[r : r + 1]), torch.as_tensor(w[r]))
        np.testing.assert_allclose(z[r], want.numpy()[0], atol=1e-9)


def test_cnr_drops_with_depth_under_the_devices_noise() -> None:
    from qnas_hw.search.building import make_hardware, make_scorer
    from qnas_hw.search.screens import clifford_noise_resilience

    cfg = _config(accuracy="noisy")
    hw = make_hardware(cfg)
    scorer = make_scorer(cfg, hw.backend, hw.transpiler, hw.planner)
    shallow = clifford_noise_resilience(scorer, Architecture("angle-y", 3, 1, "ry", "linear"))
    deep = clifford_noise_resilience(scorer, Architecture("angle-y", 3, 6, "rx-ry-rz", "full"))
    assert 0.5 < deep < shallow <= 1.0


def test_repcap_matches_fidelities_computed_by_qiskit(splits: object) -> None:
    """RepCap from the torch states equals 1 - ||F - R||^2 / N^2 with F from qiskit's Statevector."""
    from qiskit.quantum_info import Statevector

    from qnas_hw.data import stratified_subset
    from qnas_hw.model.circuits import bind, build_circuit
    from qnas_hw.search.scoring import derive_run_seed

    arch = Architecture("angle-y", 2, 1, "ry", "linear")
    got = representational_capacity(arch, splits, "linear", per_class=2, draws=2, seed=4)
    X, y = splits.train.tensors
    idx = torch.as_tensor(stratified_subset(y.numpy(), 8, 4))
    model = HQNN(arch, splits.input_shape, splits.n_classes, frontend="linear", seed=4)
    feats = model.encode(X[idx]).detach().double().numpy()
    same = (y[idx].numpy()[:, None] == y[idx].numpy()[None, :]).astype(float)
    gen = torch.Generator().manual_seed(derive_run_seed(4, arch, "repcap"))
    circuit = build_circuit(arch)
    want = []
    for _ in range(2):
        w = (torch.rand(arch.n_weights, generator=gen) * (2 * math.pi)).double().numpy()
        states = [Statevector(bind(circuit, arch, f, w)).data for f in feats]
        fid = np.abs(np.conj(np.array(states)) @ np.array(states).T) ** 2
        want.append(1 - np.sum((fid - same) ** 2) / fid.size)
    assert got == pytest.approx(float(np.mean(want)), abs=1e-5)


def _noisy_objectives(cfg: object, hw: object) -> Callable[[ProxySpec], ValidationErrorObjective]:
    """``proxy -> ValidationErrorObjective`` scoring under ``cfg``'s noise on 32 samples, each with its own scorer
    and an identically seeded SuperCircuit: objectives that differ only in their proxy."""
    from qnas_hw.search.building import load_splits, make_scorer

    data = load_splits(cfg)

    def objective(proxy: ProxySpec) -> ValidationErrorObjective:
        scorer = make_scorer(cfg, hw.backend, hw.transpiler, hw.planner)
        sc = SuperCircuit(cfg.search_space(), data.input_shape, data.n_classes, seed=2)
        return ValidationErrorObjective(
            sc, data, lr=0.05, batch_size=16, seed=2, scorer=scorer, val_samples=32, proxy=proxy
        )

    return objective


def test_an_esp_first_stage_trains_only_the_most_reliable_placements() -> None:
    """Halving with ``screen = "esp"``: the kept third are the highest-ESP placements, scored exactly as ``scratch-1``
    scores them; the rest are stored unscored at rung 0 and are infeasible."""
    from qnas_hw.search.building import make_hardware

    cfg = _config(
        accuracy="noisy",
        shots=128,
        val_samples=32,
        proxy="halving",
        halving={"rungs": [1.0], "keep": 0.34, "screen": "esp"},
    )
    hw = make_hardware(cfg)
    objective = _noisy_objectives(cfg, hw)

    archs = [
        Architecture("angle-y", 2, 1, "ry", "linear"),
        Architecture("angle-y", 3, 2, "ry-rz", "ring"),
        Architecture("iqp", 3, 2, "rx-ry-rz", "full"),
        Architecture("iqp", 2, 1, "ry", "none"),
        Architecture("angle-y", 3, 1, "rx-ry", "sparse"),
        Architecture("iqp", 3, 1, "ry-rz", "linear"),
    ]
    results = objective(ProxySpec.from_config(cfg.search)).evaluate_batch(archs)
    esp = {a.key(): hw.transpiler.transpile(a).esp for a in archs}
    kept = sorted(archs, key=lambda a: (-esp[a.key()], a.key()))[:2]
    scratch = objective(ProxySpec("scratch", 1.0))
    for arch, result in zip(archs, results, strict=True):
        if arch in kept:
            assert result.details["rung"]["level"] == 1
            assert result.value == scratch.evaluate(arch).value
        else:
            assert math.isnan(result.value) and result.details["rung"]["level"] == 0
            assert Constraints(cut_plan=False, top_rung=True).values(arch, {"rung": result.details["rung"]})[-1] == 1


def test_a_scratch_study_rewrites_a_damaged_model_family_file(tmp_path: Path) -> None:
    """No SuperCircuit is trained for scratch proxies, but its file (what hw-eval and export load) is kept: a damaged
    one is set aside and rewritten with the same fingerprint, and the resumed study goes on."""
    cfg = _config(generations=1)
    run = tmp_path / "run"
    study = run_search(cfg, run, progress=False)
    n = len(study.candidates())
    study.close()
    sc_file = run / "supercircuit.pt"
    fingerprint = SuperCircuit.load(sc_file).fingerprint()
    sc_file.write_bytes(sc_file.read_bytes()[:100])
    resumed = run_search(None, resume=run / "study.sqlite", progress=False, generations=2)
    assert len(resumed.candidates()) > n
    assert (run / "supercircuit.pt.damaged").is_file()
    assert SuperCircuit.load(sc_file).fingerprint() == fingerprint


def test_the_default_proxy_is_the_one_the_measurement_names() -> None:
    """benchmarks/results/proxy_quality.json names the default it measured; the package must use that one."""
    import json

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "proxy_quality.json"
    assert json.loads(results.read_text())["default"] == DEFAULT_PROXY


def test_halving_scores_its_lower_rungs_on_a_nested_subset_and_the_top_rung_on_all() -> None:
    """``low_rung_samples``: a candidate dropped at rung 1 carries the noisy score of its rung-1 model on the smaller
    subset (checked against the scorer run on those samples directly); a survivor's stored value is exactly
    ``scratch-1`` on all ``val_samples``, so the cheaper first rung changes who goes on, never a stored top value."""
    from qnas_hw.search.building import make_hardware

    cfg = _config(
        accuracy="noisy",
        shots=128,
        val_samples=32,
        proxy="halving",
        halving={"rungs": [0.25, 1.0], "keep": 0.5, "low_rung_samples": 12},
    )
    hw = make_hardware(cfg)
    objective = _noisy_objectives(cfg, hw)

    halving = objective(ProxySpec.from_config(cfg.search))
    assert halving.proxy.name == "halving[0.25@12,1:0.5]"
    X_low, y_low = halving.scored_split(low=True)
    X_all, _ = halving.scored_split()
    assert len(y_low) == 12 and len(X_all) == 32
    assert all(any(torch.equal(x, row) for row in X_all) for x in X_low)  # nested: the low samples are scored again
    archs = [
        Architecture("angle-y", 2, 1, "ry", "linear"),
        Architecture("iqp", 3, 2, "rx-ry-rz", "full"),
        Architecture("angle-y", 3, 1, "rx-ry", "sparse"),
        Architecture("iqp", 2, 2, "ry-rz", "none"),
    ]
    results = halving.evaluate_batch(archs)
    rung1 = objective(ProxySpec("scratch", 0.25))
    top = objective(ProxySpec("scratch", 1.0))
    levels = []
    for arch, result in zip(archs, results, strict=True):
        model, _, _ = rung1._trained(arch)
        acc, _ = rung1.scorer.score(arch, model, X_low, y_low)
        assert result.details["rung"]["history"][0]["val_error"] == pytest.approx(1.0 - acc, abs=1e-12)
        level = result.details["rung"]["level"]
        levels.append(level)
        if level == 2:
            assert result.value == top.evaluate(arch).value and result.details["n_scored"] == 32
        else:
            assert result.details["n_scored"] == 12
    assert sorted(levels) == [1, 1, 2, 2]
