"""The competition metric: mean row-wise F1 between predicted matches and the row's label group.

For row i with group T_i (itself included) and predicted set P_i:
F1_i = 2|P_i ∩ T_i| / (|P_i| + |T_i|), precision_i = |P_i ∩ T_i| / |P_i|, recall_i = |P_i ∩ T_i| / |T_i|.
A row with no prediction scores 0 on all three. Matches are a sparse N x N pair matrix so that
the same code scores 3,000 or 70,000 rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Scores:
    f1: float
    precision: float
    recall: float
    n_rows: int

    def as_dict(self) -> dict:
        return asdict(self)


def group_sizes(labels: np.ndarray) -> np.ndarray:
    """Size of each row's label group (itself included)."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return counts[inverse]


def weighted_f1(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray, fp_weight: float = 1.0) -> np.ndarray:
    """Row F1 `2 tp / (|P| + |T|)` with each of the `n_pred - tp` false positives counted `fp_weight` times."""
    return 2 * tp / (tp + fp_weight * (n_pred - tp) + n_true)


def row_scores(matches: sp.csr_matrix, labels: np.ndarray,
               fp_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row (f1, precision, recall) of a boolean N x N match matrix against integer labels.

    `fp_weight` counts each false positive that many times: the expected scores on a split `fp_weight`
    times as large, whose rows have as many true matches but proportionally more look-alikes (1: the metric).
    """
    if fp_weight <= 0:
        raise ValueError(f"fp_weight must be positive, got {fp_weight}")
    labels = np.asarray(labels)
    n = len(labels)
    if matches.shape != (n, n):
        raise ValueError(f"match matrix is {matches.shape}, labels have {n} rows")
    m = sp.csr_matrix(matches, dtype=bool)
    m.sum_duplicates()
    m.eliminate_zeros()
    rows = np.repeat(np.arange(n), np.diff(m.indptr))
    hit = labels[m.indices] == labels[rows]
    tp = np.bincount(rows[hit], minlength=n).astype(np.float64)
    n_pred = np.diff(m.indptr).astype(np.float64)
    n_true = group_sizes(labels).astype(np.float64)
    f1 = weighted_f1(tp, n_pred, n_true, fp_weight)
    weighted_pred = tp + fp_weight * (n_pred - tp)
    precision = np.divide(tp, weighted_pred, out=np.zeros(n), where=weighted_pred > 0)
    recall = tp / n_true
    return f1, precision, recall


def score(matches: sp.csr_matrix, labels: np.ndarray, rows: np.ndarray | None = None,
          fp_weight: float = 1.0) -> Scores:
    """Mean F1, precision and recall over rows (or over `rows` only, e.g. a training pool's labelled rows)."""
    f1, p, r = row_scores(matches, labels, fp_weight)
    if rows is not None:
        f1, p, r = f1[rows], p[rows], r[rows]
    return Scores(float(f1.mean()), float(p.mean()), float(r.mean()), len(f1))


def matches_from_lists(lists: list[list[int]] | list[np.ndarray], n: int) -> sp.csr_matrix:
    """Boolean N x N matrix from per-row lists of matched row indices."""
    lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    cols = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]) if lengths.sum() else np.zeros(0, int)
    rows = np.repeat(np.arange(len(lists)), lengths)
    return sp.csr_matrix((np.ones(len(cols), dtype=bool), (rows, cols)), shape=(n, n))


def bootstrap_difference(f1_new: np.ndarray, f1_base: np.ndarray, labels: np.ndarray, n_boot: int = 2000,
                         seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Mean per-row F1 difference (new - base) with a paired bootstrap interval that resamples whole label
    groups (rows of one product are not independent), as {"difference", "low", "high", "level"}."""
    f1_new, f1_base = np.asarray(f1_new, dtype=np.float64), np.asarray(f1_base, dtype=np.float64)
    if f1_new.shape != f1_base.shape or f1_new.shape != np.shape(labels):
        raise ValueError(f"need one F1 per row in both: {f1_new.shape}, {f1_base.shape}, labels {np.shape(labels)}")
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"level must be in (0, 1) and n_boot positive, got {level} and {n_boot}")
    codes = np.unique(labels, return_inverse=True)[1]
    sums = np.bincount(codes, weights=f1_new - f1_base)
    counts = np.bincount(codes).astype(np.float64)
    g = len(sums)
    draws = np.random.default_rng(seed).multinomial(g, np.full(g, 1.0 / g), size=n_boot)  # group weights per draw
    boot = (draws @ sums) / (draws @ counts)
    tail = (1 - level) / 2
    return {"difference": float(sums.sum() / counts.sum()), "low": float(np.quantile(boot, tail)),
            "high": float(np.quantile(boot, 1 - tail)), "level": level}
