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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from utils.core.io import write_json
from utils.core.schema import ConfigError, param
from utils.core.store import RunStore

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


@dataclass
class Stage:
    """An open stage: where it writes (`store.out`) and the seconds of its steps (`steps`)."""

    store: RunStore
    steps: Steps

    @property
    def out(self) -> Path:
        return self.store.out


def open_stage(name: str, params: RunParams) -> Stage:
    """The opening every stage shares: INFO logging of `utils`, a step timer, the run store writing `name`."""
    setup_logging()
    return Stage(RunStore(params.run_dir, name, params.out_dir), Steps())


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
