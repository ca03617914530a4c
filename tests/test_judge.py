"""The real-titles judge: unknown pHashes, real distractors from a file, Usage-aware scoring, the frozen split,
and the same-image keys of 04 and 05."""

import json

import numpy as np
import pandas as pd
import pytest

from utils.core import judge
from utils.core.data import DataError, distractor_mask, read_postings, read_training, read_truth, scored_rows
from utils.matching import postprocess as pp
from utils.matching.decide import exact_matches
from utils.matching.embed import embed, phash_bits


def write(tmp_path, rows, name):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def rows(n, prefix="p", phash="a7b618bd4636498d", group=lambda i: i // 2):
    return {"posting_id": [f"{prefix}{i}" for i in range(n)], "image": [f"{prefix}{i}.jpg" for i in range(n)],
            "image_phash": [phash] * n, "title": [f"Item {prefix} {i}" for i in range(n)],
            "label_group": [group(i) for i in range(n)]}


def test_an_empty_phash_is_unknown_and_a_malformed_one_still_an_error(tmp_path):
    r = rows(4)
    r["image_phash"][1] = ""
    df = read_postings(write(tmp_path, r, "a.csv"))
    assert df["image_phash"].tolist()[:2] == ["a7b618bd4636498d", ""]
    r["image_phash"][2] = "xyz"
    with pytest.raises(DataError, match="16 hex digits .* or empty"):
        read_postings(write(tmp_path, r, "b.csv"))


def test_phash_models_treat_unknown_rows_as_missing_and_refuse_a_file_without_any():
    bits = phash_bits(pd.Series(["ffffffffffffffff", "", "0000000000000000"]))
    assert np.allclose(np.linalg.norm(bits, axis=1), [1, 0, 1]) and float(bits[0] @ bits[2]) == pytest.approx(-1)
    with pytest.raises(ValueError, match="no row of this file has one: remove 'phash'"):
        embed("phash", pd.DataFrame({"image_phash": ["", ""]}))


def test_exact_matches_ignore_empty_keys_and_union_key_columns():
    phash = np.array(["a", "a", "", "", "b"], dtype=object)
    image = np.array(["1.jpg", "2.jpg", "3.jpg", "3.jpg", "4.jpg"], dtype=object)
    pairs = lambda m: {(int(i), int(j)) for i, j in zip(*m.nonzero(), strict=True) if i != j}  # noqa: E731
    assert pairs(exact_matches(phash)) == {(0, 1), (1, 0)}  # the two unknown pHashes do not match
    assert pairs(exact_matches([phash, image])) == {(0, 1), (1, 0), (2, 3), (3, 2)}
    frame = pd.DataFrame({"image_phash": phash, "image": image})
    cfg = pp.PostConfig(models=["m"], phash_exact=False, image_exact=True)
    assert [list(k) for k in pp.exact_keys(frame, cfg)] == [list(image)]
    assert pp.exact_keys(frame, pp.PostConfig(models=["m"], phash_exact=False)) is None


def test_distractors_come_from_a_file_of_real_singles(tmp_path):
    train = write(tmp_path, rows(6), "train.csv")
    test = write(tmp_path, rows(20, "t", group=lambda i: 100), "test.csv")
    singles = write(tmp_path, rows(8, "s", phash="", group=lambda i: 1000 + i), "singles.csv")
    pool = read_training(train, test, "auto", distractors_csv=singles, seed=3)
    mask = distractor_mask(pool)
    assert len(pool) == 14 and mask.sum() == 8  # auto wants 14 (test size - train), the file has 8
    assert pool["posting_id"][mask].str.startswith("s").all() and scored_rows(pool).tolist() == list(range(6))
    assert not set(pool["label_group"][mask]) & set(pool["label_group"][~mask])
    assert read_training(train, test, 5, distractors_csv=singles, seed=3)["posting_id"].str.startswith("s").sum() == 5
    with pytest.raises(DataError, match=r"from 0 to the 8 rows of .*singles.csv"):
        read_training(train, test, 9, distractors_csv=singles)
    with pytest.raises(DataError, match="cannot be distractors"):
        read_training(train, test, 2, distractors_csv=train)


def test_truth_with_usage_scores_the_rows_not_ignored(tmp_path):
    r = {**rows(4), "Usage": ["Private", "Private", "Ignored", "ignored "]}
    path = write(tmp_path, r, "truth.csv")
    labels, scored = read_truth(path, np.array(["p3", "p0", "p1", "p2"]))
    assert labels.tolist() == [1, 0, 0, 1] and scored.tolist() == [1, 2]
    assert read_truth(write(tmp_path, rows(2), "plain.csv"), np.array(["p0", "p1"]))[1].tolist() == [0, 1]
    with pytest.raises(DataError, match="every row is marked Ignored"):
        read_truth(write(tmp_path, {**rows(2), "Usage": ["Ignored"] * 2}, "none.csv"), np.array(["p0"]))


def test_score_command_leaves_ignored_rows_out(tmp_path, capsys):
    from utils.core.score import main

    data = write(tmp_path, {**rows(4, group=lambda i: [0, 0, 1, 2][i]),
                            "Usage": ["Private", "Private", "Ignored", "Ignored"]}, "truth.csv")
    # p0 also matches the distractor p2: precision 1/2 on p0 (F1 2/3 there), 1 on p1; p2, p3 not scored
    sub = pd.DataFrame({"posting_id": ["p0", "p1", "p2", "p3"], "matches": ["p0 p1 p2", "p1 p0", "p2", "p3 p0"]})
    sub.to_csv(tmp_path / "sub.csv", index=False)
    assert main(["--data", str(data), "--submission", str(tmp_path / "sub.csv")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_rows"] == 2 and result["f1"] == pytest.approx((0.8 + 1.0) / 2)


def test_the_committed_judge_is_the_frozen_split():
    assert judge.main(["check"]) == 0
    frames = judge.build()
    train, singles, validation = frames["train"], frames["train_singles"], frames["validation"]
    scored = validation[validation[judge.USAGE_COLUMN] != judge.IGNORED]
    assert scored["label_group"].nunique() == 355 and len(validation) - len(scored) == 3290
    assert not set(train["label_group"]) & set(validation["label_group"])  # whole groups on one side
    assert not set(train["posting_id"]) & set(validation["posting_id"]) | set(singles["posting_id"]) & set(
        validation["posting_id"])
    assert len(train) == 1499 + 2241 - len(scored)  # dev.csv + the extra groups not held out


def test_judge_split_is_seeded_and_refuses_shared_groups():
    dev = pd.DataFrame(rows(4))
    groups = pd.DataFrame(rows(20, "g", group=lambda i: 10 + i // 2))
    singles = pd.DataFrame(rows(10, "s", group=lambda i: 100 + i))
    a, b = judge.split_frames(dev, groups, singles, seed=1), judge.split_frames(dev, groups, singles, seed=1)
    assert all(a[k].equals(b[k]) for k in a)
    assert not a["validation"].equals(judge.split_frames(dev, groups, singles, seed=2)["validation"])
    assert (a["validation"]["Usage"] == "Ignored").sum() == 5 and len(a["train"]) == 4 + 10
    with pytest.raises(DataError, match="both dev.csv and the extra groups"):
        judge.split_frames(dev, pd.DataFrame(rows(4)), singles)


def test_same_image_pair_feature():
    from utils.matching import stacker as st

    df = pd.DataFrame({**rows(3), "image": ["a.jpg", "/abs/path/a.jpg", "b.jpg"]})
    df["image_phash"] = ["", "a7b618bd4636498d", "a7b618bd4636498d"]
    idx = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
    neigh = {"m": (idx, np.array([[1, 0.9, 0.1]] * 3, dtype=np.float32))}
    feats = st.PairFeatures(neigh, df, same_image=True)(np.array([0, 0, 1]), np.array([1, 2, 2]))
    assert feats["same_image"].tolist() == [1.0, 0.0, 0.0]
    assert np.isnan(feats["phash_hamming"][0]) and feats["phash_hamming"].tolist()[2] == 0.0
    assert "same_image" not in st.PairFeatures(neigh, df)(np.array([0]), np.array([1]))
    assert "phash_hamming" not in st.PairFeatures(neigh, df, phash=False)(np.array([0]), np.array([1]))


def test_compare_scores_runs_against_the_first(tmp_path, capsys):
    data = write(tmp_path, {**rows(4, group=lambda i: [0, 0, 1, 2][i]),
                            "Usage": ["Private", "Private", "Ignored", "Ignored"]}, "validation.csv")
    subs = {"a": ["p0", "p1", "p2", "p3"], "b": ["p0 p1", "p1 p0", "p2", "p3"]}
    for run, matches in subs.items():
        folder = tmp_path / run / "05_stacker"
        folder.mkdir(parents=True)
        pd.DataFrame({"posting_id": ["p0", "p1", "p2", "p3"], "matches": matches}).to_csv(folder / "submission.csv",
                                                                                          index=False)
    table = judge.compare([tmp_path / "a", tmp_path / "b"], data)
    assert table["f1"].tolist() == pytest.approx([2 / 3, 1.0]) and table["vs_first"].tolist() == pytest.approx(
        [0, 1 / 3])
    assert judge.main(["compare", "--out", str(tmp_path)]) == 2
    with pytest.raises(DataError, match="no 04_postprocess or 05_stacker submission"):
        judge.compare([tmp_path / "missing"], data)


def test_records_of_tables_for_metrics():
    from utils.core.io import records

    table = pd.DataFrame({"rmsle": [0.1, 0.2]}, index=pd.Index(["a", "b"], name="model"))
    assert records(table) == [{"model": "a", "rmsle": 0.1}, {"model": "b", "rmsle": 0.2}]
    assert records(pd.DataFrame({"x": [1]})) == [{"x": 1}] and records(None) is None
