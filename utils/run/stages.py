"""The stage table: the one description of the chain (name, notebook, job, what it reads and writes).

Used by the pipeline (order, cache keys), the Kaggle builder (kernel sources), docs/guide.md and the tests.
Standard library only: a Kaggle kernel imports it before its wheels are installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from utils.core import paths as p


@dataclass(frozen=True)
class Stage:
    """One notebook of the chain; `reads` are the stages whose outputs it reads."""

    name: str
    job: str  # matching | valuation
    summary: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]  # the artifacts in <run_dir>/<name>/, beside metrics.json

    @property
    def notebook(self) -> Path:
        return p.NOTEBOOKS / f"{self.name}.ipynb"


STAGES: tuple[Stage, ...] = (
    Stage(p.EDA, "matching", "statistics of the train CSV beside a real reference", (),
          ("group_sizes.png", "title_length.png", "tokens.png", "units.png", "image_grid.png")),
    Stage(p.TRAIN, "matching", "metric learning (ArcFace and others), per fold with `cv`", (),
          ("<model>/best.pt", "<model>/fold<k>/best.pt", "<model>/full/best.pt", "training_curves.png")),
    Stage(p.EMBED, "matching", "L2-normalised embeddings of both splits", (p.TRAIN,),
          ("<split>_<model>[@fold<k>].npy or .npz", "<split>_<model>[@fold<k>].json")),
    Stage(p.KNN, "matching", "top-K cosine neighbours within each split", (p.EMBED,),
          ("<split>_<model>.npz", "neighbour_sims.png")),
    Stage(p.POSTPROCESS, "matching", "thresholds, min2, union, INB, fusion, rules, chisel; OOF ablation",
          (p.EMBED, p.KNN), ("thresholds.json", "submission.csv", "f1_by_threshold.png", "ablation.png")),
    Stage(p.STACKER, "matching", "LightGBM / XGBoost on candidate pairs", (p.EMBED, p.KNN, p.POSTPROCESS),
          ("decision.json", "submission.csv", "probabilities.png", "feature_importance.png")),
    Stage(p.VALUATION, "valuation", "HMG-Net against fair baselines on several splits, intervals, the paper's "
          "experiments, a saved model", (), ("model/model.json", "model/weights.safetensors", "test_predictions.csv",
                                             "comparison.png", "coverage.png", "ablation.png", "anchor.png",
                                             "attribution.png", "market.png")),
)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def stage(name: str) -> Stage:
    """The stage called `name`; a clear error listing the known ones."""
    if name not in BY_NAME:
        raise ValueError(f"unknown stage {name!r}; known: {list(NAMES)}")
    return BY_NAME[name]


def markdown_table() -> str:
    """The stage table as docs/guide.md shows it (a test keeps the guide equal to this)."""
    lines = ["| stage | job | what | reads stages | writes to `<run_dir>/<stage>/` (and `metrics.json`) |",
             "|---|---|---|---|---|"]
    for s in STAGES:
        reads = ", ".join(f"`{r}`" for r in s.reads) or "-"
        lines.append(f"| `{s.name}` | {s.job} | {s.summary} | {reads} | {', '.join(f'`{w}`' for w in s.writes)} |")
    return "\n".join(lines)
