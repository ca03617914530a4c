""""Chisel" (seed 002): cut each row's matches so that the predicted group sizes follow the training
distribution. For every size s, only the rows whose s-th best match scores among the top
P_train(size >= s) * N (times `slack`) may keep s or more matches."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from utils.core.metric import group_sizes

MAX_SIZE = 50


def size_tail(train_labels: np.ndarray, max_size: int = MAX_SIZE) -> np.ndarray:
    """tail[s] = share of training rows whose group has at least s members (s = 0..max_size)."""
    sizes = group_sizes(np.asarray(train_labels))
    return np.array([(sizes >= s).mean() for s in range(max_size + 1)])


def sorted_values(matches: sp.csr_matrix, width: int) -> np.ndarray:
    """[N, width] match values of each row, descending, the row itself first; -inf where none."""
    m = sp.csr_matrix(matches, dtype=np.float64, copy=True)
    m.setdiag(np.inf)
    n = m.shape[0]
    out = np.full((n, width), -np.inf)
    counts = np.diff(m.indptr)
    rows = np.repeat(np.arange(n), counts)
    order = np.lexsort((-m.data, rows))
    pos = np.arange(len(rows)) - np.repeat(m.indptr[:-1], counts)
    keep = pos < width
    out[rows[order][keep], pos[keep]] = m.data[order][keep]
    return out


def allowed_sizes(values: np.ndarray, tail: np.ndarray, slack: float = 1.0) -> np.ndarray:
    """Largest size each row may keep under the train size distribution."""
    n, width = values.shape
    allowed = np.ones(n, dtype=np.int64)
    still = np.ones(n, dtype=bool)
    for s in range(2, min(width, len(tail) - 1) + 1):
        quota = int(np.ceil(min(1.0, slack * tail[s]) * n))
        col = values[:, s - 1]
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(-col, kind="stable")] = np.arange(n)
        still &= (rank < quota) & np.isfinite(col)
        allowed[still] = s
    return allowed


def chisel(matches: sp.csr_matrix, train_labels: np.ndarray, slack: float = 1.0) -> sp.csr_matrix:
    """Keep each row's best `allowed` matches (by value), the row itself always included."""
    tail = size_tail(train_labels)
    values = sorted_values(matches, MAX_SIZE + 1)
    allowed = allowed_sizes(values, tail, slack)
    m = sp.csr_matrix(matches, copy=True)
    m.setdiag(np.inf)
    m = m.tocoo()
    cutoff = values[m.row, np.minimum(allowed[m.row], values.shape[1]) - 1]
    keep = m.data >= cutoff
    data = np.where(np.isinf(m.data[keep]), 1.0, m.data[keep])
    return sp.csr_matrix((data, (m.row[keep], m.col[keep])), shape=m.shape)
