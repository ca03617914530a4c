"""The post-processing toolbox as one configurable recipe, fitted on train rows and applied to any
split: blending (INB / QE), similarity fusion, unit and attribute rules, thresholds with min2,
union with exact pHash (and the same image file), chisel, cap 50. `ablation` measures each step added in turn,
out of fold."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from utils.core.metric import row_scores, score
from utils.core.store import FoldEmbedding

from . import blend, decide
from .chisel import chisel
from .fusion import fuse
from .rules import DEFAULT_RULES, Rule, apply_rules, pair_status

Neigh = dict[str, tuple[np.ndarray, np.ndarray]]
RULE_GRID = (-0.1, -0.05, 0.0, 0.05, 0.1, 0.2)
CHISEL_GRID = (1.0, 1.25, 1.5, 2.0, 3.0)


@dataclass
class PostConfig:
    """Switches and settings of every step; each defaults to off but thresholds, min2 and pHash."""

    models: list[str]
    min2: bool = True
    phash_exact: bool = True
    image_exact: bool = False  # add rows with the same image file name (the same photo)
    joint: bool = True  # tune the union's thresholds jointly
    inb: dict | None = None  # neighbourhood blending, e.g. {"rounds": 1, "threshold": 0.5, "models": ["text"]}
    qe: dict | None = None  # alpha query expansion / DBA, e.g. {"k": 3, "alpha": 3.0} (alpha 0 = DBA)
    fusion: str | None = None  # mean | max | prod | prob_union: one fused model replaces the fused models
    fusion_models: list[str] | None = None  # the models fused (None: all); the others stay beside it in the union
    units: bool = False  # drop pairs whose quantities differ (30g vs 50g)
    rules: bool = False  # tune the attribute rule table (model codes, brand)
    closure: bool = False  # join the strong components of the matches (threshold tuned; off when it does not help)
    chisel: bool = False  # cut rows to the train group-size distribution
    fp_weight: float = 1.0  # tune for a test split this many times as large as train (metric.row_scores)
    k: int = 50


@dataclass
class Fitted:
    """What `fit` learns on train rows; everything `apply` needs besides the data."""

    thresholds: decide.Thresholds
    rules: list[Rule] = field(default_factory=list)
    closure: decide.Closure | None = None
    chisel_slack: float | None = None

    def to_dict(self) -> dict:
        return {**self.thresholds.to_dict(), "rules": [vars(r) for r in self.rules],
                "closure": None if self.closure is None else asdict(self.closure), "chisel_slack": self.chisel_slack}


def check_fp_weight(setting: float | str) -> None:
    """A ValueError unless the setting is "auto" or a positive number (checked in configs and at tuning time)."""
    if setting != "auto" and (isinstance(setting, str) or not setting > 0):
        raise ValueError(f"fp_weight must be 'auto' or a positive number, got {setting!r}")


def fp_weight_for(setting: float | str, n_train: int, n_test: int) -> float:
    """The tuning weight of a false positive: "auto" is test rows / train rows (each row's look-alikes grow
    with the rows searched, its true matches do not), a number is taken as given."""
    check_fp_weight(setting)
    if setting == "auto":
        if n_train < 1 or n_test < 1:
            raise ValueError(f"fp_weight 'auto' needs rows in both splits, got {n_train} train and {n_test} test")
        return n_test / n_train
    return float(setting)


def prepare(embeddings: dict, neigh: Neigh, cfg: PostConfig, backend: str = "auto") -> Neigh:
    """Label-free steps: INB and QE re-embed and re-search each model that has embeddings (or those the step
    names in `models`, which `with_blend_models` fills from the train split: a cross-validated model's train
    rows live in several fold spaces, so it cannot be blended); fusion merges its models (all, or
    `fusion_models`) into one and needs their embeddings (a cross-validated model's fold ones too)."""
    emb = {m: embeddings.get(m) for m in cfg.models}
    fused = list(cfg.fusion_models or cfg.models)
    if cfg.fusion:
        unknown = sorted(set(fused) - set(cfg.models))
        if unknown:
            raise KeyError(f"fusion_models names {unknown}, which are not among the stage's models {cfg.models}")
        missing = [m for m in fused if emb[m] is None]
        if missing:
            raise KeyError(f"fusion needs the embeddings of {missing} in both splits; fuse other models "
                           "(fusion_models) or turn fusion off")
    out = {m: neigh[m] for m in cfg.models}
    for name, step in (("inb", cfg.inb), ("qe", cfg.qe)):
        if not step:
            continue
        chosen = step.get("models") or cfg.models
        unknown = sorted(set(chosen) - set(cfg.models))
        if unknown:
            raise KeyError(f"{name}.models names {unknown}, which are not among the stage's models {cfg.models}")
        for m in chosen:
            if isinstance(emb[m], FoldEmbedding):
                raise KeyError(f"{name}.models names {m}, a cross-validated model: its train rows live in several "
                               "fold spaces, so it cannot be blended")
            if emb[m] is None:
                continue
            params = ({"threshold": step.get("threshold", 0.5), "rounds": step.get("rounds", 1)} if name == "inb"
                      else {"threshold": None, "qe_k": step.get("k", 3), "alpha": step.get("alpha", 3.0),
                            "rounds": step.get("rounds", 1)})
            idx, sims = out[m]
            emb[m], idx, sims = blend.iterate(emb[m], idx[:, :cfg.k], sims[:, :cfg.k], backend=backend, **params)
            out[m] = (idx, sims)
    if cfg.fusion:
        merged = fuse({m: emb[m] for m in fused}, {m: out[m] for m in fused}, cfg.fusion, cfg.k)
        out = {"fused": merged, **{m: v for m, v in out.items() if m not in fused}}
    return out


def with_blend_models(cfg: PostConfig, train_embeddings: dict) -> PostConfig:
    """`cfg` with the models INB and QE blend by default made explicit, from the train split: those with one
    embedding space there (not a cross-validated model's fold spaces), so that both splits blend the same ones."""
    plain = [m for m in cfg.models if m in train_embeddings and not isinstance(train_embeddings[m], FoldEmbedding)]
    steps = {name: {**step, "models": step.get("models") or plain}
             for name, step in (("inb", cfg.inb), ("qe", cfg.qe)) if step}
    return replace(cfg, **steps)


def _with_rules(neigh: Neigh, status: dict, rules: list[Rule]) -> Neigh:
    active = [r for r in rules if r.delta != 0.0]
    if not active:
        return neigh
    return {m: apply_rules(i, s, status[m], active) for m, (i, s) in neigh.items()}


def exact_keys(postings: pd.DataFrame | None, cfg: PostConfig) -> list[np.ndarray] | None:
    """The keys whose equality is a match in this recipe: the pHash (`phash_exact`; an empty one is unknown)
    and the image file name (`image_exact`: the same photo); None when neither is on or there are no postings."""
    if postings is None:
        return None
    keys = [postings["image_phash"].to_numpy()] if cfg.phash_exact else []
    if cfg.image_exact:  # the file's name: a distractor's image may be a path into the test images folder
        keys.append(postings["image"].str.rsplit("/", n=1).str[-1].to_numpy())
    return keys or None


def _matches(neigh: Neigh, exact, fitted: Fitted, train_labels: np.ndarray, status: dict) -> sp.csr_matrix:
    combined = decide.combine(_with_rules(neigh, status, fitted.rules), fitted.thresholds, exact)
    m = combined if fitted.closure is None else decide.close(combined, fitted.closure)
    return m if fitted.chisel_slack is None else chisel(m, train_labels, fitted.chisel_slack)


def _f1(m: sp.csr_matrix, labels: np.ndarray, rows: np.ndarray | None, fp_weight: float) -> float:
    f1 = row_scores(m, labels, fp_weight)[0]
    return float(f1.mean() if rows is None else f1[rows].mean())


def fit(neigh: Neigh, titles_status: dict, labels: np.ndarray, postings: pd.DataFrame | None, cfg: PostConfig,
        rows: np.ndarray | None = None) -> Fitted:
    """Tune rule deltas, thresholds, the closure threshold and the chisel slack on `rows` of the training split
    (`postings`, the split's frame, gives the exact-match keys; None: none)."""
    exact = exact_keys(postings, cfg)
    rules = [replace(r) for r in DEFAULT_RULES]
    if cfg.units:
        rules[0].delta = 1.0
    tune = {"min2": cfg.min2, "phash_exact": exact is not None, "joint": False, "fp_weight": cfg.fp_weight}
    fitted = Fitted(decide.tune(_with_rules(neigh, titles_status, rules), labels, exact, rows, **tune), rules)
    if cfg.rules:
        for rule in rules[1:]:
            scores = []
            for d in RULE_GRID:
                rule.delta = d
                scores.append(_f1(_matches(neigh, exact, fitted, labels, titles_status), labels, rows, cfg.fp_weight))
            rule.delta = RULE_GRID[int(np.argmax(scores))]
    adjusted = _with_rules(neigh, titles_status, rules)
    fitted.thresholds = decide.tune(adjusted, labels, exact, rows, **{**tune, "joint": cfg.joint})
    if cfg.closure:  # the best closure threshold (components up to the largest train group), kept if it helps
        combined = decide.combine(_with_rules(neigh, titles_status, rules), fitted.thresholds, exact)
        tried = [decide.Closure(float(c), decide.largest_group(labels, rows)) for c in decide.DEFAULT_GRID]
        scores = [_f1(decide.close(combined, c), labels, rows, cfg.fp_weight) for c in tried]
        best = int(np.argmax(scores))
        fitted.closure = tried[best] if scores[best] > _f1(combined, labels, rows, cfg.fp_weight) else None
    if cfg.chisel:
        scores = []
        for slack in CHISEL_GRID:
            fitted.chisel_slack = slack
            scores.append(_f1(_matches(neigh, exact, fitted, labels, titles_status), labels, rows, cfg.fp_weight))
        fitted.chisel_slack = CHISEL_GRID[int(np.argmax(scores))]
    return fitted


def apply(neigh: Neigh, status: dict, postings: pd.DataFrame | None, fitted: Fitted, train_labels: np.ndarray,
          cfg: PostConfig) -> sp.csr_matrix:
    """Matches of a split (capped at 50, valued by similarity) under fitted settings."""
    return _matches(neigh, exact_keys(postings, cfg), fitted, train_labels, status)


def statuses(neigh: Neigh, attrs: dict, cfg: PostConfig) -> dict:
    """Rule masks per model, computed once (empty when no rule step is on)."""
    if not (cfg.units or cfg.rules):
        return {m: None for m in neigh}
    return {m: pair_status(attrs, i) for m, (i, _) in neigh.items()}


def _scored_mask(n: int, scored: np.ndarray | None) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[np.arange(n) if scored is None else scored] = True
    return mask


def out_of_fold(neigh: Neigh, status: dict, labels: np.ndarray, folds: np.ndarray, postings: pd.DataFrame | None,
                cfg: PostConfig, scored: np.ndarray | None = None) -> sp.csr_matrix:
    """Out-of-fold matches: each fold's rows matched by settings fitted on the other folds' `scored` rows
    (default all; a training pool's distractors are matched, never tuned on)."""
    out = sp.csr_matrix((len(labels), len(labels)))
    tunable = _scored_mask(len(labels), scored)
    for k in np.unique(folds):
        rows = np.flatnonzero((folds != k) & tunable)
        fitted = fit(neigh, status, labels, postings, cfg, rows=rows)
        held = sp.diags((folds == k).astype(np.float64))
        out = out + held @ apply(neigh, status, postings, fitted, labels[rows], cfg)
    return out.tocsr()


def ablation_steps(final: PostConfig, best_single: str) -> list[tuple[str, PostConfig]]:
    """Cumulative configurations: one model, + min2, + union & pHash, then each enabled step in turn."""
    base = PostConfig(models=[best_single], min2=False, phash_exact=False, joint=False, fp_weight=final.fp_weight,
                      k=final.k)
    steps = [("best single model, threshold", base), ("+ min2", replace(base, min2=True))]
    cur = replace(base, models=list(final.models), min2=final.min2, phash_exact=final.phash_exact, joint=final.joint)
    steps.append(("+ union of models" + (" + pHash" if final.phash_exact else ""), cur))
    if final.image_exact:
        cur = replace(cur, image_exact=True)
        steps.append(("+ same image file", cur))
    for name, change in (("+ INB", {"inb": final.inb}), ("+ query expansion", {"qe": final.qe}),
                         (f"+ fusion ({final.fusion})", {"fusion": final.fusion, "fusion_models": final.fusion_models}),
                         ("+ unit check", {"units": final.units}),
                         ("+ attribute rules", {"rules": final.rules}), ("+ closure", {"closure": final.closure}),
                         ("+ chisel", {"chisel": final.chisel})):
        if next(iter(change.values())):
            cur = replace(cur, **change)
            steps.append((name, cur))
    return steps


def selection_column(table: pd.DataFrame) -> str:
    """The ablation column that picks the recipe: the F1 at the test split's size when it was computed."""
    return "f1_test_size" if "f1_test_size" in table else "f1"


def ablation(embeddings: dict, neigh: Neigh, attrs: dict, labels: np.ndarray, folds: np.ndarray,
             postings: pd.DataFrame | None,
             final: PostConfig, backend: str = "auto", scored: np.ndarray | None = None) -> pd.DataFrame:
    """Out-of-fold F1 / precision / recall of each step added in turn (seed 002's results table), and with
    `final.fp_weight` != 1 the F1 expected on the larger test split (`f1_test_size`), which picks the recipe.
    Scores are means over the `scored` rows (default all)."""
    singles = {m: decide.f1_curve(*neigh[m], labels, rows=scored, fp_weight=final.fp_weight).max()
               for m in final.models}
    best_single = max(singles, key=singles.get)
    rows = []
    for name, cfg in ablation_steps(final, best_single):
        prepared = prepare(embeddings, neigh, cfg, backend)
        oof = out_of_fold(prepared, statuses(prepared, attrs, cfg), labels, folds, postings, cfg, scored)
        s = score(oof, labels, scored)
        rows.append({"step": name, "f1": s.f1, "precision": s.precision, "recall": s.recall})
        if final.fp_weight != 1.0:
            rows[-1]["f1_test_size"] = score(oof, labels, scored, final.fp_weight).f1
    table = pd.DataFrame(rows)
    table.attrs["best_single"] = best_single
    table.attrs["best_step"] = int(table[selection_column(table)].idxmax())
    return table
