"""01_train_arcface: metric learning (ArcFace and others) per model, per fold with `cv`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from utils.core.data import distractor_mask, read_postings, read_training, require_images
from utils.core.schema import ConfigError, param
from utils.core.store import TRAIN, RunStore, plain_name
from utils.training.loop import TrainConfig, fit, plot_history, train_cv

from .common import RunParams, Stage, check_distractors, open_stage, shared, write_metrics

log = logging.getLogger(__name__)


@dataclass
class Params(RunParams):
    train_csv: str = shared("train_csv", "training postings with label_group")
    train_images: str = shared("train_images", "training images folder (image and joint models)")
    use_images: bool = shared("use_images", "False for datasets without image files: image and joint models are "
                                            "skipped")
    models: dict[str, TrainConfig] = param({"text": {"modality": "text", "epochs": 8, "lr": 3e-3}},
                                           "name -> TrainConfig fields")
    cv: list[str] = param([], "models also trained per fold (out-of-fold train embeddings) and on all rows")
    seed: int = shared("seed", "seed of folds, initialisation and batches (overrides each model's seed)")
    negatives: bool = param(False, "train on the training pool: its distractors are classes of their own (hard "
                                   "negatives)")
    test_csv: str = shared("test_csv", "postings to predict: their count sets the pool's size (distractors "
                                       "\"auto\")")
    distractors: int | str = shared("distractors", "distractors in the training pool, as in 02-05; \"auto\": to "
                                                   "the test size")
    distractors_csv: str = shared("distractors_csv")

    def __post_init__(self) -> None:
        for name in self.models:  # each names a checkpoint folder
            plain_name("model", name)
        unknown = sorted(set(self.cv) - set(self.models))
        if unknown:
            raise ConfigError(f"cv names {unknown}, which are not in models {sorted(self.models)}")
        check_distractors(self.distractors)
        if self.negatives and self.distractors == 0:
            raise ConfigError("negatives trains on the training pool's distractors; set distractors (auto or a "
                              "number) under params")


def read_pool(params: Params) -> pd.DataFrame:
    """The labelled training postings; with `negatives`, the training pool with its distractors as classes."""
    train = (read_training(params.train_csv, params.test_csv, params.distractors,
                           distractors_csv=params.distractors_csv) if params.negatives
             else read_postings(params.train_csv, require_labels=True))
    log.info("training rows: %s (%s distractors as classes of their own)", f"{len(train):,}",
             f"{int(distractor_mask(train).sum()):,}")
    return train


def train_configs(params: Params, train: pd.DataFrame) -> dict[str, TrainConfig]:
    """One TrainConfig per model to train (the run's seed in each); image and joint models need images, and are
    left out for a dataset without them."""
    configs = {name: TrainConfig(**{**cfg, "seed": params.seed}) for name, cfg in params.models.items()}
    if not params.use_images:
        for name in [n for n, c in configs.items() if c.modality != "text"]:
            log.info("%s: skipped (%s model, dataset without images)", name, configs.pop(name).modality)
    elif any(c.modality != "text" for c in configs.values()):
        require_images(train, params.train_images, on_bad="error")
    return configs


def train_models(store: RunStore, params: Params, configs: dict[str, TrainConfig],
                 train: pd.DataFrame) -> dict[str, dict]:
    """Train each model (per fold and on all rows when named in `cv`); its checkpoint, history and sizes."""
    results = {}
    for name, cfg in configs.items():
        log.info("training %s: %s, loss %s, %d epochs", name, cfg.modality, cfg.loss, cfg.epochs)
        train_fn = train_cv if name in params.cv else fit
        results[name] = train_fn(cfg, train, params.train_images if params.use_images else None,
                                 store.checkpoint_dir(name))
    return results


def summary(results: dict[str, dict], out: Path) -> tuple[pd.DataFrame, Path | None]:
    """Untrained and best trained F1 per model, and the training curves figure (None when nothing trained)."""
    table = pd.DataFrame([{"model": name, "untrained_f1": r["history"][0]["val_f1"],
                           "trained_f1": max(h["val_f1"] for h in r["history"][1:]),
                           "classes": r["classes"], "train_rows": r["train_rows"], "val_rows": r["val_rows"],
                           "checkpoint": os.path.relpath(r["best"], out)} for name, r in results.items()])
    histories = {name: r["history"] for name, r in results.items()}
    return table, plot_history(histories, out / "training_curves.png") if histories else None


def finish(stage: Stage, results: dict[str, dict], table: pd.DataFrame) -> dict:
    """Close the stage: metrics.json with each model's untrained and trained F1 and its history."""
    metrics = {"models": table.to_dict(orient="records"),
               "histories": {name: r["history"] for name, r in results.items()}}
    for row in metrics["models"]:
        metrics[f"{row['model']}_untrained_f1"] = row["untrained_f1"]
        metrics[f"{row['model']}_trained_f1"] = row["trained_f1"]
    first = next(iter(results), None)
    write_metrics(stage.out, metrics, key=f"{first}_trained_f1" if first else None)
    return metrics


def run(params: Params) -> dict:
    """The whole stage without a notebook; returns its metrics."""
    stage = open_stage(TRAIN, params)
    train = read_pool(params)
    results = train_models(stage.store, params, train_configs(params, train), train)
    table, _ = summary(results, stage.out)
    return finish(stage, results, table)
