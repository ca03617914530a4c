"""03_knn: top-K cosine neighbours of every embedding within its split (out-of-fold parts stitched)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from utils.core.schema import at_least, one_of, param
from utils.core.store import KNN, ArtifactName, RunStore
from utils.matching.knn import AVAILABLE, PRECISIONS, neighbours, stitch_folds

from .common import RunParams, Stage, open_stage, write_metrics

log = logging.getLogger(__name__)


@dataclass
class Params(RunParams):
    k: int = param(50, "neighbours kept per row, the row itself included (a Shopee group has at most 50 postings)")
    backend: str = param("auto", "auto | cuml | faiss-gpu | torch | faiss-cpu | sklearn | numpy")
    chunk: int = param(2048, "query rows per chunk: bounds memory at chunk x N similarities")
    precision: str = param("fp32", "matmul precision of the torch backend: fp32, fp16 or bf16 (the others compute "
                                   "in fp32)")

    def __post_init__(self) -> None:
        at_least("k", self.k, 2)  # the row itself and at least one neighbour
        at_least("chunk", self.chunk)
        one_of("precision", self.precision, PRECISIONS)
        one_of("backend", self.backend, ("auto", *AVAILABLE))


def searched_embeddings(store: RunStore) -> list[ArtifactName]:
    """The embeddings 02_embed wrote for searching (not the parts of a join); a clear error when there are none."""
    names = [name for name in store.embeddings() if name.searched]
    if not names:
        raise FileNotFoundError(f"{store.run_dir}: no embeddings; run 02_embed first")
    return names


def search(store: RunStore, params: Params, names: list[ArtifactName]) -> pd.DataFrame:
    """Neighbours of every embedding within its split, saved; out-of-fold parts are stitched into one whole.

    Returns one row per embedding: rows, k, the backend used, seconds and the mean similarity of neighbour 1.
    """
    rows = []
    parts: dict[ArtifactName, list] = {}  # whole artifact name -> its fold parts, to stitch
    for name in names:
        X, meta = store.load_embedding(name)
        t0 = time.perf_counter()
        idx, sims, used = neighbours(X, k=params.k, backend=params.backend, chunk=params.chunk,
                                     precision=params.precision)
        if name.fold is not None:  # an out-of-fold part: only its fold's rows are kept
            parts.setdefault(name.whole, []).append((np.array(meta["fold_rows"]), idx, sims))
        else:
            store.save_neighbours(name, idx, sims)
        rows.append({"file": name.stem, "rows": X.shape[0], "k": idx.shape[1], "backend": used,
                     "seconds": round(time.perf_counter() - t0, 2), "sim_nn1_mean": float(sims[:, 1].mean())})
    for whole, pieces in parts.items():
        store.save_neighbours(whole, *stitch_folds(pieces, pieces[0][1].shape[0]))
        log.info("%s: stitched from %d out-of-fold parts", whole.stem, len(pieces))
    return pd.DataFrame(rows)


def similarity_by_rank(store: RunStore, names: list[ArtifactName]) -> Figure:
    """Mean similarity of the 1st, 2nd, 5th and 10th neighbour per model of the train split, saved beside."""
    fig, ax = plt.subplots(figsize=(7, 4))
    train_models = sorted({n.model for n in names if n.split == "train"})
    for model, (_, s) in store.load_neighbours("train", train_models).items():
        ranks = [j for j in (1, 2, 5, 10) if j < s.shape[1]]
        ax.plot(ranks, [s[:, j].mean() for j in ranks], marker="o", label=model)
    ax.set(xlabel="neighbour rank", ylabel="mean cosine", title="Neighbour similarity by rank (train)")
    ax.legend()
    fig.savefig(store.out / "neighbour_sims.png", dpi=110)
    return fig


def finish(stage: Stage, params: Params, table: pd.DataFrame) -> dict:
    """Close the stage: metrics.json with the backends, the per-file table and the total seconds."""
    rows = table.to_dict("records")
    metrics = {"k": params.k, "backend": sorted(set(table["backend"])), "files": rows,
               "seconds_total": float(table["seconds"].sum()),
               "steps": {f"{r['file']} ({r['backend']})": r["seconds"] for r in rows}}
    write_metrics(stage.out, metrics, key="seconds_total")
    return metrics


def run(params: Params) -> dict:
    """The whole stage without a notebook: search every embedding, plot, write metrics; returns the metrics."""
    stage = open_stage(KNN, params)
    names = searched_embeddings(stage.store)
    table = search(stage.store, params, names)
    plt.close(similarity_by_rank(stage.store, names))
    return finish(stage, params, table)
