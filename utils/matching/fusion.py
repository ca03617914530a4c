"""Fusion of several models' cosine similarities on the union of their candidate pairs (seed 002):
mean, max, product, and the probabilistic union a + b - ab (1 - prod(1 - s) for more models)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from utils.core.device import cuda_available, usable_cores
from utils.core.registry import Registry
from utils.core.store import FoldEmbedding

FUSIONS: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("fusion", {
    "mean": lambda S: S.mean(axis=0),
    "max": lambda S: S.max(axis=0),
    "prod": lambda S: S.prod(axis=0),
    "prob_union": lambda S: 1.0 - np.prod(1.0 - S, axis=0),
})


GPU_MIN_PAIRS = 200_000  # fewer pairs: copying the embeddings to the GPU costs more than the products


def _pair_similarity_cuda(X: np.ndarray, rows: np.ndarray, cols: np.ndarray, chunk_bytes: int = 2**28) -> np.ndarray:
    """`pair_similarity` of a dense X on CUDA in fp32 (equal to the CPU's up to summation order); chunks of pairs
    whose two gathered blocks take `chunk_bytes` each, and the cache is given back (05 trains on the GPU next)."""
    import torch

    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).cuda()
    chunk = max(1, chunk_bytes // (4 * X.shape[1]))
    out = np.empty(len(rows), dtype=np.float32)
    for s in range(0, len(rows), chunk):
        r = torch.from_numpy(np.asarray(rows[s:s + chunk], dtype=np.int64)).cuda()
        c = torch.from_numpy(np.asarray(cols[s:s + chunk], dtype=np.int64)).cuda()
        out[s:s + chunk] = torch.einsum("ij,ij->i", Xt[r], Xt[c]).cpu().numpy()
    del Xt
    torch.cuda.empty_cache()
    return out


def pair_similarity(X, rows: np.ndarray, cols: np.ndarray, chunk: int = 100_000, device: str = "auto") -> np.ndarray:
    """Row-wise dot products of the pairs (rows[p], cols[p]): the cosine for L2-normalised rows of X.

    Chunks run on every core (scipy's sparse products and numpy's einsum release the GIL); a dense X with
    many pairs runs on CUDA when present (`device="auto"`, or "cuda"; sparse rows stay on the CPU). A
    `FoldEmbedding` compares each pair in the space of its first row's fold model.
    """
    out = np.empty(len(rows), dtype=np.float32)
    if isinstance(X, FoldEmbedding):
        for k, part in enumerate(X.parts):
            sel = np.flatnonzero(X.fold_of_row[rows] == k)
            out[sel] = pair_similarity(part, rows[sel], cols[sel], chunk, device)
        return out
    if not sp.issparse(X) and (device == "cuda" or (device == "auto" and len(rows) >= GPU_MIN_PAIRS
                                                    and cuda_available())):
        return _pair_similarity_cuda(np.asarray(X), rows, cols)

    def one(s: int) -> None:
        r, c = rows[s:s + chunk], cols[s:s + chunk]
        if sp.issparse(X):
            out[s:s + chunk] = np.asarray(X[r].multiply(X[c]).sum(axis=1)).ravel()
        else:
            out[s:s + chunk] = np.einsum("ij,ij->i", X[r], X[c])

    starts = range(0, len(rows), chunk)
    with ThreadPoolExecutor(max_workers=max(1, min(usable_cores(), len(starts)))) as pool:
        list(pool.map(one, starts))
    return out


def candidate_pairs(neigh: dict[str, tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (row, col) pairs found in any model's neighbour lists."""
    keys = np.unique(np.concatenate([np.repeat(np.arange(n, dtype=np.int64), i.shape[1]) * n + i.ravel()
                                     for i, _ in neigh.values()]))
    return keys // n, keys % n


def to_neighbours(rows: np.ndarray, cols: np.ndarray, scores: np.ndarray, n: int,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` lists (self first, then by score) from scored pairs; short rows are padded with self at -1."""
    scores = np.where(rows == cols, np.inf, scores)
    order = np.lexsort((-scores, rows))
    rows, cols, scores = rows[order], cols[order], scores[order]
    starts = np.r_[0, np.cumsum(np.bincount(rows, minlength=n))[:-1]]
    pos = np.arange(len(rows)) - starts[rows]
    keep = pos < k
    idx = np.repeat(np.arange(n, dtype=np.int32)[:, None], k, axis=1)
    sims = np.full((n, k), -1.0, dtype=np.float32)
    idx[rows[keep], pos[keep]] = cols[keep]
    sims[rows[keep], pos[keep]] = scores[keep]
    sims[:, 0] = 1.0
    return idx, sims


def fuse(embeddings: dict, neigh: dict[str, tuple[np.ndarray, np.ndarray]], method: str = "prob_union",
         k: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists of the fused similarity of `embeddings` (same keys as `neigh`)."""
    if set(embeddings) != set(neigh) or len(neigh) < 2:
        raise ValueError("fusion needs the embeddings and neighbours of the same two or more models")
    n = next(iter(neigh.values()))[0].shape[0]
    rows, cols = candidate_pairs(neigh, n)
    S = np.stack([np.clip(pair_similarity(embeddings[m], rows, cols), 0.0, 1.0) for m in neigh])
    return to_neighbours(rows, cols, FUSIONS[method](S).astype(np.float32), n, k)
