"""Iterating on a run: nested overrides, a variant reusing another run's stages (--from), the run history and
compare, a stage notebook opened by hand (Jupyter) writing into a run, and --verbose streaming cell output."""

from __future__ import annotations

import csv
import json

import numpy as np
import papermill as pm
import pytest
import yaml

from utils.core.schema import ConfigError
from utils.run import history, pipeline

MODELS = ["tfidf_word", "tfidf_char"]


def small_config(data, run_dir, **stage_overrides) -> dict:
    """02 -> 04 on the tiny demo with two TF-IDF models (seconds a stage)."""
    cfg = {"run": str(run_dir),
           "data": {"train_csv": str(data / "train.csv"), "test_csv": str(data / "test.csv"),
                    "test_labels_csv": str(data / "test_solution.csv"), "images": False},
           "stages": {"02_embed": {"models": MODELS}, "03_knn": {"k": 10, "backend": "numpy"},
                      "04_postprocess": {"models": MODELS, "n_folds": 3, "ablation": False}}}
    for stage, params in stage_overrides.items():
        cfg["stages"][stage] = {**cfg["stages"][stage], **params}
    return cfg


def write_config(tmp_path, cfg) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return str(path)


def test_nested_set_changes_one_field_of_a_mapping(tmp_path):
    cfg = {"run": "x", "data": {}, "stages": {"01_train_arcface": {"models": {"text": {"modality": "text",
                                                                                       "epochs": 8}}}}}
    path = write_config(tmp_path, cfg)
    loaded = pipeline.load_config(path, ["01_train_arcface.models.text.epochs=2",
                                         "01_train_arcface.models.image.modality=image"])
    models = loaded["stages"]["01_train_arcface"]["models"]
    assert models["text"] == {"modality": "text", "epochs": 2} and models["image"] == {"modality": "image"}
    with pytest.raises(ConfigError, match="'epochs' holds 8, not a mapping"):
        pipeline.load_config(path, ["01_train_arcface.models.text.epochs.x=1"])


def test_a_variant_reuses_the_upstream_stages_of_another_run(tiny_demo, tmp_path):
    base, variant = tmp_path / "runs" / "base", tmp_path / "runs" / "variant"
    rows = pipeline.run(small_config(tiny_demo, base))
    assert [r["status"] for r in rows] == ["ran"] * 3
    cfg = small_config(tiny_demo, variant, **{"04_postprocess": {"min2": False}})
    rows = pipeline.run(cfg, reuse=str(base))
    assert [r["status"] for r in rows] == ["from base", "from base", "ran"]
    a = np.load(base / "03_knn" / "train_tfidf_word.npz")["indices"]
    assert (np.load(variant / "03_knn" / "train_tfidf_word.npz")["indices"] == a).all()
    assert [r["status"] for r in pipeline.run(cfg)] == ["cached"] * 3  # the reused stages are this run's now
    assert (variant / "submission.csv").exists()
    # a stage not up to date in the other run is computed, not copied
    cfg_k = small_config(tiny_demo, tmp_path / "runs" / "k5", **{"03_knn": {"k": 5}})
    assert [r["status"] for r in pipeline.run(cfg_k, reuse=str(base))] == ["from base", "ran", "ran"]
    with pytest.raises(ConfigError, match="no run at"):
        pipeline.run(cfg, reuse=str(tmp_path / "runs" / "nope"))

    # the history: one line per stage that ran, with its parameters digest and key metric
    with (tmp_path / "runs" / "history.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert [(r["run"].rsplit("/", 1)[-1], r["stage"]) for r in lines] == [
        ("base", "02_embed"), ("base", "03_knn"), ("base", "04_postprocess"), ("variant", "04_postprocess"),
        ("k5", "03_knn"), ("k5", "04_postprocess")]
    assert lines[2]["metric"] == "test_f1" and 0 < float(lines[2]["value"]) <= 1
    assert lines[2]["parameters"] != lines[3]["parameters"]  # min2 differs
    table = history.compare(base, variant)
    row = next(line for line in table.splitlines() if line.startswith("04_postprocess") and " test_f1 " in line)
    post = [json.loads((r / "04_postprocess" / "metrics.json").read_text())["test_f1"] for r in (base, variant)]
    assert f"{post[1] - post[0]:+.4f}" in row


def test_a_stage_notebook_for_jupyter_runs_anywhere_and_the_run_notices(tiny_demo, tmp_path):
    run_dir = tmp_path / "runs" / "lab"
    cfg = small_config(tiny_demo, run_dir)
    pipeline.run(cfg)
    path = pipeline.write_notebook(cfg, "03_knn", tmp_path / "mine")
    assert path == tmp_path / "mine" / "03_knn.ipynb"
    injected = [c for c in json.loads(path.read_text())["cells"] if "injected-parameters" in c["metadata"].get(
        "tags", [])]
    assert len(injected) == 1 and str(run_dir.resolve()) in "".join(injected[0]["source"])
    # edited by hand (k = 7 in the injected cell) and run from another folder: it writes into the run
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    cell["source"] = "".join(cell["source"]) + "\nk = 7\n"
    path.write_text(json.dumps(nb))
    pm.execute_notebook(str(path), str(tmp_path / "mine" / "out.ipynb"), cwd=str(tmp_path / "mine"),
                        progress_bar=False, kernel_name="python3")
    assert np.load(run_dir / "03_knn" / "train_tfidf_word.npz")["indices"].shape[1] == 7
    rows = pipeline.run(cfg)  # the k=7 outputs are not the ones the run made: 03 and 04 re-run
    assert [r["status"] for r in rows] == ["cached", "ran", "ran"]
    assert np.load(run_dir / "03_knn" / "train_tfidf_word.npz")["indices"].shape[1] == 10
    with pytest.raises(ConfigError, match="not in this config's chain"):
        pipeline.write_notebook(cfg, "05_stacker")


def test_verbose_streams_the_cells_output(tiny_demo, tmp_path, capsys):
    cfg = small_config(tiny_demo, tmp_path / "runs" / "loud")
    del cfg["stages"]["04_postprocess"]
    assert pipeline.main(["run", "--config", write_config(tmp_path, cfg), "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "Executing notebook" in out or "Executing Cell" in out
    assert "sim_nn1_mean" in out  # 03's table, shown by its cell
