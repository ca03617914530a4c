"""Atomic writers for every artifact, so an interrupted run never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would make outputs private, unlike every other file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_with(path: str | Path, writer: Callable[[Path], None]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON (numpy scalars converted)."""
    text = json.dumps(obj, indent=2, default=_json_default, ensure_ascii=False)
    return _write_with(path, lambda p: p.write_text(text + "\n", encoding="utf-8"))


def read_json(path: str | Path) -> Any:
    """A JSON file's content; a truncated, emptied or non-UTF-8 file is a DataError naming it."""
    from utils.core.data import DataError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); the file is "
                        "truncated or edited") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 JSON text") from None


def write_csv(path: str | Path, df: pd.DataFrame) -> Path:
    return _write_with(path, lambda p: df.to_csv(p, index=False))


def write_npy(path: str | Path, arr: np.ndarray) -> Path:
    def _save(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, arr)

    return _write_with(path, _save)


def write_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    def _save(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **arrays)

    return _write_with(path, _save)


def records(frame: pd.DataFrame | None) -> list[dict] | None:
    """A table as JSON-ready records (a named index becomes a column), None for no table: metrics.json's tables."""
    return None if frame is None else frame.reset_index(drop=frame.index.name is None).to_dict(orient="records")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
