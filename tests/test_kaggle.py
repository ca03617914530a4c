"""Kaggle kernels: metadata, Kaggle paths, the setup cell, the public-test guard, and a rehearsal run."""

import json
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest

from utils.core.paths import CONFIGS
from utils.run import kaggle, pipeline
from utils.run.stages import NAMES

REQUIRED = {"id", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu", "enable_internet",
            "dataset_sources", "competition_sources", "kernel_sources"}


def _params(nb_path: Path) -> dict:
    return {k: v["default"] for k, v in pm.inspect_notebook(str(nb_path)).items()}


def test_build_writes_every_kernel_with_kaggle_paths(tmp_path):
    cfg = pipeline.load_config(CONFIGS / "shopee.yaml")
    kaggle.build(cfg, "shopee.yaml", tmp_path, user="tester")
    kernels = [s for s in NAMES if s in cfg["stages"]] + ["submit"]
    for name in kernels:
        meta = json.loads((tmp_path / name / "kernel-metadata.json").read_text())
        assert set(meta) >= REQUIRED
        assert meta["enable_internet"] is False and meta["language"] == "python" and meta["kernel_type"] == "notebook"
        assert meta["competition_sources"] == ["shopee-product-matching"]
        assert "tester/shopee-suite-code" in meta["dataset_sources"]
        assert meta["id"] == "tester/" + kaggle.slug(meta["title"])
        nb_path = tmp_path / name / meta["code_file"]
        nb = nbformat.read(nb_path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "kaggle-setup" in code[0].metadata["tags"] and "parameters" in code[1].metadata["tags"]
        params = _params(nb_path)
        if name == "submit":
            assert params["config"].strip("'\"") == "/kaggle/input/shopee-suite-code/configs/shopee.yaml"
            continue
        assert params["run_dir"].strip("'\"") == "/kaggle/working/run"
        paths = [params[k].strip("'\"") for k in pipeline.PATH_KEYS if k in params]
        assert all(p.startswith("/kaggle/input/") or p == "" for p in paths), paths
        assert name == "03_knn" or "/kaggle/input/shopee-product-matching/train.csv" in paths
    train = json.loads((tmp_path / "01_train_arcface" / "kernel-metadata.json").read_text())
    assert "tester/timm-eca-nfnet-l0" in train["dataset_sources"] and train["kernel_sources"] == []
    assert "/kaggle/input/timm-eca-nfnet-l0/eca_nfnet_l0.pth" in _params(
        tmp_path / "01_train_arcface" / "01_train_arcface.ipynb")["models"]
    stacker = json.loads((tmp_path / "05_stacker" / "kernel-metadata.json").read_text())
    assert stacker["kernel_sources"] == [f"tester/shopee-{s}" for s in ("02-embed", "03-knn", "04-postprocess")]
    code = tmp_path / "datasets" / "shopee-suite-code"
    assert (code / "utils" / "kaggle.py").exists() and (code / "notebooks" / "03_knn.ipynb").exists()
    assert not list(code.rglob("__pycache__"))
    assert json.loads((code / "dataset-metadata.json").read_text())["id"] == "tester/shopee-suite-code"
    assert "/kaggle/input/shopee-product-matching/train.csv" in (code / "configs" / "shopee.yaml").read_text()


def test_build_rejects_paths_outside_inputs_and_a_missing_user(tmp_path, monkeypatch):
    cfg = pipeline.load_config(CONFIGS / "shopee.yaml", ["data.reference_csv=/etc/hosts"])
    with pytest.raises(kaggle.KaggleBuildError, match="data.reference_csv"):
        kaggle.build(cfg, "shopee.yaml", tmp_path, user="tester")
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    with pytest.raises(kaggle.KaggleBuildError, match="--user"):
        kaggle.build(pipeline.load_config(CONFIGS / "shopee.yaml"), "shopee.yaml", tmp_path)
    with pytest.raises(kaggle.KaggleBuildError, match="slug"):
        kaggle.build(pipeline.load_config(CONFIGS / "shopee.yaml"), "shopee.yaml", tmp_path, user="No Spaces")


def test_rewrite_parameters_keeps_comments_and_rejects_unknown_names():
    src = 'k = 50  # neighbours kept\nbackend = "auto"  # a | b'
    out = kaggle.rewrite_parameters(src, {"k": 20, "backend": "/kaggle/input/x"})
    assert out == "k = 20  # neighbours kept\nbackend = '/kaggle/input/x'  # a | b"
    with pytest.raises(kaggle.KaggleBuildError, match="chunk"):
        kaggle.rewrite_parameters(src, {"chunk": 1})


def test_kaggle_path_maps_inputs_and_keeps_templates(tmp_path):
    inputs = tmp_path / "inputs"
    value = {"a": "inputs/w/m.pth", "b": [str(inputs / "x" / "y.csv")], "c": "{run_dir}/01/text", "d": 3, "e": ""}
    assert kaggle.kaggle_path(value, inputs, "p") == {"a": "/kaggle/input/w/m.pth", "b": ["/kaggle/input/x/y.csv"],
                                                      "c": "{run_dir}/01/text", "d": 3, "e": ""}


def test_setup_kernel_links_upstream_and_names_what_is_missing(tmp_path):
    up = tmp_path / "input" / "shopee-02-embed" / "run" / "02_embed"
    up.mkdir(parents=True)
    (up / "test_tfidf.npy").write_bytes(b"x")
    run = tmp_path / "working" / "run"
    kaggle.setup_kernel(str(tmp_path / "wheels"), ["numpy"], {"02_embed": str(up)}, str(run))
    assert (run / "02_embed" / "test_tfidf.npy").read_bytes() == b"x"
    with pytest.raises(FileNotFoundError, match="03_knn"):
        kaggle.setup_kernel(str(tmp_path / "wheels"), [], {"03_knn": str(tmp_path / "absent")}, str(run))
    with pytest.raises(FileNotFoundError, match="wheels dataset"):
        kaggle.setup_kernel(str(tmp_path / "wheels"), ["no-such-distribution-xyz"], {}, str(run))


def test_public_test_guard_holds_out_whole_train_groups(tiny_demo, tmp_path):
    test3 = tmp_path / "test.csv"
    pd.read_csv(tiny_demo / "test.csv").head(3).to_csv(test3, index=False)
    data = {"train_csv": str(tiny_demo / "train.csv"), "test_csv": str(test3), "train_images": "imgs",
            "public_test": {"max_rows": 3, "holdout": 0.25, "seed": 0}}
    out = pipeline.public_test_guard(data, tmp_path / "run")
    train, test = pd.read_csv(out["train_csv"]), pd.read_csv(out["test_labels_csv"])
    assert len(train) + len(test) == len(pd.read_csv(tiny_demo / "train.csv"))
    assert not set(train["label_group"]) & set(test["label_group"])
    assert "label_group" not in pd.read_csv(out["test_csv"]).columns and out["test_images"] == "imgs"
    data["test_csv"] = str(tiny_demo / "test.csv")  # the hidden test: more rows, no change
    assert pipeline.public_test_guard(data, tmp_path / "run") == data


def test_submit_kernel_rehearsal_on_a_public_sized_test(tiny_demo, tmp_path):
    """Build with a fake /kaggle root, lay out the datasets as Kaggle mounts them, run the submit kernel."""
    root = tmp_path / "kaggle"
    comp = root / "input" / "shopee-product-matching"
    comp.mkdir(parents=True)
    shutil.copy(tiny_demo / "train.csv", comp / "train.csv")
    shutil.copytree(tiny_demo / "train_images", comp / "train_images")
    pd.read_csv(tiny_demo / "test.csv").head(3).to_csv(comp / "test.csv", index=False)  # as on Kaggle
    cfg = pipeline.load_config(CONFIGS / "shopee.yaml")
    cfg["stages"] = {"02_embed": {"models": ["tfidf_char", "phash"]}, "03_knn": {"k": 20},
                     "04_postprocess": {"models": ["tfidf_char", "phash"], "n_folds": 3, "ablation": False},
                     "05_stacker": {"models": ["tfidf_char", "phash"], "k": 20, "n_folds": 3, "n_estimators": 30}}
    cfg["kaggle"] = {**cfg["kaggle"], "wheels": [], "input_root": str(root / "input"),
                     "working_root": str(root / "working")}
    built = tmp_path / "built"
    kaggle.build(cfg, "shopee.yaml", built, user="tester")
    shutil.copytree(built / "datasets" / "shopee-suite-code", root / "input" / "shopee-suite-code")
    meta = json.loads((built / "submit" / "kernel-metadata.json").read_text())
    assert meta["kernel_sources"] == []  # nothing upstream of 02 in this chain
    pm.execute_notebook(str(built / "submit" / "submit.ipynb"), str(tmp_path / "executed.ipynb"),
                        kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    sub = pd.read_csv(root / "working" / "submission.csv")
    held_out = pd.read_csv(root / "working" / "run" / "data" / "test_solution.csv")
    assert list(sub["posting_id"]) == list(held_out["posting_id"])  # CV on held-out train groups
    metrics = json.loads((root / "working" / "run" / "05_stacker" / "metrics.json").read_text())
    assert metrics["test_f1"] > 0.5
