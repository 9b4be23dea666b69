"""Config: defaults are valid, every bad value is named in the error with its fix, TOML errors name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qnas_hw.config import ConfigError, config_from_dict, default_config, load_config, with_overrides
from qnas_hw.model.space import SearchSpace

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "iris_search.toml"


def test_default_is_offline_digits4_on_fake_kolkata() -> None:
    cfg = default_config()
    assert cfg.data.dataset == "digits4"  # bundled with scikit-learn: no download
    assert cfg.hardware.backend == "fake_kolkata"
    assert cfg.model.frontend == "linear"
    space = cfg.search_space()
    assert isinstance(space, SearchSpace)
    # the default space must contain candidates that need cutting under the budget, or subcircuits is constant
    assert space.qubits[1] > cfg.hardware.qubit_budget >= space.qubits[0]
    # the resolved dump round-trips through JSON and validates back to the same config
    dumped = cfg.resolved()
    again = config_from_dict(json.loads(json.dumps(dumped)))
    assert again == cfg


def test_example_file_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.data.dataset == "iris"
    assert cfg.search.objectives == ["val_error", "runtime_s", "subcircuits"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"data": {"dataset": "cifar10"}}, ["data.dataset", "'cifar10'", "'iris'"]),
        ({"data": {"val_fraction": 1.5}}, ["data.val_fraction", "1.5", "between 0 and 1"]),
        ({"model": {"frontend": "resnet"}}, ["model.frontend", "'resnet'", "'linear'"]),
        ({"space": {"qubits": [6, 3]}}, ["space", "(6, 3)", "lower bound must be <= upper"]),
        ({"space": {"qubits": [2, 40]}}, ["space", "40", "2..20"]),
        ({"space": {"embeddings": ["angle-w"]}}, ["space", "'angle-w'", "'angle-y'"]),
        ({"supercircuit": {"sampling": "random"}}, ["supercircuit.sampling", "'random'", "sandwich"]),
        ({"supercircuit": {"lr": 0}}, ["supercircuit.lr", "lr=0", "positive"]),
        ({"search": {"pop_size": 2}}, ["search.pop_size", "pop_size=2", "at least 4"]),
        ({"search": {"generations": 0}}, ["search.generations", "generations=0"]),
        ({"search": {"objectives": ["val_error", "fidelity"]}}, ["search.objectives", "'fidelity'", "'runtime_s'"]),
        ({"search": {"constraints": {"max_sampling_overhead": 0.5}}}, ["max_sampling_overhead=0.5", ">= 1"]),
        (
            {"hardware": {"backend": "fake_kolkat"}},
            ["hardware.backend", "'fake_kolkat'", "did you mean 'fake_kolkata'", "`qnas-hw devices --all`"],
        ),
        ({"hardware": {"qubit_budget": 1}}, ["hardware.qubit_budget", "qubit_budget=1", "2..20"]),
        ({"hardware": {"optimization_level": 5}}, ["optimization_level=5", "0, 1, 2 or 3"]),
        ({"hw_eval": {"which": "best"}}, ["hw_eval.which", "'best'"]),
        ({"hw_eval": {"max_cost_usd": -1}}, ["max_cost_usd=-1", ">= 0"]),
        (
            {"search": {"pop_sise": 12}},
            ["search.pop_sise", "unknown key 'pop_sise'", "allowed here: accuracy, constraints,"],
        ),
        ({"hardwere": {}}, ["hardwere", "unknown key", "allowed here: compute, data, hardware, hw_eval,"]),
        ({"search": {"constraints": {"max_qbits": 3}}}, ["allowed here: max_qubits, max_sampling_overhead"]),
        ({"seed": -3}, ["seed", "seed=-3"]),
        ({"search": {"constraints": {"max_qubits": 2}}, "space": {"qubits": [3, 5]}}, ["max_qubits=2", "space.qubits"]),
        ({"data": {"dataset": "iris"}, "model": {"frontend": "cnn"}}, ["cnn", "image data"]),
    ],
)
def test_bad_values_are_named(data: dict, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    msg = str(info.value)
    for fragment in expected:
        assert fragment in msg, f"{fragment!r} missing from:\n{msg}"


def test_all_errors_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"search": {"pop_size": 1, "generations": -1}, "hardware": {"shots": 0}})
    msg = str(info.value)
    assert "pop_size=1" in msg and "generations=-1" in msg and "shots=0" in msg


def test_real_qpu_names_accepted_without_contacting_cloud() -> None:
    cfg = config_from_dict({"hardware": {"backend": "ibm:ibm_brisbane"}})
    assert cfg.hardware.backend == "ibm:ibm_brisbane"
    with pytest.raises(ConfigError, match="'ibm:'"):
        config_from_dict({"hardware": {"backend": "ibm:"}})


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
        load_config(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text("[search\npop_size = 3\n")
    with pytest.raises(ConfigError, match=r"broken\.toml is not valid TOML"):
        load_config(broken)
    bad = tmp_path / "bad.toml"
    bad.write_text("[search]\npop_size = 3\n[hardware]\nqubit_budget = 99\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    msg = str(info.value)
    assert "bad.toml" in msg and "search.pop_size" in msg and "hardware.qubit_budget" in msg


def test_partial_file_keeps_defaults(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('seed = 7\n[search]\npop_size = 6\n[space]\nqubits = [2, 4]\nentanglers = ["ring"]\n')
    cfg = load_config(f)
    # every key the file leaves out is the default job's (what `qnas-hw search` runs with no config) ...
    default = default_config()
    assert cfg.seed == 7 and cfg.search.pop_size == 6 and cfg.search.generations == default.search.generations
    assert (cfg.data.dataset, cfg.hardware.backend) == (default.data.dataset, default.hardware.backend)
    # ... except the qubit budget, which follows the device: fake_kolkata's 27 qubits, capped by the space's 4
    assert cfg.hardware.qubit_budget == 4 and cfg.qubit_budget_follows_device()
    assert cfg.search_space().entanglers == ("ring",)
    assert cfg.search_space().qubits == (2, 4)


def test_overrides_are_validated() -> None:
    cfg = with_overrides(default_config(), **{"seed": 5, "hardware.qubit_budget": 3, "hardware.backend": None})
    assert cfg.seed == 5 and cfg.hardware.qubit_budget == 3 and cfg.hardware.backend == "fake_kolkata"
    with pytest.raises(ConfigError, match="qubit_budget=0"):
        with_overrides(cfg, **{"hardware.qubit_budget": 0})
    with pytest.raises(ConfigError, match=r"unknown config key 'hardware\.budget'"):
        with_overrides(cfg, **{"hardware.budget": 3})


def test_lr_defaults_to_the_frontend_value_and_is_stored_resolved() -> None:
    from qnas_hw.config import DEFAULT_LR

    iris = default_config()
    assert iris.supercircuit.lr == DEFAULT_LR["linear"] == 5e-2
    cnn = config_from_dict({"data": {"dataset": "mnist"}, "model": {"frontend": "cnn"}})
    assert cnn.supercircuit.lr == DEFAULT_LR["cnn"] == 3e-3
    assert cnn.resolved()["supercircuit"]["lr"] == 3e-3  # the study stores the number used
    # Overriding the front-end re-derives a defaulted lr; an explicit lr is kept.
    switched = with_overrides(iris, **{"data.dataset": "mnist", "model.frontend": "cnn"})
    assert switched.supercircuit.lr == 3e-3
    explicit = with_overrides(switched, **{"supercircuit.lr": 1e-2})
    assert with_overrides(explicit, **{"model.frontend": "mlp"}).supercircuit.lr == 1e-2
    # A stored (resolved) config reloads with the same number, whatever the front-end default is.
    assert config_from_dict(cnn.resolved()).supercircuit.lr == 3e-3


# ------------------------------------------------------- the qubit budget follows the device unless it is set
def test_a_config_without_a_budget_gets_the_devices_qubits(tmp_path: Path) -> None:
    f = tmp_path / "belem.toml"
    f.write_text('[hardware]\nbackend = "fake_belem"\n')
    cfg = load_config(f)
    assert cfg.hardware.qubit_budget == 5  # fake_belem has 5 qubits, the default job's space reaches 5
    assert cfg.qubit_budget_reason() == "follows fake_belem's 5 qubits"
    assert cfg.resolved()["hardware"]["qubit_budget"] == 5  # the study stores the number used
    # capped by the widest candidate of the space
    f.write_text('[hardware]\nbackend = "fake_belem"\n[space]\nqubits = [2, 3]\n')
    assert load_config(f).hardware.qubit_budget == 3
    # and re-derived when an override changes the backend
    kolkata = with_overrides(load_config(f), **{"hardware.backend": "fake_kolkata", "space.qubits": [2, 6]})
    assert kolkata.hardware.qubit_budget == 6
    assert kolkata.qubit_budget_reason() == "follows fake_kolkata's 27 qubits, capped by the widest candidate's 6"


def test_an_explicit_budget_is_kept(tmp_path: Path) -> None:
    f = tmp_path / "belem3.toml"
    f.write_text('[hardware]\nbackend = "fake_belem"\nqubit_budget = 3\n')
    cfg = load_config(f)
    assert cfg.hardware.qubit_budget == 3 and cfg.qubit_budget_reason() == "set by hardware.qubit_budget"
    assert with_overrides(cfg, **{"hardware.backend": "fake_kolkata"}).hardware.qubit_budget == 3
    flag = with_overrides(default_config(), **{"hardware.backend": "fake_belem", "hardware.qubit_budget": 4})
    assert flag.hardware.qubit_budget == 4
    assert config_from_dict(flag.resolved()).hardware.qubit_budget == 4  # a stored study keeps its budget


def test_the_default_job_keeps_its_budget_of_2_on_its_own_backend() -> None:
    default = default_config()
    assert default.hardware.qubit_budget == 2
    assert default.qubit_budget_reason() == "the default job's, for fake_kolkata"
    # `qnas-hw search` passes every flag, most of them None; other settings leave the budget alone
    same = with_overrides(default, **{"seed": 3, "hardware.backend": None, "hardware.qubit_budget": None})
    assert same.hardware.qubit_budget == 2 and same.qubit_budget_reason() == default.qubit_budget_reason()
    assert with_overrides(same, **{"hardware.backend": "fake_kolkata"}).hardware.qubit_budget == 2
    # `--backend fake_belem` on the default job: the budget follows the new device
    belem = with_overrides(default, **{"hardware.backend": "fake_belem"})
    assert belem.hardware.qubit_budget == 5 and belem.qubit_budget_reason() == "follows fake_belem's 5 qubits"


def test_a_study_stored_before_the_simulator_settings_keeps_the_aer_path() -> None:
    """A study scored before ``noisy_simulator``/``idle_noise`` existed resumes with what it was scored with."""
    from qnas_hw.config import stored_config

    old = default_config().resolved()
    for key in ("noisy_simulator", "idle_noise"):
        del old["search"][key]
    cfg = stored_config(old, source="an old study")
    assert (cfg.search.noisy_simulator, cfg.search.idle_noise) == ("aer", False)
    new = stored_config(default_config().resolved(), source="a new study")
    assert (new.search.noisy_simulator, new.search.idle_noise) == ("trajectories", True)


def test_a_bad_override_is_refused_before_any_device_is_asked_for_its_size(tmp_path: Path) -> None:
    """A file that leaves ``qubit_budget`` out gets the device's (building the backend: seconds); a bad
    command-line value must be refused before that, and a good one must still give the device's budget."""
    from qnas_hw.cli.common import _resolve_config
    from qnas_hw.config import device_qubits

    config = tmp_path / "c.toml"
    config.write_text('[hardware]\nbackend = "fake_quito"\n')
    unset_flags = {"hardware.qubit_budget": None, "hardware.backend": None}  # what the CLI passes for flags left out
    for overrides in (
        {"search.generations": 0},
        {"search.shots": 0, **unset_flags},
        {"hardware.backend": "fake_quito", "seed": -1},
    ):
        device_qubits.cache_clear()
        with pytest.raises(ConfigError, match="command-line overrides"):
            _resolve_config(config, overrides=overrides)
        assert device_qubits.cache_info().misses == 0, overrides  # no backend was built to find the error
    device_qubits.cache_clear()
    cfg = _resolve_config(config, overrides={"search.generations": 3})
    assert cfg.search.generations == 3 and cfg.hardware.qubit_budget == 5  # fake_quito's 5 qubits
    assert cfg.qubit_budget_is_default() and device_qubits.cache_info().misses == 1
    kolkata = _resolve_config(config, overrides={"hardware.backend": "fake_kolkata"})
    assert kolkata.hardware.qubit_budget == kolkata.space.qubits[1]  # capped by the widest candidate
