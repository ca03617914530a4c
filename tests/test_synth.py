import hashlib
import json

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from utils.core.data import read_postings, require_images
from utils.core.text import extract_quantities
from utils.synth import __main__ as synth_cli
from utils.synth.shopee import generate, group_sizes


def test_group_size_distribution_like_shopee():
    sizes = group_sizes(20_000, np.random.default_rng(0))
    assert np.median(sizes) == 2 and 5 <= np.quantile(sizes, 0.95) <= 8
    assert sizes.min() == 2 and sizes.max() == 50 and 2.8 < sizes.mean() < 3.4


def test_files_valid_and_phash_true(tiny_demo):
    train = read_postings(tiny_demo / "train.csv", require_labels=True)
    test = read_postings(tiny_demo / "test.csv")
    solution = read_postings(tiny_demo / "test_solution.csv", require_labels=True)
    assert "label_group" not in test and list(solution["posting_id"]) == list(test["posting_id"])
    assert require_images(train, tiny_demo / "train_images").all()
    assert require_images(test, tiny_demo / "test_images").all()
    for _, row in train.head(10).iterrows():
        assert str(imagehash.phash(Image.open(tiny_demo / "train_images" / row["image"]))) == row["image_phash"]
    assert not set(train["label_group"]) & set(solution["label_group"])  # open set: test groups are new


def test_deterministic_for_seed(tmp_path, tiny_demo):
    generate(tmp_path, groups=40, seed=1)
    for name in ("train.csv", "test.csv"):
        assert (tmp_path / name).read_bytes() == (tiny_demo / name).read_bytes()
    some = pd.read_csv(tmp_path / "train.csv")["image"].iloc[0]
    digest = [hashlib.md5((d / "train_images" / some).read_bytes()).hexdigest() for d in (tmp_path, tiny_demo)]
    assert digest[0] == digest[1]
    generate(tmp_path / "other", groups=40, seed=2)
    assert (tmp_path / "other" / "train.csv").read_bytes() != (tiny_demo / "train.csv").read_bytes()


def _digests(folder) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.md5(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file() and f.name != "synth.json"}


def test_photos_render_in_parallel_with_the_same_files(tmp_path):
    """Only the rendering runs on the workers: every draw stays in one stream, so the worker count changes nothing."""
    one, three = (generate(tmp_path / str(w), groups=300, seed=4, workers=w) for w in (1, 3))
    assert one == three and one["train_rows"] + one["test_rows"] > 600  # enough photos for more than one process
    assert _digests(tmp_path / "1") == _digests(tmp_path / "3")


def test_realistic_structure(tmp_path):
    generate(tmp_path, groups=300, seed=5)
    df = pd.concat([pd.read_csv(tmp_path / "train.csv"), pd.read_csv(tmp_path / "test_solution.csv")])
    # the same image reused across groups, and within groups
    per_hash = df.groupby("image_phash")["label_group"].nunique()
    assert (per_hash > 1).any() and df["image_phash"].duplicated().mean() > 0.05
    # units written several ways, and sizes as hard negatives: same words, another quantity
    units = df["title"].map(extract_quantities)
    spellings = {q.text.replace(" ", "").strip("0123456789.").lower() for qs in units for q in qs if q.kind == "weight"}
    assert {"g", "gr", "gram"} <= spellings
    assert df["title"].str.contains(r"\\x[0-9a-f]{2}", regex=True).any()  # literal byte escapes, as in real titles
    assert df["title"].str.contains("READY|ORI|COD", case=False).mean() > 0.2


def test_cli(tmp_path, capsys):
    assert synth_cli.main(["shopee", "--out", str(tmp_path), "--groups", "12", "--seed", "0"]) == 0
    assert '"train_rows"' in capsys.readouterr().out and (tmp_path / "test_images").is_dir()


def test_cli_market_modes(tmp_path, capsys):
    assert synth_cli.main(["market", "--out", str(tmp_path / "ind"), "--n", "12", "--seed", "0"]) == 0
    assert '"mode": "independent"' in capsys.readouterr().out  # the default
    assert synth_cli.main(["market", "--out", str(tmp_path / "al"), "--n", "12", "--mode", "aligned"]) == 0
    assert json.loads((tmp_path / "al" / "market.json").read_text())["mode"] == "aligned"
    capsys.readouterr()
    assert synth_cli.main(["market", "--out", str(tmp_path / "bad"), "--n", "12", "--mode", "logit"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mode must be one of independent, aligned, got 'logit'" in err
    assert not (tmp_path / "bad").exists()
