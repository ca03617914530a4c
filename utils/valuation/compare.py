"""Comparisons that an interval supports: several splits (seeded random, or K folds so every row is tested once),
each with train / validation (early stopping) / calibration (the interval, nothing else) / test rows; every
model and baseline on the same rows; tables of mean RMSLE with paired-bootstrap intervals of the differences,
interval coverage and errors per group."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from utils.core.progress import progress

from . import baselines
from .features import Inputs
from .fit import predict, train
from .metrics import IntervalBounds, apply_interval, calibrate, coverage, group_scales, paired_bootstrap, rmsle
from .model import HMGConfig, HMGNet


@dataclass
class Split:
    """Row indices of one evaluation split."""

    name: str
    seed: int  # also the seed of the models trained on it
    train: np.ndarray
    val: np.ndarray  # early stopping
    cal: np.ndarray  # interval calibration only
    test: np.ndarray


def make_splits(n: int, seeds: list[int], val: float = 0.15, cal: float = 0.15, test: float = 0.2,
                folds: int = 0) -> list[Split]:
    """One random split per seed (shares of all rows), or with `folds` >= 2, K-fold cross-validation: fold k is
    the test set of split k (every row tested once, folds drawn with the first seed) and the other rows are
    split into train / val / cal with seed k."""
    if not seeds:
        raise ValueError("need at least one split seed")
    if folds == 1 or folds < 0:
        raise ValueError(f"folds must be 0 (random splits) or at least 2, got {folds}")
    test_share = 1 / folds if folds else test
    for name, share in (("val", val), ("cal", cal), ("test", test_share)):
        if not 0 < share < 1:
            raise ValueError(f"{name} share must be in (0, 1), got {share}")
    if val + cal + test_share >= 0.9:
        raise ValueError(f"val + cal + test shares ({val} + {cal} + {test_share:.3g}) leave under 10% for training")
    n_val, n_cal = int(round(val * n)), int(round(cal * n))
    if min(n_val, n_cal) < 2:
        raise ValueError(f"{n} rows leave fewer than 2 validation or calibration rows")
    out = []
    if folds:
        parts = np.array_split(np.random.default_rng(seeds[0]).permutation(n), folds)
        for k, test_rows in enumerate(parts):
            rest = np.random.default_rng(k).permutation(np.setdiff1d(np.arange(n), test_rows))
            out.append(Split(f"fold {k}", k, rest[n_val + n_cal:], rest[:n_val], rest[n_val:n_val + n_cal],
                             np.sort(test_rows)))
        return out
    n_test = int(round(test * n))
    for s in seeds:
        perm = np.random.default_rng(s).permutation(n)
        out.append(Split(f"seed {s}", s, perm[n_val + n_cal + n_test:], perm[:n_val], perm[n_val:n_val + n_cal],
                         perm[n_val + n_cal:n_val + n_cal + n_test]))
    return out


def baseline_predictions(df: pd.DataFrame, split: Split, numeric: list[str]) -> dict[str, np.ndarray]:
    """Test prices of every baseline, trained on the split's training rows."""
    tr, te = split.train, split.test
    X = baselines.tabular_text_matrix(df, tr, numeric)  # the same features for every regression baseline
    out = {}
    for target in baselines.TARGETS:
        out[f"lightgbm {target}"] = baselines.lightgbm_price(df, tr, te, numeric, target=target, seed=split.seed,
                                                             X=X)
        out[f"ridge {target}"] = baselines.ridge_price(df, tr, te, numeric, target=target, X=X)
    out["anchor x category median"] = baselines.anchor_median_price(df, tr, te)
    return {k: np.maximum(v, 0) for k, v in out.items()}


@dataclass
class Comparison:
    """Long table of test predictions (split, row, model, price, and delta, lo, hi for HMG-Net variants) and the
    first split's trained models and training histories."""

    predictions: pd.DataFrame
    models: dict[str, HMGNet]
    histories: dict[str, list[dict]]
    bounds: dict[str, IntervalBounds]  # first split: conformal log-residual bounds per HMG-Net variant
    validation: dict[str, list[float]]  # best validation RMSLE per HMG-Net variant, one per split (model choice)


def _scales(y: np.ndarray, groups: np.ndarray, split: Split, inputs: Inputs, model) -> dict[str, float]:
    """Each group's relative error scale for the normalised intervals, from rows that neither calibrate nor test:
    the wide part's out-of-fold errors on the training rows where the inputs have them (many rows per group),
    else the model's errors on the validation rows."""
    if inputs.wide is not None:
        oof = inputs.anchor.numpy()[split.train] * np.exp(inputs.wide.numpy()[split.train])
        return group_scales(y[split.train], oof, groups[split.train])
    return group_scales(y[split.val], predict(model, split.val)["price"], groups[split.val])


def compare(df: pd.DataFrame, splits: list[Split], variants: dict[str, HMGConfig],
            inputs_for: Callable[[Split], Inputs], numeric: list[str], level: float = 0.8,
            interval_by: str | None = None, min_group_rows: int = 100, **fit_args) -> Comparison:
    """Every HMG-Net variant (interval calibrated on the split's calibration rows, per `interval_by` group where
    it has `min_group_rows` of them, else scaled by the group's error scale, `_scales`) and every baseline on each
    split; `inputs_for(split)` encodes the listings with preprocessing fitted on that split's training rows."""
    y = df["price"].to_numpy(float)
    groups = df[interval_by].astype(str).to_numpy() if interval_by and interval_by in df else None
    frames, models, histories, bounds, validation = [], {}, {}, {}, {}
    for k, split in enumerate(progress(splits, desc="splits", unit="split", leave=False)):
        inputs = inputs_for(split)
        for name, cfg in variants.items():
            model, history = train(cfg, inputs, split.train, split.val, seed=split.seed, **fit_args)
            scales = None if groups is None else _scales(y, groups, split, inputs, model)
            q = calibrate(y[split.cal], predict(model, split.cal)["price"], level,
                          None if groups is None else groups[split.cal], interval_by if groups is not None else None,
                          min_group_rows, scales)
            test = predict(model, split.test)
            lo, hi = apply_interval(test["price"], q.for_rows(None if groups is None else groups[split.test]))
            validation.setdefault(name, []).append(min(h["val_rmsle"] for h in history))
            frames.append(pd.DataFrame({"split": split.name, "row": split.test, "model": name, "price": test["price"],
                                        "delta": test["delta"], "lo": lo, "hi": hi}))
            if k == 0:
                models[name], histories[name], bounds[name] = model, history, q
        for name, price in baseline_predictions(df, split, numeric).items():
            frames.append(pd.DataFrame({"split": split.name, "row": split.test, "model": name, "price": price}))
    return Comparison(pd.concat(frames, ignore_index=True), models, histories, bounds, validation)


def aliased(comparison: Comparison, source: str, name: str) -> Comparison:
    """The comparison with the variant `source` also under `name` (its rows, model, history and bounds): the
    variant chosen by validation becomes the model every other is compared with."""
    rows = comparison.predictions[comparison.predictions["model"] == source].assign(model=name)
    parts = {k: {**d, name: d[source]} for k, d in (("models", comparison.models), ("histories", comparison.histories),
                                                     ("bounds", comparison.bounds),
                                                     ("validation", comparison.validation))}
    return Comparison(pd.concat([comparison.predictions, rows], ignore_index=True), **parts)


def interval_coverage(predictions: pd.DataFrame, y: np.ndarray) -> float:
    """Share of the prediction rows (columns `row`, `lo`, `hi`) whose price `y[row]` lies in their interval."""
    return coverage(y[predictions["row"].to_numpy()], predictions["lo"].to_numpy(), predictions["hi"].to_numpy())


def _per_split(p: pd.DataFrame, y: np.ndarray) -> pd.Series:
    """RMSLE of each split's rows of `p` (one model's predictions)."""
    return pd.Series({name: rmsle(y[g["row"].to_numpy()], g["price"].to_numpy()) for name, g in p.groupby("split")})


def summary(predictions: pd.DataFrame, y: np.ndarray, reference: str, subsets: dict[str, np.ndarray] | None = None,
            models: list[str] | None = None, n_boot: int = 2000) -> pd.DataFrame:
    """Per model: RMSLE as the mean over splits (and its spread), and the paired-bootstrap 95% interval of the
    difference with `reference` (negative: better than the reference; 0 for the reference itself), overall and
    on each boolean `subsets` mask over all rows. A difference is supported when its interval excludes 0."""
    ref = predictions[predictions["model"] == reference].sort_values(["split", "row"])
    masks = {"": np.ones(len(y), bool), **(subsets or {})}
    rows = []
    for name in models or list(dict.fromkeys(predictions["model"])):
        p = predictions[predictions["model"] == name].sort_values(["split", "row"])
        if not np.array_equal(p["row"].to_numpy(), ref["row"].to_numpy()):
            raise ValueError(f"{name} and {reference} were not scored on the same rows")
        out = {"model": name, "rmsle_sd": float(_per_split(p, y).std(ddof=0))}
        for sub, mask in masks.items():
            keep = mask[p["row"].to_numpy()]
            if not keep.any():
                continue
            key = f"_{sub}" if sub else ""
            out[f"rmsle{key}"] = float(_per_split(p[keep], y).mean())
            b = {"difference": 0.0, "lo": 0.0, "hi": 0.0} if name == reference else paired_bootstrap(
                y[p["row"].to_numpy()[keep]], p["price"].to_numpy()[keep], ref["price"].to_numpy()[keep],
                p["split"].to_numpy()[keep], n_boot=n_boot)
            out[f"diff{key}"], out[f"diff{key}_lo"], out[f"diff{key}_hi"] = b["difference"], b["lo"], b["hi"]
        rows.append(out)
    return pd.DataFrame(rows).set_index("model")


def by_group(predictions: pd.DataFrame, y: np.ndarray, groups: pd.Series, models: list[str],
             interval_model: str) -> pd.DataFrame:
    """Test rows of all splits pooled, per value of `groups` (a column of all rows): row count, RMSLE of each of
    `models`, and the coverage of `interval_model`'s interval; an "all" row last."""
    pooled = predictions[predictions["model"].isin(models)].copy()
    pooled["group"] = groups.to_numpy()[pooled["row"].to_numpy()]
    pooled["y"] = y[pooled["row"].to_numpy()]
    out = {}
    for key, g in [*pooled.groupby("group"), ("all", pooled)]:
        row = {"test_rows": int((g["model"] == interval_model).sum())}
        for name, m in g.groupby("model"):
            row[f"rmsle {name}"] = rmsle(m["y"].to_numpy(), m["price"].to_numpy())
        iv = g[g["model"] == interval_model]
        row["coverage"] = coverage(iv["y"].to_numpy(), iv["lo"].to_numpy(), iv["hi"].to_numpy())
        out[key] = row
    return pd.DataFrame(out).T.rename_axis("group")
