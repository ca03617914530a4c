"""04_postprocess: per-model thresholds, min2, the union and the toolbox (INB, QE, fusion, rules, closure,
chisel), an out-of-fold ablation that picks the recipe, and the test submission."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.sparse as sp
from matplotlib.figure import Figure

from utils.core.metric import Scores, score
from utils.core.schema import ConfigError, at_least, in_unit, one_of, param
from utils.core.store import POSTPROCESS, RunStore
from utils.core.submission import to_submission, write_submission
from utils.matching import decide
from utils.matching import postprocess as pp
from utils.matching.knn import AVAILABLE
from utils.matching.postprocess import PostConfig, check_fp_weight
from utils.matching.rules import extract_attributes

from .common import (
    Pool,
    RunParams,
    Stage,
    Steps,
    check_distractors,
    open_stage,
    read_pool,
    shared,
    test_scores,
    write_metrics,
)

log = logging.getLogger(__name__)

_POST = {f.name: f.default for f in dataclasses.fields(PostConfig) if f.default is not dataclasses.MISSING}


@dataclass
class InbParams:
    """Neighbourhood blending: neighbours above `threshold` are added to the query, `rounds` times."""

    rounds: int = param(1, "blending rounds")
    threshold: float = param(0.5, "neighbours above this cosine join the query")
    models: list[str] | None = param(None, "the models blended; None: every model with embeddings")

    def __post_init__(self) -> None:
        at_least("inb.rounds", self.rounds)
        in_unit("inb.threshold", self.threshold)


@dataclass
class QeParams:
    """Alpha query expansion over the top `k` neighbours (alpha 0 is DBA)."""

    k: int = param(3, "neighbours averaged into the query")
    alpha: float = param(3.0, "weight exponent of the neighbours' similarities (0: DBA)")
    rounds: int = param(1, "expansion rounds")
    models: list[str] | None = param(None, "the models expanded; None: every model with embeddings")

    def __post_init__(self) -> None:
        at_least("qe.k", self.k)
        at_least("qe.rounds", self.rounds)
        if self.alpha < 0:
            raise ConfigError(f"qe.alpha must be at least 0, got {self.alpha}")


@dataclass
class Params(RunParams):
    train_csv: str = shared("train_csv", "training postings (labels used to tune)")
    test_csv: str = shared("test_csv")
    test_labels_csv: str = shared("test_labels_csv")
    models: list[str] = shared("models", "models in the union (or the fusion)")
    min2: bool = param(_POST["min2"], "force each row's nearest neighbour in when it passes its own min2 threshold")
    phash_exact: bool = param(_POST["phash_exact"], "add rows with an identical image_phash to the union (an empty "
                                                    "pHash is unknown)")
    image_exact: bool = param(_POST["image_exact"], "add rows with the same image file name (the same photo) to the "
                                                    "union")
    joint: bool = param(_POST["joint"], "tune the union's thresholds jointly (coordinate ascent) after the "
                                        "per-model search")
    inb: InbParams | None = param(_POST["inb"], "neighbourhood blending: a dict with rounds and threshold (e.g. 1 "
                                                "and 0.5), or None for off")
    qe: QeParams | None = param(_POST["qe"], "alpha query expansion / DBA: a dict with k and alpha (alpha 0 is DBA), "
                                             "or None for off")
    fusion: str | None = param(_POST["fusion"], "fuse similarities: mean, max, prod or prob_union (a+b-ab); None: "
                                                "a union")
    fusion_models: list[str] | None = param(_POST["fusion_models"], "models fused (None: all); the others join the "
                                                                    "fused one in the union")
    units: bool = param(_POST["units"], "drop pairs whose quantities differ (250ml vs 500ml), units normalised "
                                        "(30g, 30gr, 30 gram)")
    rules: bool = param(_POST["rules"], "tune the attribute rule table (model codes, brand) on train rows")
    closure: bool = param(_POST["closure"], "also match rows joined by chains of strong matches (tuned, kept if "
                                            "it helps)")
    chisel: bool = param(_POST["chisel"], "cut each row's matches to follow the train group-size distribution")
    fp_weight: float | str = param(_POST["fp_weight"], "false-positive weight in tuning; \"auto\": test / train rows")
    ablation: bool = param(True, "compute the out-of-fold ablation table (one OOF run per step)")
    select_best: bool = param(True, "with the ablation: keep the steps up to the one with the best OOF F1, drop "
                                    "the later ones")
    n_folds: int = shared("n_folds")
    knn_backend: str = param("auto", "KNN backend for the re-searches of INB / QE")
    seed: int = shared("seed", "seed of the fold split")
    distractors: int | str = shared("distractors")
    distractors_csv: str = shared("distractors_csv")

    def __post_init__(self) -> None:
        check_distractors(self.distractors)
        one_of("fusion", self.fusion, (None, "mean", "max", "prod", "prob_union"))
        check_fp_weight(self.fp_weight)
        at_least("n_folds", self.n_folds, 2)
        one_of("knn_backend", self.knn_backend, ("auto", *AVAILABLE))

    def post_config(self, fp_weight: float, with_phash: bool) -> PostConfig:
        """The toolbox's settings: this stage's same-named parameters, the resolved false-positive weight, and
        the pHash union only where the test split has pHash."""
        chosen = {f.name: getattr(self, f.name) for f in dataclasses.fields(PostConfig) if hasattr(self, f.name)}
        return PostConfig(**{**chosen, "models": list(self.models), "fp_weight": fp_weight,
                             "phash_exact": self.phash_exact and with_phash})


def load_inputs(store: RunStore, params: Params, pool: Pool) -> tuple[dict[str, dict], PostConfig]:
    """Per split its neighbours (03), embeddings (02; both splits' models only), title attributes and postings;
    and the toolbox settings at the resolved false-positive weight, re-searching as deep as 03 searched and
    blending the same models in both splits. Warns when a model embedded the train rows in-sample."""
    cfg = params.post_config(pp.fp_weight_for(params.fp_weight, len(pool.train), len(pool.test)), pool.test_has_phash)
    log.info("tuning for %s test rows with %s train rows (%s of them distractors): false positives weigh %.2f",
             f"{len(pool.test):,}", f"{len(pool.train):,}", f"{pool.distractors:,}", cfg.fp_weight)
    data, in_sample = {}, []
    for split, df in (("train", pool.train), ("test", pool.test)):
        emb = store.split_embeddings(split, params.models, folds=True)  # a cross-validated model: its fold spaces
        data[split] = {"neigh": store.load_neighbours(split, params.models, len(df)),
                       "emb": {m: X for m, (X, _) in emb.items()}, "attrs": extract_attributes(df["title"]),
                       "postings": df}
        in_sample += [m for m, (_, meta) in emb.items() if meta.get("in_sample")]
    both = data["train"]["emb"].keys() & data["test"]["emb"].keys()  # blending and fusion need both splits
    for d in data.values():
        d["emb"] = {m: X for m, X in d["emb"].items() if m in both}
    cfg.k = min(i.shape[1] for d in data.values() for i, _ in d["neigh"].values())  # INB / QE as deep as 03
    if in_sample:
        log.warning("%s embed the train rows in-sample (trained on them); their thresholds will be too loose. Name "
                    "them in 01_train_arcface's cv list for out-of-fold embeddings.", in_sample)
    return data, pp.with_blend_models(cfg, data["train"]["emb"])


def f1_by_threshold(out: Path, train: dict, pool: Pool) -> Figure:
    """F1 against the threshold per model on all train rows (min2 off), saved beside."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for m, (i, s) in train["neigh"].items():
        ax.plot(decide.DEFAULT_GRID, decide.f1_curve(i, s, pool.labels, rows=pool.scored), label=m)
    ax.set(xlabel="cosine threshold", ylabel="F1 (train)", title="F1 by threshold")
    ax.legend()
    fig.savefig(out / "f1_by_threshold.png", dpi=110)
    return fig


def ablation(params: Params, cfg: PostConfig, train: dict, pool: Pool) -> tuple[pd.DataFrame | None, PostConfig]:
    """The out-of-fold ablation (each enabled step added in turn); with `select_best`, the recipe up to its best
    step, else `cfg`. (None, cfg) when `params.ablation` is off."""
    if not params.ablation:
        return None, cfg
    table = pp.ablation(train["emb"], train["neigh"], train["attrs"], pool.labels, pool.folds, train["postings"],
                        cfg, backend=params.knn_backend, scored=pool.scored)
    if params.select_best:
        name, cfg = pp.ablation_steps(cfg, table.attrs["best_single"])[table.attrs["best_step"]]
        log.info("final recipe: up to '%s' (best out-of-fold F1%s)", name,
                 " at the test size" if pp.selection_column(table) != "f1" else "")
    return table, cfg


def ablation_figure(out: Path, table: pd.DataFrame) -> Figure:
    """The ablation's F1 per step as bars, saved beside."""
    col = pp.selection_column(table)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1))
    ax.barh(table["step"][::-1], table[col][::-1])
    ax.set(xlim=(max(0.0, table[col].min() - 0.05), min(1.0, table[col].max() + 0.02)),
           xlabel="OOF F1" + (" at the test size" if col != "f1" else ""), title="Ablation")
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=110)
    return fig


@dataclass
class Outcome:
    """The final settings fitted on all train rows, their out-of-fold scores and the test matches."""

    fitted: pp.Fitted
    oof: sp.csr_matrix
    oof_scores: Scores
    test_matches: sp.csr_matrix


def fit_and_submit(store: RunStore, params: Params, cfg: PostConfig, data: dict[str, dict], pool: Pool,
                   steps: Steps) -> Outcome:
    """Prepare both splits (INB / QE, fusion, attributes), estimate out of fold, fit on all train rows, write
    the thresholds and the test submission."""
    prepared = {s: pp.prepare(d["emb"], d["neigh"], cfg, params.knn_backend) for s, d in data.items()}
    status = {s: pp.statuses(prepared[s], data[s]["attrs"], cfg) for s in data}
    steps.done("prepare (INB / QE re-search, fusion, attributes)")
    oof = pp.out_of_fold(prepared["train"], status["train"], pool.labels, pool.folds, data["train"]["postings"],
                         cfg, pool.scored)
    oof_scores = score(oof, pool.labels, pool.scored)
    steps.done("out-of-fold estimate")
    fitted = pp.fit(prepared["train"], status["train"], pool.labels, data["train"]["postings"], cfg,
                    rows=pool.scored)
    steps.done("fit on train")
    store.write_thresholds({**fitted.to_dict(), "tuned_on": str(params.train_csv), "oof_f1": oof_scores.f1,
                            "config": vars(cfg)})
    test_matches = pp.apply(prepared["test"], status["test"], data["test"]["postings"], fitted,
                            pool.labels[pool.scored], cfg)
    write_submission(store.submission_path(POSTPROCESS),
                     to_submission(pool.test["posting_id"].to_numpy(), test_matches))
    steps.done("apply to test")
    return Outcome(fitted, oof, oof_scores, test_matches)


def finish(stage: Stage, params: Params, cfg: PostConfig, pool: Pool, table: pd.DataFrame | None,
           outcome: Outcome) -> dict:
    """Close the stage: metrics.json with the out-of-fold and (where labelled) test scores, the settings."""
    s = outcome.oof_scores
    metrics = {"oof_f1": s.f1, "oof_precision": s.precision, "oof_recall": s.recall, "fp_weight": cfg.fp_weight,
               "oof_f1_test_size": score(outcome.oof, pool.labels, pool.scored, cfg.fp_weight).f1,
               "train_rows": len(pool.scored), "distractors": pool.distractors,
               "ablation": None if table is None else table.to_dict(orient="records"),
               "settings": outcome.fitted.to_dict(), "test_rows": len(pool.test),
               "matches_per_row": float(np.diff(outcome.test_matches.indptr).mean()), "steps": stage.steps.seconds}
    metrics.update(test_scores(params.test_labels_csv, pool.test, outcome.test_matches))
    write_metrics(stage.out, metrics, key="test_f1" if params.test_labels_csv else "oof_f1")
    return metrics


def run(params: Params) -> dict:
    """The whole stage without a notebook; returns its metrics."""
    stage = open_stage(POSTPROCESS, params)
    pool = read_pool(params)
    data, cfg = load_inputs(stage.store, params, pool)
    stage.steps.done("load")
    plt.close(f1_by_threshold(stage.out, data["train"], pool))
    table, cfg = ablation(params, cfg, data["train"], pool)
    if table is not None:
        plt.close(ablation_figure(stage.out, table))
    stage.steps.done("ablation")
    outcome = fit_and_submit(stage.store, params, cfg, data, pool, stage.steps)
    return finish(stage, params, cfg, pool, table, outcome)
