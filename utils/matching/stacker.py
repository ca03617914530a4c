"""Pair-fusion stacker (05_stacker): candidate pairs from every model's neighbours, vectorised pair
features, a LightGBM (or XGBoost) classifier with out-of-fold predictions grouped by label group, and the
symmetric pair-probability matrix, which `decide.ranked` turns into neighbour lists for 04's decision rule."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cpdist
from scipy.sparse.csgraph import connected_components

from utils.core.device import cuda_available, lightgbm_has_cuda, xgboost_has_cuda
from utils.core.progress import progress
from utils.core.text import tokens

from .decide import Decision, ranked, tuned_decisions
from .embed import phash_ints, phash_known
from .fusion import candidate_pairs, pair_similarity
from .rules import attribute_status, brand, extract_attributes

log = logging.getLogger(__name__)

Neigh = dict[str, tuple[np.ndarray, np.ndarray]]
_NUM = re.compile(r"\d+")
KTH = 5  # "similarity minus the row's k-th similarity" uses this neighbour


def candidates(neigh: Neigh, k: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (i, j) pairs, i != j, with j in some model's first `k` neighbours of i."""
    n = next(iter(neigh.values()))[0].shape[0]
    rows, cols = candidate_pairs({m: (i[:, :k], s[:, :k]) for m, (i, s) in neigh.items()}, n)
    keep = rows != cols
    return rows[keep], cols[keep]


def candidate_recall(rows: np.ndarray, cols: np.ndarray, labels: np.ndarray) -> float:
    """Share of true pairs (i != j, same group) that are candidates."""
    sizes = np.bincount(np.unique(labels, return_inverse=True)[1])
    true_pairs = int((sizes * (sizes - 1)).sum())
    return float((labels[rows] == labels[cols]).sum() / true_pairs) if true_pairs else 1.0


def _position_index(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (row * n + neighbour) keys of a neighbour table and each key's first place in its list."""
    n, k = indices.shape
    keys = np.repeat(np.arange(n, dtype=np.int64), k) * n + indices.ravel()
    uniq, first = np.unique(keys, return_index=True)  # padded lists repeat ids: keep the first place
    return uniq, (first % k).astype(np.int32)


def _positions(index: tuple[np.ndarray, np.ndarray], n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Position of cols[p] in the neighbour list of rows[p] (first occurrence), -1 where absent."""
    uniq, place = index
    query = rows.astype(np.int64) * n + cols
    at = np.minimum(np.searchsorted(uniq, query), len(uniq) - 1)
    return np.where(uniq[at] == query, place[at], -1)


def _take(values: np.ndarray, rows: np.ndarray, pos: np.ndarray, missing: float) -> np.ndarray:
    """values[row, pos] where pos >= 0, `missing` elsewhere."""
    return np.where(pos >= 0, values[rows, np.maximum(pos, 0)], missing).astype(np.float32)


def _hamming(ints: np.ndarray, known: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """pHash Hamming distance of each pair; NaN where either row has no pHash (the booster's missing value)."""
    x = ints[rows] ^ ints[cols]
    dist = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1).astype(np.float32)
    return np.where(known[rows] & known[cols], dist, np.float32(np.nan))


def _top_graph(neigh: Neigh, n: int, top: int = 5) -> sp.csr_matrix:
    """Undirected graph of every model's first `top` neighbours, no self loops."""
    r, c = candidate_pairs({m: (i[:, :top], s[:, :top]) for m, (i, s) in neigh.items()}, n)
    A = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(n, n))
    A = ((A + A.T) > 0).astype(np.float32).tocsr()
    A.setdiag(0)
    A.eliminate_zeros()
    return A


class PairFeatures:
    """Pair features, with everything per row (neighbour positions, row statistics, title tokens, units,
    the top-5 graph) computed once, so that any chunk of pairs is featurised without repeating it.

    Chunks keep the test side within memory: 70,000 rows give about 10 million candidate pairs.
    """

    def __init__(self, neigh: Neigh, df: pd.DataFrame, embeddings: dict | None = None,
                 thresholds: dict[str, float] | None = None, image_sizes: np.ndarray | None = None,
                 same_image: bool = False, phash: bool = True, device: str = "auto"):
        self.neigh, self.n, self.device = neigh, len(df), device  # device of the embedding cosines (auto: CUDA)
        self.use_phash = phash  # False where the split predicted has no pHash: train without the feature too
        # the image file's name (a distractor's image may be a path): the same name is the same photo
        self.image = pd.factorize(df["image"].str.rsplit("/", n=1).str[-1])[0] if same_image else None
        self.embeddings = embeddings or {}
        thresholds = thresholds or {}
        self.rows_stats = {}
        for m, (idx, sims) in neigh.items():
            k = idx.shape[1]
            self.rows_stats[m] = {
                "index": _position_index(idx), "k": k, "mean": sims[:, 1:].mean(axis=1),
                "std": sims[:, 1:].std(axis=1) + 1e-6, "kth": sims[:, min(KTH, k - 1)],
                "above": (sims[:, 1:] >= thresholds.get(m, 0.5)).sum(axis=1).astype(np.float32)}
        titles = df["title"]
        self.phash, self.phash_known = phash_ints(df["image_phash"]), phash_known(df["image_phash"])
        self.tokens = _word_sets(titles, tokens)  # binary rows: a pair's shared words are a row-wise product
        self.numbers = _word_sets(titles, _NUM.findall)
        self.n_tokens = np.asarray(self.tokens.sum(axis=1)).ravel().astype(np.float32)
        codes, names = pd.factorize(pd.Series([brand(t) for t in titles]))
        self.brand = np.where(names.to_numpy()[codes] == "", -1, codes)
        self.lower = np.array([t.lower() for t in titles], dtype=object)
        self.length = np.array([len(t) for t in titles], dtype=np.float32)
        self.quantities = extract_attributes(titles)["quantity"]
        self.graph = _top_graph(neigh, self.n)
        comp = connected_components(self.graph, directed=False)[1]
        self.component_size = np.bincount(comp)[comp].astype(np.float32)
        self.image_sizes = image_sizes
        self.image_area = None if image_sizes is None else image_sizes[:, 0] * image_sizes[:, 1]

    def __call__(self, rows: np.ndarray, cols: np.ndarray) -> pd.DataFrame:
        """Features of the pairs (rows[p], cols[p]); row order of `df` is the index space."""
        feats: dict[str, np.ndarray] = {}
        for m, (_, sims) in self.neigh.items():
            st = self.rows_stats[m]
            k = st["k"]
            pos_ij, pos_ji = _positions(st["index"], self.n, rows, cols), _positions(st["index"], self.n, cols, rows)
            if m in self.embeddings:
                sim = pair_similarity(self.embeddings[m], rows, cols, device=self.device)
            else:
                sim = _take(sims, rows, pos_ij, np.nan)
            feats[f"{m}_sim"] = sim
            feats[f"{m}_rank_ij"] = np.where(pos_ij >= 0, pos_ij, k).astype(np.float32)
            feats[f"{m}_rank_ji"] = np.where(pos_ji >= 0, pos_ji, k).astype(np.float32)
            feats[f"{m}_minus_kth"] = sim - st["kth"][rows]
            feats[f"{m}_row_mean"] = st["mean"][rows]
            feats[f"{m}_row_std"] = st["std"][rows]
            feats[f"{m}_z"] = (sim - st["mean"][rows]) / st["std"][rows]
            feats[f"{m}_n_above_i"] = st["above"][rows]
            feats[f"{m}_n_above_j"] = st["above"][cols]
        if self.use_phash:
            feats["phash_hamming"] = _hamming(self.phash, self.phash_known, rows, cols)
        if self.image is not None:
            feats["same_image"] = (self.image[rows] == self.image[cols]).astype(np.float32)
        feats.update(self._titles(rows, cols))
        feats["unit_mismatch"] = attribute_status("quantity", self.quantities, rows, cols)[0].astype(np.float32)
        feats["common_neighbours"] = np.asarray(
            self.graph[rows].multiply(self.graph[cols]).sum(axis=1)).ravel().astype(np.float32)
        feats["component_size"] = self.component_size[rows]
        if self.image_sizes is not None:
            area = self.image_area
            feats["img_area_ratio"] = np.minimum(area[rows], area[cols]) / np.maximum(area[rows], area[cols])
            feats["img_same_size"] = (self.image_sizes[rows] == self.image_sizes[cols]).all(axis=1).astype(np.float32)
        return pd.DataFrame(feats)

    def _titles(self, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
        shared = pair_similarity(self.tokens, rows, cols)
        union = self.n_tokens[rows] + self.n_tokens[cols] - shared
        edit = cpdist(self.lower[rows], self.lower[cols], scorer=Levenshtein.normalized_similarity, workers=-1,
                      dtype=np.float32)  # rapidfuzz's C++ loop over the pairs, on every core
        return {"title_jaccard": shared / np.maximum(1.0, union), "title_edit_ratio": edit,
                "title_len_diff": np.abs(self.length[rows] - self.length[cols]),
                "shared_numbers": pair_similarity(self.numbers, rows, cols),
                "same_brand": ((self.brand[rows] == self.brand[cols]) & (self.brand[rows] >= 0)).astype(np.float32)}


def _word_sets(titles: pd.Series, split) -> sp.csr_matrix:
    """Binary rows × vocabulary matrix of the distinct words `split` finds in each title."""
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(analyzer=split, binary=True, dtype=np.float32)
    try:
        return vec.fit_transform(titles).tocsr()
    except ValueError:  # no title has any word: every pair shares none
        return sp.csr_matrix((len(titles), 1), dtype=np.float32)


def build_features(neigh: Neigh, rows: np.ndarray, cols: np.ndarray, df: pd.DataFrame,
                   embeddings: dict | None = None, thresholds: dict[str, float] | None = None,
                   image_sizes: np.ndarray | None = None) -> pd.DataFrame:
    """Features of the pairs (rows[p], cols[p]) in one go; `PairFeatures` featurises in chunks."""
    return PairFeatures(neigh, df, embeddings, thresholds, image_sizes)(rows, cols)


def predict_pairs(clf, features: PairFeatures, rows: np.ndarray, cols: np.ndarray,
                  chunk: int = 1_000_000) -> np.ndarray:
    """Pair probabilities, featurised and predicted `chunk` pairs at a time (bounded memory)."""
    prob = np.empty(len(rows), dtype=np.float32)
    for start in progress(range(0, len(rows), chunk), desc="scoring pairs", unit="chunk", disable=len(rows) <= chunk):
        sl = slice(start, start + chunk)
        prob[sl] = clf.predict_proba(features(rows[sl], cols[sl]))[:, 1]
    return prob


@dataclass
class StackerConfig:
    model: str = "auto"  # auto (xgboost on CUDA when its build has CUDA, else lightgbm) | lightgbm | xgboost | blend
    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    max_train_pairs: int | None = 2_000_000  # negatives sampled (and weighted up) beyond this many pairs; None: all


def _on_gpu(cfg: StackerConfig) -> bool:
    return cfg.device == "cuda" or (cfg.device == "auto" and cuda_available())


def chosen_model(cfg: StackerConfig) -> str:
    """The booster `model: auto` means: XGBoost where it can train on CUDA (LightGBM's wheels cannot), LightGBM
    on the CPU (as accurate here, and faster on few cores); any other name is itself."""
    if cfg.model != "auto":
        return cfg.model
    return "xgboost" if _on_gpu(cfg) and xgboost_has_cuda() else "lightgbm"


def make_classifier(cfg: StackerConfig):
    """LightGBM or XGBoost binary classifier, on CUDA when asked for (or auto, present and supported); `blend`
    is both, their probabilities averaged (scikit-learn's soft voting).

    With `device="auto"` LightGBM falls back to the CPU, with a log line, when its build has no CUDA.
    """
    if cfg.model == "auto":
        return make_classifier(replace(cfg, model=chosen_model(cfg)))
    if cfg.model == "blend":
        from sklearn.ensemble import VotingClassifier

        return VotingClassifier([(m, make_classifier(replace(cfg, model=m))) for m in ("lightgbm", "xgboost")],
                                voting="soft")
    gpu = _on_gpu(cfg)
    if cfg.model == "lightgbm":
        import lightgbm as lgb

        if gpu and cfg.device == "auto" and not lightgbm_has_cuda():
            log.info("LightGBM was built without CUDA: training on the CPU")
            gpu = False
        return lgb.LGBMClassifier(n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate,
                                  num_leaves=cfg.num_leaves, subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
                                  random_state=cfg.seed, device_type="cuda" if gpu else "cpu", verbose=-1,
                                  deterministic=True, force_row_wise=True)
    if cfg.model == "xgboost":
        import xgboost as xgb

        return xgb.XGBClassifier(n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate,
                                 max_leaves=cfg.num_leaves, subsample=0.8, colsample_bytree=0.8, tree_method="hist",
                                 random_state=cfg.seed, device="cuda" if gpu else "cpu")
    raise ValueError(f"model must be 'auto', 'lightgbm', 'xgboost' or 'blend', got {cfg.model!r}")


def pair_folds(rows: np.ndarray, cols: np.ndarray, folds: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train pairs, validation pairs) per fold: validation = query row in the fold; training = pairs with
    neither end in the fold, so no validation query's group is seen in training."""
    out = []
    for k in np.unique(folds):
        val = folds[rows] == k
        train = (folds[rows] != k) & (folds[cols] != k)
        out.append((np.flatnonzero(train), np.flatnonzero(val)))
    return out


def training_sample(y: np.ndarray, max_pairs: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pairs to train on and their weights: every positive, and negatives sampled down to `max_pairs` in all,
    each weighted by the inverse of the sampling rate, so that the probabilities keep their scale."""
    if max_pairs is None or len(y) <= max_pairs:
        return np.arange(len(y)), np.ones(len(y), dtype=np.float32)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y != 1)
    rate = max(0.0, (max_pairs - len(pos)) / max(1, len(neg)))
    if rate == 0.0:
        raise ValueError(f"max_train_pairs={max_pairs} leaves no room for negatives beside {len(pos):,} positives")
    kept = np.sort(np.concatenate([pos, neg[np.random.default_rng(seed).random(len(neg)) < rate]]))
    return kept, np.where(y[kept] == 1, 1.0, 1.0 / rate).astype(np.float32)


def pair_targets(rows: np.ndarray, cols: np.ndarray, labels: np.ndarray,
                 distractor: np.ndarray | None = None) -> np.ndarray:
    """1 for a pair of one group, 0 for two groups, -1 (no target, never trained on) for a pair of two
    distractors of a training pool, which may be one product."""
    y = (labels[rows] == labels[cols]).astype(np.int8)
    if distractor is not None:
        y[distractor[rows] & distractor[cols]] = -1
    return y


def fit(X: pd.DataFrame, y: np.ndarray, cfg: StackerConfig):
    """The classifier trained on all positive pairs and (beyond `cfg.max_train_pairs`) a weighted negative sample;
    pairs without a target (y = -1) are left out."""
    known = np.flatnonzero(y >= 0)
    kept, weight = training_sample(y[known], cfg.max_train_pairs, cfg.seed)
    kept = known[kept]
    return make_classifier(cfg).fit(X.iloc[kept], y[kept], sample_weight=weight)


def out_of_fold(X: pd.DataFrame, y: np.ndarray, rows: np.ndarray, cols: np.ndarray, folds: np.ndarray,
                cfg: StackerConfig) -> np.ndarray:
    """Out-of-fold probabilities of every pair (`pair_folds`); pairs with y = -1 are predicted, never trained on."""
    prob = np.zeros(len(y), dtype=np.float32)
    for train, val in pair_folds(rows, cols, folds):
        clf = fit(X.iloc[train], y[train], cfg)
        prob[val] = clf.predict_proba(X.iloc[val])[:, 1]
    return prob


@dataclass(frozen=True)
class PairTable:
    """The candidate pairs of several splits side by side in one row-number space (each split's rows offset past
    the earlier splits', so no pair crosses two): the stacker trains on the pairs of some splits and predicts all,
    fold by fold (05 trains on the train split, the first, and scores the test-like slices of
    `utils.matching.slices`).

    `folds` is the fold of every row, `split` the split of every pair, `offsets` each split's first row.
    """

    X: pd.DataFrame
    y: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    folds: np.ndarray
    split: np.ndarray
    offsets: tuple[int, ...]

    @classmethod
    def of(cls, parts: list[tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> PairTable:
        """From (features, targets, rows, cols, folds of the split's rows) per split."""
        offsets = tuple(np.cumsum([0] + [len(p[4]) for p in parts[:-1]]).tolist())
        X = parts[0][0] if len(parts) == 1 else pd.concat([p[0] for p in parts], ignore_index=True)  # no copy alone
        return cls(X=X, y=np.concatenate([p[1] for p in parts]),
                   rows=np.concatenate([p[2] + o for p, o in zip(parts, offsets, strict=True)]),
                   cols=np.concatenate([p[3] + o for p, o in zip(parts, offsets, strict=True)]),
                   folds=np.concatenate([p[4] for p in parts]),
                   split=np.concatenate([np.full(len(p[1]), s, dtype=np.int8) for s, p in enumerate(parts)]),
                   offsets=offsets)

    @property
    def n(self) -> int:
        """Rows of all splits."""
        return len(self.folds)

    def train_targets(self) -> np.ndarray:
        """The targets of the first split's pairs (the train split's, which the stacker learns from); -1 (predicted,
        never trained on) for every other split's."""
        return np.where(self.split == 0, self.y, -1).astype(np.int8)

    def pairs_of(self, split: int, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, probabilities) of one split's pairs, in that split's own row numbers."""
        sel = self.split == split
        return self.rows[sel] - self.offsets[split], self.cols[sel] - self.offsets[split], prob[sel]


def pair_matrix(rows: np.ndarray, cols: np.ndarray, prob: np.ndarray, n: int) -> sp.csr_matrix:
    """Symmetric N x N probabilities (mean of p(i,j) and p(j,i) where both were scored).

    Averaged on pair keys rather than by dividing two sparse sums: sparse addition drops pairs whose
    probability is exactly 0, which would misalign the two sums.
    """
    r = np.concatenate([rows, cols]).astype(np.int64)
    c = np.concatenate([cols, rows]).astype(np.int64)
    keys, inverse = np.unique(r * n + c, return_inverse=True)
    p = np.concatenate([prob, prob]).astype(np.float64)
    mean = np.bincount(inverse, weights=p) / np.bincount(inverse)
    return sp.csr_matrix((mean.astype(np.float32), (keys // n, keys % n)), shape=(n, n))


class GraphFeatures:
    """Second-stage features of pairs from the first stage's symmetric probabilities P (2nd place's idea: a pair
    is likelier when the rest of the graph agrees): the pair's own probability, its two-hop support
    sum_k p_ik p_kj, the number of strong (>= `strong`) two-hop paths, each end's total and largest probability,
    the pair's rank in both ends' lists, and the strong graph's connected components. Per-row state is computed
    once, so pairs are featurised in chunks; probabilities below `floor` are dropped (sparse products)."""

    def __init__(self, P: sp.csr_matrix, strong: float = 0.5, floor: float = 0.01):
        self.n = P.shape[0]
        Pf = sp.csr_matrix(P, dtype=np.float32, copy=True)
        Pf.data[Pf.data < floor] = 0.0
        Pf.eliminate_zeros()
        Pf.sort_indices()
        self.P, self.S = Pf, (Pf >= strong).astype(np.float32).tocsr()
        keys = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(Pf.indptr)) * self.n + Pf.indices  # ascending
        self.entries = (keys, np.arange(len(keys)))  # a `_positions` index whose "place" is the stored entry
        self.total = np.asarray(Pf.sum(axis=1)).ravel().astype(np.float32)
        self.largest = np.asarray(Pf.max(axis=1).todense()).ravel().astype(np.float32)
        ranked_idx, _ = ranked(Pf)
        self.index, self.k = _position_index(ranked_idx), ranked_idx.shape[1]
        self.component = connected_components(self.S, directed=False)[1]
        self.component_size = np.bincount(self.component)[self.component].astype(np.float32)

    def __call__(self, rows: np.ndarray, cols: np.ndarray) -> pd.DataFrame:
        entry = _positions(self.entries, self.n, rows, cols) if self.P.nnz else np.full(len(rows), -1)
        p = np.where(entry >= 0, self.P.data[np.maximum(entry, 0)] if self.P.nnz else 0.0, 0.0).astype(np.float32)
        rank_ij, rank_ji = _positions(self.index, self.n, rows, cols), _positions(self.index, self.n, cols, rows)
        return pd.DataFrame({
            "g_prob": p, "g_two_hop": pair_similarity(self.P, rows, cols),
            "g_strong_paths": pair_similarity(self.S, rows, cols),
            "g_total_i": self.total[rows], "g_total_j": self.total[cols],
            "g_max_i": self.largest[rows], "g_max_j": self.largest[cols],
            "g_prob_over_max": p / np.maximum(self.largest[rows], 1e-6),
            "g_rank_ij": np.where(rank_ij >= 0, rank_ij, self.k).astype(np.float32),
            "g_rank_ji": np.where(rank_ji >= 0, rank_ji, self.k).astype(np.float32),
            "g_same_component": (self.component[rows] == self.component[cols]).astype(np.float32),
            "g_component_size": self.component_size[rows]})


def image_sizes(df: pd.DataFrame, folder: str) -> np.ndarray:
    """(width, height) of each row's image, read from the file headers only."""
    from pathlib import Path

    from PIL import Image

    out = np.zeros((len(df), 2), dtype=np.float32)
    for r, name in enumerate(df["image"]):
        with Image.open(Path(folder) / name) as im:
            out[r] = im.size
    return out


def importance(clf, columns: list[str]) -> pd.Series:
    """Feature importance (gain where the library gives it), largest first; a blend's is the mean of its members'
    importances, each as a share of its total."""
    if hasattr(clf, "estimators_"):
        shares = [importance(m, columns) for m in clf.estimators_]
        return sum(v / max(float(v.sum()), 1e-12) for v in shares).div(len(shares)).sort_values(ascending=False)
    if hasattr(clf, "booster_"):
        values = clf.booster_.feature_importance(importance_type="gain")
    else:
        values = clf.feature_importances_
    return pd.Series(values, index=columns).sort_values(ascending=False)


def joined(*featurizers):
    """One featuriser from several (PairFeatures, GraphFeatures): their columns side by side."""
    return lambda rows, cols: pd.concat([f(rows, cols) for f in featurizers], axis=1)


FIRST_STAGE, SECOND_STAGE = "pair features", "+ graph features (second stage)"
CLOSED = " + closure"  # the suffix of a decision with a tuned closure


@dataclass
class StageFit:
    """One stacker stage trained out of fold: its features, every pair's OOF probability, the evaluated split's
    probabilities and N x N matrix, and the decisions tuned on it."""

    X: pd.DataFrame
    prob: np.ndarray
    evaluated_prob: np.ndarray
    matrix: sp.csr_matrix
    decisions: list[Decision]


def fit_stage(name: str, X: pd.DataFrame, y: np.ndarray, table: PairTable, evaluated_split: int, labels: np.ndarray,
              rows: np.ndarray, n: int, cfg: StackerConfig, fp_weight: float = 1.0, closure: bool = True) -> StageFit:
    """Train out of fold on the pairs with a target in `y`, then tune the decision (04's threshold + min2 rule, and
    a closure) on the evaluated split's OOF probabilities, scored on its `rows`."""
    prob = out_of_fold(X, y, table.rows, table.cols, table.folds, cfg)
    ev_rows, ev_cols, ev_prob = table.pairs_of(evaluated_split, prob)
    matrix = pair_matrix(ev_rows, ev_cols, ev_prob, n)  # ranked as neighbour lists: 04's rule decides
    return StageFit(X, prob, ev_prob, matrix, tuned_decisions(name, matrix, labels, rows, fp_weight, closure))


def eligible(decision: Decision, second_stage: bool | str, closure: bool | str) -> bool:
    """Whether the settings allow a decision: `second_stage` and `closure` each True, False or "auto" (either)."""
    return ((second_stage == "auto" or decision.name.startswith(SECOND_STAGE) == bool(second_stage))
            and (closure == "auto" or decision.name.endswith(CLOSED) == bool(closure)))
