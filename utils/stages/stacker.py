"""05_stacker: LightGBM / XGBoost on candidate pairs, a second stage over graph features, the decision rule
tuned out of fold, and the test submission."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from utils.core.schema import ConfigError, at_least, one_of, param
from utils.matching.postprocess import check_fp_weight
from utils.matching.stacker import StackerConfig

from .common import RunParams, check_distractors, shared

_STACK = {f.name: f.default for f in dataclasses.fields(StackerConfig)}


@dataclass
class Params(RunParams):
    train_csv: str = shared("train_csv", "training postings (labels make the pair targets)")
    test_csv: str = shared("test_csv")
    test_labels_csv: str = shared("test_labels_csv")
    train_images: str = shared("train_images", "training images (image size features)")
    test_images: str = shared("test_images")
    use_images: bool = shared("use_images", "False for datasets without image files: no image size features")
    models: list[str] = shared("models", "models making candidates and features")
    k: int = param(50, "candidates: the first k neighbours of every model")
    model: str = param(_STACK["model"], "lightgbm, xgboost or blend (both, probabilities averaged)")
    n_estimators: int = param(_STACK["n_estimators"], "boosting rounds")
    learning_rate: float = param(_STACK["learning_rate"], "boosting learning rate")
    num_leaves: int = param(_STACK["num_leaves"], "leaves per tree")
    device: str = param(_STACK["device"], "auto (cuda when present), cpu or cuda")
    fp_weight: float | str = param(1.0, "false-positive weight in tuning; \"auto\": test / train rows")
    n_folds: int = shared("n_folds", "GroupKFold folds for the out-of-fold probabilities")
    seed: int = param(_STACK["seed"], "seed of folds, of the booster and of the negative sample")
    max_train_pairs: int | None = param(_STACK["max_train_pairs"], "positives and sampled negatives (weighted "
                                                                   "up) to this many; None: all")
    second_stage: bool | str = param("auto", "graph features over stage one's probabilities: True, False, \"auto\"")
    closure: bool | str = param("auto", "also match chains of strong pairs (tuned): True, False, \"auto\"")
    same_image: bool = param(False, "pair feature: the two postings show the same image file (the same photo)")
    distractors: int | str = shared("distractors")
    distractors_csv: str = shared("distractors_csv")
    validation: str = param("pooled", "tuned and scored on the train split (\"pooled\") or on test-like \"slices\" "
                                      "(see docs)")

    def __post_init__(self) -> None:
        check_distractors(self.distractors)
        one_of("validation", self.validation, ("pooled", "slices"))
        if self.validation == "slices" and self.distractors != 0:
            raise ConfigError("validation: slices draws its own test postings into each slice; set distractors: 0")
        for name in ("second_stage", "closure"):
            one_of(name, getattr(self, name), (True, False, "auto"))
        at_least("k", self.k, 2)
        at_least("n_estimators", self.n_estimators)
        if self.max_train_pairs is not None:
            at_least("max_train_pairs", self.max_train_pairs, 2)
        at_least("num_leaves", self.num_leaves, 2)
        at_least("n_folds", self.n_folds, 2)
        check_fp_weight(self.fp_weight)
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        one_of("model", self.model, ("lightgbm", "xgboost", "blend"))
        one_of("device", self.device, ("auto", "cpu", "cuda"))

    def stacker_config(self) -> StackerConfig:
        """The booster's settings: this stage's same-named parameters."""
        return StackerConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(StackerConfig)})
