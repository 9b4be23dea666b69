"""``compute.engine``: a search on Ray tasks gives the local search's study, and a bad engine setting is refused early.

The equality tests run the same tiny search twice, once evaluated in this
process and once as Ray tasks on a local 2-CPU Ray instance, and compare the
studies row for row: the same candidates with bit-identical objective values,
the same details (measured clock times aside), generations, fronts and
hypervolumes, and the same fine-tuned weights.  The refusals must come before
a study exists or anything trains.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from configs import device_search_config
from typer.testing import CliRunner

from qnas_hw.cli import app
from qnas_hw.config import ConfigError, RunConfig, config_from_dict, with_overrides
from qnas_hw.jobs import JobLedger
from qnas_hw.search.engine import EngineError, open_engine
from qnas_hw.search.nsga import run_search
from qnas_hw.search.study import Study

#: measured clock times inside the details: never equal between two runs
_CLOCK_KEYS = frozenset({"transpile_seconds", "plan_seconds"})


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _CLOCK_KEYS}
    return value


def _snapshot(study: Study) -> dict[str, Any]:
    """Everything a search decides: candidates (values, details, generation, feasibility, row order) and generations.

    ``repr`` of the floats compares them bit for bit (and NaN equal to NaN).
    """
    return {
        "candidates": [
            (c.arch.canonical(), repr(c.objectives), repr(_stable(c.details)), c.generation, c.feasible)
            for c in study.candidates()
        ],
        "generations": [(g.index, g.population, g.front, repr(g.hypervolume)) for g in study.generations()],
    }


def _tiny(tiny_search_toml: str, **search: Any) -> RunConfig:
    data = tomllib.loads(tiny_search_toml)
    data["search"].update(search)
    return config_from_dict(data)


def _weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: torch.load(p, weights_only=True) for p in sorted((out / "weights").glob("*.pt"))}


@pytest.fixture(scope="module")
def ray_instance() -> Any:
    """A local Ray instance with 2 CPUs (so 2 workers at a time, one CPU per task), for this module's tests."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'qnas-hw[ray]' to run these tests")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------ refusals
def test_an_unknown_engine_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"compute\.engine 'dask' is not supported; use one of 'local', 'ray'"):
        config_from_dict({"compute": {"engine": "dask"}})
    with pytest.raises(ConfigError, match=r"compute\.address 'http://head' is not a Ray address"):
        config_from_dict({"compute": {"engine": "ray", "address": "http://head"}})
    with pytest.raises(ConfigError, match=r"compute\.num_cpus=0\.0 must be a number > 0"):
        config_from_dict({"compute": {"num_cpus": 0}})


def test_cli_refuses_an_unknown_engine_before_a_study_exists(tmp_path: Path, tiny_search_toml: str) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(tiny_search_toml)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", "-c", str(cfg), "-o", str(out), "--engine", "dask", "--no-progress"])
    assert result.exit_code == 1
    assert "compute.engine 'dask' is not supported" in result.output
    assert not out.exists()


def test_engine_ray_without_ray_names_the_extra(
    tmp_path: Path, tiny_search_toml: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``import ray`` fails as it does where Ray is not installed; no study is created, nothing trains."""
    monkeypatch.setitem(sys.modules, "ray", None)
    config = _tiny(tiny_search_toml)
    with pytest.raises(EngineError, match=r"pip install 'qnas-hw\[ray\]'"):
        run_search(config, tmp_path / "run", progress=False, compute_overrides={"compute.engine": "ray"})
    assert not (tmp_path / "run").exists()


def test_an_unreachable_address_fails_fast_naming_it(tmp_path: Path, tiny_search_toml: str) -> None:
    """The real CLI in a fresh process (not connected to any Ray instance): a closed port is refused in seconds."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'qnas-hw[ray]' to run this test")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(tiny_search_toml)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "qnas_hw.cli", "search", "-c", str(cfg), "-o", str(out), "--no-progress"]
    cmd += ["--engine", "ray", "--address", "ray://127.0.0.1:1"]
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.monotonic() - t0
    assert done.returncode == 1, done.stderr[-2000:]
    assert "compute.address='ray://127.0.0.1:1' is unreachable" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()  # refused before the study (and before any training)
    assert elapsed < 60, f"took {elapsed:.0f} s; Ray's own client would wait 30 s per try"


def test_the_connected_instance_is_not_replaced_by_another_address(ray_instance: Any) -> None:
    with pytest.raises(EngineError, match="already connected to Ray"):
        open_engine(config_from_dict({"compute": {"engine": "ray", "address": "auto"}}).compute)


def test_a_task_larger_than_every_node_is_refused() -> None:
    """On a local instance the engine starts itself no autoscaler can add a larger node: the task would wait
    forever, so it is refused (a fresh process, not connected to this module's instance)."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'qnas-hw[ray]' to run this test")
    code = (
        "from qnas_hw.config import config_from_dict\n"
        "from qnas_hw.search.engine import EngineError, open_engine\n"
        "c = config_from_dict({'compute': {'engine': 'ray', 'num_cpus': 4096}}).compute\n"
        "try:\n    open_engine(c)\nexcept EngineError as e:\n    print('REFUSED', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=False)
    assert "REFUSED each candidate's Ray task asks for compute.num_cpus=4096" in done.stdout, done.stderr[-2000:]


# ------------------------------------------------------------------ same study on either engine
@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory, tiny_search_toml: str) -> tuple[RunConfig, Path]:
    """The tiny search with noisy accuracy (fine-tune + Aer under fake_kolkata's noise), runtime_s (transpile +
    cost) and subcircuits (cut planning), 4 candidates x 2 generations, evaluated in this process."""
    config = _tiny(tiny_search_toml, objectives=["val_error", "runtime_s", "subcircuits"])
    out = tmp_path_factory.mktemp("local")
    run_search(config, out, progress=False).close()
    return config, out


def test_a_ray_search_gives_the_local_study(ray_instance: Any, local_reference: tuple[RunConfig, Path]) -> None:
    """Every candidate evaluated in a Ray worker, and the same study, row for row, and the same weights files."""
    config, local_dir = local_reference
    ray_dir = local_dir.parent / f"{local_dir.name}-ray"
    local = Study.open(local_dir / "study.sqlite")
    remote = run_search(config, ray_dir, progress=False, compute_overrides={"compute.engine": "ray"})
    try:
        assert local.config["compute"]["threads"] == remote.config["compute"]["threads"] == 1
        assert _snapshot(remote) == _snapshot(local)
        assert len(local.generations()) == 2 and local.n_candidates() >= 4
        workers = {c.timings["worker"] for c in remote.candidates()}
        assert all(int(w.rsplit(":", 1)[1]) != os.getpid() for w in workers)  # evaluated in Ray workers
        assert all("worker" not in c.timings for c in local.candidates())
        assert (remote.runs()[-1]["engine"], local.runs()[-1]["engine"]) == ("ray", "local")
        # the workers wrote nothing; the driver saved the weights they returned, equal to the local ones
        a, b = _weights(local_dir), _weights(ray_dir)
        assert a.keys() == b.keys() and len(a) == local.n_candidates()
        for name in a:
            assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
    finally:
        local.close()
        remote.close()


def test_a_local_study_continues_on_ray(
    ray_instance: Any, local_reference: tuple[RunConfig, Path], tmp_path: Path
) -> None:
    """Generation 0 in this process, then ``--resume --generations 2 --engine ray``: the uninterrupted local study."""
    config, local_dir = local_reference
    run_search(with_overrides(config, **{"search.generations": 1}), tmp_path, progress=False).close()
    resumed = run_search(
        None,
        resume=tmp_path / "study.sqlite",
        progress=False,
        generations=2,
        compute_overrides={"compute.engine": "ray"},
    )
    local = Study.open(local_dir / "study.sqlite")
    try:
        assert _snapshot(resumed) == _snapshot(local)
        assert [r["engine"] for r in resumed.runs()] == ["local", "ray"]
        assert resumed.config["compute"]["engine"] == "ray"  # the stored config says how it ran last
        assert {c.generation for c in resumed.candidates() if "worker" in c.timings} == {1}
    finally:
        local.close()
        resumed.close()


def test_device_jobs_stay_on_the_driver(ray_instance: Any, tmp_path: Path) -> None:
    """``accuracy = "device"``: val_error (fine-tune + ledger jobs) runs in the driver, runtime_s as Ray tasks; the
    study and the job ledger equal the local run's."""
    config = device_search_config(data={"dataset": "iris"})
    local = run_search(config, tmp_path / "local", progress=False)
    remote = run_search(config, tmp_path / "ray", progress=False, compute_overrides={"compute.engine": "ray"})
    try:
        assert _snapshot(remote) == _snapshot(local)
        assert all("worker" in c.timings for c in remote.candidates())  # runtime_s ran in a worker
    finally:
        local.close()
        remote.close()
    jobs = {}
    for name in ("local", "ray"):
        ledger = JobLedger(tmp_path / name / "study.sqlite")
        try:
            jobs[name] = sorted((j.key, j.state.value, j.submissions) for j in ledger.jobs())
        finally:
            ledger.close()
    assert jobs["ray"] == jobs["local"] and jobs["local"]
