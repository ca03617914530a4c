"""The paper's experiments on one split, as functions the valuation notebook calls: anchor effectiveness by
training share and few-shot, attribution, the image detectors against the truth and the market curve (the
comparisons over several splits are in `compare`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from .explain import chance_rate, occlusion_map, pointing_game, region_effect
from .features import Backbone, Inputs
from .fit import predict, train
from .metrics import scores
from .model import HMGConfig, HMGNet

ABLATION = {"global only": {"dsca": False, "structure": False}, "+ DSCA": {"structure": False}}  # and the full model


def evaluate(y: np.ndarray, pred: np.ndarray, subsets: dict[str, np.ndarray]) -> dict[str, float]:
    """Scores overall and RMSLE on each named boolean subset of the evaluated rows."""
    out = scores(y, pred)
    for name, mask in subsets.items():
        if mask.any():
            out[f"rmsle_{name}"] = scores(y[mask], pred[mask])["rmsle"]
    return out


def fraction_study(inputs: Inputs, tr: np.ndarray, va: np.ndarray, te: np.ndarray, subsets: dict[str, np.ndarray],
                   fractions: list[float], base: HMGConfig, seeds: list[int], **fit_args) -> pd.DataFrame:
    """Test RMSLE of the anchor and the direct head trained on a share of the training rows (mean over seeds)."""
    rows = []
    for frac in fractions:
        for head in ("depreciation", "direct"):
            res = []
            for seed in seeds:
                sub = np.random.default_rng(seed).permutation(tr)[:max(8, int(round(frac * len(tr))))]
                cfg = HMGConfig(**{**base.to_dict(), "head": head, "wide": base.wide and head == "depreciation"})
                model, _ = train(cfg, inputs, sub, va, seed=seed, **fit_args)
                res.append(evaluate(inputs.price.numpy()[te], predict(model, te)["price"], subsets))
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
    """The same listing's delta with its location set to each of `locations` (the market nodes stay those of
    the reference listings)."""
    inp = model.inputs
    original = int(inp.location[row])
    out = []
    try:
        for name in locations:
            inp.location[row] = vocab.index(name) + 1 if name in vocab else 0
            out.append({"location": name, "delta": float(predict(model, np.array([row]))["delta"][0])})
    finally:
        inp.location[row] = original
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
            cfg = HMGConfig(**{**base.to_dict(), "head": head, "wide": base.wide and head == "depreciation"})
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
