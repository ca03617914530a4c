"""Turning neighbours into matches: per-model thresholds, min2, exact-pHash groups, union, cap 50,
and the threshold search on out-of-fold rows. One implementation for every notebook."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from utils.core.metric import group_sizes, row_scores, weighted_f1

DEFAULT_GRID = np.round(np.arange(0.10, 1.0001, 0.01), 2)


@dataclass
class ModelThreshold:
    """Decision rule of one model: match when cosine >= threshold; min2 adds the nearest other
    row to a row left alone when its similarity is >= min2_threshold (None: min2 off)."""

    threshold: float
    min2_threshold: float | None = None


@dataclass
class Thresholds:
    """Everything `04_postprocess` tunes, written once to thresholds.json and read by later stages."""

    models: dict[str, ModelThreshold]
    phash_exact: bool = True
    phash_max_group: int = 50
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"models": {m: asdict(t) for m, t in self.models.items()}, "phash_exact": self.phash_exact,
                "phash_max_group": self.phash_max_group, **self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> Thresholds:
        extra = {k: v for k, v in d.items() if k not in ("models", "phash_exact", "phash_max_group")}
        return cls({m: ModelThreshold(**t) for m, t in d["models"].items()}, d.get("phash_exact", True),
                   d.get("phash_max_group", 50), extra)


def _prefix_lengths(sims: np.ndarray, t: ModelThreshold) -> np.ndarray:
    """How many leading neighbours each row keeps (self is column 0 and always kept)."""
    count = np.maximum((sims >= t.threshold).sum(axis=1), 1)
    if t.min2_threshold is not None and sims.shape[1] > 1:
        count = np.where((count == 1) & (sims[:, 1] >= t.min2_threshold), 2, count)
    return count


def model_matches(indices: np.ndarray, sims: np.ndarray, t: ModelThreshold) -> sp.csr_matrix:
    """N x N sparse matrix of one model's matches, valued by similarity (self included)."""
    n, k = indices.shape
    keep = np.arange(k)[None, :] < _prefix_lengths(sims, t)[:, None]
    rows = np.repeat(np.arange(n), keep.sum(axis=1))
    vals = np.maximum(sims[keep], 1e-6)  # keep zero-similarity self pairs as stored entries
    return sp.csr_matrix((vals, (rows, indices[keep])), shape=(n, n))


def ranked(scores: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Each row's scored candidates as a neighbour list: indices int32 [N, K] and scores float32 [N, K],
    descending, the row itself first (score 1), short rows padded with the row itself at score -1.

    So a matrix of pair probabilities (05_stacker) is decided and tuned by the very threshold + min2 rule
    of a model's neighbours (`model_matches`, `tune_model`), vectorised over rows.
    """
    m = sp.csr_matrix(scores, dtype=np.float32)
    m.setdiag(0)
    m.eliminate_zeros()  # self pairs and zero probabilities: below every threshold anyway
    n = m.shape[0]
    counts = np.diff(m.indptr)
    k = int(counts.max(initial=0)) + 1
    indices = np.repeat(np.arange(n, dtype=np.int32)[:, None], k, axis=1)
    values = np.full((n, k), -1.0, dtype=np.float32)
    values[:, 0] = 1.0
    row_of = np.repeat(np.arange(n), counts)
    order = np.lexsort((-m.data, row_of))  # by row, then by descending score
    rank = np.arange(len(order)) - m.indptr[row_of[order]]
    indices[row_of[order], rank + 1] = m.indices[order]
    values[row_of[order], rank + 1] = m.data[order]
    return indices, values


def phash_matches(phash: np.ndarray | pd.Series, max_group: int = 50) -> sp.csr_matrix:
    """Pairs of rows with the identical pHash; hashes shared by more than `max_group` rows are ignored
    (a stock photo reused by many sellers says nothing about the product)."""
    codes, uniq = pd.factorize(pd.Series(phash))
    n = len(codes)
    sizes = np.bincount(codes)
    ok = sizes[codes] <= max_group
    onehot = sp.csr_matrix((np.ones(ok.sum(), dtype=np.float32), (np.flatnonzero(ok), codes[ok])),
                           shape=(n, len(uniq)))
    return (onehot @ onehot.T).tocsr()


def union(parts: list[sp.csr_matrix]) -> sp.csr_matrix:
    """Union of match sets; a pair keeps its highest value (used to order matches for the cap)."""
    out = parts[0].tocsr()
    for p in parts[1:]:
        out = out.maximum(p)
    return out.tocsr()


def cap(scores: sp.csr_matrix, max_matches: int = 50) -> sp.csr_matrix:
    """Keep each row itself and its highest-valued other matches, at most `max_matches` in all."""
    m = sp.csr_matrix(scores)
    m.setdiag(np.inf)  # the row itself sorts first (and is present even if a model dropped it)
    rows, cols, vals = [], [], []
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        keep = np.argsort(-m.data[lo:hi], kind="stable")[:max_matches]
        rows.append(np.full(len(keep), i))
        cols.append(m.indices[lo:hi][keep])
        vals.append(m.data[lo:hi][keep])
    data = np.concatenate(vals)
    data[np.isinf(data)] = 1.0
    return sp.csr_matrix((data, (np.concatenate(rows), np.concatenate(cols))), shape=m.shape)


def combine(neigh: dict[str, tuple[np.ndarray, np.ndarray]], th: Thresholds,
            phash: np.ndarray | None = None, max_matches: int = 50) -> sp.csr_matrix:
    """Apply the tuned thresholds of every model in `th`: the union of their matches, capped."""
    missing = set(th.models) - set(neigh)
    if missing:
        raise KeyError(f"thresholds name model(s) {sorted(missing)} with no neighbours file")
    parts = [model_matches(*neigh[m], t) for m, t in th.models.items()]
    if th.phash_exact and phash is not None:
        parts.append(phash_matches(phash, th.phash_max_group))
    return cap(union(parts), max_matches)


def f1_curve(indices: np.ndarray, sims: np.ndarray, labels: np.ndarray, grid: np.ndarray = DEFAULT_GRID,
             min2_threshold: float | None = None, rows: np.ndarray | None = None,
             fp_weight: float = 1.0) -> np.ndarray:
    """Mean F1 over `rows` of one model for each threshold of `grid` (vectorised over prefixes);
    `fp_weight` as in `metric.row_scores`."""
    rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
    idx, s = indices[rows], sims[rows]
    hits = np.cumsum(labels[idx] == labels[rows][:, None], axis=1)
    n_true = group_sizes(labels)[rows]
    out = np.empty(len(grid))
    for g, thr in enumerate(grid):
        c = _prefix_lengths(s, ModelThreshold(float(thr), min2_threshold))
        tp = hits[np.arange(len(rows)), c - 1]
        out[g] = np.mean(weighted_f1(tp, c, n_true, fp_weight))
    return out


def tune_model(indices: np.ndarray, sims: np.ndarray, labels: np.ndarray, rows: np.ndarray | None = None,
               grid: np.ndarray = DEFAULT_GRID, min2: bool = True, fp_weight: float = 1.0) -> ModelThreshold:
    """Best threshold on `rows`; with min2, then the best min2 threshold, then the threshold again."""
    best = ModelThreshold(float(grid[np.argmax(f1_curve(indices, sims, labels, grid, None, rows, fp_weight))]))
    if not min2:
        return best
    lower = grid[grid <= best.threshold]
    m2 = [np.max(f1_curve(indices, sims, labels, np.array([best.threshold]), float(v), rows, fp_weight))
          for v in lower]
    best.min2_threshold = float(lower[int(np.argmax(m2))])
    curve = f1_curve(indices, sims, labels, grid, best.min2_threshold, rows, fp_weight)
    best.threshold = float(grid[np.argmax(curve)])
    return best


def union_f1(parts: list[sp.csr_matrix], labels: np.ndarray, rows: np.ndarray | None = None,
             fp_weight: float = 1.0) -> float:
    f1, _, _ = row_scores(union(parts), labels, fp_weight)
    return float(f1.mean() if rows is None else f1[rows].mean())


def tune_union(neigh: dict[str, tuple[np.ndarray, np.ndarray]], labels: np.ndarray, start: Thresholds,
               phash: np.ndarray | None = None, rows: np.ndarray | None = None, span: float = 0.15,
               step: float = 0.01, passes: int = 2, fp_weight: float = 1.0) -> Thresholds:
    """Coordinate ascent on the union's F1 over `rows`, moving one model's threshold at a time.

    Thresholds tuned per model are too loose once unioned (each adds its false positives), so each
    model's threshold is searched in [t - span, t + span] with the others fixed.
    """
    th = Thresholds({m: ModelThreshold(**asdict(t)) for m, t in start.models.items()}, start.phash_exact,
                    start.phash_max_group, dict(start.extra))
    fixed = [phash_matches(phash, th.phash_max_group)] if (th.phash_exact and phash is not None) else []
    current = {m: model_matches(*neigh[m], t) for m, t in th.models.items()}
    best_f1 = union_f1(list(current.values()) + fixed, labels, rows, fp_weight)
    for _ in range(passes):
        improved = False
        for m, t in th.models.items():
            others = [v for k, v in current.items() if k != m] + fixed
            for thr in np.round(np.arange(t.threshold - span, t.threshold + span + 1e-9, step), 4):
                if not 0.0 < thr <= 1.0:
                    continue
                cand = ModelThreshold(float(thr), t.min2_threshold)
                mat = model_matches(*neigh[m], cand)
                f1 = union_f1(others + [mat], labels, rows, fp_weight)
                if f1 > best_f1 + 1e-9:
                    best_f1, th.models[m], current[m], improved = f1, cand, mat, True
        if not improved:
            break
    return th


def tune(neigh: dict[str, tuple[np.ndarray, np.ndarray]], labels: np.ndarray, phash: np.ndarray | None = None,
         rows: np.ndarray | None = None, min2: bool = True, phash_exact: bool = True,
         joint: bool = True, fp_weight: float = 1.0) -> Thresholds:
    """Full baseline tuning on `rows`: each model alone, then (optionally) jointly for the union;
    `fp_weight` > 1 tunes for a test split that many times as large (see `metric.row_scores`)."""
    th = Thresholds({m: tune_model(i, s, labels, rows, min2=min2, fp_weight=fp_weight) for m, (i, s) in neigh.items()},
                    phash_exact)
    return tune_union(neigh, labels, th, phash, rows, fp_weight=fp_weight) if joint else th
