"""Baselines under the same split: TF-IDF + tabular with LightGBM or Ridge (Mercari-style), each on two targets,
log price and log(price / anchor) (the target HMG-Net's depreciation layer gets: the fair comparison), and the
anchor times the median depreciation of the category."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import Ridge

from .features import estimate_anchor
from .wide import ALPHA, TextTabular

TARGETS = ("log price", "log(price/anchor)")


def _target(df: pd.DataFrame, train_idx: np.ndarray, target: str) -> tuple[np.ndarray, Callable]:
    """The regression target of every row, and `to_price(prediction, rows)`."""
    price = df["price"].to_numpy(float)
    if target == "log price":
        return np.log1p(price), lambda z, rows: np.expm1(z)
    if target == "log(price/anchor)":
        anchor, _ = estimate_anchor(df, train_idx)
        return np.log(price / anchor), lambda z, rows: anchor[rows] * np.exp(z)
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


def tabular_text_matrix(df: pd.DataFrame, train_idx: np.ndarray, numeric: list[str] = ()) -> sp.csr_matrix:
    """TF-IDF (word 1-2 grams) of title + description, one-hot categoricals, log anchor and numbers, fitted on
    the training rows (`wide.TextTabular`, the matrix HMG-Net's wide part reads too)."""
    anchor, estimated = estimate_anchor(df, train_idx)
    return TextTabular.fit(df, train_idx, anchor, estimated, numeric).transform(df, anchor, estimated)


def lightgbm_price(df: pd.DataFrame, train_idx: np.ndarray, test_idx: np.ndarray, numeric: list[str] = (),
                   seed: int = 0, target: str = "log price", X: sp.csr_matrix | None = None) -> np.ndarray:
    """LightGBM regression of `target` on the TF-IDF + tabular matrix (`X`, when built once for several
    baselines); test prices."""
    import lightgbm as lgb

    X = tabular_text_matrix(df, train_idx, numeric) if X is None else X
    y, to_price = _target(df, train_idx, target)
    model = lgb.LGBMRegressor(n_estimators=600, learning_rate=0.05, num_leaves=31, min_child_samples=10,
                              subsample=0.8, subsample_freq=1, colsample_bytree=0.5, random_state=seed, verbose=-1)
    model.fit(X[train_idx], y[train_idx])
    return to_price(model.predict(X[test_idx]), test_idx)


def ridge_price(df: pd.DataFrame, train_idx: np.ndarray, test_idx: np.ndarray, numeric: list[str] = (),
                target: str = "log price", X: sp.csr_matrix | None = None) -> np.ndarray:
    """Ridge regression of `target` on the TF-IDF + tabular matrix (`X`, as for `lightgbm_price`); test prices."""
    X = tabular_text_matrix(df, train_idx, numeric) if X is None else X
    y, to_price = _target(df, train_idx, target)
    return to_price(Ridge(alpha=ALPHA).fit(X[train_idx], y[train_idx]).predict(X[test_idx]), test_idx)


def anchor_median_price(df: pd.DataFrame, train_idx: np.ndarray, test_idx: np.ndarray) -> np.ndarray:
    """anchor * (1 - median delta of the category in the training rows)."""
    anchor, _ = estimate_anchor(df, train_idx)
    delta = 1 - df["price"].to_numpy(float) / anchor
    train = pd.DataFrame({"delta": delta[train_idx],
                          "category": df["category"].iloc[train_idx].to_numpy() if "category" in df else ""})
    table = train.groupby("category")["delta"].median()
    cats = df["category"].iloc[test_idx] if "category" in df else pd.Series("", index=test_idx)
    d = cats.map(table).fillna(train["delta"].median()).to_numpy(float)
    return anchor[test_idx] * (1 - d)
