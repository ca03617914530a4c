"""What every stage shares: the parameters several stages declare (each default written here once), the
opening (logging, timer, run store) and the closing (`metrics.json`).

The stage contract: a stage writes into `<run_dir>/<stage>/` and ends with `metrics.json`.
"""

from __future__ import annotations

import logging
import platform
import resource
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from utils.core.data import assign_folds, distractor_mask, read_postings, read_training, read_truth, scored_rows
from utils.core.io import write_json
from utils.core.metric import score
from utils.core.schema import ConfigError, from_namespace, param
from utils.core.store import RunStore
from utils.matching.embed import phash_known

_PACKAGES = ("numpy", "pandas", "scikit-learn", "scipy", "faiss-cpu", "wordllama", "papermill", "torch", "timm",
             "lightgbm", "xgboost", "cuml", "cudf")


# parameters that several stages declare: name -> (default, help); a stage declares one with shared(name)
SHARED: dict[str, tuple[object, str]] = {
    "out_dir": (None, "where this stage writes; None: <run_dir>/<stage>/ (the pipeline passes a staging one)"),
    "train_csv": ("inputs/demo/train.csv", "training postings (posting_id,image,image_phash,title,label_group)"),
    "test_csv": ("inputs/demo/test.csv", "postings to predict"),
    "test_labels_csv": ("inputs/demo/test_solution.csv", "labelled test rows, used only to score; \"\" if unknown"),
    "train_images": ("inputs/demo/train_images", "folder of the training images"),
    "test_images": ("inputs/demo/test_images", "folder of the test images"),
    "use_images": (True, "False for datasets without image files (titles and pHash only)"),
    "models": (["tfidf_word", "tfidf_char", "wordllama", "phash"], "embedding models used"),
    "seed": (0, "seed of folds, samples and initialisation"),
    "n_folds": (5, "GroupKFold folds for the out-of-fold estimates"),
    "distractors": (0, "test postings added to train as known non-matches; \"auto\": as many as test rows"),
    "distractors_csv": ("", "real postings known to match nothing: the distractors are drawn from it, not from test"),
}


def shared(name: str, help: str | None = None) -> object:
    """A schema field for a parameter several stages declare: its one default, its help (or the stage's own)."""
    default, text = SHARED[name]
    return param(default, help or text)


def check_distractors(value: int | str) -> None:
    """Refuse a distractor count that is neither 'auto' nor a whole number of at least 0."""
    if value != "auto" and (isinstance(value, (bool, str)) or value < 0):
        raise ConfigError(f"distractors must be 'auto' or a whole number of at least 0, got {value!r}")


@dataclass
class RunParams:
    """Parameters every stage declares: where the run lives and where the stage writes."""

    run_dir: str = param("outputs/runs/demo", "run folder: earlier stages are read there, this one writes "
                                              "<run_dir>/<stage>/")
    out_dir: str | None = shared("out_dir")

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> Self:
        """The stage's typed parameters from a notebook's globals (after papermill injected its values)."""
        return from_namespace(cls, namespace)


@dataclass
class Stage:
    """An open stage: where it writes (`store.out`) and the seconds of its steps (`steps`)."""

    store: RunStore
    steps: Steps
    started: float = field(default_factory=time.perf_counter)

    @property
    def out(self) -> Path:
        return self.store.out

    def seconds(self) -> float:
        """Seconds since the stage opened."""
        return time.perf_counter() - self.started


def open_stage(name: str, params: RunParams) -> Stage:
    """The opening every stage shares: INFO logging of `utils`, a step timer, the run store writing `name`."""
    setup_logging()
    return Stage(RunStore(params.run_dir, name, params.out_dir), Steps())


@dataclass
class Pool:
    """What a matching stage tunes on and predicts: the training pool (labelled rows and any distractors) with
    its labels, the rows tuned on and scored (`scored`: the labelled ones) and their folds, and the test split."""

    train: pd.DataFrame
    test: pd.DataFrame
    labels: np.ndarray
    scored: np.ndarray
    folds: np.ndarray

    @property
    def distractors(self) -> int:
        return int(distractor_mask(self.train).sum())

    @property
    def test_has_phash(self) -> bool:
        """Whether any test posting has a pHash: without, neither the pHash union nor its pair feature is used."""
        return bool(phash_known(self.test["image_phash"]).any())


def read_pool(params: Any, test_images: str = "") -> Pool:
    """The opening 04 and 05 share: the training pool of `params` (train_csv, test_csv, distractors,
    distractors_csv, n_folds, seed), its labels, scored rows and GroupKFold folds, and the test postings."""
    train = read_training(params.train_csv, params.test_csv, params.distractors, test_images,
                          distractors_csv=params.distractors_csv)
    return Pool(train=train, test=read_postings(params.test_csv), labels=train["label_group"].to_numpy(),
                scored=scored_rows(train), folds=assign_folds(train, n_splits=params.n_folds, seed=params.seed))


def test_scores(test_labels_csv: str, test: pd.DataFrame, matches) -> dict:
    """The closing 04 and 05 share: F1, precision and recall of the test matches against the test labels (rows
    marked Ignored are not scored); {} when the labels are unknown ("")."""
    if not test_labels_csv:
        return {}
    truth, judged = read_truth(test_labels_csv, test["posting_id"].to_numpy())
    s = score(matches, truth, judged)
    print(f"test F1 {s.f1:.4f}  precision {s.precision:.4f}  recall {s.recall:.4f}")
    return {"test_scored_rows": len(judged), "test_f1": s.f1, "test_precision": s.precision, "test_recall": s.recall}


def setup_logging() -> None:
    """Log INFO lines of `utils` (backend choices, warnings) into the notebook output."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    logging.getLogger("utils").setLevel(logging.INFO)


class Steps:
    """Seconds per step of a stage, for its metrics.json: call `done(name)` after each step (the time since
    the previous call, or since creation, is added to that name)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def done(self, name: str) -> float:
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._last, 2)
        self._last = now
        return self.seconds[name]


def versions() -> dict[str, str]:
    """Python and the versions of the installed packages that matter for reproducing a result."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (the notebook kernel: one stage), in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


def write_metrics(folder: str | Path, metrics: dict, key: str | None = None) -> Path:
    """Write `metrics.json`; `key` names the headline figure the pipeline's summary table shows.

    Adds the versions that matter for reproducing it and the stage's peak memory (`peak_rss_mb`).
    """
    if key is not None and key not in metrics:
        raise KeyError(f"key metric {key!r} not in metrics {sorted(metrics)}")
    body = {**metrics, "key_metric": key, "peak_rss_mb": peak_rss_mb(), "versions": versions(),
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return write_json(Path(folder) / "metrics.json", body)
