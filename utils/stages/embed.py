"""02_embed: L2-normalised embeddings of both splits (built-in embedders, trained checkpoints, joins)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pandas as pd

from utils.core.data import distractor_mask, read_postings, read_training
from utils.core.schema import param
from utils.core.store import EMBED, ArtifactName, RunStore
from utils.matching.embed import concat, embed
from utils.training.loop import embed_split

from .common import RunParams, Stage, check_distractors, open_stage, shared, write_metrics

log = logging.getLogger(__name__)


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


def read_splits(params: Params) -> dict[str, pd.DataFrame]:
    """The train split (training postings plus any distractors) and the test split, by name."""
    splits = {"train": read_training(params.train_csv, params.test_csv, params.distractors, params.test_images,
                                     distractors_csv=params.distractors_csv),
              "test": read_postings(params.test_csv)}
    log.info("train split: %s rows (%s distractors), test split: %s rows", f"{len(splits['train']):,}",
             f"{int(distractor_mask(splits['train']).sum()):,}", f"{len(splits['test']):,}")
    return splits


def builtin(store: RunStore, params: Params, splits: dict[str, pd.DataFrame]) -> list[dict]:
    """Embed both splits with each built-in model of `params.models`; one table row per file written."""
    rows = []
    for split, df in splits.items():
        for name in params.models:
            t0 = time.perf_counter()
            X = embed(name, df, **params.model_params.get(name, {}))
            meta = {"model": name, "params": params.model_params.get(name, {}), "split": split}
            path = store.save_embedding(ArtifactName(split, name), X, meta)
            rows.append({"split": split, "model": name, "rows": X.shape[0], "dim": X.shape[1],
                         "seconds": round(time.perf_counter() - t0, 2), "file": path.name})
    return rows


def trained(store: RunStore, params: Params, splits: dict[str, pd.DataFrame]) -> list[dict]:
    """Embed both splits with each trained checkpoint (and its fold models, for out-of-fold parts)."""
    rows = []
    images = {"train": params.train_images, "test": params.test_images}
    for name, folder in params.checkpoints.items():
        for split, df in splits.items():
            t0 = time.perf_counter()
            for path in embed_split(folder.format(run_dir=params.run_dir), name, split, df,
                                    images[split] if params.use_images else None, store, amp=params.amp,
                                    fold_test=params.fold_test):
                rows.append({"split": split, "model": name, "rows": len(df), "dim": None,
                             "seconds": round(time.perf_counter() - t0, 2), "file": path.name})
    return rows


def joined(store: RunStore, params: Params) -> list[dict]:
    """Write each join of `params.concat` (per split and per fold part) from the parts written above."""
    rows = []
    for name, parts in params.concat.items():
        for first in [a for a in store.embeddings() if a.model == parts[0]]:  # each split, and each fold part
            loaded = [store.load_embedding(ArtifactName(first.split, p, first.fold)) for p in parts]
            meta = {**loaded[0][1], "model": name, "parts": parts}
            path = store.save_embedding(ArtifactName(first.split, name, first.fold),
                                        concat([X for X, _ in loaded]), meta)
            rows.append({"split": first.split, "model": name, "rows": loaded[0][0].shape[0],
                         "dim": sum(X.shape[1] for X, _ in loaded), "seconds": 0.0, "file": path.name})
    return rows


def finish(stage: Stage, params: Params, table: pd.DataFrame) -> dict:
    """Close the stage: metrics.json with the files written and the total seconds."""
    rows = table.to_dict("records")
    metrics = {"models": list(params.models), "embeddings": rows, "seconds_total": float(table["seconds"].sum()),
               "steps": {f"{r['split']} {r['model']}": r["seconds"] for r in rows}}
    write_metrics(stage.out, metrics, key="seconds_total")
    return metrics


def run(params: Params) -> dict:
    """The whole stage without a notebook; returns its metrics."""
    stage = open_stage(EMBED, params)
    splits = read_splits(params)
    rows = builtin(stage.store, params, splits) + trained(stage.store, params, splits)
    return finish(stage, params, pd.DataFrame(rows + joined(stage.store, params)))
