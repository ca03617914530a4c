"""One typed parameter schema per stage: the single source of the stages' defaults, and config validation.

Each notebook's parameters cell mirrors its schema (a test checks that every default is equal), and the
pipeline validates a config's stage sections against these schemas before anything runs: an unknown key at
any level, a value of the wrong type (`k: abc`, `min2: maybe`) or out of range is an error that names it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from utils.core import paths as p
from utils.matching.knn import AVAILABLE, PRECISIONS
from utils.matching.postprocess import PostConfig, check_fp_weight
from utils.matching.stacker import StackerConfig
from utils.training.loop import TrainConfig


class ConfigError(ValueError):
    """A config or an override that no stage can run with; the message names the key and what is valid."""


def _in_unit(name: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value}")


def _knn_backend(name: str, value: str) -> None:
    if value not in ("auto", *AVAILABLE):
        raise ConfigError(f"{name} must be one of {['auto', *AVAILABLE]}, got {value!r}")


def _distractors(value: int | str) -> None:
    if value != "auto" and (isinstance(value, (bool, str)) or value < 0):
        raise ConfigError(f"distractors must be 'auto' or a whole number of at least 0, got {value!r}")


def _positive(name: str, value: int, least: int = 1) -> None:
    if value < least:
        raise ConfigError(f"{name} must be at least {least}, got {value}")


@dataclass
class RunParams:
    """Parameters every stage declares: where the run lives and where the stage writes."""

    run_dir: str = "outputs/runs/demo"
    out_dir: str | None = None


@dataclass
class EdaParams(RunParams):
    train_csv: str = "inputs/demo/train.csv"
    train_images: str = "inputs/demo/train_images"
    use_images: bool = True
    reference_csv: str = "inputs/samples/shopee-real-titles/test.csv"
    seed: int = 0


@dataclass
class TrainParams(RunParams):
    train_csv: str = "inputs/demo/train.csv"
    train_images: str = "inputs/demo/train_images"
    use_images: bool = True
    models: dict[str, TrainConfig] = field(default_factory=lambda: {"text": {"modality": "text", "epochs": 8,
                                                                             "lr": 3e-3}})
    cv: list[str] = field(default_factory=list)
    seed: int = 0
    negatives: bool = False
    test_csv: str = "inputs/demo/test.csv"
    distractors: int | str = 0
    distractors_csv: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.cv) - set(self.models))
        if unknown:
            raise ConfigError(f"cv names {unknown}, which are not in models {sorted(self.models)}")
        _distractors(self.distractors)
        if self.negatives and self.distractors == 0:
            raise ConfigError("negatives trains on the training pool's distractors; set distractors (auto or a "
                              "number) under params")


@dataclass
class EmbedParams(RunParams):
    train_csv: str = "inputs/demo/train.csv"
    test_csv: str = "inputs/demo/test.csv"
    models: list[str] = field(default_factory=lambda: ["tfidf_word", "tfidf_char", "wordllama", "phash"])
    model_params: dict[str, dict] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)
    concat: dict[str, list[str]] = field(default_factory=dict)
    train_images: str = "inputs/demo/train_images"
    test_images: str = "inputs/demo/test_images"
    use_images: bool = True
    amp: bool = True
    fold_test: bool = False
    distractors: int | str = 0
    distractors_csv: str = ""

    def __post_init__(self) -> None:
        _distractors(self.distractors)


@dataclass
class KnnParams(RunParams):
    k: int = 50
    backend: str = "auto"
    chunk: int = 2048
    precision: str = "fp32"

    def __post_init__(self) -> None:
        _positive("k", self.k, 2)  # the row itself and at least one neighbour
        _positive("chunk", self.chunk)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        _knn_backend("backend", self.backend)


@dataclass
class InbParams:
    """Neighbourhood blending: neighbours above `threshold` are added to the query, `rounds` times."""

    rounds: int = 1
    threshold: float = 0.5
    models: list[str] | None = None  # the models blended; None: every model with embeddings

    def __post_init__(self) -> None:
        _positive("inb.rounds", self.rounds)
        _in_unit("inb.threshold", self.threshold)


@dataclass
class QeParams:
    """Alpha query expansion over the top `k` neighbours (alpha 0 is DBA)."""

    k: int = 3
    alpha: float = 3.0
    rounds: int = 1
    models: list[str] | None = None  # the models expanded; None: every model with embeddings

    def __post_init__(self) -> None:
        _positive("qe.k", self.k)
        _positive("qe.rounds", self.rounds)
        if self.alpha < 0:
            raise ConfigError(f"qe.alpha must be at least 0, got {self.alpha}")


_POST = {f.name: f.default for f in dataclasses.fields(PostConfig) if f.default is not dataclasses.MISSING}


@dataclass
class PostprocessParams(RunParams):
    train_csv: str = "inputs/demo/train.csv"
    test_csv: str = "inputs/demo/test.csv"
    test_labels_csv: str = "inputs/demo/test_solution.csv"
    models: list[str] = field(default_factory=lambda: ["tfidf_word", "tfidf_char", "wordllama", "phash"])
    min2: bool = _POST["min2"]
    phash_exact: bool = _POST["phash_exact"]
    image_exact: bool = _POST["image_exact"]
    joint: bool = _POST["joint"]
    inb: InbParams | None = None
    qe: QeParams | None = None
    fusion: str | None = None
    fusion_models: list[str] | None = None
    units: bool = _POST["units"]
    rules: bool = _POST["rules"]
    closure: bool = _POST["closure"]
    chisel: bool = _POST["chisel"]
    fp_weight: float | str = _POST["fp_weight"]
    ablation: bool = True
    select_best: bool = True
    n_folds: int = 5
    knn_backend: str = "auto"
    seed: int = 0
    distractors: int | str = 0
    distractors_csv: str = ""

    def __post_init__(self) -> None:
        _distractors(self.distractors)
        if self.fusion not in (None, "mean", "max", "prod", "prob_union"):
            raise ConfigError(f"fusion must be mean, max, prod, prob_union or null, got {self.fusion!r}")
        check_fp_weight(self.fp_weight)
        _positive("n_folds", self.n_folds, 2)
        _knn_backend("knn_backend", self.knn_backend)


_STACK = {f.name: f.default for f in dataclasses.fields(StackerConfig)}


@dataclass
class StackerParams(RunParams):
    train_csv: str = "inputs/demo/train.csv"
    test_csv: str = "inputs/demo/test.csv"
    test_labels_csv: str = "inputs/demo/test_solution.csv"
    train_images: str = "inputs/demo/train_images"
    test_images: str = "inputs/demo/test_images"
    use_images: bool = True
    models: list[str] = field(default_factory=lambda: ["tfidf_word", "tfidf_char", "wordllama", "phash"])
    k: int = 50
    model: str = _STACK["model"]
    n_estimators: int = _STACK["n_estimators"]
    learning_rate: float = _STACK["learning_rate"]
    num_leaves: int = _STACK["num_leaves"]
    device: str = _STACK["device"]
    fp_weight: float | str = 1.0
    n_folds: int = 5
    seed: int = _STACK["seed"]
    max_train_pairs: int | None = _STACK["max_train_pairs"]
    second_stage: bool | str = "auto"
    closure: bool | str = "auto"
    same_image: bool = False
    distractors: int | str = 0
    distractors_csv: str = ""
    validation: str = "pooled"

    def __post_init__(self) -> None:
        _distractors(self.distractors)
        if self.validation not in ("pooled", "slices"):
            raise ConfigError(f"validation must be pooled or slices, got {self.validation!r}")
        if self.validation == "slices" and self.distractors != 0:
            raise ConfigError("validation: slices draws its own test postings into each slice; set distractors: 0")
        for name in ("second_stage", "closure"):
            if getattr(self, name) not in (True, False, "auto"):
                raise ConfigError(f"{name} must be true, false or auto, got {getattr(self, name)!r}")
        _positive("k", self.k, 2)
        _positive("n_estimators", self.n_estimators)
        if self.max_train_pairs is not None:
            _positive("max_train_pairs", self.max_train_pairs, 2)
        _positive("num_leaves", self.num_leaves, 2)
        _positive("n_folds", self.n_folds, 2)
        check_fp_weight(self.fp_weight)
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.model not in ("lightgbm", "xgboost", "blend"):
            raise ConfigError(f"model must be lightgbm, xgboost or blend, got {self.model!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")


@dataclass
class ValuationParams(RunParams):
    run_dir: str = "outputs/runs/valuation"
    listings_csv: str = "inputs/market/listings.csv"
    images_dir: str = "inputs/market/images"
    truth_csv: str = "inputs/market/truth.csv"
    generate: dict | None = field(default_factory=lambda: {"n": 3000, "seed": 0, "mode": "independent"})
    mapping: dict | None = None
    drop_nonpositive_price: bool = False
    numeric: list[str] = field(default_factory=lambda: ["age_years"])
    accessories: list[str] | None = None
    parts: dict[str, bool] = field(default_factory=lambda: {"dsca": True, "structure": True, "global_image": True,
                                                            "market": True})
    attention: str = "sparsemax"
    patches: str = "pixels"
    image: dict = field(default_factory=lambda: {"backbone": "resnet10t", "weights": None, "size": 96, "stage": 1})
    epochs: int = 15
    lr: float = 0.003
    schedule: str = "cosine"
    claim_weight: float = 0.3
    batch_size: int = 64
    experiments: list[str] = field(default_factory=lambda: ["ablation", "anchor", "attribution", "market"])
    splits: list[int] = field(default_factory=lambda: [0, 1, 2])
    cv_folds: int = 0
    val_share: float = 0.15
    cal_share: float = 0.15
    test_share: float = 0.2
    interval_level: float = 0.8
    error_by: list[str] = field(default_factory=lambda: ["category"])
    fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.25, 1.0])
    few_shot_rows: int = 0
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    attribution_listings: int = 60

    def __post_init__(self) -> None:
        _positive("epochs", self.epochs)
        for name in ("val_share", "cal_share", "test_share", "interval_level"):
            _in_unit(name, getattr(self, name))
        if not self.splits:
            raise ConfigError("splits needs at least one seed")
        if self.cv_folds < 0 or self.cv_folds == 1:
            raise ConfigError(f"cv_folds must be 0 (random splits) or at least 2, got {self.cv_folds}")
        test = 1 / self.cv_folds if self.cv_folds else self.test_share
        if self.val_share + self.cal_share + test >= 0.9:
            raise ConfigError(f"val_share + cal_share + the test share ({test:.3g}) must leave 10% for training")


SCHEMAS: dict[str, type] = {p.EDA: EdaParams, p.TRAIN: TrainParams, p.EMBED: EmbedParams, p.KNN: KnnParams,
                            p.POSTPROCESS: PostprocessParams, p.STACKER: StackerParams, p.VALUATION: ValuationParams}


def defaults(stage: str) -> dict[str, Any]:
    """Every parameter of a stage with its default, as plain values (what the notebook's cell holds)."""
    return _plain(SCHEMAS[stage]())


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(value: Any, tp: Any, where: str) -> None:
    """Raise ConfigError unless `value` fits the annotation `tp` (nested dataclasses checked key by key)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _check(value, option, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{where}: {value!r} fits none of {[_type_name(o) for o in options]}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {sorted(f.name for f in dataclasses.fields(tp))}, "
                              f"got {value!r}")
        validate(tp, value, where)
        return
    if tp is Any:
        return
    if origin in (list, dict):
        if not isinstance(value, origin):
            raise ConfigError(f"{where}: expected a {origin.__name__}, got {value!r}")
        args = typing.get_args(tp)
        items = value.items() if origin is dict else enumerate(value)
        for key, item in items:
            if args:
                _check(item, args[-1], f"{where}.{key}" if origin is dict else f"{where}[{key}]")
        return
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def validate(schema: type, values: dict, where: str) -> None:
    """Check `values` against a schema dataclass: known keys, types, then its own range checks."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(fields)}")
    hints = typing.get_type_hints(schema)
    for key, value in values.items():
        _check(value, hints[key], f"{where}.{key}")
    try:
        schema(**values)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:  # a code config's own checks (TrainConfig's schedule, fold)
        raise ConfigError(f"{where}: {e}") from None
