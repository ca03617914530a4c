import json

import numpy as np
import pandas as pd
import pytest

from utils.core import score as score_cli
from utils.core.metric import group_sizes, matches_from_lists, row_scores, score


def brute_force(pred: dict[str, list[str]], groups: dict[str, int]):
    """The metric from its definition, with Python sets."""
    f1s, ps, rs = [], [], []
    for pid, g in groups.items():
        truth = {q for q, h in groups.items() if h == g}
        p = set(pred.get(pid, []))
        inter = len(p & truth)
        f1s.append(2 * inter / (len(p) + len(truth)))
        ps.append(inter / len(p) if p else 0.0)
        rs.append(inter / len(truth))
    return np.mean(f1s), np.mean(ps), np.mean(rs)


LABELS = np.array([1, 1, 1, 2, 2, 3])


def test_hand_computed_rows():
    # row 0: exact group {0,1,2}; row 1: partial {1}; row 2: over-full {0..5}; row 3: empty;
    # row 4: {4,3} exact; row 5: {5,0} (singleton group, one wrong)
    m = matches_from_lists([[0, 1, 2], [1], [0, 1, 2, 3, 4, 5], [], [4, 3], [5, 0]], 6)
    f1, p, r = row_scores(m, LABELS)
    np.testing.assert_allclose(f1, [1.0, 2 * 1 / 4, 2 * 3 / 9, 0.0, 1.0, 2 * 1 / 3])
    np.testing.assert_allclose(p, [1.0, 1.0, 0.5, 0.0, 1.0, 0.5])
    np.testing.assert_allclose(r, [1.0, 1 / 3, 1.0, 0.0, 1.0, 1.0])
    s = score(m, LABELS)
    assert s.n_rows == 6 and s.f1 == pytest.approx(f1.mean())


def test_fp_weight_counts_each_false_positive_that_many_times():
    m = matches_from_lists([[0, 1, 2], [1], [0, 1, 2, 3, 4, 5], [], [4, 3], [5, 0]], 6)
    f1, p, r = row_scores(m, LABELS, fp_weight=2.0)
    # row 2: 3 hits and 3 false positives -> |P| counts 3 + 2*3; row 5: 1 hit, 1 false positive -> 1 + 2*1
    np.testing.assert_allclose(f1, [1.0, 2 * 1 / 4, 2 * 3 / (9 + 3), 0.0, 1.0, 2 * 1 / (3 + 1)])
    np.testing.assert_allclose(p, [1.0, 1.0, 3 / 9, 0.0, 1.0, 1 / 3])
    np.testing.assert_allclose(r, [1.0, 1 / 3, 1.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(row_scores(m, LABELS, fp_weight=1.0)[0], row_scores(m, LABELS)[0])
    with pytest.raises(ValueError, match="fp_weight"):
        row_scores(m, LABELS, fp_weight=0.0)


def test_duplicates_in_matrix_count_once():
    m = matches_from_lists([[0, 0, 1], [1], [2], [3], [4], [5]], 6)
    f1, _, _ = row_scores(m, LABELS)
    assert f1[0] == pytest.approx(2 * 2 / (2 + 3))


def test_group_sizes():
    assert list(group_sizes(LABELS)) == [3, 3, 3, 2, 2, 1]


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="labels have 5 rows"):
        row_scores(matches_from_lists([[0]] * 6, 6), LABELS[:5])


@pytest.fixture
def data_csv(tmp_path):
    rng = np.random.default_rng(0)
    n = 30
    df = pd.DataFrame({"posting_id": [f"p{i}" for i in range(n)], "image": [f"{i}.jpg" for i in range(n)],
                       "image_phash": [f"{rng.integers(2**63):016x}" for _ in range(n)],
                       "title": [f"title {i}" for i in range(n)], "label_group": rng.integers(0, 8, n)})
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False)
    return path, df


def test_cli_agrees_with_brute_force(data_csv, tmp_path, capsys):
    path, df = data_csv
    rng = np.random.default_rng(1)
    ids = df["posting_id"].tolist()
    pred = {pid: list(rng.choice(ids, size=rng.integers(0, 6), replace=False)) for pid in ids}
    sub = tmp_path / "sub.csv"
    pd.DataFrame({"posting_id": ids, "matches": [" ".join(pred[p]) for p in ids]}).to_csv(sub, index=False)
    assert score_cli.main(["--data", str(path), "--submission", str(sub)]) == 0
    out = json.loads(capsys.readouterr().out)
    f1, p, r = brute_force(pred, dict(zip(df["posting_id"], df["label_group"], strict=True)))
    assert out["n_rows"] == len(df)
    assert out["f1"] == pytest.approx(f1) and out["precision"] == pytest.approx(p) and out["recall"] == pytest.approx(r)
    selves = tmp_path / "selves.csv"  # a baseline that predicts each row alone
    pd.DataFrame({"posting_id": ids, "matches": ids}).to_csv(selves, index=False)
    assert score_cli.main(["--data", str(path), "--submission", str(sub), "--baseline", str(selves)]) == 0
    out = json.loads(capsys.readouterr().out)
    base_f1 = brute_force({q: [q] for q in ids}, dict(zip(df["posting_id"], df["label_group"], strict=True)))[0]
    assert out["baseline_f1"] == pytest.approx(base_f1)
    d = out["difference"]
    assert d["difference"] == pytest.approx(f1 - base_f1) and d["low"] <= d["difference"] <= d["high"]


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.iloc[1:], "missing from the submission"),
    (lambda s: pd.concat([s, s.iloc[:1]]), "duplicate posting_id"),
    (lambda s: s.assign(posting_id=s["posting_id"].where(s.index != 0, "zzz")), "not in the data"),
    (lambda s: s.assign(matches=s["matches"].where(s.index != 0, "p0 nope")), "unknown id"),
    (lambda s: s.assign(matches=s["matches"].where(s.index != 0, "p0 p0")), "repeats an id"),
    (lambda s: s.rename(columns={"matches": "m"}), "missing column"),
])
def test_cli_rejects_bad_submissions(data_csv, tmp_path, capsys, mutate, message):
    path, df = data_csv
    good = pd.DataFrame({"posting_id": df["posting_id"], "matches": df["posting_id"]})
    sub = tmp_path / "bad.csv"
    mutate(good).to_csv(sub, index=False)
    assert score_cli.main(["--data", str(path), "--submission", str(sub)]) == 2
    assert message in capsys.readouterr().err


def test_bootstrap_difference_resamples_groups():
    from utils.core.metric import bootstrap_difference

    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    base = np.full(8, 0.5)
    same = bootstrap_difference(base, base, labels, n_boot=200)
    assert same["difference"] == 0 and same["low"] == 0 and same["high"] == 0
    better = bootstrap_difference(base + 0.1, base, labels, n_boot=200)
    assert better["difference"] == pytest.approx(0.1) and better["low"] == pytest.approx(0.1)
    mixed = bootstrap_difference(np.array([1, 1, 0, 0, .5, .5, .5, .5]), base, labels, n_boot=500, seed=1)
    assert mixed["difference"] == pytest.approx(0.0) and mixed["low"] < 0 < mixed["high"]
    with pytest.raises(ValueError, match="one F1 per row"):
        bootstrap_difference(base[:3], base, labels)


def test_score_over_some_rows():
    labels = np.array([0, 0, 1, 2])
    m = matches_from_lists([[0, 1], [1], [2, 3], [3]], 4)
    # row F1: 1, 2/3, 2/3, 1; recall 1, 1/2, 1, 1
    assert score(m, labels).f1 == pytest.approx(5 / 6)
    s = score(m, labels, rows=np.array([0, 1]))
    assert s.f1 == pytest.approx(5 / 6) and s.recall == pytest.approx(0.75) and s.n_rows == 2
    assert score(m, labels, rows=np.array([2]), fp_weight=3.0).f1 == pytest.approx(2 / 5)
