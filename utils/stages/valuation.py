"""06_hmgnet_valuation: HMG-Net against fair baselines on several splits, intervals, the paper's experiments
and a saved model."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from utils.core.io import records, write_csv
from utils.core.schema import ConfigError, at_least, in_unit, one_of, param
from utils.core.store import VALUATION
from utils.valuation import compare as cmp
from utils.valuation import experiments as ex
from utils.valuation.features import Backbone, Inputs, SplitInputs, listing_images
from utils.valuation.listings import read_listings
from utils.valuation.metrics import coverage_funnel, expected_below, expected_outside
from utils.valuation.model import HMGConfig, HMGNet
from utils.valuation.saved import save_model
from utils.valuation.structure import DEFAULT_ACCESSORIES

from .common import RunParams, Stage, open_stage, write_metrics

log = logging.getLogger(__name__)

MAIN = "HMG-Net (anchor)"  # the model every other is compared with
DIRECT = "direct price (same encoders)"  # HMG-Net's encoders with a head that predicts the price itself
DEEP, WIDE = "HMG-Net deep only", "HMG-Net wide + deep"  # with wide "auto": both, the better on validation is MAIN
TEXTS = {"wordllama": "WordLlama", "minilm": "MiniLM"}  # with text "auto": both, named in the candidates


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
    wide: bool | str = param("auto", "a Ridge on sparse words the network corrects: True, False, \"auto\" "
                                     "(validation picks)")
    text: str = param("auto", "pooled text: wordllama (token table), minilm (frozen MiniLM) or auto (validation)")
    text_model_dir: str = param("", "sentence-transformers folder for text minilm (\"\": the packaged MiniLM)")
    interval_by: str | None = param("category", "Mondrian intervals: bounds per value of this column (None: one "
                                                "for all)")
    min_group_rows: int = param(100, "calibration rows a group needs for its own interval bounds (else "
                                     "normalised ones)")

    def __post_init__(self) -> None:
        at_least("epochs", self.epochs)
        one_of("wide", self.wide, (True, False, "auto"))
        one_of("text", self.text, ("auto", "wordllama", "minilm"))
        at_least("min_group_rows", self.min_group_rows, 2)
        for name in ("val_share", "cal_share", "test_share", "interval_level"):
            in_unit(name, getattr(self, name))
        if not self.splits:
            raise ConfigError("splits needs at least one seed")
        if self.cv_folds < 0 or self.cv_folds == 1:
            raise ConfigError(f"cv_folds must be 0 (random splits) or at least 2, got {self.cv_folds}")
        test = 1 / self.cv_folds if self.cv_folds else self.test_share
        if self.val_share + self.cal_share + test >= 0.9:
            raise ConfigError(f"val_share + cal_share + the test share ({test:.3g}) must leave 10% for training")


@dataclass
class Study:
    """The listings and everything encoded from them once: prices, the evaluation splits, each split's inputs
    (`inputs_for`, encoded on first use), the frozen backbone, the generator's truth and the evaluation subsets."""

    df: pd.DataFrame
    y: np.ndarray
    truth: pd.DataFrame | None
    numeric: list[str]
    accessories: list[str]
    splits: list[cmp.Split]
    backbone: Backbone | None
    inputs_for: SplitInputs
    subsets: dict[str, np.ndarray]  # boolean masks over all rows
    rare: list[str]

    @property
    def first(self) -> cmp.Split:
        """The split the saved model and the single-split experiments use."""
        return self.splits[0]

    @property
    def inputs(self) -> Inputs:
        return self.inputs_for(self.first)


def load(params: Params) -> Study:
    """Read (or generate, when absent and `generate` is set) the listings, make the splits, run the frozen backbone
    over the photos once, and mark the evaluation subsets (the truth's defects and claims, rare categories)."""
    if not Path(params.listings_csv).exists() and params.generate:
        from utils.synth.market import generate as generate_market

        log.info("generating the market: %s", generate_market(Path(params.listings_csv).parent, **params.generate))
    df = read_listings(params.listings_csv, mapping=params.mapping,
                       drop_nonpositive_price=params.drop_nonpositive_price)
    truth = (pd.read_csv(params.truth_csv).set_index("listing_id").loc[df["listing_id"]].reset_index()
             if params.truth_csv else None)
    numeric = [c for c in params.numeric if c in df]
    accessories = list(params.accessories or DEFAULT_ACCESSORIES)
    splits = cmp.make_splits(len(df), params.splits, params.val_share, params.cal_share, params.test_share,
                             params.cv_folds)
    images = params.images_dir or None
    backbone = Backbone(**params.image) if images else None
    photos = listing_images(df, images, backbone) if images else None  # the frozen backbone, once
    sentence = {"model_dir": params.text_model_dir or None, "max_length": 64} if params.text != "wordllama" else None
    inputs_for = SplitInputs(df, accessories, numeric, params.image, params.images_dir, backbone, photos,
                             wide=params.wide is not False, sentence=sentence)
    subsets = {}
    if truth is not None:
        subtle = truth["subtle_defect"].to_numpy(bool)
        subsets["subtle_defect"] = subtle
        # the seed's subset: subtle defects the text describes ("tiny scratch on the corner")
        subsets["subtle_described"] = subtle & (truth["defect_mention"].fillna("") == "truthful").to_numpy()
        subsets["defect"] = (truth["defect"].fillna("") != "").to_numpy()
        subsets["false_claim"] = truth["false_claim"].to_numpy(bool)
    first = splits[0]
    counts = df["category"].iloc[first.train].value_counts() if "category" in df else pd.Series(dtype=int)
    rare = list(counts.index[counts <= counts.quantile(0.25)]) if len(counts) > 3 else []
    if rare:
        subsets["rare_category"] = df["category"].isin(rare).to_numpy()
    study = Study(df, df["price"].to_numpy(float), truth, numeric, accessories, splits, backbone, inputs_for,
                  subsets, rare)
    inputs = study.inputs
    print(f"{len(df)} listings, {len(splits)} split(s) of train {len(first.train)} / validation {len(first.val)} / "
          f"calibration {len(first.cal)} / test {len(first.test)}; images: {inputs.patches is not None}; market "
          f"graph: {inputs.location is not None and inputs.month is not None}; anchors estimated: "
          f"{int(inputs.anchor_estimated.sum())}; rare categories: {rare}")
    return study


def fit_args(params: Params) -> dict:
    """The training settings every HMG-Net variant and experiment shares."""
    return {"epochs": params.epochs, "lr": params.lr, "batch_size": params.batch_size, "schedule": params.schedule}


def main_config(params: Params) -> HMGConfig:
    """HMG-Net's parts and settings from the parameters: the deep model, with WordLlama text where the text is
    chosen by validation (`candidates` adds the wide part and the other text encoder)."""
    return HMGConfig(**params.parts, attention=params.attention, patches=params.patches,
                     claim_weight=params.claim_weight, text="wordllama" if params.text == "auto" else params.text)


def candidates(params: Params, deep: HMGConfig) -> dict[str, HMGConfig]:
    """HMG-Net's candidates: with and without the wide part (`wide` "auto": both) for each text encoder (`text`
    "auto": both); the one with the lower mean validation RMSLE becomes HMG-Net. A single candidate is HMG-Net."""
    texts = tuple(TEXTS) if params.text == "auto" else (deep.text,)
    wides = (False, True) if params.wide == "auto" else (params.wide is True,)
    if len(texts) * len(wides) == 1:
        return {MAIN: replace(deep, wide=wides[0])}
    out = {}
    for text in texts:
        for wide in wides:
            name = (WIDE if wide else DEEP) if len(wides) > 1 else "HMG-Net"
            out[name + (f", {TEXTS[text]}" if len(texts) > 1 else "")] = replace(deep, text=text, wide=wide)
    return out


def runs_ablation(params: Params, study: Study) -> bool:
    """Whether the granularity ablation runs: asked for, and the dataset has images (it switches image parts)."""
    if "ablation" in params.experiments and study.inputs.patches is None:
        log.info("no images in this dataset: the granularity ablation needs them, skipped")
    return "ablation" in params.experiments and study.inputs.patches is not None


def compare_models(params: Params, study: Study) -> tuple[cmp.Comparison, pd.DataFrame]:
    """HMG-Net's `candidates` (the one with the lower mean validation RMSLE becoming HMG-Net), its direct-price
    head, the ablation's variants (when it runs) and the baselines on every split; and the summary table against
    HMG-Net (the ablation's variants are left to the ablation table)."""
    deep = main_config(params)
    variants = candidates(params, deep)
    choices = [n for n in variants if n != MAIN]
    variants[DIRECT] = replace(deep, head="direct")
    ablation = runs_ablation(params, study)
    if ablation:
        variants.update({name: replace(deep, **switch) for name, switch in ex.ABLATION.items()})
    comparison = cmp.compare(study.df, study.splits, variants, study.inputs_for, study.numeric,
                             params.interval_level, params.interval_by, params.min_group_rows, **fit_args(params))
    if choices:
        chosen = min(choices, key=lambda n: float(np.mean(comparison.validation[n])))
        log.info("validation RMSLE (mean over splits): %s -> HMG-Net is %s", ", ".join(
            f"{n} {np.mean(comparison.validation[n]):.4f}" for n in choices), chosen)
        comparison = cmp.aliased(comparison, chosen, MAIN)
    preds = comparison.predictions
    left = list(ex.ABLATION) if ablation else []
    table = cmp.summary(preds, study.y, MAIN, models=[m for m in dict.fromkeys(preds["model"]) if m not in left])
    return comparison, table


def comparison_figure(out: Path, table: pd.DataFrame, n_splits: int) -> Figure:
    """Each model's RMSLE minus HMG-Net's with its 95% interval (right of 0: HMG-Net is better); saved beside."""
    order = table.drop(index=MAIN).sort_values("diff")
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(order) + 1.2))
    ax.errorbar(order["diff"], range(len(order)),
                xerr=[order["diff"] - order["diff_lo"], order["diff_hi"] - order["diff"]], fmt="o", capsize=4)
    ax.axvline(0, color="grey", lw=1)
    ax.set(yticks=range(len(order)), yticklabels=order.index, xlabel=f"test RMSLE minus {MAIN}'s (95% interval)",
           title=f"{n_splits} split(s): right of 0, {MAIN} is better")
    fig.tight_layout()
    fig.savefig(out / "comparison.png", dpi=110)
    return fig


GOAL_ROWS, GOAL_COVERAGE = 30, 0.70  # the per-group coverage goal: groups with 30+ test rows covered 70%+


@dataclass
class Intervals:
    """Coverage of HMG-Net's interval on the test rows of all splits pooled and per split, per-group tables (test
    rows, RMSLE of HMG-Net and of the best baseline, coverage and its binomial funnel) for each column of
    `error_by`, and per column the check of the per-group goal against its noise floor (`goal`)."""

    coverage: float
    by_split: dict[str, float]
    test_rows: int
    by_group: dict[str, pd.DataFrame]
    goal: dict[str, dict]


def outside_funnel(groups: pd.DataFrame) -> pd.Series:
    """Which rows of a `by_group` table show a coverage outside their funnel (`funnel_lo`, `funnel_hi`)."""
    return (groups["coverage"] < groups["funnel_lo"]) | (groups["coverage"] > groups["funnel_hi"])


def coverage_goal(groups: pd.DataFrame, level: float) -> dict:
    """The per-group coverage goal on one table of `by_group`: the groups with `GOAL_ROWS`+ test rows below
    `GOAL_COVERAGE`, how many would be below it by chance alone at exactly `level` in every group, and the groups
    (of any size) outside their binomial 95% funnel, and how many chance alone would put outside it."""
    rows = groups.drop(index="all", errors="ignore")
    big = rows[rows["test_rows"] >= GOAL_ROWS]
    outside = rows[outside_funnel(rows)]
    below = big["coverage"][big["coverage"] < GOAL_COVERAGE]
    return {"groups": len(big), "below": {str(g): float(c) for g, c in below.items()},
            "expected_below_by_chance": expected_below(big["test_rows"].to_numpy(int), level, GOAL_COVERAGE),
            "groups_in_funnel": len(rows),
            "expected_outside_by_chance": expected_outside(rows["test_rows"].to_numpy(int), level),
            "outside_funnel": {str(g): float(c) for g, c in outside["coverage"].items()}}


def intervals(params: Params, study: Study, comparison: cmp.Comparison, table: pd.DataFrame) -> Intervals:
    """HMG-Net's interval coverage on the test rows (pooled, per split), the per-group error tables with each
    group's funnel, and the per-group goal's check."""
    main_rows = comparison.predictions[comparison.predictions["model"] == MAIN]
    coverage = cmp.interval_coverage(main_rows, study.y)
    by_split = {s: cmp.interval_coverage(g, study.y) for s, g in main_rows.groupby("split")}
    print(f"{params.interval_level:.0%} interval: coverage {coverage:.3f} over {len(main_rows)} test rows; by split "
          + ", ".join(f"{s} {c:.3f}" for s, c in by_split.items()))
    best_baseline = table.drop(index=[n for n in comparison.models if n in table.index])["rmsle"].idxmin()
    groups, goal = {}, {}
    for col in params.error_by:
        if col not in study.df:
            continue
        t = cmp.by_group(comparison.predictions, study.y, study.df[col], [MAIN, best_baseline], MAIN)
        t["funnel_lo"], t["funnel_hi"] = coverage_funnel(t["test_rows"].to_numpy(int), params.interval_level)
        groups[col], goal[col] = t, coverage_goal(t, params.interval_level)
        g = goal[col]
        print(f"by {col}: {len(g['below'])} of {g['groups']} groups with {GOAL_ROWS}+ test rows below "
              f"{GOAL_COVERAGE:.2f} ({g['expected_below_by_chance']:.1f} expected by chance at exactly "
              f"{params.interval_level:.0%} each); {len(g['outside_funnel'])} of {g['groups_in_funnel']} groups "
              f"outside their 95% funnel ({g['expected_outside_by_chance']:.1f} expected by chance)")
    return Intervals(coverage, by_split, len(main_rows), groups, goal)


def coverage_figure(out: Path, iv: Intervals, level: float) -> Figure | None:
    """Each group's coverage against its test rows, inside the binomial 95% funnel of a group covered at exactly
    `level` (a point outside it is miscalibrated beyond chance); one panel per `error_by` column; saved beside."""
    if not iv.by_group:
        return None
    fig, axes = plt.subplots(1, len(iv.by_group), figsize=(6 * len(iv.by_group), 4), squeeze=False)
    for ax, (col, t) in zip(axes[0], iv.by_group.items(), strict=True):
        t = t.drop(index="all", errors="ignore").sort_values("test_rows")
        n = np.unique(np.geomspace(1, t["test_rows"].max(), 200).astype(int))
        lo, hi = coverage_funnel(n, level)
        ax.fill_between(n, lo, hi, step="post", color="tab:blue", alpha=0.15, label="95% funnel at exactly "
                                                                                   f"{level:.0%}")
        ax.scatter(t["test_rows"], t["coverage"], s=12, c=np.where(outside_funnel(t), "tab:red", "tab:blue"))
        ax.axhline(GOAL_COVERAGE, color="grey", lw=1, ls="--", label=f"goal {GOAL_COVERAGE:.2f} ({GOAL_ROWS}+ rows)")
        ax.axvline(GOAL_ROWS, color="grey", lw=0.5)
        ax.set(xscale="log", xlabel="test rows of the group", ylabel="coverage", ylim=(0, 1.02),
               title=f"interval coverage by {col} (red: outside the funnel)")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "coverage.png", dpi=110)
    return fig


def save(out: Path, params: Params, study: Study, comparison: cmp.Comparison) -> Path:
    """Save the first split's HMG-Net with its preprocessing and interval, and its test predictions beside it
    (`test_predictions.csv`, which the predict command reproduces); returns the model folder."""
    first, level = study.first, params.interval_level
    bounds = comparison.bounds[MAIN]
    model_dir = save_model(out / "model", comparison.models[MAIN], study.inputs_for.preprocessors[first.name], bounds,
                           level, params.mapping, {"split": first.name, "train_rows": len(first.train),
                                                   "dataset": params.listings_csv})
    preds = comparison.predictions
    rows = preds[(preds["model"] == MAIN) & (preds["split"] == first.name)]
    write_csv(out / "test_predictions.csv", pd.DataFrame({
        "listing_id": study.df["listing_id"].to_numpy()[rows["row"]], "price": rows["price"].to_numpy(),
        "delta": rows["delta"].to_numpy(), f"lo_{round(100 * level)}": rows["lo"].to_numpy(),
        f"hi_{round(100 * level)}": rows["hi"].to_numpy()}))
    lo, hi = bounds.overall
    print(f"saved {model_dir}; log-residual bounds {lo:+.3f} / {hi:+.3f}"
          + (f" ({len(bounds.groups)} {bounds.by} groups with their own)" if bounds.groups else ""))
    return model_dir


def granularity_ablation(study: Study, comparison: cmp.Comparison) -> pd.DataFrame | None:
    """RMSLE of global only, + DSCA and the full model against "global only", overall and on the subsets;
    None when the ablation does not run."""
    if not all(name in comparison.models for name in ex.ABLATION):  # not asked for, or no images
        return None
    return cmp.summary(comparison.predictions, study.y, "global only", study.subsets,
                       models=["global only", "+ DSCA", MAIN])


def ablation_figure(out: Path, ablation: pd.DataFrame, n_splits: int) -> Figure:
    """Test RMSLE by part (overall and per subset) as bars, saved beside."""
    cols = [c for c in ablation.columns if c.startswith("rmsle") and not c.endswith("_sd")]
    ax = ablation[cols].plot.bar(figsize=(10, 3.5), rot=0, title=f"test RMSLE by part ({n_splits} splits)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.figure.tight_layout()
    ax.figure.savefig(out / "ablation.png", dpi=110)
    return ax.figure


@dataclass
class AnchorStudy:
    """The anchor's effect on the first split: validation curves of both heads, RMSLE by training share, and
    (with `few_shot_rows`) both heads trained on few rows."""

    curves: dict[str, list[float]]
    fractions: pd.DataFrame
    few_shot: pd.DataFrame | None


def anchor_study(params: Params, study: Study, comparison: cmp.Comparison) -> AnchorStudy | None:
    """The anchor experiment on the first split; None when not in `experiments`."""
    if "anchor" not in params.experiments:
        return None
    first, main = study.first, comparison.models[MAIN].cfg
    curves = {k: [h["val_rmsle"] for h in comparison.histories[k] if h["epoch"] > 0] for k in (MAIN, DIRECT)}
    test_subsets = {k: m[first.test] for k, m in study.subsets.items()}
    fractions = ex.fraction_study(study.inputs, first.train, first.val, first.test, test_subsets, params.fractions,
                                  main, params.seeds, **fit_args(params))
    few = None
    if params.few_shot_rows:
        few = ex.few_shot(study.inputs, np.concatenate([first.train, first.val]), first.test, params.few_shot_rows,
                          params.seeds, main, **fit_args(params))
    return AnchorStudy(curves, fractions, few)


def anchor_figure(out: Path, anchor: AnchorStudy) -> Figure:
    """Convergence of both heads, and test RMSLE by training share (all rows, rare categories); saved beside."""
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
    for k, v in anchor.curves.items():
        ax[0].plot(range(1, len(v) + 1), v, marker="o", label=k)
    ax[0].set(xlabel="epoch", ylabel="validation RMSLE", title="convergence")
    ax[0].legend()
    for head, g in anchor.fractions.groupby("head"):
        ax[1].plot(g["fraction"], g["rmsle"], marker="o", label=f"{head} (all)")
        if "rmsle_rare_category" in g:
            ax[1].plot(g["fraction"], g["rmsle_rare_category"], ls="--", marker="x", label=f"{head} (rare)")
    ax[1].set(xscale="log", xlabel="share of training rows", ylabel="test RMSLE", title="training share")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(out / "anchor.png", dpi=110)
    return fig


def detectors(study: Study, model: HMGNet) -> dict | None:
    """Test ROC AUC of the image detectors (accessories, defects) against the truth; None without truth or images."""
    if study.truth is None or study.inputs.patches is None:
        return None
    truth = study.truth
    present = [set(str(v).split()) if isinstance(v, str) else set() for v in truth["accessories_present"]]
    aucs = ex.detector_auc(model, study.first.test, present, study.df["category"].to_numpy(), study.accessories,
                           (truth["defect"].fillna("") != "").to_numpy())
    print("image detectors against the truth (test ROC AUC):", aucs)
    return aucs


@dataclass
class Attribution:
    """Occlusion maps of delta on the first split's defect listings, their photos and true boxes, and the
    pointing game (`result`: `experiments.attribution_study`)."""

    rows: np.ndarray
    paths: list[str]
    boxes: np.ndarray
    result: dict


def attribution(params: Params, study: Study, model: HMGNet) -> Attribution | None:
    """Occlusion attribution and the pointing game on defect listings; None without the experiment, truth or
    images."""
    if "attribution" not in params.experiments or study.truth is None or study.inputs.patches is None:
        return None
    truth, test = study.truth, study.first.test
    has_box = truth["defect"].fillna("").to_numpy() != ""
    rows = test[has_box[test]][:params.attribution_listings]
    boxes = truth.loc[rows, ["defect_x0", "defect_y0", "defect_x1", "defect_y1"]].to_numpy()
    paths = [str(Path(params.images_dir) / f) for f in study.df["image"].iloc[rows]]
    result = ex.attribution_study(model, study.backbone, rows, paths, boxes)
    print(f"pointing game: {result['pointing_game']:.3f} of {result['listings']} defect listings "
          f"(chance {result['chance']:.3f}); greying the defect region changes delta by "
          f"{result['mean_defect_region_effect_pp']:+.2f} points on average")
    return Attribution(rows, paths, boxes, result)


def attribution_figure(out: Path, study: Study, found: Attribution) -> Figure:
    """Four defect listings: the photo with its true defect, and the occlusion map with the true box; saved."""
    fig, axes = plt.subplots(2, 4, figsize=(12, 6))
    for j in range(min(4, len(found.rows))):
        row = found.rows[j]
        img = plt.imread(found.paths[j])
        axes[0, j].imshow(img)
        axes[0, j].set_title(f"{study.truth['defect'][row]}: {study.df['description'].iloc[row][:28]}", fontsize=7)
        x0, y0, x1, y1 = found.boxes[j]
        axes[1, j].imshow(img)
        axes[1, j].imshow(found.result["maps"][j], cmap="jet", alpha=0.5)
        axes[1, j].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white", lw=1.5))
        axes[1, j].set_title(f"this region changes delta by {found.result['effects'][j]:+.1f}%", fontsize=8)
        for a in axes[:, j]:
            a.axis("off")
    fig.tight_layout()
    fig.savefig(out / "attribution.png", dpi=110)
    return fig


def market(params: Params, study: Study, model: HMGNet) -> pd.DataFrame | None:
    """The first test listing's predicted delta in every location; None without the market part."""
    if "market" not in params.experiments or not model.use_market:
        return None
    vocab = study.inputs_for.preprocessors[study.first.name].vocab["location"]
    return ex.market_curve(model, int(study.first.test[0]), vocab, vocab)


def market_figure(out: Path, study: Study, curve: pd.DataFrame) -> Figure:
    """The market curve as bars by location, saved beside."""
    row = int(study.first.test[0])
    ax = curve.plot.bar(x="location", y="delta", legend=False, figsize=(9, 3), rot=30,
                        title=f"delta of listing {study.df['listing_id'][row]} ({study.df['title'][row]}) by location")
    ax.set_ylabel("predicted delta")
    ax.figure.tight_layout()
    ax.figure.savefig(out / "market.png", dpi=110)
    return ax.figure


@dataclass
class Results:
    """What the stage found, for metrics.json; the experiments not run are None."""

    comparison: cmp.Comparison
    table: pd.DataFrame
    intervals: Intervals
    ablation: pd.DataFrame | None = None
    anchor: AnchorStudy | None = None
    detectors: dict | None = None
    attribution: Attribution | None = None
    market: pd.DataFrame | None = None


def finish(stage: Stage, params: Params, study: Study, results: Results) -> dict:
    """Close the stage: metrics.json with the comparison, intervals, groups and every experiment run."""
    first, table, iv, anchor = study.first, results.table, results.intervals, results.anchor
    few = anchor.few_shot if anchor else None
    metrics = {"dataset": params.listings_csv, "rows": len(study.df), "splits": [s.name for s in study.splits],
               "split_rows": {"train": len(first.train), "val": len(first.val), "cal": len(first.cal),
                              "test": len(first.test)},
               "hmgnet_test_rmsle": float(table.loc[MAIN, "rmsle"]), "comparison": records(table),
               "interval": {"level": params.interval_level, "coverage": iv.coverage, "coverage_by_split": iv.by_split,
                            "test_rows": iv.test_rows},
               "by_group": {c: records(t) for c, t in iv.by_group.items()},
               "coverage_goal": iv.goal,
               "gamma": ex.gamma_of(results.comparison.models[MAIN]), "detectors": results.detectors,
               "parts": params.parts, "attention": params.attention,
               "wide": results.comparison.models[MAIN].cfg.wide, "text": results.comparison.models[MAIN].cfg.text,
               "validation_rmsle": {k: float(np.mean(v)) for k, v in results.comparison.validation.items()},
               "ablation": records(results.ablation),
               "convergence": anchor and anchor.curves, "fractions": records(anchor and anchor.fractions),
               "few_shot": records(few),
               "few_shot_mean": None if few is None else few.groupby("head")[["rmsle", "mae", "mape"]].mean().to_dict(
                   orient="index"),
               "attribution": None if results.attribution is None else {
                   k: v for k, v in results.attribution.result.items() if k != "maps"},
               "market_curve": records(results.market), "seconds_total": round(stage.seconds(), 1)}
    write_metrics(stage.out, metrics, key="hmgnet_test_rmsle")
    print(f"HMG-Net test RMSLE {metrics['hmgnet_test_rmsle']:.4f} (mean of {len(study.splits)} splits); "
          f"written {stage.out / 'metrics.json'}")
    return metrics


def run(params: Params) -> dict:
    """The whole stage without a notebook; returns its metrics."""
    stage = open_stage(VALUATION, params)
    study = load(params)
    comparison, table = compare_models(params, study)
    plt.close(comparison_figure(stage.out, table, len(study.splits)))
    results = Results(comparison, table, intervals(params, study, comparison, table))
    fig = coverage_figure(stage.out, results.intervals, params.interval_level)
    if fig is not None:
        plt.close(fig)
    save(stage.out, params, study, comparison)
    model = comparison.models[MAIN]
    results.ablation = granularity_ablation(study, comparison)
    if results.ablation is not None:
        plt.close(ablation_figure(stage.out, results.ablation, len(study.splits)))
    results.anchor = anchor_study(params, study, comparison)
    if results.anchor is not None:
        plt.close(anchor_figure(stage.out, results.anchor))
    results.detectors = detectors(study, model)
    results.attribution = attribution(params, study, model)
    if results.attribution is not None:
        plt.close(attribution_figure(stage.out, study, results.attribution))
    results.market = market(params, study, model)
    if results.market is not None:
        plt.close(market_figure(stage.out, study, results.market))
    return finish(stage, params, study, results)
