"""05_stacker: LightGBM / XGBoost on candidate pairs, a second stage over graph features, the decision rule
tuned out of fold, and the test submission."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.sparse as sp
from matplotlib.figure import Figure

from utils.core.data import distractor_mask, scored_rows
from utils.core.io import write_json
from utils.core.metric import score
from utils.core.schema import ConfigError, at_least, one_of, param
from utils.core.store import POSTPROCESS, STACKER, RunStore
from utils.core.submission import to_submission, write_submission
from utils.matching import decide, slices
from utils.matching import stacker as st
from utils.matching.decide import Decision
from utils.matching.postprocess import check_fp_weight, fp_weight_for
from utils.matching.stacker import StackerConfig, chosen_model

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

_STACK = {f.name: f.default for f in dataclasses.fields(StackerConfig)}


@dataclass
class Params(RunParams):
    train_csv: str = shared("train_csv", "training postings (labels make the pair targets)")
    test_csv: str = shared("test_csv")
    test_labels_csv: str = shared("test_labels_csv")
    train_images: str = shared("train_images", "training images (image size features)")
    test_images: str = shared("test_images")
    use_images: bool = shared("use_images", "False for datasets without image files: no image size features")
    models: list[str] = shared("models", "models making candidates and features")
    k: int = param(50, "candidates: the first k neighbours of every model")
    model: str = param(_STACK["model"], "auto (xgboost on CUDA, else lightgbm), lightgbm, xgboost or blend")
    n_estimators: int = param(_STACK["n_estimators"], "boosting rounds")
    learning_rate: float = param(_STACK["learning_rate"], "boosting learning rate")
    num_leaves: int = param(_STACK["num_leaves"], "leaves per tree")
    device: str = param(_STACK["device"], "auto (cuda when present), cpu or cuda")
    fp_weight: float | str = param(1.0, "false-positive weight in tuning; \"auto\": test / train rows")
    n_folds: int = shared("n_folds", "GroupKFold folds for the out-of-fold probabilities")
    seed: int = param(_STACK["seed"], "seed of folds, of the booster and of the negative sample")
    max_train_pairs: int | None = param(_STACK["max_train_pairs"], "positives and sampled negatives (weighted "
                                                                   "up) to this many; None: all")
    second_stage: bool | str = param("auto", "graph features over stage one's probabilities: True, False, \"auto\"")
    closure: bool | str = param("auto", "also match chains of strong pairs (tuned): True, False, \"auto\"")
    same_image: bool = param(False, "pair feature: the two postings show the same image file (the same photo)")
    distractors: int | str = shared("distractors")
    distractors_csv: str = shared("distractors_csv")
    validation: str = param("pooled", "tuned and scored on the train split (\"pooled\") or on test-like \"slices\" "
                                      "(see docs)")

    def __post_init__(self) -> None:
        check_distractors(self.distractors)
        one_of("validation", self.validation, ("pooled", "slices"))
        if self.validation == "slices" and self.distractors != 0:
            raise ConfigError("validation: slices draws its own test postings into each slice; set distractors: 0")
        for name in ("second_stage", "closure"):
            one_of(name, getattr(self, name), (True, False, "auto"))
        at_least("k", self.k, 2)
        at_least("n_estimators", self.n_estimators)
        if self.max_train_pairs is not None:
            at_least("max_train_pairs", self.max_train_pairs, 2)
        at_least("num_leaves", self.num_leaves, 2)
        at_least("n_folds", self.n_folds, 2)
        check_fp_weight(self.fp_weight)
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        one_of("model", self.model, ("auto", "lightgbm", "xgboost", "blend"))
        one_of("device", self.device, ("auto", "cpu", "cuda"))

    def stacker_config(self) -> StackerConfig:
        """The booster's settings: this stage's same-named parameters."""
        return StackerConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(StackerConfig)})


@dataclass
class Evaluated:
    """The split the decision is tuned on and scored on: the train split ("pooled") or the test-like slices.
    `density` is the rows each row is searched among, which sets the "auto" false-positive weight."""

    labels: np.ndarray
    rows: np.ndarray
    n: int
    density: int


@dataclass
class Candidates:
    """Candidate pairs and their features: per split the pairs and a featuriser; the pair table every split's
    pairs sit in (the train split first, then the slices where validated on them); the evaluated split."""

    pairs: dict[str, tuple[np.ndarray, np.ndarray]]
    featurize: dict[str, st.PairFeatures]
    table: st.PairTable
    evaluated: Evaluated
    fp_weight: float
    summary: dict
    slices: slices.Slices | None = None

    @property
    def evaluated_split(self) -> int:
        """The split the decision is tuned on: the last in the pair table."""
        return len(self.table.offsets) - 1


def density_thresholds(store: RunStore, params: Params, pool: Pool) -> tuple[dict, dict[str, float]]:
    """Both splits' neighbours, and per model the threshold of the "neighbours above threshold" density feature:
    04's where it tuned the model, else the model's own best."""
    neigh = {split: store.load_neighbours(split, params.models, len(df))
             for split, df in (("train", pool.train), ("test", pool.test))}
    tuned = {m: v["threshold"] for m, v in store.thresholds().get("models", {}).items()}
    thresholds = {m: tuned[m] if m in tuned else decide.tune_model(*neigh["train"][m], pool.labels, pool.scored,
                                                                    min2=False).threshold for m in params.models}
    return neigh, thresholds


def candidates(store: RunStore, params: Params, pool: Pool, neigh: dict, thresholds: dict[str, float],
               steps: Steps) -> Candidates:
    """Candidate pairs of both splits (the first k neighbours of every model) with their features and targets,
    and, with `validation: slices`, those of the test-like slices, on which the decision is then tuned."""
    pairs, featurize, sizes = {}, {}, {}
    for split, df, images in (("train", pool.train, params.train_images), ("test", pool.test, params.test_images)):
        emb = {m: X for m, (X, _) in store.split_embeddings(split, params.models, folds=True).items()}
        pairs[split] = st.candidates(neigh[split], params.k)
        sizes[split] = st.image_sizes(df, images) if params.use_images else None
        featurize[split] = st.PairFeatures(neigh[split], df, emb, thresholds, sizes[split], params.same_image,
                                           phash=pool.test_has_phash, device=params.device)  # test: in chunks later
    rows, cols = pairs["train"]
    # per split: pair features, targets (-1: two distractors, no target), rows, cols, fold of each row
    parts = [(featurize["train"](rows, cols), st.pair_targets(rows, cols, pool.labels, distractor_mask(pool.train)),
              rows, cols, pool.folds)]
    evaluated = Evaluated(pool.labels, pool.scored, len(pool.train), len(pool.train))
    steps.done("candidates, train pair features")
    sl = None
    if params.validation == "slices":  # fold k's rows among test postings at the test's size, out of sample
        sl = slices.build(pool.train, pool.test, pool.folds, params.seed)
        emb = slices.embeddings(store, sl, params.models)
        sl_neigh = slices.neighbours(emb, sl, next(iter(neigh["test"].values()))[0].shape[1])  # as 03 searched
        sl_rows, sl_cols = st.candidates(sl_neigh, params.k)
        sl_sizes = None if sizes["train"] is None else slices.gather(sl, sizes["train"], sizes["test"])
        sl_X = st.PairFeatures(sl_neigh, sl.frame, emb, thresholds, sl_sizes, params.same_image,
                               phash=pool.test_has_phash, device=params.device)(sl_rows, sl_cols)
        parts.append((sl_X, st.pair_targets(sl_rows, sl_cols, sl.labels, sl.distractor), sl_rows, sl_cols,
                      sl.slice_of))
        evaluated = Evaluated(sl.labels, scored_rows(sl.frame), len(sl.frame), round(len(sl.frame) / len(sl.bounds)))
        steps.done("slices: embeddings, neighbours, pair features")
    table = st.PairTable.of(parts)  # every split's pairs side by side: the stacker trains on some, predicts all
    weight = fp_weight_for(params.fp_weight, evaluated.density, len(pool.test))  # a slice has the test's size
    ev_rows, ev_cols, ev_y = table.pairs_of(len(table.offsets) - 1, table.y)
    summary = {"train_pairs": int((table.split == 0).sum()), "evaluated_pairs": len(ev_rows),
               "train_candidate_recall": st.candidate_recall(ev_rows, ev_cols, evaluated.labels),
               "test_pairs": len(pairs["test"][0]), "positive_share": float(ev_y[ev_y >= 0].mean()),
               "features": table.X.shape[1]}
    return Candidates(pairs, featurize, table, evaluated, weight, summary, sl)


def train_stages(params: Params, cand: Candidates, steps: Steps) -> dict[str, st.StageFit]:
    """Stage one on the pair features and, unless `second_stage` is False, stage two on graph features over stage
    one's probabilities: each trained out of fold on the train split's pairs alone, its decisions tuned on the
    evaluated split's out-of-fold probabilities."""
    table, ev = cand.table, cand.evaluated
    y_fit = table.train_targets()  # never trained on a test posting
    fit_args = dict(y=y_fit, table=table, evaluated_split=cand.evaluated_split, labels=ev.labels, rows=ev.rows,
                    n=ev.n, cfg=params.stacker_config(), fp_weight=cand.fp_weight, closure=bool(params.closure))
    stages = {st.FIRST_STAGE: st.fit_stage(st.FIRST_STAGE, table.X, **fit_args)}
    steps.done(f"out-of-fold training: {st.FIRST_STAGE}")
    if params.second_stage:  # graph features over the first stage's OOF probabilities of every split
        graph = st.GraphFeatures(st.pair_matrix(table.rows, table.cols, stages[st.FIRST_STAGE].prob, table.n))
        stages[st.SECOND_STAGE] = st.fit_stage(st.SECOND_STAGE, pd.concat([table.X, graph(table.rows, table.cols)],
                                                                          axis=1), **fit_args)
        steps.done(f"out-of-fold training: {st.SECOND_STAGE}")
    return stages


def choose(params: Params, stages: dict[str, st.StageFit], cand: Candidates) -> tuple[Decision, pd.DataFrame]:
    """The decision with the best out-of-fold F1 (at the test size) among those the settings allow, and the table
    of every decision tuned."""
    decisions = [d for s in stages.values() for d in s.decisions]
    allowed = [d for d in decisions if st.eligible(d, params.second_stage, params.closure)]
    chosen = max(allowed, key=lambda d: d.f1_test_size)
    column = "oof_f1_test_size" if cand.fp_weight != 1 else "oof_f1"
    log.info("selection rule: the best out-of-fold %s among %s -> %s", column, [d.name for d in allowed],
             chosen.name)
    return chosen, pd.DataFrame([d.summary() for d in decisions])


def stage_of(decision: Decision) -> str:
    """The stacker stage a decision was tuned on (its name less a closure suffix)."""
    return decision.name.removesuffix(st.CLOSED)


def probabilities_figure(out: Path, fitted: st.StageFit, decision: Decision, cand: Candidates) -> Figure:
    """Out-of-fold pair probabilities by target, and F1 by probability threshold (with the closure where chosen),
    on the evaluated split; saved beside."""
    ev, weight = cand.evaluated, cand.fp_weight
    ev_y = cand.table.pairs_of(cand.evaluated_split, cand.table.y)[2]
    rule, closure_rule = decision.rule, decision.closure
    curve = decide.f1_curve(*decide.ranked(fitted.matrix), ev.labels, decide.DEFAULT_GRID, rule.min2_threshold,
                            ev.rows, fp_weight=weight)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    a.hist([fitted.evaluated_prob[ev_y == 1], fitted.evaluated_prob[ev_y == 0]], bins=40,
           label=["same product", "different"], log=True)
    a.set(xlabel="out-of-fold probability", ylabel="pairs", title="Pair probabilities")
    a.legend()
    b.plot(decide.DEFAULT_GRID, curve, marker=".", label="threshold + min2")
    if closure_rule is not None:
        grid = decide.DEFAULT_GRID[::5]  # every 0.05: a closure per point is slow on slices
        with_closure = [score(decide.decide_scores(fitted.matrix, decide.ModelThreshold(float(t), rule.min2_threshold),
                                                   closure_rule), ev.labels, ev.rows, weight).f1 for t in grid]
        b.plot(grid, with_closure, marker=".", label=f"+ closure at {closure_rule.threshold:.2f}")
    b.legend()
    b.set(xlabel="probability threshold", ylabel="OOF F1" + (" at the test size" if weight != 1 else ""),
          title=f"F1 by threshold (best {rule.threshold:.2f})")
    fig.tight_layout()
    fig.savefig(out / "probabilities.png", dpi=110)
    return fig


def refit_and_submit(store: RunStore, params: Params, cand: Candidates, stages: dict[str, st.StageFit],
                     decision: Decision, n_test: int, posting_ids: np.ndarray) -> tuple[sp.csr_matrix, pd.Series]:
    """Refit the chosen stage on all train pairs, decide the test pairs with the chosen rule, write the submission
    and `decision.json`; returns the test matches and the feature importance."""
    cfg, y_fit, test_pairs = params.stacker_config(), cand.table.train_targets(), cand.pairs["test"]
    chosen = stage_of(decision)
    clf = st.fit(cand.table.X, y_fit, cfg)
    test_prob = st.predict_pairs(clf, cand.featurize["test"], *test_pairs)
    if chosen == st.SECOND_STAGE:  # the second stage reads the first stage's test probabilities
        clf = st.fit(stages[chosen].X, y_fit, cfg)
        test_graph = st.GraphFeatures(st.pair_matrix(*test_pairs, test_prob, n_test))
        test_prob = st.predict_pairs(clf, st.joined(cand.featurize["test"], test_graph), *test_pairs)
    importance = st.importance(clf, list(stages[chosen].X.columns))
    test_matches = decide.decide_scores(st.pair_matrix(*test_pairs, test_prob, n_test), decision.rule,
                                        decision.closure)
    write_submission(store.submission_path(STACKER), to_submission(posting_ids, test_matches))
    write_json(store.out / "decision.json", {"threshold": decision.rule.threshold,
                                             "min2_threshold": decision.rule.min2_threshold,
                                             "model": chosen_model(cfg), "models": params.models, "k": params.k,
                                             "stage": chosen,
                                             "closure": decision.closure and asdict(decision.closure)})
    return test_matches, importance


def importance_figure(out: Path, importance: pd.Series) -> Figure:
    """The 25 features with the most gain, saved beside."""
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh(importance.index[:25][::-1], importance.values[:25][::-1])
    ax.set(title="Feature importance", xlabel="gain")
    fig.tight_layout()
    fig.savefig(out / "feature_importance.png", dpi=110)
    return fig


def finish(stage: Stage, params: Params, pool: Pool, cand: Candidates, decision: Decision, selection: pd.DataFrame,
           importance: pd.Series, test_matches: sp.csr_matrix) -> tuple[dict, pd.DataFrame]:
    """Close the stage: metrics.json, and 04's and 05's scores side by side."""
    post = stage.store.metrics(POSTPROCESS)  # 04's scores, shown beside 05's
    rule, oof = decision.rule, decision.scores
    metrics = {**cand.summary, "steps": stage.steps.seconds, "oof_f1": oof.f1, "oof_precision": oof.precision,
               "oof_recall": oof.recall, "threshold": rule.threshold, "min2_threshold": rule.min2_threshold,
               "closure": decision.closure and asdict(decision.closure), "fp_weight": cand.fp_weight,
               "oof_f1_test_size": decision.f1_test_size, "postprocess_oof_f1": post.get("oof_f1"),
               "importance": importance.head(25).to_dict(), "stage": stage_of(decision),
               "selection": selection.to_dict(orient="records"), "train_rows": len(pool.scored),
               "distractors": pool.distractors, "validation": params.validation,
               "booster": chosen_model(params.stacker_config())}
    if cand.slices is not None:
        metrics["slices"] = {"rows": len(cand.slices.frame), "test_postings": int(cand.slices.distractor.sum())}
    tested = test_scores(params.test_labels_csv, pool.test, test_matches)
    if tested:
        metrics.update({**tested, "postprocess_test_f1": post.get("test_f1")})
    comparison = pd.DataFrame([
        {"method": "04_postprocess (thresholds, union, toolbox)", "oof_f1": post.get("oof_f1"),
         "test_f1": post.get("test_f1")},
        {"method": f"05_stacker ({metrics['booster']}, {decision.name})", "oof_f1": oof.f1,
         "test_f1": tested.get("test_f1")}])
    write_metrics(stage.out, metrics, key="test_f1" if params.test_labels_csv else "oof_f1")
    return metrics, comparison


def run(params: Params) -> dict:
    """The whole stage without a notebook; returns its metrics."""
    stage = open_stage(STACKER, params)
    pool = read_pool(params, params.test_images)
    neigh, thresholds = density_thresholds(stage.store, params, pool)
    stage.steps.done("load, density thresholds")
    cand = candidates(stage.store, params, pool, neigh, thresholds, stage.steps)
    stages = train_stages(params, cand, stage.steps)
    decision, selection = choose(params, stages, cand)
    stage.steps.done("decision tuning")
    plt.close(probabilities_figure(stage.out, stages[stage_of(decision)], decision, cand))
    stage.steps.done("out-of-fold figure")
    test_matches, importance = refit_and_submit(stage.store, params, cand, stages, decision, len(pool.test),
                                                pool.test["posting_id"].to_numpy())
    stage.steps.done("refit on all pairs, test pair features and scoring")
    plt.close(importance_figure(stage.out, importance))
    return finish(stage, params, pool, cand, decision, selection, importance, test_matches)[0]
