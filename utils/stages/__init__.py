"""The stages layer: one module per notebook holding its typed `Params` and its steps as plain functions.

A notebook reads its parameters into `Params`, calls its module's steps in order and shows what they return;
`run(params)` calls the same steps without a notebook (tests, scripts). The pipeline validates configs
against `params_class(stage)`. Modules load on first use, so validating a matching chain never imports the
valuation stack.
"""

from __future__ import annotations

import importlib

from utils.core import paths as p

MODULES: dict[str, str] = {p.EDA: "eda", p.TRAIN: "train", p.EMBED: "embed", p.KNN: "knn",
                           p.POSTPROCESS: "postprocess", p.STACKER: "stacker", p.VALUATION: "valuation"}


def module(stage: str):
    """The stage's module in this package; a clear error naming the known stages."""
    if stage not in MODULES:
        raise ValueError(f"unknown stage {stage!r}; known: {list(MODULES)}")
    return importlib.import_module(f"{__name__}.{MODULES[stage]}")


def params_class(stage: str) -> type:
    """The typed parameter schema of a stage (the single source of its defaults)."""
    return module(stage).Params
