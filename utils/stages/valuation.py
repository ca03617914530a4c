"""06_hmgnet_valuation: HMG-Net against fair baselines on several splits, intervals, the paper's experiments
and a saved model."""

from __future__ import annotations

from dataclasses import dataclass

from utils.core.schema import ConfigError, at_least, in_unit, param

from .common import RunParams


@dataclass
class Params(RunParams):
    run_dir: str = param("outputs/runs/valuation", "run folder; this stage writes <run_dir>/06_hmgnet_valuation/")
    listings_csv: str = param("inputs/market/listings.csv", "listings (csv or tsv), in the listings format or mapped")
    images_dir: str = param("inputs/market/images", "listing photos; \"\" for datasets without images")
    truth_csv: str = param("inputs/market/truth.csv", "generator truth (defect boxes, subtle defects), for "
                                                      "evaluation; \"\" if none")
    generate: dict | None = param({"n": 3000, "seed": 0, "mode": "independent"},
                                  "generator arguments (listings_csv absent)")
    mapping: dict | None = param(None, "column mapping onto the listings format (listings.map_columns)")
    drop_nonpositive_price: bool = param(False, "drop rows priced 0 or below instead of stopping (Mercari has a "
                                                "few)")
    numeric: list[str] = param(["age_years"], "extra numeric columns the models and baselines use, when present")
    accessories: list[str] | None = param(None, "accessory words parsed from the text; None: the default list")
    parts: dict[str, bool] = param({"dsca": True, "structure": True, "global_image": True, "market": True},
                                   "parts of HMG-Net")
    attention: str = param("sparsemax", "DSCA attention over patches: sparsemax or softmax")
    patches: str = param("pixels", "image cells of DSCA and structure: pixels (trained ViT-style patch embedding) "
                                   "or timm")
    image: dict = param({"backbone": "resnet10t", "weights": None, "size": 96, "stage": 1},
                        "frozen timm backbone")
    epochs: int = param(15, "training epochs per model (the best validation epoch is kept)")
    lr: float = param(0.003, "learning rate")
    schedule: str = param("cosine", "learning-rate decay after a one-epoch warm-up: cosine, linear or constant")
    claim_weight: float = param(0.3, "weight of the text supervising the image detectors (claimed accessories, "
                                     "named defects)")
    batch_size: int = param(64, "rows per step")
    experiments: list[str] = param(["ablation", "anchor", "attribution", "market"], "the paper's experiments to run")
    splits: list[int] = param([0, 1, 2], "seeds of the evaluation splits (and of the models trained on them)")
    cv_folds: int = param(0, "0: one random split per seed; K (2 or more): K-fold cross-validation, every row "
                             "tested once")
    val_share: float = param(0.15, "validation share of all rows (early stopping)")
    cal_share: float = param(0.15, "calibration share of all rows (the interval only)")
    test_share: float = param(0.2, "test share of all rows (random splits; with cv_folds it is 1 / cv_folds)")
    interval_level: float = param(0.8, "level of the conformal prediction interval")
    error_by: list[str] = param(["category"], "columns of the per-group error and coverage tables")
    fractions: list[float] = param([0.05, 0.1, 0.25, 1.0], "training shares of the anchor experiment (first split)")
    few_shot_rows: int = param(0, "when above 0, anchor vs direct trained on this many rows, averaged over seeds")
    seeds: list[int] = param([0, 1, 2], "seeds of the fraction and few-shot runs")
    attribution_listings: int = param(60, "defect listings of the first split's test rows scored by the pointing "
                                          "game")

    def __post_init__(self) -> None:
        at_least("epochs", self.epochs)
        for name in ("val_share", "cal_share", "test_share", "interval_level"):
            in_unit(name, getattr(self, name))
        if not self.splits:
            raise ConfigError("splits needs at least one seed")
        if self.cv_folds < 0 or self.cv_folds == 1:
            raise ConfigError(f"cv_folds must be 0 (random splits) or at least 2, got {self.cv_folds}")
        test = 1 / self.cv_folds if self.cv_folds else self.test_share
        if self.val_share + self.cal_share + test >= 0.9:
            raise ConfigError(f"val_share + cal_share + the test share ({test:.3g}) must leave 10% for training")
