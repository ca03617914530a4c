"""Valuation metrics: RMSLE (the Mercari metric), MAE, MAPE, and a split-conformal 80% interval."""

from __future__ import annotations

import numpy as np


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y, float), np.asarray(p, float)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"need two non-empty 1-d arrays of one length, got {y.shape} and {p.shape}")
    if (y < 0).any() or (p < 0).any() or not np.isfinite(p).all():
        raise ValueError("prices must be finite and >= 0")
    return y, p


def rmsle(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _check(y, p)
    return float(np.sqrt(np.mean((np.log1p(p) - np.log1p(y)) ** 2)))


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """RMSLE, MAE and MAPE (%) of predicted prices."""
    y, p = _check(y, p)
    return {"rmsle": rmsle(y, p), "mae": float(np.mean(np.abs(p - y))),
            "mape": float(100 * np.mean(np.abs(p - y) / np.maximum(y, 1e-9)))}


def interval(cal_y: np.ndarray, cal_p: np.ndarray, p: np.ndarray, level: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Prediction interval from the calibration rows' log residuals (split conformal, asymmetric quantiles)."""
    cal_y, cal_p = _check(cal_y, cal_p)
    r = np.log1p(cal_y) - np.log1p(cal_p)
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    return np.expm1(np.log1p(p) + lo), np.expm1(np.log1p(p) + hi)


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    y = np.asarray(y, float)
    return float(np.mean((y >= lo) & (y <= hi)))
