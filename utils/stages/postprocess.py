"""04_postprocess: per-model thresholds, min2, the union and the toolbox (INB, QE, fusion, rules, closure,
chisel), an out-of-fold ablation that picks the recipe, and the test submission."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from utils.core.schema import ConfigError, at_least, in_unit, one_of, param
from utils.matching.knn import AVAILABLE
from utils.matching.postprocess import PostConfig, check_fp_weight

from .common import RunParams, check_distractors, shared

_POST = {f.name: f.default for f in dataclasses.fields(PostConfig) if f.default is not dataclasses.MISSING}


@dataclass
class InbParams:
    """Neighbourhood blending: neighbours above `threshold` are added to the query, `rounds` times."""

    rounds: int = param(1, "blending rounds")
    threshold: float = param(0.5, "neighbours above this cosine join the query")
    models: list[str] | None = param(None, "the models blended; None: every model with embeddings")

    def __post_init__(self) -> None:
        at_least("inb.rounds", self.rounds)
        in_unit("inb.threshold", self.threshold)


@dataclass
class QeParams:
    """Alpha query expansion over the top `k` neighbours (alpha 0 is DBA)."""

    k: int = param(3, "neighbours averaged into the query")
    alpha: float = param(3.0, "weight exponent of the neighbours' similarities (0: DBA)")
    rounds: int = param(1, "expansion rounds")
    models: list[str] | None = param(None, "the models expanded; None: every model with embeddings")

    def __post_init__(self) -> None:
        at_least("qe.k", self.k)
        at_least("qe.rounds", self.rounds)
        if self.alpha < 0:
            raise ConfigError(f"qe.alpha must be at least 0, got {self.alpha}")


@dataclass
class Params(RunParams):
    train_csv: str = shared("train_csv", "training postings (labels used to tune)")
    test_csv: str = shared("test_csv")
    test_labels_csv: str = shared("test_labels_csv")
    models: list[str] = shared("models", "models in the union (or the fusion)")
    min2: bool = param(_POST["min2"], "force each row's nearest neighbour in when it passes its own min2 threshold")
    phash_exact: bool = param(_POST["phash_exact"], "add rows with an identical image_phash to the union (an empty "
                                                    "pHash is unknown)")
    image_exact: bool = param(_POST["image_exact"], "add rows with the same image file name (the same photo) to the "
                                                    "union")
    joint: bool = param(_POST["joint"], "tune the union's thresholds jointly (coordinate ascent) after the "
                                        "per-model search")
    inb: InbParams | None = param(_POST["inb"], "neighbourhood blending: a dict with rounds and threshold (e.g. 1 "
                                                "and 0.5), or None for off")
    qe: QeParams | None = param(_POST["qe"], "alpha query expansion / DBA: a dict with k and alpha (alpha 0 is DBA), "
                                             "or None for off")
    fusion: str | None = param(_POST["fusion"], "fuse similarities: mean, max, prod or prob_union (a+b-ab); None: "
                                                "a union")
    fusion_models: list[str] | None = param(_POST["fusion_models"], "models fused (None: all); the others join the "
                                                                    "fused one in the union")
    units: bool = param(_POST["units"], "drop pairs whose quantities differ (250ml vs 500ml), units normalised "
                                        "(30g, 30gr, 30 gram)")
    rules: bool = param(_POST["rules"], "tune the attribute rule table (model codes, brand) on train rows")
    closure: bool = param(_POST["closure"], "also match rows joined by chains of strong matches (tuned, kept if "
                                            "it helps)")
    chisel: bool = param(_POST["chisel"], "cut each row's matches to follow the train group-size distribution")
    fp_weight: float | str = param(_POST["fp_weight"], "false-positive weight in tuning; \"auto\": test / train rows")
    ablation: bool = param(True, "compute the out-of-fold ablation table (one OOF run per step)")
    select_best: bool = param(True, "with the ablation: keep the steps up to the one with the best OOF F1, drop "
                                    "the later ones")
    n_folds: int = shared("n_folds")
    knn_backend: str = param("auto", "KNN backend for the re-searches of INB / QE")
    seed: int = shared("seed", "seed of the fold split")
    distractors: int | str = shared("distractors")
    distractors_csv: str = shared("distractors_csv")

    def __post_init__(self) -> None:
        check_distractors(self.distractors)
        one_of("fusion", self.fusion, (None, "mean", "max", "prod", "prob_union"))
        check_fp_weight(self.fp_weight)
        at_least("n_folds", self.n_folds, 2)
        one_of("knn_backend", self.knn_backend, ("auto", *AVAILABLE))

    def post_config(self, fp_weight: float, with_phash: bool) -> PostConfig:
        """The toolbox's settings: this stage's same-named parameters, the resolved false-positive weight, and
        the pHash union only where the test split has pHash."""
        chosen = {f.name: getattr(self, f.name) for f in dataclasses.fields(PostConfig) if hasattr(self, f.name)}
        return PostConfig(**{**chosen, "models": list(self.models), "fp_weight": fp_weight,
                             "phash_exact": self.phash_exact and with_phash})
