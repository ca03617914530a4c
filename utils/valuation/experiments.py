"""The paper's experiments as functions the valuation notebook calls: splits, model variants and baselines
under one split, the granularity ablation, anchor effectiveness, attribution and the market curve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from . import baselines
from .explain import chance_rate, occlusion_map, pointing_game, region_effect
from .features import Backbone, Inputs
from .fit import predict, train
from .market import market_edges
from .metrics import coverage, interval, scores
from .model import HMGConfig, HMGNet

ABLATION = {"global only": {"dsca": False, "structure": False},
            "+ DSCA": {"structure": False},
            "full (+ structure)": {}}


def split_rows(n: int, val: float = 0.2, test: float = 0.2, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Seeded random train / validation / test row indices."""
    if not 0 < val < 1 or not 0 < test < 1 or val + test >= 1:
        raise ValueError(f"val and test shares must be in (0, 1) with a sum below 1, got {val} and {test}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val, n_test = int(round(val * n)), int(round(test * n))
    return perm[n_val + n_test:], perm[:n_val], perm[n_val:n_val + n_test]


def evaluate(y: np.ndarray, pred: np.ndarray, subsets: dict[str, np.ndarray]) -> dict[str, float]:
    """Scores overall and RMSLE on each named boolean subset of the evaluated rows."""
    out = scores(y, pred)
    for name, mask in subsets.items():
        if mask.any():
            out[f"rmsle_{name}"] = scores(y[mask], pred[mask])["rmsle"]
    return out


def run_variant(cfg: HMGConfig, inputs: Inputs, tr: np.ndarray, va: np.ndarray, te: np.ndarray,
                subsets: dict[str, np.ndarray], level: float = 0.8, **fit_args) -> tuple[HMGNet, dict]:
    """Train one variant; test scores, an interval calibrated on the validation rows, and its coverage."""
    model, history = train(cfg, inputs, tr, va, **fit_args)
    y = inputs.price.numpy()
    val_p, test_p = predict(model, va)["price"], predict(model, te)["price"]
    lo, hi = interval(y[va], val_p, test_p, level)
    result = {**evaluate(y[te], test_p, subsets), "interval_coverage": coverage(y[te], lo, hi),
              "interval_level": level, "history": history, "config": cfg.to_dict()}
    return model, result


def baseline_table(df: pd.DataFrame, tr: np.ndarray, te: np.ndarray, subsets: dict[str, np.ndarray],
                   numeric: list[str]) -> dict[str, dict]:
    """LightGBM and Ridge on TF-IDF + tabular, and anchor x category median depreciation, same split."""
    y = df["price"].to_numpy(float)[te]
    preds = {"lightgbm tfidf+tabular": baselines.lightgbm_price(df, tr, te, numeric),
             "ridge tfidf+tabular": baselines.ridge_price(df, tr, te, numeric),
             "anchor x category median": baselines.anchor_median_price(df, tr, te)}
    return {k: evaluate(y, np.maximum(p, 0), subsets) for k, p in preds.items()}


def fraction_study(inputs: Inputs, tr: np.ndarray, va: np.ndarray, te: np.ndarray, subsets: dict[str, np.ndarray],
                   fractions: list[float], base: HMGConfig, seeds: list[int], **fit_args) -> pd.DataFrame:
    """Test RMSLE of the anchor and the direct head trained on a share of the training rows (mean over seeds)."""
    rows = []
    for frac in fractions:
        for head in ("depreciation", "direct"):
            res = []
            for seed in seeds:
                sub = np.random.default_rng(seed).permutation(tr)[:max(8, int(round(frac * len(tr))))]
                cfg = HMGConfig(**{**base.to_dict(), "head": head})
                _, r = run_variant(cfg, inputs, sub, va, te, subsets, seed=seed, **fit_args)
                res.append(r)
            rows.append({"fraction": frac, "train_rows": len(sub), "head": head,
                         **{k: float(np.mean([r[k] for r in res])) for k in res[0] if k.startswith("rmsle")}})
    return pd.DataFrame(rows)


def attribution_study(model: HMGNet, backbone: Backbone, rows: np.ndarray, paths: list[str],
                      boxes: np.ndarray) -> dict:
    """Pointing game over defect listings: share whose occlusion peak is in the true box, against chance."""
    hits, chance, effects, maps = [], [], [], []
    for row, path, box in zip(rows, paths, boxes, strict=True):
        heat, _ = occlusion_map(model, backbone, int(row), path)
        box = tuple(int(v) for v in box)
        hits.append(pointing_game(heat, box))
        chance.append(chance_rate(box, backbone.size))
        effects.append(region_effect(model, backbone, int(row), path, box))
        maps.append(heat)
    return {"pointing_game": float(np.mean(hits)), "chance": float(np.mean(chance)), "listings": len(hits),
            "mean_defect_region_effect_pp": float(np.mean(effects)), "maps": maps, "hits": hits, "effects": effects}


def market_curve(model: HMGNet, row: int, locations: list[str], vocab: list[str]) -> pd.DataFrame:
    """The same listing's delta with its location set to each of `locations` (the graph rebuilt each time)."""
    inp = model.inputs
    original = inp.location.clone()
    out = []
    try:
        for name in locations:
            inp.location[row] = vocab.index(name) + 1 if name in vocab else 0
            model.edges = market_edges(inp.location, inp.month, inp.sizes["month"])
            out.append({"location": name, "delta": float(predict(model, np.array([row]))["delta"][0])})
    finally:
        inp.location.copy_(original)
        model.edges = market_edges(inp.location, inp.month, inp.sizes["month"])
    return pd.DataFrame(out)


def few_shot(inputs: Inputs, pool: np.ndarray, te: np.ndarray, n_rows: int, seeds: list[int],
             base: HMGConfig, **fit_args) -> pd.DataFrame:
    """Anchor vs direct head trained on `n_rows` rows drawn from `pool` (a fifth of them validate), per seed."""
    rows = []
    y = inputs.price.numpy()
    for seed in seeds:
        sub = np.random.default_rng(seed).permutation(pool)[:n_rows]
        n_val = max(2, n_rows // 5)
        for head in ("depreciation", "direct"):
            cfg = HMGConfig(**{**base.to_dict(), "head": head})
            model, _ = train(cfg, inputs, sub[n_val:], sub[:n_val], seed=seed, **fit_args)
            rows.append({"seed": seed, "head": head, **scores(y[te], predict(model, te)["price"])})
    return pd.DataFrame(rows)


def detector_auc(model: HMGNet, rows: np.ndarray, present: list[set[str]], category: np.ndarray,
                 accessories: list[str], defect: np.ndarray) -> dict[str, float | None]:
    """ROC AUC of the image detectors against the generator's truth on `rows`: accessory presence over the
    accessories seen with each row's category (`present`: the accessories in each row's photo), and the
    defect logit against `defect` (bool per row). None for a detector the model does not have."""
    model.eval()
    with torch.no_grad():
        out = model(torch.as_tensor(rows))
    result: dict[str, float | None] = {"accessory_presence_auc": None, "defect_auc": None}
    if "presence" in out:
        seen: dict[str, set[str]] = {}
        for c, acc in zip(category, present, strict=True):
            seen.setdefault(c, set()).update(acc)
        col = {a: j for j, a in enumerate(accessories)}
        y, p = [], []
        for k, r in enumerate(rows):
            for a in seen[category[r]] & col.keys():
                y.append(a in present[r])
                p.append(float(out["presence"][k, col[a]]))
        result["accessory_presence_auc"] = float(roc_auc_score(y, p)) if len(set(y)) == 2 else None
    if "defect_logit" in out and len(set(defect[rows])) == 2:
        result["defect_auc"] = float(roc_auc_score(defect[rows], out["defect_logit"].numpy()))
    return result


def gamma_of(model: HMGNet) -> float | None:
    """The learned market weight of a depreciation head (None for the direct head)."""
    g = getattr(model.head, "gamma", None)
    return float(g.detach()) if isinstance(g, torch.Tensor) else None
