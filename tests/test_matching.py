import numpy as np
import pytest
import scipy.sparse as sp

from utils.core.metric import row_scores, score
from utils.matching.decide import (
    CLOSURE_VALUE,
    Closure,
    ModelThreshold,
    PairSpace,
    Thresholds,
    cap,
    combine,
    component_matches,
    decide_scores,
    exact_matches,
    f1_curve,
    largest_group,
    model_matches,
    tune,
    tune_closure,
    tune_model,
    tuned_decisions,
    union,
)

# 4 rows; labels: {0,1} and {2,3}. Row 3's nearest other is row 2 at 0.45.
IDX = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0], [3, 2, 1]], dtype=np.int32)
SIMS = np.array([[1.0, 0.8, 0.3], [1.0, 0.8, 0.2], [1.0, 0.45, 0.1], [1.0, 0.45, 0.05]], dtype=np.float32)
LABELS = np.array([0, 0, 1, 1])


def as_sets(m):
    return [set(m.indices[m.indptr[i]:m.indptr[i + 1]].tolist()) for i in range(m.shape[0])]


def test_threshold_and_min2():
    assert as_sets(model_matches(IDX, SIMS, ModelThreshold(0.5))) == [{0, 1}, {0, 1}, {2}, {3}]
    # min2 forces the nearest other row in, but only above its own threshold
    assert as_sets(model_matches(IDX, SIMS, ModelThreshold(0.5, 0.4))) == [{0, 1}, {0, 1}, {2, 3}, {2, 3}]
    assert as_sets(model_matches(IDX, SIMS, ModelThreshold(0.5, 0.6))) == [{0, 1}, {0, 1}, {2}, {3}]


def test_f1_curve_matches_metric():
    grid = np.array([0.1, 0.4, 0.5, 0.9])
    for min2 in (None, 0.4):
        curve = f1_curve(IDX, SIMS, LABELS, grid, min2)
        for g, thr in enumerate(grid):
            m = model_matches(IDX, SIMS, ModelThreshold(float(thr), min2))
            assert curve[g] == pytest.approx(score(m, LABELS).f1)


def test_f1_curve_with_fp_weight_matches_metric():
    grid = np.array([0.1, 0.4, 0.5, 0.9])
    curve = f1_curve(IDX, SIMS, LABELS, grid, None, fp_weight=3.0)
    for g, thr in enumerate(grid):
        m = model_matches(IDX, SIMS, ModelThreshold(float(thr)))
        assert curve[g] == pytest.approx(row_scores(m, LABELS, 3.0)[0].mean())


def test_fp_weight_tunes_for_a_larger_split():
    # rows 0 and 1 match; below 0.7 each also takes row 2 (a look-alike) and then its true partner.
    # Alone at t = 0.5 each scores 4/5 (1 at best), at t = 0.75 2/3: the loose threshold wins on this split,
    # but with three times the look-alikes (fp_weight 3) row 0 scores 4/7 at 0.5 and the strict one wins.
    idx = np.array([[0, 2, 1], [1, 2, 0], [2, 0, 1]], dtype=np.int32)
    sims = np.array([[1.0, 0.7, 0.6], [1.0, 0.7, 0.6], [1.0, 0.3, 0.2]], dtype=np.float32)
    labels, grid = np.array([0, 0, 1]), np.array([0.5, 0.65, 0.75])
    assert tune_model(idx, sims, labels, grid=grid, min2=False).threshold == 0.5
    assert tune_model(idx, sims, labels, grid=grid, min2=False, fp_weight=3.0).threshold == 0.75


def test_tune_model_finds_perfect_threshold():
    t = tune_model(IDX, SIMS, LABELS)
    assert score(model_matches(IDX, SIMS, t), LABELS).f1 == 1.0
    assert 0.3 < t.threshold <= 0.8 or (t.min2_threshold is not None and t.min2_threshold <= 0.45)


def test_phash_matches_groups_and_limit():
    ph = np.array(["a", "a", "b", "c", "c", "c"])
    assert as_sets(exact_matches(ph, max_group=50)) == [{0, 1}, {0, 1}, {2}, {3, 4, 5}, {3, 4, 5}, {3, 4, 5}]
    assert as_sets(exact_matches(ph, max_group=2))[3] == set()  # a hash shared by 3 rows is ignored


def test_cap_keeps_self_and_best():
    n = 60
    idx = np.tile(np.arange(n), (n, 1))
    sims = np.tile(np.linspace(1.0, 0.5, n, dtype=np.float32), (n, 1))
    for i in range(n):  # put self first, sorted
        order = [i] + [j for j in range(n) if j != i]
        idx[i] = order
    m = cap(model_matches(idx.astype(np.int32), sims, ModelThreshold(0.0)), 50)
    counts = np.diff(m.indptr)
    assert counts.max() == 50 and all(i in s for i, s in enumerate(as_sets(m)))
    assert as_sets(m)[0] == set(range(50))


def test_union_and_thresholds_roundtrip():
    th = Thresholds({"a": ModelThreshold(0.5, None)}, phash_exact=True)
    ph = np.array(["x", "y", "z", "z"])
    m = combine({"a": (IDX, SIMS)}, th, ph)
    assert as_sets(m) == [{0, 1}, {0, 1}, {2, 3}, {2, 3}]
    assert Thresholds.from_dict(th.to_dict()).to_dict() == th.to_dict()
    with pytest.raises(KeyError, match="no neighbours"):
        combine({}, th, ph)


def test_out_of_fold_tunes_on_other_folds():
    rng = np.random.default_rng(0)
    n_groups, size = 40, 3
    labels = np.repeat(np.arange(n_groups), size)
    emb = rng.standard_normal((n_groups, 16))[labels] + 0.3 * rng.standard_normal((len(labels), 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    from utils.matching.knn import neighbours

    idx, sims, _ = neighbours(emb.astype(np.float32), k=10, backend="numpy")
    folds = labels % 4
    from utils.matching import postprocess as pp

    cfg = pp.PostConfig(models=["m"], phash_exact=False)
    f1, precision, recall = row_scores(pp.out_of_fold({"m": (idx, sims)}, {"m": None}, labels, folds, None, cfg),
                                       labels)
    assert 0.5 < f1.mean() <= 1.0 and 0 < precision.mean() <= 1 and 0 < recall.mean() <= 1
    full = tune({"m": (idx, sims)}, labels, phash_exact=False)
    assert score(combine({"m": (idx, sims)}, full), labels).f1 >= f1.mean() - 1e-9


def test_pair_space_scores_the_union_like_the_sparse_matrices():
    # the tuner's pair space must give row_scores of the union of model_matches (+ pHash) exactly
    rng = np.random.default_rng(1)
    n, k = 60, 6
    labels = rng.integers(0, 15, n)
    neigh = {}
    for m in ("a", "b"):
        idx = np.concatenate([np.arange(n)[:, None], rng.integers(0, n, (n, k - 1))], axis=1).astype(np.int32)
        sims = np.concatenate([np.ones((n, 1)), np.sort(rng.random((n, k - 1)), axis=1)[:, ::-1]], axis=1)
        neigh[m] = (idx, sims.astype(np.float32))
    phash = rng.integers(0, 40, n).astype(str)
    rows = np.flatnonzero(rng.random(n) < 0.6)
    rules = {"a": ModelThreshold(0.55, 0.3), "b": ModelThreshold(0.7)}
    fixed = [exact_matches(phash)]
    space = PairSpace(neigh, labels, fixed, rows, fp_weight=1.7)
    matched = np.logical_or.reduce([space.fixed, *(space.matched(m, t) for m, t in rules.items())])
    union_matrix = union([model_matches(*neigh[m], t) for m, t in rules.items()] + fixed)
    assert space.f1(matched) == pytest.approx(row_scores(union_matrix, labels, 1.7)[0][rows].mean(), abs=1e-12)
    # the incremental scan over one model's thresholds gives the same figures
    others = space.fixed | space.matched("b", rules["b"])
    cands = [ModelThreshold(t, 0.3) for t in (0.3, 0.55, 0.9)]
    direct = [space.f1(others | space.matched("a", c)) for c in cands]
    np.testing.assert_allclose(space.f1_varying(others, "a", cands), direct, atol=1e-12)


def test_cap_ties_keep_column_order():
    m = sp.csr_matrix(np.array([[0.0, 0.5, 0.5, 0.5, 0.9], [0.2, 1.0, 0.0, 0.0, 0.0]] + [[0] * 5] * 3))
    capped = cap(m, 3)
    assert as_sets(capped)[0] == {0, 4, 1} and as_sets(capped)[1] == {1, 0}
    assert capped[0, 0] == 1.0 and capped[0, 4] == 0.9


def pair_scores(n, pairs):
    """Symmetric N x N scores from {(i, j): score}."""
    r, c, v = zip(*[(i, j, p) for (i, j), p in pairs.items()], strict=True)
    m = sp.csr_matrix((v, (r, c)), shape=(n, n))
    return (m + m.T).tocsr()


def test_component_matches_join_chains_within_the_size_limit():
    P = pair_scores(5, {(0, 1): 0.9, (1, 2): 0.85, (3, 4): 0.6})
    m = component_matches(P, Closure(0.8))
    assert as_sets(m) == [{0, 1, 2}, {0, 1, 2}, {0, 1, 2}, {3}, {4}]  # 0 and 2 joined through 1
    assert np.allclose(m.data, CLOSURE_VALUE)
    assert as_sets(component_matches(P, Closure(0.8, max_size=2))) == [set(), set(), set(), {3}, {4}]  # too big


def test_closure_adds_a_groups_weak_pair_and_is_tuned_beside_the_rule():
    labels = np.array([0, 0, 0, 1, 2])
    P = pair_scores(5, {(0, 1): 0.9, (1, 2): 0.9, (0, 2): 0.2, (3, 4): 0.3})
    rule = ModelThreshold(0.5)
    alone, closed = decide_scores(P, rule), decide_scores(P, rule, Closure(0.8))
    assert as_sets(alone)[0] == {0, 1} and as_sets(closed)[0] == {0, 1, 2}
    assert score(alone, labels).f1 == pytest.approx((0.8 + 1 + 0.8 + 1 + 1) / 5)  # rows 0, 2: 2*2/(2+3)
    assert score(closed, labels).f1 == 1.0
    assert largest_group(labels) == 3 and largest_group(labels, np.array([3, 4])) == 1
    tuned, closure = tune_closure(P, labels, rule)
    assert closure.max_size == 3 and 0.2 < closure.threshold <= 0.9
    assert score(decide_scores(P, tuned, closure), labels).f1 == 1.0
    assert decide_scores(P, rule, Closure(0.8, max_size=2)).nnz == alone.nnz  # a component of 3 is too big


def test_closure_is_off_when_it_only_chains_other_groups():
    labels = np.array([0, 0, 1, 1])
    P = pair_scores(4, {(0, 1): 0.9, (2, 3): 0.9, (1, 2): 0.6})
    rule = ModelThreshold(0.5)  # lets the wrong pair (1, 2) in
    assert score(decide_scores(P, rule), labels).f1 == pytest.approx(0.9)  # rows 1, 2: 2*2/(3+2)
    assert score(decide_scores(P, rule, Closure(0.6)), labels).f1 == pytest.approx(2 / 3)  # one chain of four
    assert tune_closure(P, labels, rule) == (rule, None)  # within groups of 2, or above 0.6, it adds nothing


def test_tuned_decisions_score_the_rule_and_the_rule_beside_closure():
    labels = np.array([0, 0, 0, 1, 2])
    P = pair_scores(5, {(0, 1): 0.9, (1, 2): 0.9, (0, 2): 0.2, (3, 4): 0.3})
    plain, closed = tuned_decisions("s", P, labels, fp_weight=2.0)
    assert (plain.name, closed.name) == ("s", "s + closure") and plain.closure is None
    assert plain.scores.f1 == pytest.approx((0.8 + 1 + 0.8 + 1 + 1) / 5)  # 0.2 < any tuned threshold
    assert closed.scores.f1 == 1.0 and closed.closure.max_size == 3 and closed.f1_test_size == 1.0
    assert plain.f1_test_size == pytest.approx(score(plain.matches, labels, fp_weight=2.0).f1)
    row = closed.summary()
    assert row["decision"] == "s + closure" and row["closure_threshold"] == closed.closure.threshold
    assert plain.summary()["closure_threshold"] is None
    only = tuned_decisions("s", P, labels, rows=np.array([3, 4]), closure=False)
    assert [d.name for d in only] == ["s"] and only[0].f1_test_size == only[0].scores.f1  # weight 1: the plain F1
