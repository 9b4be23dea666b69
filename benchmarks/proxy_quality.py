"""Proxy quality: how well does each cheap accuracy estimate rank architectures by their trained noisy accuracy?

The search's ``val_error`` is a proxy: it cannot train every candidate to convergence.  This benchmark measures
every proxy the search could use against the quantity the search is after, under the target's noise:

* **ground truth**: each architecture trained from scratch (``--gt-epochs`` epochs on the set's training images,
  best exact-validation epoch kept), then scored under the target's noise model (idle noise on, readout-mitigated,
  the search's own ``noisy`` scorer) on ``--gt-val`` validation samples, for each of ``--gt-seeds``; the mean over
  seeds is the truth, and Kendall tau between two seeds is the ceiling any proxy can be judged against.
* **proxies**, each on the search's ``val_samples`` subset of the validation split, scored by the same scorer:
  ``inherited`` / ``inherited+1`` (the study's SuperCircuit weights, + one fine-tune epoch); ``scratch-r`` (a fresh
  init, seeded like the search's candidates and *not* like the ground truth's, trained ``r`` epochs; fractional
  ``r`` trains the first batches of an epoch); ``halving[...]`` (successive halving over rungs of one such run:
  every candidate is scored at the first rung, the best ``keep`` fraction trains on to the next; a candidate left at
  a lower rung ranks below every fully scored one); ``cnr``, ``repcap``, ``cnr-repcap`` (training-free, after
  Élivágar); ``esp`` (the placed circuit's estimated success probability) and ``scratch-r-ideal`` (noise-free
  accuracy) as references.
* **rows**: Kendall tau-b and Spearman rho with 95% bootstrap CIs over architectures, top-1 regret (points of
  ground-truth accuracy lost by taking the proxy's top choice), top-5 recall, seconds per candidate (everything the
  proxy costs divided by the candidates it ranks: SuperCircuit training amortised, halving's total over its rungs).

Nothing reads the test split.  Every architecture's measurements are written to the results file as soon as they
finish (``records``), and a rerun with the same arguments continues from them.

    python benchmarks/proxy_quality.py --data-dir ../shared/datasets --out benchmarks/results/proxy_quality.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from provenance import git_head, uncommitted_files
from rank_correlation import stratified_architectures
from scipy import stats

#: The three sets of the issue: data set, target, and the search space each is searched over.
SETS: dict[str, dict[str, Any]] = {
    "mnist4": {
        "backend": "fake_quito",
        "config": {
            "data": {"dataset": "mnist4", "val_fraction": 0.1},
            "model": {"frontend": "none"},
            "space": {"embeddings": ["4x4-ryzxy", "4x4-ryzxy-ru", "amplitude"], "qubits": [4, 5], "layers": [1, 4]},
            "supercircuit": {"epochs": 3, "batch_size": 64, "lr": 0.05},
            "hardware": {"backend": "fake_quito", "qubit_budget": 5},
        },
    },
    "fashion4": {
        "backend": "fake_kolkata",
        "config": {
            "data": {"dataset": "fashion4", "val_fraction": 0.1},
            "model": {"frontend": "none"},
            "space": {"embeddings": ["4x4-ryzxy", "4x4-ryzxy-ru", "amplitude"], "qubits": [4, 8], "layers": [1, 4]},
            "supercircuit": {"epochs": 3, "batch_size": 64, "lr": 0.05},
            "hardware": {"backend": "fake_kolkata", "qubit_budget": 8},
        },
    },
    # the README's main job (digits4 on fake_kolkata, 2-qubit cut budget), exactly as `qnas-hw search` runs it
    "digits4": {"backend": "fake_kolkata", "config": {}},
}

Proxy = Callable[[list[dict[str, Any]]], tuple[np.ndarray, float]]


# ------------------------------------------------------------------ set-up
def set_config(name: str, limit_train: int | None, data_dir: str | None) -> Any:
    """The set's RunConfig: the default job's values under the set's own (noisy accuracy, idle noise on)."""
    from qnas_hw.config import DEFAULT_JOB, config_from_dict
    from qnas_hw.config import _merged as merged

    over = SETS[name]["config"]
    data = {**over.get("data", {}), "data_dir": data_dir}
    if limit_train is not None and name != "digits4":
        data["limit_train"] = limit_train
    cfg = merged(merged(DEFAULT_JOB, over), {"data": data, "search": {"accuracy": "noisy"}, "compute": {"threads": 1}})
    return config_from_dict(cfg, source=f"proxy_quality set {name}")


def _search_api() -> Any:
    """The search's own builders (one place, so this benchmark scores exactly as `qnas-hw search` does)."""
    from qnas_hw.search import building

    return building


class Workbench:
    """One set's data, hardware, scorer and (lazily) SuperCircuit: what every measurement of the set shares."""

    def __init__(self, name: str, cfg: Any, gt_val: int) -> None:
        from qnas_hw.data import stratified_subset

        api = _search_api()
        self.name, self.cfg = name, cfg
        self.splits = api.load_splits(cfg)
        self.hw = api.make_hardware(cfg)
        self.scorer = api.make_scorer(cfg, self.hw.backend, self.hw.transpiler, self.hw.planner)
        y_val = self.splits.val.tensors[1].numpy()
        self.gt_idx = stratified_subset(y_val, gt_val, cfg.seed)
        self.proxy_idx = stratified_subset(y_val, cfg.search.val_samples, cfg.seed)
        self.lr, self.batch = float(cfg.supercircuit.lr), int(cfg.supercircuit.batch_size)
        self.frontend = cfg.model.frontend
        self._sc: Any = None
        self.sc_seconds = 0.0
        self.sc_history: list[dict[str, Any]] = []

    def val(self, idx: np.ndarray) -> tuple[Any, Any]:
        import torch

        X, y = self.splits.val.tensors
        t = torch.as_tensor(idx)
        return X[t], y[t]

    def noisy(self, arch: Any, model: Any, idx: np.ndarray) -> tuple[float, float]:
        """(noisy accuracy, seconds) of ``model`` on the validation samples ``idx``."""
        X, y = self.val(idx)
        t0 = time.perf_counter()
        acc, _ = self.scorer.score(arch, model, X, y)
        return float(acc), time.perf_counter() - t0

    def model(self, arch: Any, seed: int) -> Any:
        from qnas_hw.model.hqnn import HQNN

        return HQNN(arch, self.splits.input_shape, self.splits.n_classes, frontend=self.frontend, seed=seed)

    def supercircuit(self) -> Any:
        if self._sc is None:
            from qnas_hw.model.supercircuit import SuperCircuit, SuperTrainConfig, train_supercircuit

            s = self.cfg.supercircuit
            sc = SuperCircuit(
                self.cfg.search_space(),
                tuple(self.splits.input_shape),
                self.splits.n_classes,
                frontend=self.frontend,
                seed=self.cfg.seed,
            )
            tc = SuperTrainConfig(
                epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, sampling=s.sampling, seed=self.cfg.seed
            )
            t0 = time.perf_counter()
            result = train_supercircuit(sc, self.splits, tc)
            self.sc_seconds = time.perf_counter() - t0
            self.sc_history = [{k: v for k, v in row.items() if isinstance(v, (int, float))} for row in result.history]
            self._sc = sc
        return self._sc


def runnable_architectures(wb: Workbench, n: int) -> tuple[list[Any], dict[str, str]]:
    """``n`` stratified architectures the target can score under noise, and why the others were left out.

    A candidate whose cut plan cannot run under the qubit budget (the search stores it unscored) has no noisy
    truth to rank: when the first stratified draw holds such candidates, a three times larger draw is taken and
    its first ``n`` runnable ones are used.
    """
    space = wb.cfg.search_space()
    archs = stratified_architectures(space, n, np.random.default_rng(wb.cfg.seed))
    reasons = {a.canonical(): wb.scorer.builder.unrunnable(a) for a in archs}
    if not any(reasons.values()):
        return archs, {}
    pool = stratified_architectures(space, min(3 * n, space.size), np.random.default_rng(wb.cfg.seed))
    excluded: dict[str, str] = {}
    kept = []
    for arch in pool:
        reason = wb.scorer.builder.unrunnable(arch)
        if reason is None and len(kept) < n:
            kept.append(arch)
        elif reason is not None:
            excluded[arch.canonical()] = reason
    return kept, excluded


# ------------------------------------------------------------ measurements
def ground_truth(wb: Workbench, arch: Any, seed: int, epochs: int) -> dict[str, Any]:
    from qnas_hw.model.training import TrainConfig, train_model

    model = wb.model(arch, seed)
    t0 = time.perf_counter()
    result = train_model(model, wb.splits, TrainConfig(epochs=epochs, batch_size=wb.batch, lr=wb.lr, seed=seed))
    train_s = time.perf_counter() - t0
    acc, score_s = wb.noisy(arch, model, wb.gt_idx)
    curve = [round(r["val_acc"], 4) for r in result.history]
    return {
        "noisy": acc,
        "ideal": result.best_val_acc,
        "best_epoch": result.best_epoch,
        "curve": curve,
        "train_s": train_s,
        "score_s": score_s,
    }


def _search_seeded_run(wb: Workbench, arch: Any) -> tuple[Any, Any]:
    """A fresh model of ``arch`` and its staged trainer, seeded as the search seeds the candidate."""
    from qnas_hw.model.training import StagedTrainer
    from qnas_hw.search.evaluation import derive_seed

    seed = derive_seed(wb.cfg.seed, arch)
    model = wb.model(arch, seed)
    return model, StagedTrainer(model, wb.splits.train, wb.lr, wb.batch, seed)


def scratch_rungs(wb: Workbench, arch: Any, rungs: Sequence[float]) -> list[dict[str, Any]]:
    """One from-scratch run seeded as the search seeds a candidate, scored under noise at every rung."""
    from qnas_hw.model.training import evaluate

    model, trainer = _search_seeded_run(wb, arch)
    out = []
    for r in rungs:
        t0 = time.perf_counter()
        loss = trainer.advance(r)
        train_s = time.perf_counter() - t0
        acc, score_s = wb.noisy(arch, model, wb.proxy_idx)
        X, y = wb.val(wb.proxy_idx)
        from torch.utils.data import TensorDataset

        ideal, _ = evaluate(model, TensorDataset(X, y))
        out.append({"epochs": r, "noisy": acc, "ideal": ideal, "loss": loss, "train_s": train_s, "score_s": score_s})
    return out


def cheap_rungs(wb: Workbench, arch: Any, rungs: Sequence[float], samples: int) -> dict[str, Any]:
    """The same run as :func:`scratch_rungs` (same seed, same batches: the same weights at every rung), scored at
    ``rungs`` on only ``samples`` of the proxy's validation samples: the cheap lower rungs of a halving whose
    scoring, not its training, is most of its cost.  The subset is the search's own nested one."""
    from qnas_hw.search.evaluation import nested_subset

    y = wb.splits.val.tensors[1].numpy()
    idx = nested_subset(wb.proxy_idx, y, samples, wb.cfg.seed)
    model, trainer = _search_seeded_run(wb, arch)
    # untimed warm-up: the placement and circuit caches that the recorded run had from the ground truth's scoring
    # (and that a search has from its runtime objective), so the rungs' costs compare with the recorded ones
    wb.noisy(arch, model, idx[:1])
    out = []
    for r in rungs:
        loss = trainer.advance(r)
        acc, score_s = wb.noisy(arch, model, idx)
        out.append({"epochs": r, "noisy": acc, "loss": loss, "score_s": score_s})
    return {"samples": len(idx), "rungs": out}


def inherited(wb: Workbench, arch: Any) -> dict[str, Any]:
    import torch

    from qnas_hw.search.evaluation import derive_seed, finetune

    sc = wb.supercircuit()
    model = sc.extract(arch)
    model.eval()
    acc0, s0 = wb.noisy(arch, model, wb.proxy_idx)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(derive_seed(wb.cfg.seed, arch))
    finetune(model, wb.splits.train, 1, wb.lr, wb.batch, gen)
    ft_s = time.perf_counter() - t0
    acc1, s1 = wb.noisy(arch, model, wb.proxy_idx)
    return {"inherited": acc0, "inherited_s": s0, "inherited+1": acc1, "inherited+1_s": s1 + ft_s + 0.0}


def screens(wb: Workbench, arch: Any) -> dict[str, Any]:
    from qnas_hw.search.screens import clifford_noise_resilience, representational_capacity

    t0 = time.perf_counter()
    cnr = clifford_noise_resilience(wb.scorer, arch, seed=wb.cfg.seed)
    t1 = time.perf_counter()
    rep = representational_capacity(arch, wb.splits, wb.frontend, seed=wb.cfg.seed)
    t2 = time.perf_counter()
    esp = wb.hw.transpiler.transpile(arch).esp
    return {"cnr": cnr, "cnr_s": t1 - t0, "repcap": rep, "repcap_s": t2 - t1, "esp": esp}


def measure(wb: Workbench, arch: Any, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"arch": arch.canonical()}
    rec["gt"] = {str(s): ground_truth(wb, arch, s, args.gt_epochs) for s in args.gt_seeds}
    rec["rungs"] = scratch_rungs(wb, arch, args.rungs)
    rec.update(inherited(wb, arch))
    rec.update(screens(wb, arch))
    if args.cheap_samples:
        rec["cheap"] = cheap_rungs(wb, arch, args.cheap_rungs, args.cheap_samples)
    rec["seconds"] = time.perf_counter() - t0
    return rec


# ----------------------------------------------------------------- proxies
def truth(records: list[dict[str, Any]]) -> np.ndarray:
    return np.array([np.mean([g["noisy"] for g in r["gt"].values()]) for r in records])


def _rung(records: list[dict[str, Any]], epochs: float) -> tuple[np.ndarray, np.ndarray]:
    """Scores at ``epochs`` and each candidate's cumulative cost to reach and score that rung alone."""
    scores, costs = [], []
    for r in records:
        spent = 0.0
        for row in r["rungs"]:
            spent += row["train_s"]
            if math.isclose(row["epochs"], epochs):
                scores.append(row["noisy"])
                costs.append(spent + row["score_s"])
                break
        else:
            raise KeyError(f"rung {epochs} was not measured")
    return np.array(scores), np.array(costs)


def scratch_proxy(epochs: float, ideal: bool = False) -> Proxy:
    def proxy(records: list[dict[str, Any]]) -> tuple[np.ndarray, float]:
        scores, costs = _rung(records, epochs)
        if ideal:
            scores = np.array(
                [next(x["ideal"] for x in r["rungs"] if math.isclose(x["epochs"], epochs)) for r in records]
            )
        return scores, float(np.mean(costs))

    return proxy


def _halving_rung(text: str) -> tuple[float, bool]:
    """``"1"`` (scored on the proxy's samples) or ``"1@"`` (scored on the cheap subset of ``--cheap-samples``)."""
    return float(text.rstrip("@")), text.endswith("@")


def _rung_row(record: dict[str, Any], epochs: float, cheap: bool) -> dict[str, Any]:
    rows = record["cheap"]["rungs"] if cheap else record["rungs"]
    return next(x for x in rows if math.isclose(x["epochs"], epochs))


def halving_proxy(rungs: Sequence[str], keep: float) -> Proxy:
    """Successive halving simulated on the recorded run: the same numbers a live halving would produce.

    Each rung's survivors are the best ``keep`` fraction (at least one) of the previous rung's by its noisy score.
    Ranks: survivors of the last rung by their last score, then every earlier leaver below them by its own rung.
    A rung written ``r@`` is scored on the cheap subset (:func:`cheap_rungs`); training costs are the recorded run's.
    """
    parsed = [_halving_rung(r) for r in rungs]

    def proxy(records: list[dict[str, Any]]) -> tuple[np.ndarray, float]:
        n = len(records)
        alive = np.arange(n)
        score = np.zeros(n)
        cost = 0.0
        done_epochs = {i: 0.0 for i in range(n)}
        for level, (r, cheap) in enumerate(parsed):
            for i in alive:
                for row in records[i]["rungs"]:
                    if done_epochs[i] < row["epochs"] <= r + 1e-9:
                        cost += row["train_s"]
                scored = _rung_row(records[i], r, cheap)
                cost += scored["score_s"]
                score[i] = scored["noisy"] + 10.0 * level  # a higher rung outranks every lower one
                done_epochs[i] = r
            if level < len(parsed) - 1:
                k = max(1, round(keep * len(alive)))
                alive = alive[np.argsort(-score[alive], kind="stable")[:k]]
        return score, cost / n

    return proxy


def cheap_scratch_proxy(epochs: float) -> Proxy:
    """``scratch-r`` scored on the cheap subset only."""

    def proxy(records: list[dict[str, Any]]) -> tuple[np.ndarray, float]:
        _, costs = _rung(records, epochs)
        full = np.array([_rung_row(r, epochs, False)["score_s"] for r in records])
        cheap = np.array([_rung_row(r, epochs, True) for r in records])
        scores = np.array([x["noisy"] for x in cheap])
        return scores, float(np.mean(costs - full + np.array([x["score_s"] for x in cheap])))

    return proxy


def field_proxy(key: str, cost_key: str | None) -> Proxy:
    def proxy(records: list[dict[str, Any]]) -> tuple[np.ndarray, float]:
        scores = np.array([r[key] if r[key] is not None else np.nan for r in records], dtype=float)
        cost = float(np.mean([r[cost_key] for r in records])) if cost_key else 0.0
        return scores, cost

    return proxy


def inherited_proxy(key: str, sc_seconds: float) -> Proxy:
    def proxy(records: list[dict[str, Any]]) -> tuple[np.ndarray, float]:
        scores = np.array([r[key] for r in records])
        own = float(np.mean([r[key + "_s"] for r in records]))
        return scores, own + sc_seconds / max(len(records), 1)

    return proxy


def screened_proxy(screen: str, epochs: float, keep: float) -> Proxy:
    """A training-free screen, then ``scratch-<epochs>`` on its best ``keep`` fraction (ranked above the rest).

    ``esp`` costs nothing extra in a search (the runtime objective transpiles and places every candidate anyway);
    ``cnr`` costs its own simulation.
    """

    def proxy(records: list[dict[str, Any]]) -> tuple[np.ndarray, float]:
        first = np.array([r[screen] if r[screen] is not None else -np.inf for r in records], dtype=float)
        second, costs = _rung(records, epochs)
        n = len(records)
        keep_idx = np.argsort(-first, kind="stable")[: max(1, round(keep * n))]
        order = np.argsort(np.argsort(first, kind="stable"), kind="stable") / max(n, 1)  # ranks in [0, 1)
        score = order.astype(float)
        score[keep_idx] = 10.0 + second[keep_idx]
        screen_cost = float(np.mean([r.get(f"{screen}_s", 0.0) for r in records]))
        return score, screen_cost + float(costs[keep_idx].sum()) / n

    return proxy


def cnr_repcap(records: list[dict[str, Any]]) -> tuple[np.ndarray, float]:
    """Élivágar's two stages: the better half by CNR, ranked by RepCap above the other half (ranked by CNR)."""
    cnr = np.array([r["cnr"] for r in records])
    rep = np.array([r["repcap"] for r in records])
    keep = np.argsort(-cnr, kind="stable")[: max(1, len(records) // 2)]
    score = cnr.copy()
    score[keep] = 10.0 + rep[keep]
    return score, float(np.mean([r["cnr_s"] + r["repcap_s"] for r in records]))


def proxies(args: argparse.Namespace, sc_seconds: float, records: list[dict[str, Any]]) -> dict[str, Proxy]:
    out: dict[str, Proxy] = {
        "inherited": inherited_proxy("inherited", sc_seconds),
        "inherited+1": inherited_proxy("inherited+1", sc_seconds),
    }
    for r in args.rungs:
        out[f"scratch-{r:g}"] = scratch_proxy(r)
    out["scratch-1-ideal"] = scratch_proxy(1.0, ideal=True)
    for spec in args.halving:
        rungs_text, keep_text = spec.split(":")
        if "@" in rungs_text and not all("cheap" in r for r in records):
            continue  # the cheap rungs were not measured (an older run): no row rather than a guess
        out[f"halving[{rungs_text}:{keep_text}]"] = halving_proxy(rungs_text.split(","), float(keep_text))
    if all("cheap" in r for r in records):
        samples = records[0]["cheap"]["samples"]
        for r in records[0]["cheap"]["rungs"]:
            out[f"scratch-{r['epochs']:g}@{samples}"] = cheap_scratch_proxy(r["epochs"])
    out["cnr"] = field_proxy("cnr", "cnr_s")
    out["repcap"] = field_proxy("repcap", "repcap_s")
    out["cnr-repcap"] = cnr_repcap
    out["esp"] = field_proxy("esp", None)
    for screen in ("esp", "cnr"):
        for epochs in (1.0, 3.0):
            for keep in (0.33, 0.5):
                out[f"{screen}>scratch-{epochs:g}[{keep:g}]"] = screened_proxy(screen, epochs, keep)
    return out


# ----------------------------------------------------------------- figures
warnings.filterwarnings("ignore", category=stats.ConstantInputWarning)  # a constant resample is tau 0 here


def _tau(a: np.ndarray, b: np.ndarray) -> float:
    value = stats.kendalltau(a, b).statistic
    return float(value) if np.isfinite(value) else 0.0


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    value = stats.spearmanr(a, b).statistic
    return float(value) if np.isfinite(value) else 0.0


def bootstrap_ci(
    fn: Callable[[np.ndarray, np.ndarray], float], a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0
) -> list[float]:
    """Percentile 95% interval of ``fn`` over architectures resampled with replacement (scipy.stats.bootstrap)."""
    res = stats.bootstrap(
        (a, b),
        fn,
        paired=True,
        vectorized=False,
        n_resamples=n,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    lo, hi = res.confidence_interval
    return [float(lo), float(hi)]


def row(dataset: str, backend: str, name: str, scores: np.ndarray, gt: np.ndarray, seconds: float) -> dict[str, Any]:
    ok = np.isfinite(scores)
    s, g = scores[ok], gt[ok]
    top = int(np.argmax(s))
    best5 = set(np.argsort(-g, kind="stable")[:5])
    pick5 = set(np.argsort(-s, kind="stable")[:5])
    return {
        "dataset": dataset,
        "backend": backend,
        "proxy": name,
        "kendall_tau": _tau(s, g),
        "tau_ci95": bootstrap_ci(_tau, s, g),
        "spearman_rho": _rho(s, g),
        "rho_ci95": bootstrap_ci(_rho, s, g),
        "top1_regret": float(100 * (g.max() - g[top])),
        "top5_recall": len(best5 & pick5) / 5,
        "seconds_per_candidate": seconds,
        "n_architectures": int(ok.sum()),
    }


def summarise(
    name: str, set_data: dict[str, Any], args: argparse.Namespace
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    records = set_data["records"]
    gt = truth(records)
    seeds = list(records[0]["gt"])
    per_seed = [np.array([r["gt"][s]["noisy"] for r in records]) for s in seeds]
    backend = SETS[name]["backend"]
    g = {
        "dataset": name,
        "backend": backend,
        "epochs": args.gt_epochs,
        "seeds": [int(s) for s in seeds],
        "train_images": set_data["sizes"]["train"],
        "val_samples": set_data["gt_val_samples"],
        "seed_to_seed_tau": _tau(per_seed[0], per_seed[1]) if len(per_seed) > 1 else None,
        "seed_to_seed_tau_ci95": bootstrap_ci(_tau, per_seed[0], per_seed[1]) if len(per_seed) > 1 else None,
        "mean_accuracy": float(gt.mean()),
        "accuracy_range": [float(gt.min()), float(gt.max())],
        "ideal_vs_noisy_tau": _tau(np.array([np.mean([x["ideal"] for x in r["gt"].values()]) for r in records]), gt),
        "n_architectures": len(records),
    }
    rows = []
    for pname, fn in proxies(args, set_data.get("supercircuit", {}).get("seconds", 0.0), records).items():
        scores, seconds = fn(records)
        rows.append(row(name, backend, pname, scores, gt, seconds))
    return g, rows


# ------------------------------------------------------------------- main
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="mnist4,fashion4,digits4")
    p.add_argument("--n-archs", type=int, default=30)
    p.add_argument("--gt-epochs", type=int, default=10)
    p.add_argument("--gt-seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    p.add_argument("--gt-val", type=int, default=1000, help="validation samples of the ground truth's noisy score")
    p.add_argument("--limit-train", type=int, default=2000, help="training images (mnist4, fashion4)")
    p.add_argument("--rungs", type=lambda s: [float(x) for x in s.split(",")], default=[0.25, 0.5, 1.0, 2.0, 3.0])
    p.add_argument(
        "--halving",
        nargs="*",
        default=[
            "0.25,1:0.33",
            "0.25,2:0.33",
            "0.5,2:0.33",
            "0.25,1,3:0.33",
            "1@,3:0.33",
            "1@,3:0.25",
            "0.5@,3:0.33",
            "2@,3:0.33",
            "1@,2@,3:0.5",
        ],
        help="successive-halving variants RUNGS:KEEP simulated on the recorded rungs (r@: scored on the cheap subset)",
    )
    p.add_argument(
        "--cheap-samples",
        type=int,
        default=128,
        help="validation samples of the cheap rungs (a nested subset of the proxy's; 0: none)",
    )
    p.add_argument("--cheap-rungs", type=lambda s: [float(x) for x in s.split(",")], default=[0.5, 1.0, 2.0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="benchmarks/results/proxy_quality.json")
    p.add_argument("--summarise-only", action="store_true", help="recompute rows from the stored records")
    p.add_argument(
        "--merge",
        nargs="*",
        default=[],
        help="results files of runs over other sets (run side by side): their sets and provenance are copied in",
    )
    return p.parse_args(argv)


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _provenance(argv: Sequence[str]) -> dict[str, Any]:
    import torch

    return {
        "command": "python benchmarks/proxy_quality.py " + " ".join(argv),
        "commit": git_head(),
        "uncommitted_changes": uncommitted_files(),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_at_start": os.getloadavg()[0],
        },
    }


def _refresh(data: dict[str, Any], args: argparse.Namespace) -> None:
    from qnas_hw.config import DEFAULT_PROXY

    data["default"] = DEFAULT_PROXY  # the package's own default, so the file cannot name another
    if "uncommitted" in data:  # the key's earlier name
        data["uncommitted_changes"] = data.pop("uncommitted")
    sets = data["sets"]
    data["seconds"] = sum(
        sum(r["seconds"] for r in sd["records"]) + sd.get("supercircuit", {}).get("seconds", 0.0)
        for sd in sets.values()
    )
    data["complete"] = all(len(sd["records"]) >= args.n_archs for sd in sets.values()) and set(sets) >= set(
        args.sets.split(",")
    )
    data["ground_truth"], data["rows"] = [], []
    for name, set_data in data["sets"].items():
        if len(set_data["records"]) >= 3:
            g, rows = summarise(name, set_data, args)
            data["ground_truth"].append(g)
            data["rows"].extend(rows)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    data: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    if not args.summarise_only:  # a re-summary keeps the command and commit that measured the records
        if "command" in data:  # a continued run (e.g. adding cheap rungs): the earlier runs' provenance stays
            keys = ("command", "commit", "uncommitted_changes", "machine")
            data.setdefault("earlier_runs", []).append({k: data[k] for k in keys if k in data})
        data.update(_provenance(argv))
    data.setdefault("sets", {})
    data.setdefault("default", None)
    if args.merge:
        data["merge_command"] = "python benchmarks/proxy_quality.py " + " ".join(argv)
    for other in args.merge:
        theirs = json.loads(Path(other).read_text())
        for name, set_data in theirs["sets"].items():
            keys = ("command", "commit", "uncommitted_changes", "uncommitted", "machine")
            set_data["provenance"] = {k: theirs[k] for k in keys if k in theirs}
            data["sets"][name] = set_data
    if args.summarise_only:
        _refresh(data, args)
        _write(out, data)
        return data
    for name in args.sets.split(","):
        cfg = set_config(name, args.limit_train, args.data_dir)
        wb = Workbench(name, cfg, args.gt_val)
        archs, excluded = runnable_architectures(wb, args.n_archs)
        set_data = data["sets"].setdefault(name, {"records": []})
        set_data.update(
            {
                "backend": SETS[name]["backend"],
                "config": cfg.resolved(),
                "sizes": wb.splits.sizes(),
                "gt_val_samples": len(wb.gt_idx),
                "proxy_val_samples": len(wb.proxy_idx),
                "excluded": excluded,
            }
        )
        done = {r["arch"]: r for r in set_data["records"]}
        for i, arch in enumerate(archs):
            if arch.canonical() in done:
                old = done[arch.canonical()]
                if args.cheap_samples and "cheap" not in old:  # a record of an older run: add its cheap rungs
                    t0 = time.perf_counter()
                    old["cheap"] = cheap_rungs(wb, arch, args.cheap_rungs, args.cheap_samples)
                    old["cheap"]["seconds"] = time.perf_counter() - t0
                    print(f"[{name} {i + 1}/{len(archs)}] {arch.canonical():36s} cheap rungs added", flush=True)
                    _write(out, data)  # the rows are recomputed at the end (their bootstrap takes minutes)
                continue
            rec = measure(wb, arch, args)
            set_data["records"].append(rec)
            if wb._sc is not None:
                set_data["supercircuit"] = {"seconds": wb.sc_seconds, "history": wb.sc_history}
            gt = np.mean([g["noisy"] for g in rec["gt"].values()])
            print(
                f"[{name} {i + 1}/{len(archs)}] {arch.canonical():36s} truth {gt:.3f} "
                f"scratch-1 {next(x['noisy'] for x in rec['rungs'] if x['epochs'] == 1.0):.3f} "
                f"inh {rec['inherited']:.3f} cnr {rec['cnr']:.3f} rep {rec['repcap']:.3f} ({rec['seconds']:.0f} s)",
                flush=True,
            )
            _refresh(data, args)
            _write(out, data)
    _refresh(data, args)
    _write(out, data)
    return data


if __name__ == "__main__":
    main()
