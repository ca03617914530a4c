"""The stage contract: a stage writes into `<run_dir>/<stage>/` and ends with `metrics.json`."""

from __future__ import annotations

import logging
import platform
import resource
import sys
import time
from importlib import metadata
from pathlib import Path

from utils.core.io import write_json

_PACKAGES = ("numpy", "pandas", "scikit-learn", "scipy", "faiss-cpu", "wordllama", "papermill", "torch", "timm",
             "lightgbm", "xgboost", "cuml", "cudf")


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
