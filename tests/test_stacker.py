import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from utils.core.data import assign_folds, read_postings
from utils.core.metric import score
from utils.matching import stacker as st
from utils.matching.decide import ModelThreshold, cap, model_matches, ranked, tune_model
from utils.matching.embed import embed
from utils.matching.knn import neighbours

DF = pd.DataFrame({"title": ["Kopi Susu 250ml Kapal", "kopi susu 250 ml kapal", "Teh Hijau 500ml", "Teh Hijau 1L"],
                   "image_phash": ["ffffffffffffffff", "fffffffffffffff0", "0000000000000000", "0000000000000003"]})
IDX = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [2, 3, 0, 1], [3, 2, 1, 0]], dtype=np.int32)
SIMS = np.array([[1.0, 0.9, 0.2, 0.1], [1.0, 0.9, 0.3, 0.1], [1.0, 0.6, 0.2, 0.1], [1.0, 0.6, 0.1, 0.1]],
                dtype=np.float32)


def test_candidates_and_recall():
    rows, cols = st.candidates({"a": (IDX, SIMS)}, k=2)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 1), (1, 0), (2, 3), (3, 2)]
    assert st.candidate_recall(rows, cols, np.array([0, 0, 1, 1])) == 1.0
    assert st.candidate_recall(rows, cols, np.array([0, 0, 0, 1])) == pytest.approx(2 / 6)


def test_features_of_a_hand_made_pair():
    rows, cols = np.array([0, 2]), np.array([1, 3])
    X = st.build_features({"a": (IDX, SIMS)}, rows, cols, DF, thresholds={"a": 0.5})
    first = X.iloc[0]
    assert first["a_sim"] == pytest.approx(0.9) and first["a_rank_ij"] == 1 and first["a_rank_ji"] == 1
    assert first["a_row_mean"] == pytest.approx((0.9 + 0.2 + 0.1) / 3)
    assert first["a_minus_kth"] == pytest.approx(0.9 - 0.1)  # k-th neighbour clipped to the list: 0.1
    assert first["a_n_above_i"] == 1
    assert first["phash_hamming"] == 4
    assert first["title_jaccard"] == pytest.approx(3 / 6)  # {kopi susu 250ml kapal} vs {kopi susu 250 ml kapal}
    assert first["unit_mismatch"] == 0 and first["same_brand"] == 1
    second = X.iloc[1]
    assert second["unit_mismatch"] == 1  # 500ml vs 1L
    assert second["phash_hamming"] == 2 and second["shared_numbers"] == 0
    assert set(X.columns) >= {"common_neighbours", "component_size", "title_edit_ratio", "title_len_diff", "a_z"}


def test_pair_folds_have_no_group_leakage(real_titles):
    df = read_postings(real_titles / "dev.csv", require_labels=True)
    labels = df["label_group"].to_numpy()
    neigh = {"c": neighbours(embed("tfidf_char", df), k=10)[:2]}
    rows, cols = st.candidates(neigh, 10)
    folds = assign_folds(df, 5, 0)
    for train, val in st.pair_folds(rows, cols, folds):
        seen = set(labels[rows[train]]) | set(labels[cols[train]])
        assert not seen & set(labels[rows[val]])
        assert len(val) and len(train)


def decide(P, threshold, min2_threshold=None):
    return cap(model_matches(*ranked(P), ModelThreshold(threshold, min2_threshold)))


def test_pair_probabilities_decided_by_the_threshold_min2_rule():
    P = st.pair_matrix(np.array([0, 1, 2, 3]), np.array([1, 0, 3, 2]), np.array([0.9, 0.7, 0.3, 0.3]), 4)
    assert P[0, 1] == pytest.approx(0.8)  # mean of both directions
    idx, sims = ranked(P)
    assert idx[:, 0].tolist() == [0, 1, 2, 3] and sims[:, 0].tolist() == [1.0] * 4
    assert idx[0, 1] == 1 and sims[0, 1] == pytest.approx(0.8)
    m = decide(P, 0.5)
    assert [set(m.indices[m.indptr[i]:m.indptr[i + 1]]) for i in range(4)] == [{0, 1}, {0, 1}, {2}, {3}]
    m2 = decide(P, 0.5, min2_threshold=0.25)
    assert set(m2.indices[m2.indptr[2]:m2.indptr[3]]) == {2, 3}


def test_ranked_orders_each_row_and_pads_short_rows():
    P = sp.csr_matrix(np.array([[0, 0.2, 0.9, 0.5], [0.2, 0, 0, 0], [0.9, 0, 0, 0], [0.5, 0, 0, 0]], np.float32))
    idx, sims = ranked(P)
    assert idx.shape == (4, 4) and idx[0].tolist() == [0, 2, 3, 1]
    assert sims[0].tolist() == pytest.approx([1, 0.9, 0.5, 0.2])
    assert idx[1].tolist() == [1, 0, 1, 1] and sims[1].tolist() == pytest.approx([1, 0.2, -1, -1])


def test_pair_matrix_keeps_zero_probabilities_aligned():
    # p(0,1) = 0 in one direction and p(2,3) = 0 in both: sparse sums would drop them and misalign
    P = st.pair_matrix(np.array([0, 1, 2, 3, 0]), np.array([1, 0, 3, 2, 4]), np.array([0.0, 0.6, 0.0, 0.0, 0.5]), 5)
    assert P[0, 1] == pytest.approx(0.3) and P[1, 0] == pytest.approx(0.3)
    assert P[2, 3] == 0 and P[4, 0] == pytest.approx(0.5) and P[0, 4] == pytest.approx(0.5)


def test_stacker_end_to_end_deterministic(real_titles):
    df = read_postings(real_titles / "dev.csv", require_labels=True)
    df = df[df["label_group"].isin(df["label_group"].unique()[:150])].reset_index(drop=True)
    labels = df["label_group"].to_numpy()
    emb = {m: embed(m, df) for m in ("tfidf_word", "tfidf_char")}
    neigh = {m: neighbours(X, k=20)[:2] for m, X in emb.items()}
    rows, cols = st.candidates(neigh, 20)
    X = st.build_features(neigh, rows, cols, df, emb)
    y = (labels[rows] == labels[cols]).astype(int)
    folds = assign_folds(df, 3, 0)
    cfg = st.StackerConfig(n_estimators=50, seed=3)
    p1 = st.out_of_fold(X, y, rows, cols, folds, cfg)
    p2 = st.out_of_fold(X, y, rows, cols, folds, cfg)
    np.testing.assert_array_equal(p1, p2)
    P = st.pair_matrix(rows, cols, p1, len(df))
    rule = tune_model(*ranked(P), labels)
    assert score(decide(P, rule.threshold, rule.min2_threshold), labels).f1 > 0.8
    px = st.out_of_fold(X, y, rows, cols, folds, st.StackerConfig(model="xgboost", n_estimators=50))
    assert px.shape == p1.shape and 0 <= px.min() and px.max() <= 1
    with pytest.raises(ValueError, match="lightgbm"):
        st.make_classifier(st.StackerConfig(model="catboost"))
    # chunked featurising and scoring (the 70,000-row path) gives the one-shot figures
    features = st.PairFeatures(neigh, df, emb)
    pd.testing.assert_frame_equal(features(rows[:100], cols[:100]), X.iloc[:100].reset_index(drop=True))
    clf = st.make_classifier(cfg).fit(X, y)
    np.testing.assert_allclose(st.predict_pairs(clf, features, rows, cols, chunk=97),
                               clf.predict_proba(X)[:, 1], rtol=1e-6)


def test_training_sample_keeps_positives_and_reweights_negatives():
    y = np.array([1] * 10 + [0] * 990)
    kept, weight = st.training_sample(y, 110, seed=0)
    assert set(np.flatnonzero(y == 1)) <= set(kept.tolist())
    rate = 100 / 990
    assert 60 < (y[kept] == 0).sum() < 140 and np.allclose(weight[y[kept] == 0], 1 / rate)
    assert (weight[y[kept] == 1] == 1).all()
    kept, weight = st.training_sample(y, None)
    assert len(kept) == 1000 and (weight == 1).all()
    with pytest.raises(ValueError, match="no room for negatives"):
        st.training_sample(y, 10)


def test_graph_features_hand_computed():
    # p01 = 0.9, p12 = 0.6, p02 = 0.3, p23 = 0.005 (below the floor: dropped)
    r, c = np.array([0, 1, 0, 2]), np.array([1, 2, 2, 3])
    P = st.pair_matrix(r, c, np.array([0.9, 0.6, 0.3, 0.005]), 4)
    g = st.GraphFeatures(P, strong=0.5, floor=0.01)(np.array([0, 0, 2]), np.array([1, 2, 3]))
    np.testing.assert_allclose(g["g_prob"], [0.9, 0.3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(g["g_two_hop"], [0.3 * 0.6, 0.9 * 0.6, 0.0], rtol=1e-6)
    assert g["g_strong_paths"].tolist() == [0.0, 1.0, 0.0]  # 0 -> 1 -> 2 is the one strong two-hop path
    np.testing.assert_allclose(g["g_total_i"], [1.2, 1.2, 0.9], rtol=1e-6)
    assert g["g_rank_ij"].tolist() == [1.0, 2.0, 3.0] and g["g_rank_ji"].tolist() == [1.0, 2.0, 3.0]
    assert g["g_same_component"].tolist() == [1.0, 1.0, 0.0] and g["g_component_size"].tolist() == [3.0, 3.0, 3.0]
    joined = st.joined(st.GraphFeatures(P), st.GraphFeatures(P, strong=0.95))(np.array([0]), np.array([1]))
    assert joined.shape == (1, 24)


def test_pairs_of_two_distractors_have_no_target_and_are_not_trained_on():
    labels = np.array([0, 0, 1, 7, 8])
    distractor = np.array([False, False, False, True, True])
    rows, cols = np.array([0, 0, 2, 3, 3]), np.array([1, 3, 3, 4, 0])
    assert st.pair_targets(rows, cols, labels, distractor).tolist() == [1, 0, 0, -1, 0]
    assert st.pair_targets(rows, cols, labels).tolist() == [1, 0, 0, 0, 0]
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.random(300)})
    y = np.where(X["a"] > 0.5, 1, 0).astype(np.int8)
    y[:50] = -1
    clf = st.fit(X, y, st.StackerConfig(n_estimators=20))
    assert clf.classes_.tolist() == [0, 1]  # -1 never reached the classifier as a third class


def test_blend_averages_lightgbm_and_xgboost():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"signal": rng.random(400), "noise": rng.random(400)})
    y = (X["signal"] > 0.6).to_numpy().astype(np.int8)
    clf = st.fit(X, y, st.StackerConfig(model="blend", n_estimators=20))
    members = [m.predict_proba(X)[:, 1] for m in clf.estimators_]
    assert [type(m).__name__ for m in clf.estimators_] == ["LGBMClassifier", "XGBClassifier"]
    np.testing.assert_allclose(clf.predict_proba(X)[:, 1], (members[0] + members[1]) / 2, rtol=1e-6)
    imp = st.importance(clf, list(X.columns))
    assert imp.index[0] == "signal" and imp.sum() == pytest.approx(1.0)


def test_eligible_decisions_follow_the_stage_and_closure_settings():
    from types import SimpleNamespace

    names = [st.FIRST_STAGE, st.FIRST_STAGE + st.CLOSED, st.SECOND_STAGE, st.SECOND_STAGE + st.CLOSED]
    decisions = [SimpleNamespace(name=n) for n in names]
    allowed = lambda s, c: [d.name for d in decisions if st.eligible(d, s, c)]  # noqa: E731
    assert allowed("auto", "auto") == names
    assert allowed(False, "auto") == names[:2] and allowed(True, False) == [st.SECOND_STAGE]
    assert allowed("auto", True) == [names[1], names[3]]


def test_auto_booster_is_xgboost_only_where_it_trains_on_cuda(monkeypatch):
    auto = st.StackerConfig()
    assert auto.model == "auto"  # the default
    monkeypatch.setattr(st, "cuda_available", lambda: False)
    assert st.chosen_model(auto) == "lightgbm" and type(st.make_classifier(auto)).__name__ == "LGBMClassifier"
    monkeypatch.setattr(st, "cuda_available", lambda: True)
    monkeypatch.setattr(st, "xgboost_has_cuda", lambda: True)
    clf = st.make_classifier(auto)
    assert st.chosen_model(auto) == "xgboost" and type(clf).__name__ == "XGBClassifier"
    assert clf.get_params()["device"] == "cuda"
    assert st.chosen_model(st.StackerConfig(device="cpu")) == "lightgbm"  # asked for the CPU
    monkeypatch.setattr(st, "xgboost_has_cuda", lambda: False)  # the xgboost-cpu wheel
    assert st.chosen_model(auto) == "lightgbm"
    assert st.chosen_model(st.StackerConfig(model="blend")) == "blend"
    with pytest.raises(ValueError, match="'auto', 'lightgbm'"):
        st.make_classifier(st.StackerConfig(model="catboost"))
