"""01_train_arcface: metric learning (ArcFace and others) per model, per fold with `cv`."""

from __future__ import annotations

from dataclasses import dataclass

from utils.core.schema import ConfigError, param
from utils.training.loop import TrainConfig

from .common import RunParams, check_distractors, shared


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
        unknown = sorted(set(self.cv) - set(self.models))
        if unknown:
            raise ConfigError(f"cv names {unknown}, which are not in models {sorted(self.models)}")
        check_distractors(self.distractors)
        if self.negatives and self.distractors == 0:
            raise ConfigError("negatives trains on the training pool's distractors; set distractors (auto or a "
                              "number) under params")
