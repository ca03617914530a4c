"""The run store: the one place where the artifact paths of a run are built and parsed.

A run folder holds one sub-folder per stage (`<run_dir>/<stage>/`). The matching artifacts are named
`<split>_<model>` (`train_tfidf_char`), and an out-of-fold part of a cross-validated model
`<split>_<model>@fold<k>`: `ArtifactName` builds and parses these names, `RunStore` reads and writes the
files (embeddings, neighbours, thresholds, submissions, checkpoints). A stage being executed may write
into a staging folder (`out_dir`), which the pipeline swaps in only when the stage succeeds.

    store = RunStore("outputs/runs/demo", stage="03_knn", out_dir=None)
    for name in store.embeddings():
        X, meta = store.load_embedding(name)
        store.save_neighbours(name, idx, sims)
"""

from __future__ import annotations

import re
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .data import DataError
from .io import atomic_path, read_json, write_json, write_npy, write_npz
from .paths import EDA, EMBED, KNN, POSTPROCESS, STACKER, TRAIN, VALUATION  # noqa: F401  (re-exported for notebooks)

SPLITS = ("train", "test")
STAMP = ".fingerprint.json"  # the pipeline's record of a stage's last successful run, in its folder
_NAME = re.compile(r"^(?P<split>train|test)_(?P<model>[^@/]+?)(?:@fold(?P<fold>\d+))?$")

Embedding = np.ndarray | sp.csr_matrix


@dataclass(frozen=True)
class FoldEmbedding:
    """A cross-validated model's train split: `parts[k]` embeds every row with the model that did not see fold k.

    Row i is compared with any row in the space of its own fold's model (`fold_of_row[i]`), as 03_knn searched
    it, so a pair's similarity is out of fold for row i and always defined, not only among i's neighbours.
    """

    parts: tuple[np.ndarray, ...]
    fold_of_row: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.parts[0].shape


@dataclass(frozen=True)
class ArtifactName:
    """`<split>_<model>[@fold<k>]`: one split's artifact of one model (`fold`: an out-of-fold part)."""

    split: str
    model: str
    fold: int | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        plain_name("model", self.model)

    @property
    def stem(self) -> str:
        return f"{self.split}_{self.model}" + ("" if self.fold is None else f"@fold{self.fold}")

    @property
    def whole(self) -> ArtifactName:
        """The name without its fold: what the fold parts are stitched into."""
        return ArtifactName(self.split, self.model)

    @property
    def searched(self) -> bool:
        """Whether 03_knn searches it: whole artifacts and the train split's fold parts. A fold model's test part
        (02's `fold_test`) is read by 05's test-like slices alone."""
        return self.fold is None or self.split == "train"

    @classmethod
    def parse(cls, stem: str) -> ArtifactName:
        m = _NAME.match(stem)
        if not m:
            raise ValueError(f"{stem!r} is not an artifact name (<split>_<model>[@fold<k>])")
        fold = m.group("fold")
        return cls(m.group("split"), m.group("model"), None if fold is None else int(fold))


PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def plain_name(kind: str, name: str) -> str:
    """`name` when it is a plain name (letters, digits, `_ . + -`, no `..`): a model or run name becomes part of a
    path, and `../x` or `a/b` would write outside the run folder."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{kind} name {name!r} must be plain: letters, digits and _ . + - (no '/', '@' or '..')")
    return name


@contextmanager
def _readable(path: Path, stage: str) -> Iterator[None]:
    """Turn a truncated or corrupt array file into a DataError naming it and the stage that writes it."""
    try:
        yield
    except (ValueError, EOFError, OSError, KeyError, zipfile.BadZipFile) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e}); the file is truncated or corrupt, "
                        f"re-run {stage} (--force)") from None


def _name(name: ArtifactName | str) -> ArtifactName:
    return name if isinstance(name, ArtifactName) else ArtifactName.parse(name)


class RunStore:
    """Typed access to one run folder. `stage` with `out_dir`: where the stage being run writes."""

    def __init__(self, run_dir: str | Path, stage: str | None = None, out_dir: str | Path | None = None):
        self.run_dir = Path(run_dir)
        self.stage = stage
        self._out = Path(out_dir) if out_dir else None

    def dir(self, stage: str) -> Path:
        """A stage's folder: the staging folder for the stage being run, else `<run_dir>/<stage>/`."""
        return self._out if stage == self.stage and self._out is not None else self.run_dir / stage

    @property
    def out(self) -> Path:
        """The folder the running stage writes to, created."""
        if self.stage is None:
            raise ValueError("RunStore(run_dir) without a stage writes nowhere; pass stage=")
        d = self.dir(self.stage)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _existing(self, stage: str) -> Path:
        d = self.dir(stage)
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no outputs of {stage}; run that stage first")
        return d

    # embeddings (02_embed): <split>_<model>.npy (dense) or .npz (sparse CSR), with a .json sidecar
    def embeddings(self, split: str | None = None) -> list[ArtifactName]:
        """Every embedding artifact written by 02_embed (a sidecar with its array beside it)."""
        folder = self._existing(EMBED)
        stems = [p.name.removesuffix(".json") for p in sorted(folder.glob("*.json"))]
        names = [ArtifactName.parse(stem) for stem in stems if _NAME.match(stem)]  # not metrics, stamps
        return [n for n in names if self.has_embedding(n) and (split is None or n.split == split)]

    def _embedding_files(self, name: ArtifactName | str) -> dict[str, Path]:
        """The sidecar and the two possible array files (names are built whole: a model may contain a dot)."""
        stem = _name(name).stem
        return {ext: self.dir(EMBED) / f"{stem}.{ext}" for ext in ("json", "npy", "npz")}

    def has_embedding(self, name: ArtifactName | str) -> bool:
        files = self._embedding_files(name)
        return files["json"].exists() and (files["npy"].exists() or files["npz"].exists())

    def save_embedding(self, name: ArtifactName | str, X: Embedding, meta: dict) -> Path:
        """Write the array (`.npy` dense, `.npz` sparse CSR, float32) and its sidecar; returns the array path."""
        files = self._embedding_files(name)
        files["json"].parent.mkdir(parents=True, exist_ok=True)
        if sp.issparse(X):
            path = files["npz"]
            with atomic_path(path) as tmp:
                sp.save_npz(tmp, sp.csr_matrix(X, dtype=np.float32))
        else:
            path = write_npy(files["npy"], np.ascontiguousarray(X, dtype=np.float32))
        write_json(files["json"], {**meta, "rows": X.shape[0], "dim": X.shape[1], "sparse": sp.issparse(X)})
        return path

    def load_embedding(self, name: ArtifactName | str) -> tuple[Embedding, dict]:
        files = self._embedding_files(name)
        if not self.has_embedding(name):
            raise FileNotFoundError(f"{files['json']}: no embedding {_name(name).stem}; run 02_embed with that model")
        meta = read_json(files["json"])
        path = files["npz"] if meta["sparse"] else files["npy"]
        with _readable(path, EMBED):
            X = sp.load_npz(path).tocsr() if meta["sparse"] else np.load(path)
        return X, meta

    def split_embeddings(self, split: str, models: list[str],
                         folds: bool = False) -> dict[str, tuple[Embedding | FoldEmbedding, dict]]:
        """The whole-split embeddings of those `models` that have one; with `folds`, a cross-validated model's
        out-of-fold parts too, as one `FoldEmbedding` (its sidecar: the first part's)."""
        out = {}
        for m in models:
            if self.has_embedding(ArtifactName(split, m)):
                out[m] = self.load_embedding(ArtifactName(split, m))
            elif folds and (parts := self._fold_parts(split, m)):
                out[m] = parts
        return out

    def _loaded_fold_parts(self, split: str, model: str) -> list[tuple[np.ndarray, dict]]:
        names = sorted((n for n in self.embeddings(split) if n.model == model and n.fold is not None),
                       key=lambda n: n.fold)
        return [self.load_embedding(n) for n in names]

    def fold_parts(self, split: str, model: str) -> list[np.ndarray]:
        """A cross-validated model's `<split>_<model>@fold<k>` arrays in fold order: every row of the split
        embedded by fold k's model ([] when there are none)."""
        return [X for X, _ in self._loaded_fold_parts(split, model)]

    def _fold_parts(self, split: str, model: str) -> tuple[FoldEmbedding, dict] | None:
        loaded = self._loaded_fold_parts(split, model)
        if not loaded:
            return None
        fold_of_row = np.full(loaded[0][0].shape[0], -1, dtype=np.int32)
        for k, (_, meta) in enumerate(loaded):
            fold_of_row[np.asarray(meta["fold_rows"], dtype=np.int64)] = k
        if (fold_of_row < 0).any():
            raise ValueError(f"{self.dir(EMBED)}: {int((fold_of_row < 0).sum())} {split} rows of {model} belong to "
                             "no fold part; re-run 02_embed")
        return FoldEmbedding(tuple(X for X, _ in loaded), fold_of_row), loaded[0][1]

    # neighbours (03_knn): <split>_<model>.npz with indices int32 [N, K] and sims float32 [N, K]
    def save_neighbours(self, name: ArtifactName | str, indices: np.ndarray, sims: np.ndarray) -> Path:
        path = self.dir(KNN) / f"{_name(name).stem}.npz"
        return write_npz(path, indices=indices.astype(np.int32), sims=sims.astype(np.float32))

    def load_neighbours(self, split: str, models: list[str],
                        rows: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Neighbours of `models` for one split; a clear error naming the missing ones, and (given `rows`) the
        ones computed for another number of rows (e.g. a training pool with other `distractors`)."""
        folder = self.dir(KNN)
        paths = {m: folder / f"{ArtifactName(split, m).stem}.npz" for m in models}
        missing = sorted(m for m, p in paths.items() if not p.exists())
        if missing:
            raise FileNotFoundError(f"{folder}: no {split} neighbours for {missing}; run 02_embed and 03_knn with them")
        out = {}
        for m, p in paths.items():
            with _readable(p, KNN), np.load(p) as z:
                out[m] = (z["indices"], z["sims"])
        stale = {m: len(i) for m, (i, _) in out.items() if rows is not None and len(i) != rows}
        if stale:
            raise ValueError(f"{folder}: {split} neighbours of {stale} rows, this stage has {rows:,}; re-run 02_embed "
                             "and 03_knn with the same data and distractors")
        return out

    # 04_postprocess's tuned thresholds, read by 05_stacker
    def write_thresholds(self, thresholds: dict) -> Path:
        return write_json(self.dir(POSTPROCESS) / "thresholds.json", thresholds)

    def thresholds(self) -> dict:
        """04's tuned thresholds; {} when 04 is not part of the run."""
        path = self.dir(POSTPROCESS) / "thresholds.json"
        return read_json(path) if path.exists() else {}

    def metrics(self, stage: str) -> dict:
        """A stage's metrics.json; {} when the stage has not run."""
        path = self.dir(stage) / "metrics.json"
        return read_json(path) if path.exists() else {}

    def stamp(self, stage: str) -> dict:
        """What the pipeline recorded of a stage's last successful run (fingerprint, run id, outputs); {} if none,
        or when the record or the stage's metrics.json cannot be read (the stage is then stale, never stuck)."""
        path, metrics = self.dir(stage) / STAMP, self.dir(stage) / "metrics.json"
        try:
            read_json(metrics)
            return read_json(path)
        except (DataError, OSError):
            return {}

    def submission_path(self, stage: str | None = None) -> Path:
        """A stage's `submission.csv`, or the run's published one (`stage=None`)."""
        return (self.dir(stage) if stage else self.run_dir) / "submission.csv"

    def publish_submission(self, stage: str) -> Path:
        """Copy a stage's submission to `<run_dir>/submission.csv` (atomically)."""
        with atomic_path(self.submission_path()) as tmp:
            shutil.copyfile(self.submission_path(stage), tmp)
        return self.submission_path()

    # checkpoints (01_train_arcface): <model>/best.pt, or <model>/fold<k>/best.pt and <model>/full/best.pt with cv
    def checkpoint_dir(self, model: str, fold: int | str | None = None) -> Path:
        """Where a model's checkpoints go: `fold` an int (fold model), "full" (all rows) or None (single)."""
        d = self.dir(TRAIN) / plain_name("model", model)
        return d if fold is None else d / (fold if fold == "full" else f"fold{int(fold)}")


def checkpoint_set(folder: str | Path) -> dict:
    """Checkpoints under a model folder: {"test": path, "folds": {k: path}} (folds empty without CV)."""
    folder = Path(folder)
    folds = {int(p.parent.name.removeprefix("fold")): p for p in sorted(folder.glob("fold*/best.pt"))}
    for test in (folder / "full" / "best.pt", folder / "best.pt"):
        if test.is_file():
            return {"test": test, "folds": folds}
    raise FileNotFoundError(f"{folder}: no checkpoint (best.pt or full/best.pt); run 01_train_arcface first")
