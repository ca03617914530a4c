"""Neighbourhood blending (INB) and alpha query expansion / DBA: refine each embedding with the
similarity-weighted embeddings of its neighbours (seed 002: E'_i = [E_neighbours] . [Sim_neighbours]^T)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from .knn import neighbours


def neighbour_weights(indices: np.ndarray, sims: np.ndarray, threshold: float | None = None, k: int | None = None,
                      alpha: float = 1.0) -> sp.csr_matrix:
    """N x N weights: sim^alpha for each row's first `k` neighbours at or above `threshold` (self weight 1).

    INB: threshold set, alpha 1. alpha-QE: k set, alpha > 1. DBA: k set, alpha 0 (plain average).
    """
    n, kk = indices.shape
    keep = np.ones_like(sims, dtype=bool)
    if threshold is not None:
        keep &= sims >= threshold
    if k is not None:
        keep &= np.arange(kk)[None, :] < k
    keep[:, 0] = True
    w = np.where(keep, np.power(np.clip(sims, 0.0, 1.0), alpha), 0.0)
    w[:, 0] = 1.0
    rows = np.repeat(np.arange(n), kk)
    W = sp.csr_matrix((w.ravel(), (rows, indices.ravel())), shape=(n, n))
    W.eliminate_zeros()
    return W


def blend(X, W: sp.csr_matrix):
    """Row-normalised W @ X (dense stays dense, sparse stays sparse)."""
    Y = W @ X
    return normalize(Y, copy=False) if sp.issparse(Y) else normalize(np.asarray(Y)).astype(np.float32)


def iterate(X, indices: np.ndarray, sims: np.ndarray, rounds: int = 1, threshold: float | None = 0.5,
            qe_k: int | None = None, alpha: float = 1.0,
            backend: str = "auto") -> tuple[object, np.ndarray, np.ndarray]:
    """`rounds` of blending then a new neighbour search, starting from the neighbours (`indices`, `sims`)
    already found for X; returns the blended embedding and its neighbours, as deep as `indices`."""
    k = indices.shape[1]
    for _ in range(rounds):
        X = blend(X, neighbour_weights(indices, sims, threshold, qe_k, alpha))
        indices, sims, _ = neighbours(X, k=k, backend=backend)
    return X, indices, sims
