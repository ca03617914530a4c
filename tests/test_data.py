import numpy as np
import pandas as pd
import pytest
from PIL import Image

from utils.core.data import DataError, assign_folds, decode_title, read_postings, read_truth, require_images


def write(tmp_path, rows, name="train.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def good_rows(n=6):
    return {"posting_id": [f"train_{i}" for i in range(n)], "image": [f"{i}.jpg" for i in range(n)],
            "image_phash": ["a7b618bd4636498d"] * n, "title": [f"Item {i}" for i in range(n)],
            "label_group": [i // 2 for i in range(n)]}


def test_decode_title_real_escapes():
    assert decode_title(r"Nescafe \xc3\x89clair Latte 220ml") == "Nescafe Éclair Latte 220ml"
    assert decode_title("plain 30gr") == "plain 30gr"
    assert decode_title(r"bad \xff byte") == "bad \ufffd byte"


def test_real_titles_load_and_decode(real_titles):
    df = read_postings(real_titles / "dev.csv", require_labels=True)
    assert len(df) == 1499 and df["label_group"].nunique() == 500
    assert not df["title"].str.contains(r"\\x[0-9a-f]{2}", regex=True).any()
    head = read_postings(real_titles / "kaggle_test_head.csv")
    assert len(head) == 3 and "label_group" not in head


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("title"), "missing column(s) ['title']"),
    (lambda r: r["posting_id"].__setitem__(3, "train_0"), "'posting_id' has duplicates ['train_0']"),
    (lambda r: r["image_phash"].__setitem__(2, "zz18bd4636498d00"), "'image_phash' must be 16 hex digits"),
    (lambda r: r["image_phash"].__setitem__(2, "a7b618bd"), "CSV line(s) 4"),
    (lambda r: r["title"].__setitem__(5, "   "), "'title' is empty in 1 row(s), CSV line(s) 7"),
    (lambda r: r["label_group"].__setitem__(1, "abc"), "'label_group' must be an integer"),
])
def test_validation_errors_name_file_column_row(tmp_path, change, message):
    rows = good_rows()
    change(rows)
    path = write(tmp_path, rows)
    with pytest.raises(DataError) as e:
        read_postings(path, require_labels=True)
    assert str(path) in str(e.value) and message in str(e.value)


def test_missing_file_and_labels(tmp_path):
    with pytest.raises(DataError, match="postings CSV not found"):
        read_postings(tmp_path / "nope.csv")
    rows = good_rows()
    rows.pop("label_group")
    with pytest.raises(DataError, match="label_group"):
        read_postings(write(tmp_path, rows), require_labels=True)


def test_images_missing_and_unreadable(tmp_path):
    df = read_postings(write(tmp_path, good_rows()))
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), "red").save(folder / f"{i}.jpg")
    (folder / "4.jpg").write_bytes(b"not a jpeg")  # 5.jpg missing
    with pytest.raises(DataError) as e:
        require_images(df, folder)
    msg = str(e.value)
    assert "1 missing (5.jpg)" in msg and "1 unreadable (4.jpg)" in msg and "data.images: false" in msg
    usable = require_images(df, folder, on_bad="skip")
    assert usable.tolist() == [True, True, True, True, False, False]
    with pytest.raises(DataError, match="images folder not found"):
        require_images(df, tmp_path / "absent")


def test_folds_group_split_and_seed(real_titles):
    df = read_postings(real_titles / "dev.csv", require_labels=True)
    folds = assign_folds(df, n_splits=5, seed=3)
    per_group = pd.Series(folds).groupby(df["label_group"].to_numpy()).nunique()
    assert (per_group == 1).all()  # no group on both sides of a split
    assert set(folds) == set(range(5))
    np.testing.assert_array_equal(folds, assign_folds(df, n_splits=5, seed=3))
    assert not np.array_equal(folds, assign_folds(df, n_splits=5, seed=4))


def test_read_truth_aligns_and_reports_missing(tmp_path):
    path = write(tmp_path, good_rows(), "solution.csv")
    assert read_truth(path, np.array(["train_3", "train_0"]))[0].tolist() == [1, 0]
    with pytest.raises(DataError, match="no 'label_group' for 1 posting"):
        read_truth(path, np.array(["train_0", "test_9"]))


def test_read_postings_backend_is_checked(real_titles):
    assert len(read_postings(real_titles / "dev.csv", backend="pandas")) == 1499
    with pytest.raises(ValueError, match="backend"):
        read_postings(real_titles / "dev.csv", backend="polars")


def test_training_pool_adds_test_postings_as_distractors(tmp_path):
    from utils.core.data import distractor_mask, read_training, scored_rows

    train = write(tmp_path, good_rows(6))
    test_rows = {**good_rows(10), "posting_id": [f"test_{i}" for i in range(10)],
                 "label_group": [0] * 10}  # the test file's labels (equal to a train group's) are never read
    test = write(tmp_path, test_rows, "test.csv")
    pool = read_training(train, test, "auto", seed=1)
    assert len(pool) == 10 and list(pool["posting_id"][:6]) == [f"train_{i}" for i in range(6)]
    mask = distractor_mask(pool)
    assert mask.tolist() == [False] * 6 + [True] * 4 and scored_rows(pool).tolist() == list(range(6))
    assert pool["posting_id"][mask].str.startswith("test_").all()
    labels = pool["label_group"].to_numpy()
    assert len(set(labels[mask])) == 4 and not set(labels[mask]) & set(labels[~mask])  # a group of its own each
    assert read_training(train, test, "auto", seed=1).equals(pool)  # every stage draws the same rows
    assert len(read_training(train, test, 10)) == 16
    assert read_training(train, test, 0).equals(read_postings(train, require_labels=True))
    assert not distractor_mask(read_postings(train, require_labels=True)).any()
    small = write(tmp_path, {k: v[:3] for k, v in test_rows.items()}, "small.csv")
    assert len(read_training(train, small, "auto")) == 6  # a test split no larger than train: no distractors
    with pytest.raises(DataError, match="from 0 to the 10 test rows"):
        read_training(train, test, 11)
    with pytest.raises(DataError, match="no test_csv"):
        read_training(train, "", "auto")
    clash = write(tmp_path, good_rows(10), "clash.csv")
    with pytest.raises(DataError, match="also training rows"):
        read_training(train, clash, 2)


def test_pool_folds_keep_the_training_rows_folds(tmp_path):
    from utils.core.data import read_training

    n = 40
    rows = {"posting_id": [f"p{i}" for i in range(n)], "image": ["a.jpg"] * n, "image_phash": ["a7b618bd4636498d"] * n,
            "title": [f"t {i}" for i in range(n)], "label_group": [i // 2 for i in range(n)]}
    train = write(tmp_path, rows)
    test = write(tmp_path, {**rows, "posting_id": [f"q{i}" for i in range(n)]}, "test.csv")
    pool = read_training(train, test, 13)
    folds = assign_folds(pool, n_splits=5, seed=2)
    np.testing.assert_array_equal(folds[:n], assign_folds(read_postings(train, require_labels=True), 5, seed=2))
    assert folds[n:].tolist() == [i % 5 for i in range(13)]


def test_distractor_images_are_found_from_the_train_images_folder(tmp_path):
    from utils.core.data import read_training

    (tmp_path / "train_images").mkdir()
    (tmp_path / "test_images").mkdir()
    for folder, n in (("train_images", 6), ("test_images", 4)):
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / folder / f"{i}.jpg")
    test = write(tmp_path, {**good_rows(4), "posting_id": [f"test_{i}" for i in range(4)]}, "test.csv")
    pool = read_training(write(tmp_path, good_rows(6)), test, 4, tmp_path / "test_images")
    assert require_images(pool, tmp_path / "train_images").all()
    assert pool["image"].iloc[-1].startswith(str((tmp_path / "test_images").resolve()))
