"""Reading, checking and writing `posting_id,matches` submissions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .data import DataError, check_text_file
from .io import write_csv
from .metric import matches_from_lists

MAX_MATCHES = 50


def to_submission(posting_ids: np.ndarray, matches: sp.csr_matrix) -> pd.DataFrame:
    """Submission frame from a (capped) match matrix valued by score: the row itself first, then by score."""
    ids = np.asarray(posting_ids)
    m = sp.csr_matrix(matches, dtype=np.float32)
    if np.diff(m.indptr).max(initial=0) > MAX_MATCHES:
        raise ValueError(f"a row has more than {MAX_MATCHES} matches; cap them first (utils.matching.cap)")
    out = []
    for i in range(m.shape[0]):
        cols = m.indices[m.indptr[i]:m.indptr[i + 1]]
        vals = m.data[m.indptr[i]:m.indptr[i + 1]]
        others = cols[cols != i][np.argsort(-vals[cols != i], kind="stable")]
        out.append(" ".join(ids[np.concatenate([[i], others]).astype(int)]))
    return pd.DataFrame({"posting_id": ids, "matches": out})


def write_submission(path: str | Path, df: pd.DataFrame) -> Path:
    return write_csv(path, df[["posting_id", "matches"]])


def read_submission(path: str | Path, posting_ids: np.ndarray) -> sp.csr_matrix:
    """Parse a submission CSV into a match matrix aligned with `posting_ids`.

    Raises DataError for missing columns, duplicate rows, rows missing from the submission,
    unknown ids, duplicate ids inside one row, and more than 50 matches in a row.
    """
    path = check_text_file(path, "submission CSV")
    try:
        sub = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: not a readable CSV ({e})") from None
    missing_cols = {"posting_id", "matches"} - set(sub.columns)
    if missing_cols:
        raise DataError(f"{path}: missing column(s) {sorted(missing_cols)}; found {list(sub.columns)}")
    dup = sub["posting_id"][sub["posting_id"].duplicated()]
    if len(dup):
        raise DataError(f"{path}: {len(dup)} duplicate posting_id row(s), e.g. {list(dup[:5])}")
    index = {pid: i for i, pid in enumerate(posting_ids)}
    unknown = [p for p in sub["posting_id"] if p not in index]
    if unknown:
        raise DataError(f"{path}: {len(unknown)} posting_id(s) not in the data, e.g. {unknown[:5]}")
    present = set(sub["posting_id"])
    absent = [p for p in posting_ids if p not in present]
    if absent:
        raise DataError(f"{path}: {len(absent)} data row(s) missing from the submission, e.g. {absent[:5]}")

    lists: list[list[int]] = [[] for _ in posting_ids]
    for line, (pid, text) in enumerate(zip(sub["posting_id"], sub["matches"], strict=True), start=2):
        tokens = text.split()
        if len(set(tokens)) != len(tokens):
            raise DataError(f"{path}: line {line} ({pid}): column 'matches' repeats an id")
        if len(tokens) > MAX_MATCHES:
            raise DataError(f"{path}: line {line} ({pid}): {len(tokens)} matches, at most {MAX_MATCHES}")
        bad = [t for t in tokens if t not in index]
        if bad:
            raise DataError(f"{path}: line {line} ({pid}): unknown id(s) in 'matches': {bad[:5]}")
        lists[index[pid]] = [index[t] for t in tokens]
    return matches_from_lists(lists, len(posting_ids))
