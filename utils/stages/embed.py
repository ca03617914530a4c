"""02_embed: L2-normalised embeddings of both splits (built-in embedders, trained checkpoints, joins)."""

from __future__ import annotations

from dataclasses import dataclass

from utils.core.schema import param

from .common import RunParams, check_distractors, shared


@dataclass
class Params(RunParams):
    train_csv: str = shared("train_csv")
    test_csv: str = shared("test_csv")
    models: list[str] = shared("models", "embedders to run (utils.matching.embed)")
    model_params: dict[str, dict] = param({}, "per-model keyword arguments, e.g. {\"tfidf_char\": {\"ngram_max\": 5}}")
    checkpoints: dict[str, str] = param({}, "trained models: name -> folder, e.g. "
                                            "{\"t\": \"{run_dir}/01_train_arcface/t\"}")
    concat: dict[str, list[str]] = param({}, "joined models: name -> parts, e.g. {\"t+i\": [\"t\", \"i\"]}")
    train_images: str = shared("train_images", "training images (image and joint checkpoints)")
    test_images: str = shared("test_images")
    use_images: bool = shared("use_images", "False for datasets without image files: image and joint checkpoints "
                                            "are skipped")
    amp: bool = param(True, "fp16 autocast when a trained model embeds on CUDA (no effect on the CPU)")
    fold_test: bool = param(False, "also embed the test split by each fold model of a cross-validated checkpoint "
                                   "(05's slices)")
    distractors: int | str = shared("distractors")
    distractors_csv: str = shared("distractors_csv")

    def __post_init__(self) -> None:
        check_distractors(self.distractors)
