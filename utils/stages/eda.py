"""00_eda: statistics of the training postings beside a real reference, and their figures."""

from __future__ import annotations

from dataclasses import dataclass

from utils.core.schema import param

from .common import RunParams, shared


@dataclass
class Params(RunParams):
    train_csv: str = shared("train_csv")
    train_images: str = shared("train_images", "folder of the training images; ignored when use_images is False")
    use_images: bool = shared("use_images")
    reference_csv: str = param("inputs/samples/shopee-real-titles/test.csv",
                               "real labelled postings to compare with; \"\" for none")
    seed: int = shared("seed", "seed for the sampled image grid")
