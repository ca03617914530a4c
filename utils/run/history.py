"""The record of past runs: one appended line per stage that ran (`outputs/runs/history.csv`), and two runs'
metrics side by side (`python -m utils.pipeline compare RUN RUN`)."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import time
from pathlib import Path

from utils.core.paths import ROOT, RUNS
from utils.core.store import RunStore

from .stages import NAMES

HISTORY = RUNS / "history.csv"
COLUMNS = ("finished_at", "run", "stage", "seconds", "commit", "parameters", "metric", "value")


def commit() -> str:
    """The project's git commit, with `+edits` when the work tree differs from it; "" outside a git clone."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+edits" if dirty else "")


def digest(parameters: dict) -> str:
    """A short hash of a stage's parameters: equal digests, equal settings."""
    return hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode()).hexdigest()[:12]


def record(run_dir: Path, stage: str, seconds: float, parameters: dict, metric: str, value: object,
           path: Path = HISTORY) -> None:
    """Append one line for a stage that ran (the file and its header are created on first use)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if new:
            w.writerow(COLUMNS)
        w.writerow([time.strftime("%Y-%m-%dT%H:%M:%S"), _name(run_dir), stage, round(seconds, 1), commit(),
                    digest(parameters), metric, value])


def _name(run_dir: Path) -> str:
    try:
        return str(run_dir.resolve().relative_to(RUNS.resolve()))
    except ValueError:
        return str(run_dir)


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k != "peak_rss_mb"}


def compare(a: str | Path, b: str | Path) -> str:
    """Every number two runs' stages wrote to metrics.json, side by side with the difference (b - a); the key
    metric first in each stage. A stage only one run has shows its figures with the other column empty."""
    dirs = [Path(r) if Path(r).is_absolute() else RUNS / r for r in (a, b)]
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such run (runs live in {RUNS})")
    stores = [RunStore(d) for d in dirs]
    lines = [f"{'stage':<22}{'metric':<32}{str(a)[:14]:>14}{str(b)[:14]:>14}{'b - a':>10}"]
    lines.append("-" * len(lines[0]))
    for stage in NAMES:
        found = [(s.run_dir / stage / "metrics.json").exists() for s in stores]
        if not any(found):
            continue
        metrics = [s.metrics(stage) if f else {} for s, f in zip(stores, found, strict=True)]
        numbers = [_scalars(m) for m in metrics]
        key = metrics[0].get("key_metric") or metrics[1].get("key_metric")
        names = sorted(numbers[0].keys() | numbers[1].keys(), key=lambda k: (k != key, k))
        for name in names:
            va, vb = (n.get(name) for n in numbers)
            diff = f"{vb - va:+.4f}" if va is not None and vb is not None else ""
            lines.append(f"{stage:<22}{name[:31]:<32}{_fmt(va):>14}{_fmt(vb):>14}{diff:>10}")
    return "\n".join(lines)


def _fmt(v: object) -> str:
    if v is None:
        return ""
    return f"{v:.4f}" if isinstance(v, float) else str(v)
