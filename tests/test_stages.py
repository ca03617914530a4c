"""The stage bodies without papermill: each stage's `run(params)` and its steps on tiny generated data, in the
manner of kedro's pipeline tests (the papermill runs of the same stages are in test_notebooks.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from utils.core.schema import ConfigError
from utils.core.store import EMBED, KNN, ArtifactName, RunStore
from utils.stages import eda, embed, knn, postprocess, stacker, train
from utils.stages.common import open_stage, read_pool


def _data(tiny_demo) -> dict:
    return {"train_csv": str(tiny_demo / "train.csv"), "test_csv": str(tiny_demo / "test.csv"),
            "test_labels_csv": str(tiny_demo / "test_solution.csv")}


MODELS = ["tfidf_word", "tfidf_char", "phash"]


@pytest.fixture(scope="module")
def chain(tiny_demo, tmp_path_factory):
    """02 -> 05 run in memory on the tiny demo data, with text models only (fast); returns the run folder."""
    run_dir = str(tmp_path_factory.mktemp("stages") / "run")
    data = _data(tiny_demo)
    eda.run(eda.Params(run_dir=run_dir, train_csv=data["train_csv"], train_images=str(tiny_demo / "train_images")))
    train.run(train.Params(run_dir=run_dir, train_csv=data["train_csv"],
                           models={"text": {"modality": "text", "epochs": 1, "batch_size": 32}}))
    images = {"train_images": str(tiny_demo / "train_images"), "test_images": str(tiny_demo / "test_images")}
    embed.run(embed.Params(run_dir=run_dir, models=MODELS, **{k: data[k] for k in ("train_csv", "test_csv")},
                           **images))
    knn.run(knn.Params(run_dir=run_dir, k=20))
    postprocess.run(postprocess.Params(run_dir=run_dir, models=MODELS, n_folds=3, **data))
    stacker.run(stacker.Params(run_dir=run_dir, models=MODELS, k=20, n_folds=3, n_estimators=30, **data, **images))
    return run_dir


def test_chain_runs_in_memory_and_writes_every_artifact(chain, tiny_demo):
    store = RunStore(chain)
    assert (store.run_dir / "00_eda" / "image_grid.png").exists()
    trained = json.loads((store.run_dir / "01_train_arcface" / "metrics.json").read_text())
    assert trained["key_metric"] == "text_trained_f1" and 0 < trained["text_trained_f1"] <= 1
    assert (store.run_dir / "01_train_arcface" / "text" / "best.pt").exists()
    test = pd.read_csv(tiny_demo / "test.csv")
    assert {n.stem for n in store.embeddings()} == {f"{s}_{m}" for s in ("train", "test") for m in MODELS}
    assert set(store.load_neighbours("test", MODELS, len(test))) == set(MODELS)
    for stage in ("04_postprocess", "05_stacker"):
        sub = pd.read_csv(store.submission_path(stage))
        assert list(sub["posting_id"]) == list(test["posting_id"])
        metrics = json.loads((store.run_dir / stage / "metrics.json").read_text())
        assert 0.5 < metrics["test_f1"] <= 1 and metrics["key_metric"] == "test_f1"
    assert set(store.thresholds()["models"]) <= set(MODELS)
    decision = json.loads((store.run_dir / "05_stacker" / "decision.json").read_text())
    assert decision["models"] == MODELS and decision["k"] == 20


def test_postprocess_steps_without_ablation_keep_the_configured_recipe(chain, tiny_demo, tmp_path):
    """The steps a notebook calls, one by one: ablation off leaves the recipe as configured."""
    params = postprocess.Params(run_dir=chain, out_dir=str(tmp_path / "04"), models=MODELS, n_folds=3,
                                ablation=False, **_data(tiny_demo))
    stage = open_stage("04_postprocess", params)
    pool = read_pool(params)
    assert pool.distractors == 0 and len(pool.scored) == len(pool.train) and set(pool.folds) == {0, 1, 2}
    data, cfg = postprocess.load_inputs(stage.store, params, pool)
    assert cfg.k == 20  # re-searches as deep as 03 searched
    table, chosen = postprocess.ablation(params, cfg, data["train"], pool)
    assert table is None and chosen is cfg
    outcome = postprocess.fit_and_submit(stage.store, params, cfg, data, pool, stage.steps)
    metrics = postprocess.finish(stage, params, cfg, pool, table, outcome)
    assert metrics["ablation"] is None and 0 < metrics["oof_f1"] <= 1
    assert (tmp_path / "04" / "submission.csv").exists() and (tmp_path / "04" / "thresholds.json").exists()


def test_knn_stitches_out_of_fold_parts_into_one_whole(tmp_path):
    """Two fold parts of one model become one neighbour file over all rows, each row from its own fold's part."""
    run_dir = tmp_path / "run"
    store = RunStore(run_dir, EMBED)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 4)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    for fold, rows in ((0, np.arange(0, 12, 2)), (1, np.arange(1, 12, 2))):
        store.save_embedding(ArtifactName("train", "m", fold), X, {"fold_rows": rows.tolist()})
    metrics = knn.run(knn.Params(run_dir=str(run_dir), k=3, backend="numpy"))
    assert metrics["backend"] == ["numpy"] and len(metrics["files"]) == 2
    idx, sims = RunStore(run_dir).load_neighbours("train", ["m"], 12)["m"]
    assert idx.shape == (12, 3) and (idx[:, 0] == np.arange(12)).all() and np.allclose(sims[:, 0], 1, atol=1e-5)
    assert (run_dir / KNN / "neighbour_sims.png").exists()


def test_a_stage_before_its_inputs_names_the_missing_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="02_embed"):
        knn.run(knn.Params(run_dir=str(tmp_path / "empty")))


def test_params_from_a_notebook_namespace_are_checked():
    names = {"run_dir": "r", "out_dir": None, "k": 1, "backend": "auto", "chunk": 8, "precision": "fp32"}
    with pytest.raises(ConfigError, match="k"):
        knn.Params.from_namespace(names)
    with pytest.raises(ConfigError, match="no value for"):
        knn.Params.from_namespace({"run_dir": "r"})
    assert knn.Params.from_namespace({**names, "k": 5, "extra_global": 1}).k == 5
