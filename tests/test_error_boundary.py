"""Issue 33's classes, table-driven: every command line fails with one line and exit 2 (never a traceback,
`--verbose` shows it), and the silent wrong answers are refused or said."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from utils.core.cli import boundary
from utils.core.data import DataError, read_truth
from utils.core.score import main as score_main
from utils.core.store import RunStore
from utils.run.pipeline import main as pipeline_main
from utils.synth.__main__ import main as synth_main
from utils.valuation.__main__ import main as valuation_main
from utils.valuation.metrics import apply_interval

BASE = "run: x\ndata: {train_csv: a.csv, test_csv: b.csv}\nstages:\n  03_knn: {k: 10}\n"


def _write(tmp_path, name: str, content: bytes | str):
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


# ---- configs and overrides: one line naming the culprit, exit 2 ----------------------------------------------
@pytest.mark.parametrize("content, overrides, culprit", [
    (None, [], "a folder, not a config file"),  # --config <a folder>
    ("run: caf\xe9\n".encode("latin-1"), [], "not UTF-8 text"),
    (BASE.replace("{k: 10}", "ten"), [], "stages.03_knn must be a mapping"),
    (BASE.replace("{train_csv: a.csv, test_csv: b.csv}", "5"), [], "data must be a mapping"),
    (BASE + "  03_knn: {k: 5}\n", [], "key '03_knn' written twice"),
    (BASE, ["run="], "--set run= needs a run name"),
    (BASE, ["03_knn.k=abc"], "03_knn.k"),
])
def test_config_faults_exit_2_with_one_line(tmp_path, capsys, content, overrides, culprit):
    config = str(tmp_path) if content is None else _write(tmp_path, "c.yaml", content)
    args = ["run", "--config", config] + [a for o in overrides for a in ("--set", o)]
    assert pipeline_main(args) == 2
    err = capsys.readouterr().err
    assert culprit in err and err.count("\n") == 1 and "Traceback" not in err


def test_run_naming_an_existing_file_is_refused(tmp_path, capsys):
    config = _write(tmp_path, "c.yaml", BASE)
    existing = _write(tmp_path, "file", "")
    assert pipeline_main(["run", "--config", config, "--set", f"run={existing}"]) == 2
    assert "names a file" in capsys.readouterr().err


# ---- the boundary itself -------------------------------------------------------------------------------------
def test_unexpected_errors_ctrl_c_and_verbose(capsys):
    @boundary
    def fails(argv):
        raise OSError(28, "No space left on device", "/full/disk/x.npy")

    @boundary
    def interrupted(argv):
        raise KeyboardInterrupt

    assert fails(["a"]) == 2
    assert capsys.readouterr().err == "error: /full/disk/x.npy: no space left on the device\n"
    assert interrupted([]) == 130 and capsys.readouterr().err == "interrupted\n"
    with pytest.raises(OSError):  # --verbose: the traceback, for a bug report
        fails(["--verbose"])


# ---- valuation predict: a tiny saved model -------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from utils.valuation.features import Preprocessor
    from utils.valuation.model import HMGConfig, HMGNet
    from utils.valuation.saved import save_model

    df = pd.DataFrame({"listing_id": list("abcd"), "title": ["x phone"] * 4, "category": ["p", "p", "q", "q"],
                       "brand": ["b1", "b2", "b1", "b1"], "msrp": [100.0, 200.0, 300.0, 150.0],
                       "price": [50.0, 80.0, 90.0, 40.0], "age_years": [1.0, 2.0, 3.0, 4.0]})
    pre = Preprocessor.fit(df, np.array([0, 1, 2, 3]), ["box"], ["age_years"])
    cfg = HMGConfig(dsca=False, structure=False, global_image=False, market=False)
    folder = tmp_path_factory.mktemp("model") / "model"
    save_model(folder, HMGNet(cfg, pre.transform(df, progress_bar=False)), pre, (-3.0, 0.5), 0.8)
    return folder


LISTINGS = "listing_id,title,category,brand,msrp,age_years\n"


@pytest.mark.parametrize("listings, extra, culprit", [
    (LISTINGS, [], "no listings (a header without rows)"),
    (LISTINGS + "n,x phone,p,b1,120,old\n", [], "column 'age_years' needs numbers; text such as 'old'"),
    (LISTINGS + "n,x phone,p,b1,120,-15\n", [], "age_years' below 0"),
    (LISTINGS + "n,x phone,p,b1,120,2\n", ["--images", "/no/such/folder"], "no such photo folder"),
    (LISTINGS + "n,x phone,p,b1,120,2\n", ["--out", "{tmp}"], "Is a directory"),
])
def test_predict_refuses_what_it_cannot_price(tmp_path, capsys, saved_model, listings, extra, culprit):
    path = _write(tmp_path, "new.csv", listings)
    args = ["predict", "--model", str(saved_model), "--listings", path] + [e.format(tmp=tmp_path) for e in extra]
    assert valuation_main(args) == 2
    err = capsys.readouterr().err
    assert culprit in err and "Traceback" not in err


@pytest.mark.parametrize("damage, culprit", [
    (lambda m: (m / "model.json").write_text((m / "model.json").read_text()[:40]), "not valid JSON"),
    (lambda m: (m / "weights.safetensors").write_bytes((m / "weights.safetensors").read_bytes()[:30]),
     "unreadable weights"),
    (lambda m: (m / "model.json").write_text('{"format": 1}'), "incomplete or edited"),
])
def test_predict_names_a_damaged_model(tmp_path, capsys, saved_model, damage, culprit):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(saved_model, model)
    damage(model)
    path = _write(tmp_path, "new.csv", LISTINGS + "n,x phone,p,b1,120,2\n")
    assert valuation_main(["predict", "--model", str(model), "--listings", path]) == 2
    assert culprit in capsys.readouterr().err


def test_cheap_items_get_intervals_at_or_above_zero_and_odd_ages_are_said(tmp_path, capsys, caplog, saved_model):
    lo, hi = apply_interval(np.array([0.2, 5.0, 500.0]), (-3.0, 0.5))
    assert (lo >= 0).all() and lo[0] == 0.0 and (hi > lo).all()
    path = _write(tmp_path, "new.csv", LISTINGS + "n,x phone,p,b1,120,226\nm,x phone,q,b2,0.5,1\n")
    out = tmp_path / "priced.csv"
    with caplog.at_level(logging.WARNING):
        assert valuation_main(["predict", "--model", str(saved_model), "--listings", path, "--out", str(out)]) == 0
    assert "implausible values" in caplog.text and "[0]" in caplog.text
    assert (pd.read_csv(out)["lo_80"] >= 0).all()


def test_mapped_numbers_and_years_are_checked(tmp_path):
    from utils.valuation.listings import read_listings

    mapping = {"columns": {"title": "name"}, "numeric": {"kms": "Kms_Driven"},
               "age_from_year": {"column": "Year", "reference": 2020}}
    for body, culprit in (("name,Kms_Driven,Year\ncar,lots,2015\n", "column 'Kms_Driven' needs numbers"),
                          ("name,Kms_Driven,Year\ncar,100,2035\n", "a year after the reference year"),
                          ("name,Kms_Driven\ncar,100\n", "source column 'Year'")):
        with pytest.raises(DataError, match=culprit):
            read_listings(_write(tmp_path, "cars.csv", body), mapping=mapping, require_price=False)


# ---- the rest of the silent cases ---------------------------------------------------------------------------
def test_conflicting_duplicate_labels_are_refused(tmp_path):
    path = _write(tmp_path, "sol.csv", "posting_id,label_group\na,1\na,2\nb,1\n")
    with pytest.raises(DataError, match="listed twice with different"):
        read_truth(path, np.array(["a", "b"]))
    same = _write(tmp_path, "same.csv", "posting_id,label_group\na,1\na,1\nb,1\n")
    assert list(read_truth(same, np.array(["a", "b"]))[0]) == [1, 1]  # exact repeats are harmless


@pytest.mark.parametrize("name", ["../../../escaped", "a/b", "", "x@fold1", ".hidden", "a..b"])
def test_model_names_cannot_leave_the_run_folder(tmp_path, name):
    with pytest.raises(ValueError, match="must be plain"):
        RunStore(tmp_path).checkpoint_dir(name)


def test_scorer_and_generator_faults_exit_2(tmp_path, capsys):
    assert score_main(["--data", str(tmp_path), "--submission", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
    assert synth_main(["shopee", "--out", str(tmp_path / "x"), "--test-share", "2"]) == 2
    assert "--test-share must be between 0 and 1" in capsys.readouterr().err


def test_torch_geometric_leaves_no_generated_sources(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    code = "from utils.valuation.market import MarketGraph; MarketGraph(4, 3, 2)"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    assert not list(tmp_path.glob("*.py"))


def test_an_unreadable_photo_counts_as_missing_and_is_named(tmp_path, caplog):
    from PIL import Image

    from utils.valuation.features import Backbone, listing_images

    Image.new("RGB", (20, 20), (200, 10, 10)).save(tmp_path / "good.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    df = pd.DataFrame({"image": ["good.png", "bad.jpg", ""]})
    backbone = Backbone(backbone="resnet10t", weights=None, size=32, stage=1)
    with caplog.at_level("WARNING"):
        *_, has_image = listing_images(df, str(tmp_path), backbone, progress_bar=False)
    assert has_image.tolist() == [True, False, False]
    assert "1 photo(s) cannot be read" in caplog.text and "bad.jpg" in caplog.text
