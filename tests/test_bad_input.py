"""Bad input and faults: every case gets a clear error naming the culprit (or documented handling), never a
traceback, a silent wrong result or lost output. Command lines print one line and exit 2."""

import logging
import os
import pickle
import re
import tempfile

import numpy as np
import pandas as pd
import pytest
import torch

from utils.core.data import DataError, check_images, read_postings
from utils.core.io import write_json
from utils.core.paths import CONFIGS
from utils.core.score import main as score_main
from utils.run import kaggle, pipeline
from utils.valuation.listings import read_listings

POSTINGS = "posting_id,image,image_phash,title,label_group\n"


def row(pid: str, label: str = "1", title: str = "Kopi 250ml") -> str:
    return f"{pid},{pid}.jpg,ffffffffffffffff,{title},{label}\n"


# ---- postings, labels and submissions (utils.score and every matching stage) ---------------------------------
@pytest.mark.parametrize("content, culprit", [
    (POSTINGS.encode() + row("a").encode() + b"b,b.jpg,ffffffffffffffff,Caf\xe9 susu,1\n", "line 3 is not UTF-8"),
    (b"", "empty postings CSV (0 bytes)"),
    (b"\n\n", "empty postings CSV"),
    ((POSTINGS + row("a", "100000000000000000000") + row("b", "200000000000000000000")).encode(), "beyond 64 bits"),
    ((POSTINGS + row("a", "1.5")).encode(), "must be an integer"),
    ((POSTINGS + row("a") + row("a")).encode(), "duplicates"),
    ((POSTINGS + row("a", title=" ")).encode(), "'title' is empty"),
])
def test_bad_postings_name_the_culprit(tmp_path, content, culprit):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(culprit)):
        read_postings(path, require_labels=True)


def test_huge_labels_do_not_merge_groups(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text(POSTINGS + row("a", "9223372036854775807") + row("b", "-9223372036854775808"))
    assert read_postings(path, require_labels=True)["label_group"].nunique() == 2


@pytest.mark.parametrize("submission, culprit", [
    (b"", "empty submission CSV"),
    (b"posting_id,matches\na,a b\nb,\xff\n", "line 3 is not UTF-8"),
    (b"posting_id,matches\na,a a\nb,b\n", "repeats an id"),
    (b"posting_id,matches\na,a\n", "missing from the submission"),
])
def test_scorer_prints_one_line_and_exits_2(tmp_path, capsys, submission, culprit):
    data, sub = tmp_path / "data.csv", tmp_path / "sub.csv"
    data.write_text(POSTINGS + row("a") + row("b"))
    sub.write_bytes(submission)
    assert score_main(["--data", str(data), "--submission", str(sub)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and culprit in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_a_folder_or_a_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        read_postings(tmp_path)
    with pytest.raises(DataError, match="not found"):
        read_postings(tmp_path / "nope.csv")


# ---- images --------------------------------------------------------------------------------------------------
def test_truncated_jpeg_is_reported_before_training(tmp_path):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    raw = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(raw[: len(raw) * 2 // 3])  # verify() alone passes this one
    (tmp_path / "d.jpg").write_bytes(raw + b"appended video data" * 20)  # a motion photo: whole, with a tail
    report = check_images(pd.DataFrame({"image": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]}), tmp_path)
    assert report.unreadable == ["b.jpg"] and report.missing == ["c.jpg"]


# ---- pipeline configs and parameters (the run layer's own typos are in test_run_layer.py) ------------------
@pytest.mark.parametrize("text, overrides, culprit", [
    ("run: [demo\n", [], "not valid YAML"),
    ("", [], "a config is a mapping"),
    (None, ["03_knn.k=1"], "k must be at least 2"),
    (None, ["03_knn.k=abc"], "03_knn.k: expected int"),
    (None, ["04_postprocess.inb={rounds: 1, threshold: 2.0}"], "inb.threshold must be in [0, 1]"),
    (None, ["04_postprocess.min2=maybe"], "04_postprocess.min2: expected bool"),
    (None, ["04_postprocess.fp_weight=-1"], "fp_weight must be 'auto' or a positive number"),
    (None, ["05_stacker.model=catboost"], "model must be one of auto, lightgbm, xgboost, blend"),
    (None, ["05_stacker.fp_weight=autox"], "fp_weight must be 'auto' or a positive number"),
    (None, ["05_stacker.device=tpu"], "device must be one of auto, cpu, cuda"),
    (None, ["03_knn.precision=fp8"], "precision must be one of"),
    (None, ["01_train_arcface.cv=[texte]"], "cv names ['texte']"),
])
def test_pipeline_refuses_impossible_parameters_with_exit_2(tmp_path, capsys, text, overrides, culprit):
    config = CONFIGS / "demo.yaml"
    if text is not None:
        config = tmp_path / "bad.yaml"
        config.write_text(text)
    sets = [a for o in overrides for a in ("--set", o)]
    assert pipeline.main(["run", "--config", str(config), *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and culprit in err and "Traceback" not in err


# ---- listings (06_hmgnet_valuation) --------------------------------------------------------------------------
def write_listings(tmp_path, text: str):
    path = tmp_path / "listings.csv"
    path.write_text(text)
    return path


LISTINGS = "listing_id,title,price,msrp\n"


@pytest.mark.parametrize("body, culprit", [
    ("a,phone,inf,100\n", "'price' needs positive finite numbers"),
    ("a,phone,10,-5\n", "'msrp' needs positive finite numbers"),
    (",phone,10,100\n", "'listing_id' is empty in line(s) 2"),
    ("a,phone,10,100\na,case,5,9\n", "'listing_id' has duplicates"),
])
def test_bad_listings_name_column_and_line(tmp_path, body, culprit):
    with pytest.raises(DataError, match=re.escape(culprit)):
        read_listings(write_listings(tmp_path, LISTINGS + body))


def test_listing_text_na_stays_text_and_price_above_msrp_is_said(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        df = read_listings(write_listings(tmp_path, LISTINGS + "NA,NA,150,100\nN/A,ok,10,NaN\n"))
    assert df["listing_id"].tolist() == ["NA", "N/A"] and df["title"].tolist() == ["NA", "ok"]
    assert np.isnan(df["msrp"][1])  # a missing number written NaN is missing, not an error
    assert "priced above their msrp" in caplog.text and "line(s) 2" in caplog.text


def test_listings_encoding_and_empty_file(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes(LISTINGS.encode() + b"a,caf\xe9,10,100\n")
    with pytest.raises(DataError, match="line 2 is not UTF-8"):
        read_listings(path)
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty listings file"):
        read_listings(path)


# ---- generators ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, culprit", [
    (["shopee", "--groups", "2"], "need at least 4 groups"),
    (["shopee", "--groups", "40", "--test-share", "1.5"], "--test-share must be between 0 and 1"),
    (["market", "--n", "50", "--defect-rate", "-1"], "--defect-rate must be between 0 and 1"),
])
def test_generator_command_line_refuses_impossible_sizes(tmp_path, capsys, args, culprit):
    from utils.synth.__main__ import main as synth_main

    assert synth_main([args[0], "--out", str(tmp_path / "d"), *args[1:]]) == 2
    assert culprit in capsys.readouterr().err


# ---- Kaggle builder ------------------------------------------------------------------------------------------
def test_kaggle_out_naming_a_file_exits_2(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    args = ["build", "--config", str(CONFIGS / "shopee.yaml"), "--out", str(target), "--user", "tester"]
    assert kaggle.main(args) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["inputs/../configs/demo.yaml", "../elsewhere/train.csv", "/etc/hosts"])
def test_kaggle_paths_outside_inputs_are_refused(tmp_path, value):
    cfg = pipeline.load_config(CONFIGS / "shopee.yaml", [f"data.reference_csv={value}"])
    with pytest.raises(kaggle.KaggleBuildError, match="outside inputs/"):
        kaggle.build(cfg, "shopee.yaml", tmp_path, user="tester")


# ---- checkpoints, file modes, kernel secrets -----------------------------------------------------------------
class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    from utils.training.loop import load_encoder

    torch.save({"config": {}, "state_dict": {}, "payload": Payload()}, tmp_path / "best.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_encoder(tmp_path / "best.pt")


def test_written_files_are_readable_like_any_other(tmp_path):
    path = write_json(tmp_path / "m.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_kernel_connection_files_stay_inside_the_run_and_are_removed(tmp_path):
    folder = tmp_path / "run" / ".staging" / "x.kernel"
    with pipeline._kernel_files_in(folder) as forget:
        fd, name = tempfile.mkstemp(".json")  # what jupyter_client does for the connection file
        os.close(fd)
        assert name.startswith(str(folder)) and (folder.stat().st_mode & 0o777) == 0o700
        forget(notebook=None)  # nbclient's on_notebook_start: the kernel is up, the key file goes
        assert not list(folder.iterdir())
    assert not folder.exists() and not tempfile.gettempdir().startswith(str(folder))
