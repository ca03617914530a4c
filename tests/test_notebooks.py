"""Notebook hygiene and end-to-end papermill runs of the chain on tiny generated data."""

import json
import re

import numpy as np
import pandas as pd
import papermill as pm
import pytest
import yaml

from utils.core import judge
from utils.core.paths import CONFIGS, NOTEBOOKS
from utils.core.score import main as score_main
from utils.run import pipeline

NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("nb", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_notebook_hygiene(nb):
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert tagged[0] is next(c for c in cells if c["cell_type"] == "code"), "parameters come first"
    assigned = [line for line in "".join(tagged[0]["source"]).splitlines() if re.match(r"^\w+\s*(:[^=]*)?=", line)]
    for line in assigned:
        assert "  # " in line, f"parameter without a comment: {line}"
    # papermill must parse every line (a comment with '=' in it hides the parameter from it)
    assert len(pm.inspect_notebook(str(nb))) == len(assigned)
    assert not any(c.get("outputs") or c.get("execution_count") for c in cells if c["cell_type"] == "code")
    assert "run_dir" in pm.inspect_notebook(str(nb))
    # the library computes: no notebook defines a function or class, each reads its typed parameters once
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code" and c is not tagged[0])
    assert not re.search(r"^\s*(def|class|async def) |lambda\b", code, re.M), "a notebook defines no functions"
    assert ".Params.from_namespace(globals())" in code


def demo_config(data_dir, run_dir, **stage_overrides):
    cfg = yaml.safe_load((CONFIGS / "demo.yaml").read_text())
    cfg["run"] = str(run_dir)
    for key in ("train_csv", "test_csv", "test_labels_csv", "train_images", "test_images"):
        cfg["data"][key] = str(data_dir / cfg["data"][key].removeprefix("inputs/demo/"))
    cfg["data"].pop("generate")
    for stage, params in stage_overrides.items():
        cfg["stages"][stage] = {**cfg["stages"][stage], **params}
    return cfg


TINY_TRAINING = {"cv": ["text"], "models": {
    "text": {"modality": "text", "epochs": 1, "n_folds": 3},
    "image": {"modality": "image", "image": {"backbone": "resnet10t"}, "image_size": 48, "epochs": 1, "batch_size": 16,
              "n_folds": 3}}}
FAST = {"01_train_arcface": TINY_TRAINING, "04_postprocess": {"n_folds": 3, "fp_weight": "auto"},
        "05_stacker": {"n_folds": 3, "n_estimators": 50}}
STAGES = ["00_eda", "01_train_arcface", "02_embed", "03_knn", "04_postprocess", "05_stacker"]


def test_demo_chain_end_to_end(tiny_demo, tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = demo_config(tiny_demo, run_dir, **FAST)
    rows = pipeline.run(cfg)
    assert [r["status"] for r in rows] == ["ran"] * 6
    sub = pd.read_csv(run_dir / "submission.csv")
    test = pd.read_csv(tiny_demo / "test.csv")
    assert list(sub["posting_id"]) == list(test["posting_id"])
    lists = sub["matches"].str.split()
    assert all(pid == m[0] for pid, m in zip(sub["posting_id"], lists, strict=True)) and lists.map(len).max() <= 50
    for stage in STAGES:
        assert (run_dir / stage / "metrics.json").exists() and (run_dir / "notebooks" / f"{stage}.ipynb").exists()
    assert (run_dir / "00_eda" / "group_sizes.png").exists() and (run_dir / "00_eda" / "image_grid.png").exists()
    assert (run_dir / "01_train_arcface" / "text" / "fold2" / "best.pt").exists()
    assert (run_dir / "03_knn" / "train_text_arcface.npz").exists()  # stitched from the fold parts
    thresholds = json.loads((run_dir / "04_postprocess" / "thresholds.json").read_text())
    assert set(thresholds["models"]) <= {"tfidf_word", "tfidf_char", "wordllama", "phash", "text_arcface"}
    post = json.loads((run_dir / "04_postprocess" / "metrics.json").read_text())
    assert [r["step"] for r in post["ablation"]][:3] == ["best single model, threshold", "+ min2",
                                                         "+ union of models + pHash"]
    assert post["fp_weight"] == pytest.approx(len(test) / len(pd.read_csv(tiny_demo / "train.csv")))
    assert all(0 < r["f1_test_size"] <= 1 for r in post["ablation"])
    metrics = json.loads((run_dir / "05_stacker" / "metrics.json").read_text())
    assert metrics["postprocess_test_f1"] == pytest.approx(post["test_f1"])
    # the notebook's figure is the scorer's figure
    args = ["--data", str(tiny_demo / "test_solution.csv"), "--submission", str(run_dir / "submission.csv")]
    assert score_main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["f1"] == pytest.approx(metrics["test_f1"])
    assert metrics["test_f1"] > 0.5

    # resume: nothing changed -> all cached; a knn parameter changed -> knn and later stages re-run
    assert [r["status"] for r in pipeline.run(cfg)] == ["cached"] * 6
    stale = run_dir / "03_knn" / "train_stale_model.npz"
    stale.write_bytes(b"left over from an earlier run")
    cfg2 = demo_config(tiny_demo, run_dir, **FAST, **{"03_knn": {"k": 20}})
    assert [r["status"] for r in pipeline.run(cfg2)] == ["cached"] * 3 + ["ran"] * 3
    assert not stale.exists()  # a stage that re-runs starts from an empty folder
    summary = pipeline.format_summary(rows)
    assert "05_stacker" in summary and "test_f1" in summary


def test_distractors_join_the_training_pool_end_to_end(tiny_demo, tmp_path):
    run_dir = tmp_path / "run"
    text_only = {"cv": ["text"], "models": {"text": TINY_TRAINING["models"]["text"]}}
    embed_trained = {"checkpoints": {"text_arcface": "{run_dir}/01_train_arcface/text"}}
    cfg = demo_config(tiny_demo, run_dir, **{**FAST, "01_train_arcface": text_only, "02_embed": embed_trained})
    del cfg["stages"]["00_eda"]
    cfg["params"]["distractors"] = 25
    pipeline.run(cfg)
    n_train = len(pd.read_csv(tiny_demo / "train.csv"))
    with np.load(run_dir / "03_knn" / "train_text_arcface.npz") as z:  # stitched from fold parts, distractors too
        assert z["indices"].shape[0] == n_train + 25 and (z["indices"][:, 0] == np.arange(n_train + 25)).all()
    for stage in ("04_postprocess", "05_stacker"):
        metrics = json.loads((run_dir / stage / "metrics.json").read_text())
        assert metrics["distractors"] == 25 and metrics["train_rows"] == n_train and metrics["test_f1"] > 0.5
    post = json.loads((run_dir / "04_postprocess" / "metrics.json").read_text())
    assert post["fp_weight"] == pytest.approx(len(pd.read_csv(tiny_demo / "test.csv")) / (n_train + 25))


def test_stacker_learns_from_test_like_slices_end_to_end(tiny_demo, tmp_path):
    run_dir = tmp_path / "run"
    text_only = {"cv": ["text"], "models": {"text": TINY_TRAINING["models"]["text"]}}
    embed_trained = {"checkpoints": {"text_arcface": "{run_dir}/01_train_arcface/text"}, "fold_test": True}
    stacker = {**FAST["05_stacker"], "validation": "slices", "fp_weight": "auto"}
    cfg = demo_config(tiny_demo, run_dir, **{**FAST, "01_train_arcface": text_only, "02_embed": embed_trained,
                                             "05_stacker": stacker})
    del cfg["stages"]["00_eda"]
    pipeline.run(cfg)
    assert sorted(p.name for p in (run_dir / "02_embed").glob("test_text_arcface@fold*.npy")) == [
        f"test_text_arcface@fold{k}.npy" for k in range(3)]
    assert not list((run_dir / "03_knn").glob("test_*@fold*"))  # searched within 05's slices only
    n_train, n_test = (len(pd.read_csv(tiny_demo / f)) for f in ("train.csv", "test.csv"))
    metrics = json.loads((run_dir / "05_stacker" / "metrics.json").read_text())
    assert metrics["validation"] == "slices" and metrics["train_rows"] == n_train and metrics["fp_weight"] == 1.0
    assert metrics["slices"]["rows"] - metrics["slices"]["test_postings"] == n_train
    assert metrics["slices"]["rows"] >= 3 * n_test  # every slice at least the test split's size
    assert {r["decision"] for r in metrics["selection"]} == {
        "pair features", "pair features + closure", "+ graph features (second stage)",
        "+ graph features (second stage) + closure"} and metrics["test_f1"] > 0.5


def test_failing_cell_names_stage_cell_and_notebook(tiny_demo, tmp_path):
    cfg = demo_config(tiny_demo, tmp_path / "run", **{"02_embed": {"models": ["no_such_embedder"], "checkpoints": {}}})
    with pytest.raises(pipeline.StageFailed) as e:
        pipeline.run(cfg, stages=["02_embed"])
    msg = str(e.value)
    assert "stage 02_embed failed in cell" in msg and "unknown embedding model" in msg
    assert str(tmp_path / "run" / "notebooks" / "02_embed.failed.ipynb") in msg and "no earlier outputs" in msg


def _real_titles_run(tmp_path, with_minilm: bool) -> tuple[float, float]:
    """The real-titles recipe scored on the judge's validation set (test.csv is scored once, by make real-titles)."""
    cfg = pipeline.load_config(CONFIGS / "real-titles.yaml")
    cfg["run"] = str(tmp_path / "rt")
    cfg["data"]["test_csv"] = cfg["data"]["test_labels_csv"] = str(judge.JudgeFiles(judge.EXTRA / "judge").validation)
    if not with_minilm:  # the fine-tuned MiniLM is most of the config's minutes on 2 cores
        stages = cfg["stages"]
        del stages["01_train_arcface"]["models"]["minilm"]
        stages["01_train_arcface"]["cv"].remove("minilm")
        del stages["02_embed"]["checkpoints"]["minilm_arcface"]
        stages["05_stacker"]["models"].remove("minilm_arcface")
    rows = pipeline.run(cfg)
    assert [r["stage"] for r in rows] == STAGES
    assert (tmp_path / "rt" / "submission.csv").read_text() == (
        tmp_path / "rt" / "04_postprocess" / "submission.csv").read_text()  # the config's submission: 04's
    post = json.loads((tmp_path / "rt" / "04_postprocess" / "metrics.json").read_text())
    stacked = json.loads((tmp_path / "rt" / "05_stacker" / "metrics.json").read_text())
    assert post["test_scored_rows"] == stacked["test_scored_rows"] == 1166  # the 3,290 singles are not scored
    return post["test_f1"], stacked["test_f1"]


def test_real_titles_config_without_minilm_on_the_judge(real_titles, tmp_path):
    post, stacked = _real_titles_run(tmp_path, with_minilm=False)
    assert post >= 0.785 and stacked >= 0.75  # 04 does not use the trained models: measured 0.7942 with them


@pytest.mark.slow
def test_real_titles_config_on_the_judge(real_titles, tmp_path):
    post, stacked = _real_titles_run(tmp_path, with_minilm=True)
    assert post >= 0.785 and stacked >= 0.765  # measured 0.7942 and 0.7769 (MiniLM 5 epochs)


def test_missing_demo_data_is_generated(tmp_path):
    data = {"train_csv": str(tmp_path / "d" / "train.csv"), "generate": {"kind": "shopee", "groups": 8, "seed": 0}}
    pipeline.ensure_data(data)
    assert (tmp_path / "d" / "train.csv").exists() and (tmp_path / "d" / "test_images").is_dir()
