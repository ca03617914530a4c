"""Valuation metrics: RMSLE (the Mercari metric), MAE, MAPE, a split-conformal interval, and the paired bootstrap
of an RMSLE difference over several splits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binom


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


def interval_quantiles(cal_y: np.ndarray, cal_p: np.ndarray, level: float = 0.8) -> tuple[float, float]:
    """Split-conformal bounds of the log residual log1p(y) - log1p(p) from calibration rows that trained and
    selected nothing: the k-th smallest with the finite-sample ranks floor((n + 1) a / 2) and
    ceil((n + 1)(1 - a / 2)), a = 1 - level (clamped to the extremes when n is too small for them)."""
    if not 0 < level < 1:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    cal_y, cal_p = _check(cal_y, cal_p)
    return _rank_bounds(np.log1p(cal_y) - np.log1p(cal_p), level)


def _rank_bounds(scores: np.ndarray, level: float) -> tuple[float, float]:
    r = np.sort(scores)
    n, a = len(r), 1 - level
    lo = int(np.clip(np.floor((n + 1) * a / 2), 1, n))
    hi = int(np.clip(np.ceil((n + 1) * (1 - a / 2)), 1, n))
    return float(r[lo - 1]), float(r[hi - 1])


def group_scales(y: np.ndarray, p: np.ndarray, groups: np.ndarray, shrink: float = 10.0) -> dict[str, float]:
    """Each group's error scale relative to all rows': the RMS of its log residuals on rows that trained nothing
    but early stopping (validation), shrunk toward the overall RMS s with `shrink` pseudo-rows,
    sqrt((sum r^2 + shrink s^2) / (n + shrink)) / s, so a group seen twice stays near 1."""
    y, p = _check(y, p)
    r2 = (np.log1p(y) - np.log1p(p)) ** 2
    s2 = max(float(r2.mean()), 1e-12)
    groups = np.asarray(groups).astype(str)
    return {str(g): float(np.sqrt((r2[groups == g].sum() + shrink * s2) / ((groups == g).sum() + shrink) / s2))
            for g in np.unique(groups)}


def apply_interval(p: np.ndarray, bounds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Interval of predicted prices `p` from `interval_quantiles` bounds (in log1p space); a price is never below
    0, so neither is the lower bound (log1p space puts it below 0 for cheap items)."""
    p = np.asarray(p, float)
    return np.maximum(np.expm1(np.log1p(p) + bounds[0]), 0.0), np.expm1(np.log1p(p) + bounds[1])


@dataclass
class IntervalBounds:
    """Conformal log-residual bounds: `overall` for every row, and (Mondrian) one pair per value of the column
    `by` that had enough calibration rows. A row of another value gets, when `scales` are known (normalised
    conformal), the `normalised` bounds times its group's error scale (1 for a value never seen), else `overall`."""

    overall: tuple[float, float]
    by: str | None = None
    groups: dict[str, tuple[float, float]] = field(default_factory=dict)
    normalised: tuple[float, float] | None = None  # bounds of residual / group scale over all calibration rows
    scales: dict[str, float] = field(default_factory=dict)  # `group_scales`

    def for_rows(self, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The (lower, upper) bound of each row, given its group values (None: every row gets `overall`)."""
        if groups is None:
            return self.overall
        pairs = np.array([self._bounds(str(g)) for g in groups], dtype=float).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1]

    def _bounds(self, group: str) -> tuple[float, float]:
        if group in self.groups:
            return self.groups[group]
        if self.normalised is None:
            return self.overall
        scale = self.scales.get(group, 1.0)
        return self.normalised[0] * scale, self.normalised[1] * scale

    def to_dict(self) -> dict:
        return {"bounds": list(self.overall), "by": self.by, "groups": {g: list(b) for g, b in self.groups.items()},
                "normalised": list(self.normalised) if self.normalised else None, "scales": self.scales}

    @classmethod
    def from_dict(cls, d: dict) -> IntervalBounds:
        normalised = tuple(d["normalised"]) if d.get("normalised") else None
        return cls(tuple(d["bounds"]), d.get("by"), {g: tuple(b) for g, b in (d.get("groups") or {}).items()},
                   normalised, dict(d.get("scales") or {}))


def calibrate(cal_y: np.ndarray, cal_p: np.ndarray, level: float = 0.8, groups: np.ndarray | None = None,
              by: str | None = None, min_rows: int = 100, scales: dict[str, float] | None = None) -> IntervalBounds:
    """Split-conformal bounds on the calibration rows; with `groups` (the values of column `by`), Mondrian: each
    group with at least `min_rows` calibration rows gets its own bounds (a group's errors need not be the
    average's), the others the overall ones, or with `scales` (`group_scales`, from rows other than these) the
    normalised ones: quantiles of residual / scale over every calibration row, times the group's scale. Own
    bounds from a few dozen rows are noisier than the normalised ones (docs/methods.md), hence 100 rows."""
    if (groups is None) != (by is None):
        raise ValueError("Mondrian bounds need both the calibration rows' groups and the column they come from")
    if scales is not None and groups is None:
        raise ValueError("normalised bounds need the calibration rows' groups")
    bounds = IntervalBounds(interval_quantiles(cal_y, cal_p, level), by)
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        for g in np.unique(groups):
            rows = groups == g
            if rows.sum() >= min_rows:
                bounds.groups[str(g)] = interval_quantiles(np.asarray(cal_y)[rows], np.asarray(cal_p)[rows], level)
    if scales is not None:
        cal_y, cal_p = _check(cal_y, cal_p)
        scale = np.array([scales.get(g, 1.0) for g in groups])
        bounds.normalised = _rank_bounds((np.log1p(cal_y) - np.log1p(cal_p)) / scale, level)
        bounds.scales = dict(scales)
    return bounds


def interval(cal_y: np.ndarray, cal_p: np.ndarray, p: np.ndarray, level: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Prediction interval of `p` calibrated on (cal_y, cal_p) (split conformal, asymmetric)."""
    return apply_interval(p, interval_quantiles(cal_y, cal_p, level))


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    y = np.asarray(y, float)
    return float(np.mean((y >= lo) & (y <= hi)))


def _funnel_rows(n: np.ndarray, level: float, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The groups' test rows and the fewest and most covered rows of their `coverage_funnel` (binomial quantiles)."""
    n = np.asarray(n, int)
    if (n < 1).any():
        raise ValueError("every group needs at least one test row")
    return n, binom.ppf(alpha / 2, n, level), binom.ppf(1 - alpha / 2, n, level)


def coverage_funnel(n: np.ndarray, level: float, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The range in which a group of `n` test rows shows its coverage with probability at least 1 - alpha when its
    true coverage is exactly `level` (binomial quantiles): a group outside it is miscalibrated beyond chance."""
    n, lo, hi = _funnel_rows(n, level, alpha)
    return lo / n, hi / n


def expected_outside(n: np.ndarray, level: float, alpha: float = 0.05) -> float:
    """How many of the groups (of `n` test rows each) would fall outside their `coverage_funnel` by chance alone
    if every group's true coverage were exactly `level` (at most alpha per group; less where n is small)."""
    n, lo, hi = _funnel_rows(n, level, alpha)
    return float((binom.cdf(lo - 1, n, level) + binom.sf(hi, n, level)).sum())


def expected_below(n: np.ndarray, level: float, threshold: float) -> float:
    """How many of the groups (of `n` test rows each) would show a coverage below `threshold` by chance alone if
    every group's true coverage were exactly `level`: the noise floor of a per-group coverage goal."""
    n = np.asarray(n, int)
    below = np.ceil(threshold * n - 1e-9) - 1  # the most covered rows with a share still below the threshold
    return float(binom.cdf(below, n, level).sum())


def paired_bootstrap(y: np.ndarray, a: np.ndarray, b: np.ndarray, split: np.ndarray, n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Mean over splits of RMSLE(a) - RMSLE(b) on each split's test rows, and its bootstrap interval: each
    replicate resamples every split's rows with replacement, the same rows for both models (paired)."""
    y, a = _check(y, a)
    _, b = _check(y, b)
    split = np.asarray(split)
    if split.shape != y.shape:
        raise ValueError(f"split labels need one per row, got {split.shape} for {y.shape}")
    rng = np.random.default_rng(seed)
    ea, eb = (np.log1p(a) - np.log1p(y)) ** 2, (np.log1p(b) - np.log1p(y)) ** 2
    diff, reps = 0.0, np.zeros(n_boot)
    groups = [np.flatnonzero(split == s) for s in np.unique(split)]
    for rows in groups:
        diff += np.sqrt(ea[rows].mean()) - np.sqrt(eb[rows].mean())
        pick = rows[rng.integers(0, len(rows), (n_boot, len(rows)))]
        reps += np.sqrt(ea[pick].mean(1)) - np.sqrt(eb[pick].mean(1))
    lo, hi = np.quantile(reps / len(groups), [(1 - level) / 2, (1 + level) / 2])
    return {"difference": float(diff / len(groups)), "lo": float(lo), "hi": float(hi), "splits": len(groups)}
