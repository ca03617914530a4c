"""00_eda: statistics of the training postings beside a real reference, and their figures."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from utils.core.data import read_postings, require_images
from utils.core.schema import param
from utils.core.store import EDA
from utils.matching import eda

from .common import RunParams, Stage, open_stage, shared, write_metrics

log = logging.getLogger(__name__)


@dataclass
class Params(RunParams):
    train_csv: str = shared("train_csv")
    train_images: str = shared("train_images", "folder of the training images; ignored when use_images is False")
    use_images: bool = shared("use_images")
    reference_csv: str = param("inputs/samples/shopee-real-titles/test.csv",
                               "real labelled postings to compare with; \"\" for none")
    seed: int = shared("seed", "seed for the sampled image grid")


def read_frames(params: Params) -> dict[str, pd.DataFrame]:
    """The labelled training postings as "train", and the reference postings as "reference" when given."""
    frames = {"train": read_postings(params.train_csv, require_labels=True)}
    if params.reference_csv:
        frames["reference"] = read_postings(params.reference_csv, require_labels=True)
    return frames


def token_and_unit_bars(train: pd.DataFrame, out: Path) -> tuple[list[Path], pd.DataFrame]:
    """Bar charts of the 25 most frequent title tokens and unit spellings; returns them and the unit table."""
    tokens = eda.top_tokens(train, 25)
    units = eda.unit_frequencies(train)
    units["label"] = units["kind"] + ": " + units["unit"]
    figures = [eda.plot_bars(tokens, "token", "titles", "Most frequent title tokens", out / "tokens.png"),
               eda.plot_bars(units.head(25), "label", "count", "Unit spellings", out / "units.png")]
    return figures, units


def image_grid(params: Params, train: pd.DataFrame, out: Path) -> Path | None:
    """Sample images, one label group a row; None for a dataset without images."""
    if not params.use_images:
        log.info("dataset without images: image grid skipped")
        return None
    usable = require_images(train, params.train_images, on_bad="skip")
    return eda.plot_image_grid(train[usable], params.train_images, out / "image_grid.png", seed=params.seed)


def finish(stage: Stage, stats: dict[str, dict], units: pd.DataFrame) -> dict:
    """Close the stage: metrics.json with the statistics of every frame and the units found."""
    metrics = {f"{name}_{k}": v for name, s in stats.items() for k, v in s.items()}
    metrics["units_found"] = int(units["count"].sum()) if len(units) else 0
    write_metrics(stage.out, metrics, key="train_group_size_median")
    return metrics


def run(params: Params) -> dict:
    """The whole stage without a notebook: statistics, figures, metrics; returns the metrics."""
    stage = open_stage(EDA, params)
    frames = read_frames(params)
    stats = {name: eda.dataset_stats(df) for name, df in frames.items()}
    eda.plot_compare(frames, stage.out)
    _, units = token_and_unit_bars(frames["train"], stage.out)
    image_grid(params, frames["train"], stage.out)
    return finish(stage, stats, units)
