"""Turning neighbours into matches: per-model thresholds, min2, exact-pHash groups, union, cap 50,
and the threshold search on out-of-fold rows. One implementation for every notebook."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from utils.core.metric import Scores, group_sizes, score, weighted_f1

DEFAULT_GRID = np.round(np.arange(0.10, 1.0001, 0.01), 2)
CLOSURE_GRID = np.round(np.arange(0.50, 0.9901, 0.01), 2)
CLOSURE_VALUE = 1e-3  # the score of a pair matched by closure only: below every direct match, so the cap drops it first


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
    phash_exact: bool = True  # union with the exact-key matches (identical pHash, and image file when configured)
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


def exact_matches(keys: np.ndarray | pd.Series | list, max_group: int = 50) -> sp.csr_matrix:
    """Pairs of rows that share a key (an identical pHash, or image file: the same photo); `keys` is one array
    or a list of them (a pair shares any). An empty key is unknown and matches nothing; a key shared by more
    than `max_group` rows is ignored (a stock photo reused by many sellers says nothing about the product)."""
    columns = keys if isinstance(keys, list) else [keys]
    out = None
    for column in columns:
        codes, uniq = pd.factorize(pd.Series(np.asarray(column, dtype=object)))
        n = len(codes)
        sizes = np.bincount(codes, minlength=len(uniq))
        ok = (sizes[codes] <= max_group) & (uniq.to_numpy()[codes] != "")
        onehot = sp.csr_matrix((np.ones(ok.sum(), dtype=np.float32), (np.flatnonzero(ok), codes[ok])),
                               shape=(n, len(uniq)))
        part = (onehot @ onehot.T).tocsr()
        out = part if out is None else out.maximum(part)
    return out.tocsr()


def union(parts: list[sp.csr_matrix]) -> sp.csr_matrix:
    """Union of match sets; a pair keeps its highest value (used to order matches for the cap)."""
    out = parts[0].tocsr()
    for p in parts[1:]:
        out = out.maximum(p)
    return out.tocsr()


def cap(scores: sp.csr_matrix, max_matches: int = 50) -> sp.csr_matrix:
    """Keep each row itself and its highest-valued other matches, at most `max_matches` in all (ties keep the
    column order), vectorised over rows."""
    m = sp.csr_matrix(scores, dtype=np.float64, copy=True)
    m.sum_duplicates()
    m.setdiag(np.inf)  # the row itself sorts first (and is present even if a model dropped it)
    m.sort_indices()
    counts = np.diff(m.indptr)
    row_of = np.repeat(np.arange(m.shape[0]), counts)
    order = np.lexsort((-m.data, row_of))  # stable: by row, then by descending value, then by column
    keep = order[np.arange(len(order)) - m.indptr[row_of[order]] < max_matches]
    data = m.data[keep]
    data[np.isinf(data)] = 1.0
    return sp.csr_matrix((data, (row_of[keep], m.indices[keep])), shape=m.shape)


def combine(neigh: dict[str, tuple[np.ndarray, np.ndarray]], th: Thresholds,
            exact: np.ndarray | list | None = None, max_matches: int = 50) -> sp.csr_matrix:
    """Apply the tuned thresholds of every model in `th`: the union of their matches, capped."""
    missing = set(th.models) - set(neigh)
    if missing:
        raise KeyError(f"thresholds name model(s) {sorted(missing)} with no neighbours file")
    parts = [model_matches(*neigh[m], t) for m, t in th.models.items()]
    if th.phash_exact and exact is not None:
        parts.append(exact_matches(exact, th.phash_max_group))
    return cap(union(parts), max_matches)


def _hits(indices: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Cumulative true matches along each of `rows`' neighbour lists."""
    return np.cumsum(labels[indices[rows]] == labels[rows][:, None], axis=1)


def _curve(hits: np.ndarray, sims: np.ndarray, n_true: np.ndarray, grid: np.ndarray, min2_threshold: float | None,
           fp_weight: float) -> np.ndarray:
    out = np.empty(len(grid))
    for g, thr in enumerate(grid):
        c = _prefix_lengths(sims, ModelThreshold(float(thr), min2_threshold))
        out[g] = np.mean(weighted_f1(np.take_along_axis(hits, c[:, None] - 1, axis=1)[:, 0], c, n_true, fp_weight))
    return out


def f1_curve(indices: np.ndarray, sims: np.ndarray, labels: np.ndarray, grid: np.ndarray = DEFAULT_GRID,
             min2_threshold: float | None = None, rows: np.ndarray | None = None,
             fp_weight: float = 1.0) -> np.ndarray:
    """Mean F1 over `rows` of one model for each threshold of `grid` (vectorised over prefixes);
    `fp_weight` as in `metric.row_scores`."""
    rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
    return _curve(_hits(indices, labels, rows), sims[rows], group_sizes(labels)[rows], grid, min2_threshold,
                  fp_weight)


def tune_model(indices: np.ndarray, sims: np.ndarray, labels: np.ndarray, rows: np.ndarray | None = None,
               grid: np.ndarray = DEFAULT_GRID, min2: bool = True, fp_weight: float = 1.0) -> ModelThreshold:
    """Best threshold on `rows`; with min2, then the best min2 threshold, then the threshold again."""
    rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
    hits, s, n_true = _hits(indices, labels, rows), sims[rows], group_sizes(labels)[rows]
    best = ModelThreshold(float(grid[np.argmax(_curve(hits, s, n_true, grid, None, fp_weight))]))
    if not min2:
        return best
    lower = grid[grid <= best.threshold]
    m2 = [_curve(hits, s, n_true, np.array([best.threshold]), float(v), fp_weight)[0] for v in lower]
    best.min2_threshold = float(lower[int(np.argmax(m2))])
    best.threshold = float(grid[np.argmax(_curve(hits, s, n_true, grid, best.min2_threshold, fp_weight))])
    return best


class PairSpace:
    """Every candidate pair of the query `rows` (any model's neighbour list or a fixed match matrix), with each
    model's first position in the row's list, so that the union of thresholded models is scored without
    building sparse matrices: a pair is model m's match when its position is below m's prefix length.
    """

    def __init__(self, neigh: dict[str, tuple[np.ndarray, np.ndarray]], labels: np.ndarray,
                 fixed: list[sp.csr_matrix], rows: np.ndarray | None = None, fp_weight: float = 1.0):
        n = len(labels)
        self.rows = np.arange(n) if rows is None else np.asarray(rows)
        self.neigh, self.fp_weight = neigh, fp_weight
        query = self.rows.astype(np.int64)[:, None] * n
        model_keys = {m: (query + i[self.rows]).ravel() for m, (i, _) in neigh.items()}
        fixed_keys = []
        for f in fixed:
            sub = sp.csr_matrix(f)[self.rows].tocoo()
            fixed_keys.append(self.rows[sub.row].astype(np.int64) * n + sub.col)
        self.keys = np.unique(np.concatenate([*model_keys.values(), *fixed_keys]))
        local = np.full(n, -1, dtype=np.int64)
        local[self.rows] = np.arange(len(self.rows))
        self.row = self.keys // n  # the query row of each pair
        self.local = local[self.row]
        self.same = labels[self.row] == labels[self.keys % n]
        self.fixed = np.zeros(len(self.keys), dtype=bool)
        for fk in fixed_keys:
            self.fixed[np.searchsorted(self.keys, np.unique(fk))] = True
        self.position = {}
        for m, keys in model_keys.items():
            k = neigh[m][0].shape[1]
            uniq, first = np.unique(keys, return_index=True)  # padded lists repeat ids: the first place counts
            pos = np.full(len(self.keys), k, dtype=np.int32)
            pos[np.searchsorted(self.keys, uniq)] = first % k
            self.position[m] = pos
        self.n_true = group_sizes(labels)[self.rows].astype(np.float64)

    def matched(self, model: str, t: ModelThreshold) -> np.ndarray:
        """Which pairs `model` matches under `t` (exactly `model_matches`' prefix rule)."""
        count = np.zeros(len(self.neigh[model][1]), dtype=np.int64)
        count[self.rows] = _prefix_lengths(self.neigh[model][1][self.rows], t)
        return self.position[model] < count[self.row]

    def f1(self, matched: np.ndarray) -> float:
        """Mean weighted F1 over the query rows of the matched pairs."""
        tp = np.bincount(self.local[matched & self.same], minlength=len(self.rows))
        pred = np.bincount(self.local[matched], minlength=len(self.rows))
        return float(np.mean(weighted_f1(tp, pred, self.n_true, self.fp_weight)))

    def f1_varying(self, fixed: np.ndarray, model: str, candidates: list[ModelThreshold]) -> np.ndarray:
        """Mean F1 of `fixed` pairs united with `model`'s matches under each candidate rule: the fixed part is
        counted once and only the pairs that some candidate could add are re-scored."""
        tp0 = np.bincount(self.local[fixed & self.same], minlength=len(self.rows)).astype(np.float64)
        pred0 = np.bincount(self.local[fixed], minlength=len(self.rows)).astype(np.float64)
        sims = self.neigh[model][1][self.rows]
        counts = np.zeros((len(candidates), len(self.neigh[model][1])), dtype=np.int64)  # prefix lengths by row
        for c, t in enumerate(candidates):
            counts[c, self.rows] = _prefix_lengths(sims, t)
        free = np.flatnonzero(~fixed & (self.position[model] < counts.max(axis=0)[self.row]))
        local, same, pos, row = self.local[free], self.same[free], self.position[model][free], self.row[free]
        out = np.empty(len(candidates))
        for c in range(len(candidates)):
            hit = pos < counts[c, row]
            tp = tp0 + np.bincount(local[hit & same], minlength=len(self.rows))
            pred = pred0 + np.bincount(local[hit], minlength=len(self.rows))
            out[c] = np.mean(weighted_f1(tp, pred, self.n_true, self.fp_weight))
        return out


def tune_union(neigh: dict[str, tuple[np.ndarray, np.ndarray]], labels: np.ndarray, start: Thresholds,
               exact: np.ndarray | list | None = None, rows: np.ndarray | None = None, span: float = 0.15,
               step: float = 0.01, passes: int = 2, fp_weight: float = 1.0) -> Thresholds:
    """Coordinate ascent on the union's F1 over `rows`, moving one model's threshold at a time.

    Thresholds tuned per model are too loose once unioned (each adds its false positives), so each
    model's threshold is searched in [t - span, t + span] with the others fixed; scored in `PairSpace`.
    """
    th = Thresholds({m: ModelThreshold(**asdict(t)) for m, t in start.models.items()}, start.phash_exact,
                    start.phash_max_group, dict(start.extra))
    fixed = [exact_matches(exact, th.phash_max_group)] if (th.phash_exact and exact is not None) else []
    space = PairSpace({m: neigh[m] for m in th.models}, labels, fixed, rows, fp_weight)
    current = {m: space.matched(m, t) for m, t in th.models.items()}
    best_f1 = space.f1(np.logical_or.reduce([space.fixed, *current.values()]))
    for _ in range(passes):
        improved = False
        for m, t in th.models.items():
            others = np.logical_or.reduce([space.fixed, *(v for k, v in current.items() if k != m)])
            grid = np.round(np.arange(t.threshold - span, t.threshold + span + 1e-9, step), 4)
            cands = [ModelThreshold(float(thr), t.min2_threshold) for thr in grid if 0.0 < thr <= 1.0]
            scores = space.f1_varying(others, m, cands)
            for cand, f1 in zip(cands, scores, strict=True):  # the first strict improvement, as a scan in order
                if f1 > best_f1 + 1e-9:
                    best_f1, th.models[m], improved = f1, cand, True
            current[m] = space.matched(m, th.models[m])
        if not improved:
            break
    return th


def tune(neigh: dict[str, tuple[np.ndarray, np.ndarray]], labels: np.ndarray, exact: np.ndarray | list | None = None,
         rows: np.ndarray | None = None, min2: bool = True, phash_exact: bool = True,
         joint: bool = True, fp_weight: float = 1.0) -> Thresholds:
    """Full baseline tuning on `rows`: each model alone, then (optionally) jointly for the union;
    `fp_weight` > 1 tunes for a test split that many times as large (see `metric.row_scores`)."""
    th = Thresholds({m: tune_model(i, s, labels, rows, min2=min2, fp_weight=fp_weight) for m, (i, s) in neigh.items()},
                    phash_exact)
    return tune_union(neigh, labels, th, exact, rows, fp_weight=fp_weight) if joint else th


@dataclass
class Closure:
    """Closure of the matches scored at least `threshold`, in components of at most `max_size` rows."""

    threshold: float
    max_size: int = 50


def component_matches(scores: sp.csr_matrix, closure: Closure) -> sp.csr_matrix:
    """Every pair of rows linked by a chain of pairs scored at least `closure.threshold` (one connected component
    of the strong pairs), in components of at most `closure.max_size` rows, valued `CLOSURE_VALUE`.

    A consistency step (single-linkage clustering): a large group's members match each other where their own
    pair scores low. Its risk, chains through look-alikes, is bounded by the threshold and the size limit.
    """
    n = scores.shape[0]
    strong = sp.csr_matrix(scores >= closure.threshold, dtype=np.float32)
    component = connected_components(strong, directed=False)[1]
    sizes = np.bincount(component)
    kept = np.flatnonzero(sizes[component] <= closure.max_size)
    member = sp.csr_matrix((np.ones(len(kept), dtype=np.float32), (kept, component[kept])), shape=(n, len(sizes)))
    return (member @ member.T).tocsr() * np.float32(CLOSURE_VALUE)


def close(matches: sp.csr_matrix, closure: Closure, max_matches: int = 50) -> sp.csr_matrix:
    """`matches` (valued by score) with every pair of their strong components (`component_matches`), capped."""
    return cap(union([matches, component_matches(matches, closure)]), max_matches)


def decide_scores(scores: sp.csr_matrix, rule: ModelThreshold, closure: Closure | None = None,
                  max_matches: int = 50) -> sp.csr_matrix:
    """Matches from a matrix of pair scores (05's probabilities): the threshold + min2 `rule` over each row's
    ranked candidates, closed over the matches scored at least `closure.threshold` (None: off), capped."""
    direct = model_matches(*ranked(scores), rule)
    return cap(direct, max_matches) if closure is None else close(direct, closure, max_matches)


def largest_group(labels: np.ndarray, rows: np.ndarray | None = None) -> int:
    """The largest label group among `rows` (default all): closure's component limit. A component larger than
    any training group is more likely a chain of look-alikes than one product."""
    return int(group_sizes(labels if rows is None else labels[rows]).max())


def tune_closure(scores: sp.csr_matrix, labels: np.ndarray, rule: ModelThreshold, rows: np.ndarray | None = None,
                 fp_weight: float = 1.0, grid: np.ndarray = CLOSURE_GRID) -> tuple[ModelThreshold, Closure | None]:
    """The closure threshold with the best F1 on `rows` beside `rule` (components up to the largest group of
    `rows`), then `rule`'s threshold tuned again beside it (closure adds recall, so the direct rule may tighten);
    closure None when none beats `rule` alone."""
    lists, max_size = ranked(scores), largest_group(labels, rows)

    def f1(m: sp.csr_matrix) -> float:
        return score(m, labels, rows, fp_weight).f1

    direct = model_matches(*lists, rule)
    tried = [Closure(float(c), max_size) for c in grid]
    by_closure = [f1(close(direct, c)) for c in tried]
    if max(by_closure) <= f1(cap(direct)):
        return rule, None
    closure = tried[int(np.argmax(by_closure))]
    rules = [ModelThreshold(float(t), rule.min2_threshold) for t in DEFAULT_GRID]
    by_threshold = [f1(close(model_matches(*lists, r), closure)) for r in rules]
    best = int(np.argmax(by_threshold))
    return (rules[best], closure) if by_threshold[best] > max(by_closure) else (rule, closure)


@dataclass
class Decision:
    """A decision rule tuned on out-of-fold pair scores, with its out-of-fold matches and scores."""

    name: str
    rule: ModelThreshold
    closure: Closure | None
    matches: sp.csr_matrix
    scores: Scores
    f1_test_size: float  # the F1 with false positives weighted as tuned (`fp_weight`); the plain F1 at weight 1

    def summary(self) -> dict:
        """One row of a selection table."""
        return {"decision": self.name, "oof_f1": self.scores.f1, "oof_precision": self.scores.precision,
                "oof_recall": self.scores.recall, "oof_f1_test_size": self.f1_test_size,
                "threshold": self.rule.threshold, "min2_threshold": self.rule.min2_threshold,
                "closure_threshold": self.closure and self.closure.threshold,
                "closure_max_size": self.closure and self.closure.max_size}


def tuned_decisions(name: str, scores: sp.csr_matrix, labels: np.ndarray, rows: np.ndarray | None = None,
                    fp_weight: float = 1.0, closure: bool = True) -> list[Decision]:
    """The threshold + min2 rule tuned on `rows` of these pair scores (as a model's neighbours in 04), and with
    `closure` also the rule beside a tuned closure (`name + closure`)."""
    rule = tune_model(*ranked(scores), labels, rows, fp_weight=fp_weight)
    options = [(name, rule, None)]
    if closure:
        options.append((f"{name} + closure", *tune_closure(scores, labels, rule, rows, fp_weight)))
    out = []
    for option, r, c in options:
        matches = decide_scores(scores, r, c)
        plain = score(matches, labels, rows)
        weighted = plain.f1 if fp_weight == 1 else score(matches, labels, rows, fp_weight).f1
        out.append(Decision(option, r, c, matches, plain, weighted))
    return out
