"""Test-like validation slices for the stacker (`05_stacker` with `validation: slices`).

In the pooled train split a held-out row of fold k is compared with the rows of the other folds in the space of
fold k's cross-validated model, which was trained on those rows, and it meets fewer rows than a test row does. Its
out-of-fold F1 is then no estimate of the test's (on the real titles: 05's out-of-fold F1 0.92 against a test F1
of 0.87).

A slice is fold k's labelled rows plus test postings, which match no training row when train and test hold
disjoint label groups (Kaggle's split), up to the test split's size. Every model sees a slice as it sees the test
split: a cross-validated model through its fold k part (which saw neither fold k nor any test posting), every
other embedder run on the slice alone (TF-IDF refitted on it), neighbours searched within it. Its pairs, ranks and
densities are then those of a test split. The slices stand side by side as blocks of one "virtual" split in which
no pair crosses two blocks, so the stacker's features, the out-of-fold training (slice = fold), the decision
tuning and the scorer run on it unchanged.

The slices assume that a train row meets as many look-alikes among test postings as a test row meets among the
others. On the real-titles files it does not (dev rows meet 2.5 times as many per posting), and a stacker tuned on
their slices was too cautious on test.csv (docs/methods.md, "Test-like slices").

    sl = build(train, test, folds)
    X = embeddings(store, sl, ["tfidf_char", "minilm_arcface"])
    neigh = neighbours(X, sl, k=50)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from utils.core.data import DISTRACTOR_COLUMN, LABEL_COLUMN, distinct_postings, distractor_mask
from utils.core.store import Embedding, FoldEmbedding, RunStore

from .embed import concat, embed
from .knn import neighbours as search

Neigh = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Slices:
    """The virtual split: slice after slice, fold k's labelled rows then its test postings.

    `frame` holds the rows (postings columns, `label_group`, `distractor`: each test posting has a label of its
    own), `slice_of` each row's slice (the fold of its labelled rows), `source` its row in the train frame
    (labelled rows) or in the test frame (distractors).
    """

    frame: pd.DataFrame
    slice_of: np.ndarray
    source: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return self.frame[LABEL_COLUMN].to_numpy()

    @property
    def distractor(self) -> np.ndarray:
        return distractor_mask(self.frame)

    @cached_property
    def bounds(self) -> list[tuple[int, int]]:
        """(start, stop) of each slice's rows, in slice order."""
        edges = np.flatnonzero(np.diff(self.slice_of)) + 1
        starts = np.r_[0, edges]
        return list(zip(starts.tolist(), np.r_[edges, len(self.slice_of)].tolist(), strict=True))


def build(train: pd.DataFrame, test: pd.DataFrame, folds: np.ndarray, seed: int = 0) -> Slices:
    """Fold k's labelled train rows, then test postings drawn with `seed` up to the test split's size (none where
    the fold is as large), for each fold k. The test postings' own labels, if any, are never read."""
    if distractor_mask(train).any():
        raise ValueError("slices are built from labelled train rows; the train frame holds distractors already "
                         "(set distractors: 0)")
    distinct_postings(train, test, "slices need test postings that are not training rows")
    postings = test.drop(columns=[LABEL_COLUMN, DISTRACTOR_COLUMN], errors="ignore")
    rng = np.random.default_rng(seed)
    next_label = int(train[LABEL_COLUMN].max()) + 1
    frames, slice_of, source = [], [], []
    for k in np.unique(folds):
        rows = np.flatnonzero(folds == k)
        picked = np.sort(rng.choice(len(test), size=max(0, len(test) - len(rows)), replace=False))
        extra = postings.iloc[picked].assign(**{LABEL_COLUMN: np.arange(next_label, next_label + len(picked))})
        next_label += len(picked)
        frames += [train.iloc[rows].assign(**{DISTRACTOR_COLUMN: False}), extra.assign(**{DISTRACTOR_COLUMN: True})]
        slice_of.append(np.full(len(rows) + len(picked), k, dtype=np.int8))
        source += [rows, picked]
    frame = pd.concat(frames, ignore_index=True)[[*train.columns, DISTRACTOR_COLUMN]]
    return Slices(frame, np.concatenate(slice_of), np.concatenate(source).astype(np.int64))


def gather(sl: Slices, train_values: np.ndarray, test_values: np.ndarray,
           rows: slice = slice(None)) -> np.ndarray:
    """A per-row array of the virtual split (or of its `rows`) from the train split's and the test split's (e.g.
    image sizes)."""
    src, dis = sl.source[rows], sl.distractor[rows]
    out = np.empty((len(src), *train_values.shape[1:]), dtype=train_values.dtype)
    out[~dis], out[dis] = train_values[src[~dis]], test_values[src[dis]]
    return out


def _stack(blocks: list[Embedding]) -> Embedding:
    """Blocks on top of each other; sparse blocks (each slice's own TF-IDF vocabulary) padded to one width, which
    is harmless because no pair crosses two blocks."""
    if not sp.issparse(blocks[0]):
        return np.ascontiguousarray(np.vstack(blocks), dtype=np.float32)
    width = max(b.shape[1] for b in blocks)
    return sp.vstack([sp.csr_matrix((b.data, b.indices, b.indptr), shape=(b.shape[0], width)) for b in blocks],
                     format="csr", dtype=np.float32)


def _fold_blocks(store: RunStore, sl: Slices, model: str, train_part: FoldEmbedding) -> list[np.ndarray]:
    """Slice k of a cross-validated model: its labelled rows and its test postings, both by fold k's model."""
    test_parts = store.fold_parts("test", model)
    if len(test_parts) != len(train_part.parts):
        raise FileNotFoundError(f"{store.dir('02_embed')}: the test split of {model} is embedded by "
                                f"{len(test_parts)} of its {len(train_part.parts)} fold models; run 02_embed with "
                                "fold_test: true")
    labelled = ~sl.distractor
    if (train_part.fold_of_row[sl.source[labelled]] != sl.slice_of[labelled]).any():
        raise ValueError(f"{model}'s fold models were trained on other folds than the slices (05's n_folds and "
                         "seed must be 01's)")
    return [gather(sl, train_part.parts[sl.slice_of[start]], test_parts[sl.slice_of[start]], slice(start, stop))
            for start, stop in sl.bounds]


def _blocks(store: RunStore, sl: Slices, model: str) -> list[Embedding]:
    found = store.split_embeddings("train", [model], folds=True)
    if model not in found:
        raise FileNotFoundError(f"{store.dir('02_embed')}: no train embedding of {model}; run 02_embed with it")
    X, meta = found[model]
    if isinstance(X, FoldEmbedding):
        return _fold_blocks(store, sl, model, X)
    if meta.get("parts"):  # a joined model: its parts' slices, joined
        parts = [_blocks(store, sl, p) for p in meta["parts"]]
        return [concat(list(b)) for b in zip(*parts, strict=True)]
    if "checkpoint" in meta:
        raise ValueError(f"{model} was trained on every train row (in sample): slices need its fold models "
                         f"(01_train_arcface cv: [{model!r}...])")
    return [embed(meta["model"], sl.frame.iloc[start:stop], **meta.get("params", {})) for start, stop in sl.bounds]


def embeddings(store: RunStore, sl: Slices, models: list[str]) -> dict[str, Embedding]:
    """Each model's embedding of the virtual split, slice by slice as the test split is embedded: a
    cross-validated model by its fold k part, a joined model from its parts, any other embedder run on the slice."""
    return {m: _stack(_blocks(store, sl, m)) for m in models}


def neighbours(emb: dict[str, Embedding], sl: Slices, k: int, backend: str = "auto") -> Neigh:
    """Top-`k` neighbours of every row within its own slice, in the virtual split's row numbers (k is cut to the
    smallest slice)."""
    k = min(k, min(stop - start for start, stop in sl.bounds))
    out = {}
    for m, X in emb.items():
        idx, sims = [], []
        for start, stop in sl.bounds:
            i, s, _ = search(X[start:stop], k=k, backend=backend)
            idx.append(i + start)
            sims.append(s)
        out[m] = (np.vstack(idx).astype(np.int32), np.vstack(sims))
    return out
