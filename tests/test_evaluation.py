"""ValidationErrorObjective: order-independent, validation-only, weights kept for load_candidate."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import TensorDataset

from qnas_hw.data import load_dataset
from qnas_hw.model.space import Architecture, SearchSpace
from qnas_hw.model.supercircuit import SuperCircuit, SuperTrainConfig, train_supercircuit
from qnas_hw.model.training import evaluate_accuracy
from qnas_hw.search.evaluation import ValidationErrorObjective, derive_seed, load_candidate

SPACE = SearchSpace(qubits=(2, 4), layers=(1, 2))
ARCHS = [
    Architecture("angle-y", 4, 2, "ry-rz", "ring"),
    Architecture("amplitude", 2, 1, "ry", "none"),
    Architecture("iqp", 3, 2, "rx-ry", "linear"),
    Architecture("angle-x", 2, 2, "rx-ry-rz", "full"),
]


class PoisonedSplit:
    """A test split that fails the moment anything touches it."""

    def __getattr__(self, name):
        raise AssertionError(f"the test split was read ({name})")

    def __len__(self):
        raise AssertionError("the test split was read (len)")

    def __getitem__(self, item):
        raise AssertionError("the test split was read (getitem)")


@pytest.fixture(scope="module")
def trained():
    splits = load_dataset("iris", seed=0)
    poisoned = dataclasses.replace(splits, test=PoisonedSplit())
    sc = SuperCircuit(SPACE, splits.input_shape, splits.n_classes, seed=0)
    # random sandwich corners spread 3 steps over every category: 15 epochs (105 steps) leave the loss at ln 3
    train_supercircuit(sc, poisoned, SuperTrainConfig(epochs=40, batch_size=16, lr=0.05, sampling="sandwich", seed=0))
    return sc, poisoned


def test_values_do_not_depend_on_evaluation_order_and_test_is_never_read(trained, tmp_path):
    sc, splits = trained
    first = ValidationErrorObjective(sc, splits, finetune_epochs=2, seed=1, weights_dir=tmp_path / "a")
    second = ValidationErrorObjective(sc, splits, finetune_epochs=2, seed=1, weights_dir=tmp_path / "b")
    forward = {a: first.evaluate(a) for a in ARCHS}
    backward = {a: second.evaluate(a) for a in reversed(ARCHS)}
    # and once more interleaved with a repeat, on the first objective
    again = first.evaluate(ARCHS[2])
    for arch in ARCHS:
        assert forward[arch].value == backward[arch].value
        assert 0.0 <= forward[arch].value <= 1.0
        a = torch.load(tmp_path / "a" / f"{arch.key()}.pt", weights_only=True)
        b = torch.load(tmp_path / "b" / f"{arch.key()}.pt", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert again.value == forward[ARCHS[2]].value
    assert first.settings_key() == second.settings_key()


def test_value_is_one_minus_validation_accuracy_of_the_saved_candidate(trained, tmp_path):
    sc, splits = trained
    obj = ValidationErrorObjective(sc, splits, finetune_epochs=1, seed=0, weights_dir=tmp_path)
    arch = ARCHS[0]
    res = obj.evaluate(arch)
    model = load_candidate(sc, arch, tmp_path)
    val_acc = evaluate_accuracy(model, splits.val)
    assert res.value == pytest.approx(1.0 - val_acc) and res.details["val_acc"] == pytest.approx(val_acc)
    assert res.details["n_params"] == sum(p.numel() for p in model.parameters())
    # fine-tuning moved the weights away from the inherited ones
    inherited = sc.extract(arch).state_dict()
    assert any(not torch.equal(inherited[k], v) for k, v in model.state_dict().items())
    with pytest.raises(FileNotFoundError, match="no fine-tuned weights"):
        load_candidate(sc, ARCHS[1], tmp_path / "elsewhere")


def test_zero_finetune_scores_the_inherited_weights(trained):
    sc, splits = trained
    obj = ValidationErrorObjective(sc, splits, finetune_epochs=0)
    for arch in ARCHS[:2]:
        expected = 1.0 - evaluate_accuracy(sc.extract(arch), splits.val)
        assert obj.evaluate(arch).value == pytest.approx(expected)


def test_supercircuit_is_trained_enough_to_beat_chance(trained):
    sc, splits = trained
    obj = ValidationErrorObjective(sc, splits, finetune_epochs=0)
    best = min(obj.evaluate(a).value for a in ARCHS)
    assert best < 1.0 - 1.0 / 3.0 - 0.1  # better than guessing among 3 classes


def test_settings_key_tracks_everything_that_changes_the_value(trained):
    sc, splits = trained
    base = ValidationErrorObjective(sc, splits).settings_key()
    assert ValidationErrorObjective(sc, splits, finetune_epochs=2).settings_key() != base
    assert ValidationErrorObjective(sc, splits, lr=0.1).settings_key() != base
    assert ValidationErrorObjective(sc, splits, seed=3).settings_key() != base
    other_data = load_dataset("iris", seed=1)
    assert ValidationErrorObjective(sc, other_data).settings_key() != base
    other_sc = SuperCircuit(SPACE, splits.input_shape, splits.n_classes, seed=9)
    assert ValidationErrorObjective(other_sc, splits).settings_key() != base


def test_changed_supercircuit_is_detected(trained):
    _, splits = trained
    sc = SuperCircuit(SPACE, splits.input_shape, splits.n_classes, seed=2)
    obj = ValidationErrorObjective(sc, splits, finetune_epochs=0)
    obj.evaluate(ARCHS[1])
    with torch.no_grad():
        sc.quantum["ry"].add_(0.1)
    with pytest.raises(RuntimeError, match="weights changed"):
        obj.evaluate(ARCHS[1])


def test_derived_seed_depends_only_on_seed_and_architecture():
    a, b = ARCHS[0], ARCHS[1]
    assert derive_seed(0, a) == derive_seed(0, Architecture.parse(a.canonical()))
    assert len({derive_seed(0, a), derive_seed(1, a), derive_seed(0, b)}) == 3


def test_bad_arguments_are_refused(trained):
    sc, splits = trained
    with pytest.raises(ValueError, match="finetune_epochs"):
        ValidationErrorObjective(sc, splits, finetune_epochs=-1)
    x, y = splits.val.tensors
    empty_val = dataclasses.replace(splits, val=TensorDataset(x[:0], y[:0]))
    with pytest.raises(ValueError, match="empty validation split"):
        ValidationErrorObjective(sc, empty_val)
