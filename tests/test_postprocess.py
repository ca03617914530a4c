from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from utils.core.metric import score
from utils.matching import postprocess as pp
from utils.matching.blend import blend, neighbour_weights
from utils.matching.chisel import chisel, size_tail
from utils.matching.decide import ModelThreshold, model_matches
from utils.matching.fusion import FUSIONS, fuse, to_neighbours
from utils.matching.rules import Rule, apply_rules, brand, extract_attributes, model_codes, pair_status


def as_sets(m):
    return [set(m.indices[m.indptr[i]:m.indptr[i + 1]].tolist()) for i in range(m.shape[0])]


# the seed's chisel example: rows A, B, C, D with their neighbours by similarity
IDX = np.array([[0, 2, 1, 3], [1, 0, 2, 3], [2, 0, 1, 3], [3, 2, 1, 0]], dtype=np.int32)
SIMS = np.array([[1.0, 0.8, 0.5, 0.1], [1.0, 0.5, 0.4, 0.2], [1.0, 0.8, 0.4, 0.3], [1.0, 0.3, 0.2, 0.1]],
                dtype=np.float32)


def test_chisel_hand_computed():
    # train: one group of 4 and six pairs -> a quarter of the rows sit in groups of 3 or more
    train = np.array([0] * 4 + [g for g in range(1, 7) for _ in range(2)])
    np.testing.assert_allclose(size_tail(train)[2:5], [1.0, 0.25, 0.25])
    everything = model_matches(IDX, SIMS, ModelThreshold(0.0))
    out = as_sets(chisel(everything, train))
    # size 3 allowed to 1 of 4 rows: the best 3rd value is A's (0.5); size 4 then to nobody
    assert out == [{0, 2, 1}, {1, 0}, {2, 0}, {3, 2}]
    loose = as_sets(chisel(everything, train, slack=4.0))  # slack 4: every row may keep its 4
    assert loose == [{0, 1, 2, 3}] * 4


def test_neighbour_weights_inb_and_qe():
    W = neighbour_weights(IDX, SIMS, threshold=0.45).toarray()
    np.testing.assert_allclose(W[0], [1.0, 0.5, 0.8, 0.0])  # A: itself, C (0.8), B (0.5); D below threshold
    np.testing.assert_allclose(W[3], [0.0, 0.0, 0.0, 1.0])  # D: nobody passes, itself only
    dba = neighbour_weights(IDX, SIMS, k=2, alpha=0.0).toarray()
    np.testing.assert_allclose(dba[1], [1.0, 1.0, 0.0, 0.0])  # itself and its first neighbour, equal weights
    qe = neighbour_weights(IDX, SIMS, k=2, alpha=2.0).toarray()
    assert qe[0, 2] == pytest.approx(0.64)


def test_blend_pulls_group_together():
    X = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    idx = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 0]], dtype=np.int32)
    sims = (X[idx] * X[:, None, :]).sum(-1).astype(np.float32)
    Y = blend(X, neighbour_weights(idx, sims, threshold=0.7))
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, rtol=1e-6)
    assert Y[0] @ Y[1] > X[0] @ X[1]  # the two rows that match come closer
    np.testing.assert_allclose(Y[2], X[2])  # row 2 has no neighbour above 0.7: unchanged
    Ys = blend(sp.csr_matrix(X), neighbour_weights(idx, sims, threshold=0.7))
    np.testing.assert_allclose(Ys.toarray(), Y, rtol=1e-6)


def test_fusions_and_probabilistic_union():
    S = np.array([[0.5, 0.2], [0.4, 0.9]])
    np.testing.assert_allclose(FUSIONS["prob_union"](S), [0.5 + 0.4 - 0.2, 0.2 + 0.9 - 0.18])
    np.testing.assert_allclose(FUSIONS["mean"](S), [0.45, 0.55])
    np.testing.assert_allclose(FUSIONS["max"](S), [0.5, 0.9])
    np.testing.assert_allclose(FUSIONS["prod"](S), [0.2, 0.18])
    a = np.eye(3, dtype=np.float32)
    b = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0, 1]], dtype=np.float32)
    neigh = {m: (np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1]], np.int32), np.zeros((3, 3), np.float32))
             for m in ("a", "b")}
    idx, sims = fuse({"a": a, "b": b}, neigh, "prob_union", k=3)
    assert idx[1, :2].tolist() == [1, 0] and sims[1, 1] == pytest.approx(0.6)  # a says 0, b says 0.6
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse({"a": a, "b": b}, neigh, "median")


def test_fold_embedding_compares_each_pair_in_its_first_rows_fold_space():
    from utils.core.store import FoldEmbedding
    from utils.matching.fusion import pair_similarity

    fold0 = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)  # row 0's fold model: rows 0 and 1 alike
    fold1 = np.array([[1, 0], [0, 1], [0, 1]], dtype=np.float32)  # rows 1 and 2's model: row 1 like row 2
    X = FoldEmbedding((fold0, fold1), np.array([0, 1, 1]))
    rows, cols = np.array([0, 1, 1, 2]), np.array([1, 0, 2, 0])
    np.testing.assert_allclose(pair_similarity(X, rows, cols), [1.0, 0.0, 1.0, 0.0])
    neigh = {m: (np.array([[0, 1, 2], [1, 2, 0], [2, 1, 0]], np.int32), np.zeros((3, 3), np.float32))
             for m in ("a", "b")}
    idx, sims = fuse({"a": X, "b": np.eye(3, dtype=np.float32)}, neigh, "prob_union", k=3)
    assert sims[0, 1] == pytest.approx(1.0) and sims[1, 1] == pytest.approx(1.0) and idx[1, 1] == 2
    inb = pp.PostConfig(models=["a", "b"], inb={"rounds": 1, "threshold": 0.3}, k=3)
    with pytest.raises(KeyError, match="a cross-validated model"):  # no single space to blend in
        pp.prepare({"a": X, "b": np.eye(3, dtype=np.float32)}, neigh, inb)
    resolved = pp.with_blend_models(inb, {"a": X, "b": np.eye(3, dtype=np.float32)})
    assert resolved.inb["models"] == ["b"]  # so the test split, where "a" has one space, blends "b" alone too
    test_side = pp.prepare({"a": np.eye(3, dtype=np.float32), "b": np.eye(3, dtype=np.float32)}, neigh, resolved)
    assert test_side["a"][0] is neigh["a"][0]


def test_to_neighbours_self_first_and_padding():
    idx, sims = to_neighbours(np.array([0, 0, 1]), np.array([1, 0, 1]), np.array([0.3, 0.0, 0.0]), n=2, k=3)
    assert idx.tolist() == [[0, 1, 0], [1, 1, 1]] and sims[0].tolist() == pytest.approx([1.0, 0.3, -1.0])


def test_attributes_on_real_titles():
    assert model_codes("Alat Cukur Rambut / Happy King / HK900") == {"hk900"}
    assert model_codes("Fresh Sari Lemon 250ml") == set()  # a quantity is not a model code
    assert brand("[READY STOCK] FREEMAN Mask 175ML") == "freeman"
    titles = pd.Series(["Kojie San Cream 30g", "Kojie San Cream 30gr", "Fresh Sari Lemon 250ml",
                        "Fresh Sari Lemon 500ml", "Happy King HK900", "Happy King HK800"])
    attrs = extract_attributes(titles)
    idx = np.array([[0, 1], [1, 0], [2, 3], [3, 2], [4, 5], [5, 4]], dtype=np.int32)
    status = pair_status(attrs, idx)
    conflict, shared = status["quantity"]
    assert not conflict[0, 1] and shared[0, 1]  # 30g = 30gr
    assert conflict[2, 1] and not shared[2, 1]  # 250ml vs 500ml
    assert status["model"][0][4, 1]  # HK900 vs HK800
    sims = np.array([[1.0, 0.9]] * 6, dtype=np.float32)
    i2, s2 = apply_rules(idx, sims, status, [Rule("unit conflict", "quantity", "conflict", 1.0)])
    assert s2[2, 1] == pytest.approx(-0.1) and s2[0, 1] == pytest.approx(0.9) and (i2 == idx).all()


def test_postprocess_recipe_on_real_titles(real_titles):
    from utils.core.data import assign_folds, read_postings
    from utils.matching.embed import embed
    from utils.matching.knn import neighbours

    df = read_postings(real_titles / "dev.csv", require_labels=True)
    labels = df["label_group"].to_numpy()
    emb = {m: embed(m, df) for m in ("tfidf_word", "tfidf_char")}
    neigh = {m: neighbours(X, k=20)[:2] for m, X in emb.items()}
    attrs = extract_attributes(df["title"])
    cfg = pp.PostConfig(models=list(emb), inb={"threshold": 0.5}, units=True, rules=True, chisel=True, k=20)
    steps = [name for name, _ in pp.ablation_steps(cfg, "tfidf_char")]
    assert steps == ["best single model, threshold", "+ min2", "+ union of models + pHash", "+ INB",
                     "+ unit check", "+ attribute rules", "+ chisel"]
    prepared = pp.prepare(emb, neigh, cfg)
    status = pp.statuses(prepared, attrs, cfg)
    fitted = pp.fit(prepared, status, labels, df, cfg)
    assert fitted.rules[0].delta == 1.0 and fitted.chisel_slack in pp.CHISEL_GRID
    m = pp.apply(prepared, status, df, fitted, labels, cfg)
    assert np.diff(m.indptr).max() <= 50 and score(m, labels).f1 > 0.85
    oof = pp.out_of_fold(prepared, status, labels, assign_folds(df, 3, 0), df, cfg)
    assert oof.shape == m.shape and (oof.diagonal() > 0).all() and np.diff(oof.indptr).max() <= 50
    assert 0.8 < score(oof, labels).f1 <= score(m, labels).f1 + 0.02
    with pytest.raises(KeyError, match="fusion needs the embeddings"):
        pp.prepare({}, neigh, pp.PostConfig(models=list(emb), fusion="mean"))


def test_fp_weight_for_test_size():
    assert pp.fp_weight_for("auto", 1500, 3000) == 2.0
    assert pp.fp_weight_for(1, 1500, 3000) == 1.0
    for bad in (0, -1.0, "big"):
        with pytest.raises(ValueError, match="fp_weight"):
            pp.fp_weight_for(bad, 1500, 3000)
    with pytest.raises(ValueError, match="rows in both splits"):
        pp.fp_weight_for("auto", 0, 3000)


def test_inb_blends_only_the_models_it_names():
    rng = np.random.default_rng(0)
    X = {m: rng.standard_normal((40, 8)).astype(np.float32) for m in ("a", "b")}
    X = {m: x / np.linalg.norm(x, axis=1, keepdims=True) for m, x in X.items()}
    from utils.matching.knn import neighbours

    neigh = {m: neighbours(x, k=10)[:2] for m, x in X.items()}
    cfg = pp.PostConfig(models=["a", "b"], inb={"rounds": 1, "threshold": 0.3, "models": ["b"]}, k=10)
    out = pp.prepare(X, neigh, cfg)
    assert out["a"][0] is neigh["a"][0]  # not named: 03's neighbours as they were
    assert not np.array_equal(out["b"][1], neigh["b"][1])  # blended and searched again
    with pytest.raises(KeyError, match="inb.models names"):
        pp.prepare(X, neigh, pp.PostConfig(models=["a"], inb={"models": ["c"]}, k=10))


def test_fusion_of_some_models_keeps_the_others_beside_it():
    rng = np.random.default_rng(1)
    X = {m: rng.standard_normal((30, 6)).astype(np.float32) for m in ("a", "b", "c")}
    X = {m: x / np.linalg.norm(x, axis=1, keepdims=True) for m, x in X.items()}
    from utils.matching.knn import neighbours

    neigh = {m: neighbours(x, k=8)[:2] for m, x in X.items()}
    cfg = pp.PostConfig(models=["a", "b", "c"], fusion="prob_union", fusion_models=["a", "b"], k=8)
    out = pp.prepare({"a": X["a"], "b": X["b"]}, neigh, cfg)  # "c" has out-of-fold neighbours only
    assert set(out) == {"fused", "c"} and out["c"][0] is neigh["c"][0]
    expected = fuse({m: X[m] for m in "ab"}, {m: neigh[m] for m in "ab"}, "prob_union", 8)
    np.testing.assert_array_equal(out["fused"][0], expected[0])
    with pytest.raises(KeyError, match="fusion needs the embeddings"):
        pp.prepare({"a": X["a"]}, neigh, cfg)
    with pytest.raises(KeyError, match="fusion_models names"):
        pp.prepare(X, neigh, pp.PostConfig(models=["a", "b"], fusion="mean", fusion_models=["z"], k=8))


def test_distractors_tighten_the_tuned_thresholds(real_titles):
    from utils.core.data import assign_folds, read_training, scored_rows
    from utils.matching.embed import embed
    from utils.matching.knn import neighbours

    def tuned(pool):
        labels, scored = pool["label_group"].to_numpy(), scored_rows(pool)
        neigh = {"tfidf_char": neighbours(embed("tfidf_char", pool), k=20)[:2]}
        cfg = pp.PostConfig(models=["tfidf_char"], k=20)
        status = pp.statuses(neigh, {}, cfg)
        fitted = pp.fit(neigh, status, labels, pool, cfg, rows=scored)
        oof = pp.out_of_fold(neigh, status, labels, assign_folds(pool, 3, 0), pool, cfg, scored)
        return fitted.thresholds.models["tfidf_char"].threshold, score(oof, labels, scored)

    alone, alone_oof = tuned(read_training(real_titles / "dev.csv"))
    pooled, pooled_oof = tuned(read_training(real_titles / "dev.csv", real_titles / "test.csv", "auto"))
    assert pooled_oof.n_rows == alone_oof.n_rows == 1499  # distractors are matched, never scored
    assert pooled > alone  # each dev row now meets a test row's look-alikes: a stricter threshold
    assert pooled_oof.precision < alone_oof.precision  # and the out-of-fold estimate meets them too


def test_closure_joins_a_chain_the_thresholds_cannot_reach():
    labels = np.array([0, 0, 0, 1, 1])  # rows 0 and 2 are alike only through row 1
    idx = np.array([[0, 1, 3, 2, 4], [1, 0, 2, 3, 4], [2, 1, 4, 0, 3], [3, 4, 0, 1, 2], [4, 3, 2, 0, 1]], np.int32)
    sims = np.array([[1, .95, .4, .3, .1], [1, .95, .95, .2, .1], [1, .95, .4, .3, .1], [1, .9, .4, .2, .1],
                     [1, .9, .4, .1, .1]], np.float32)
    neigh = {"a": (idx, sims)}
    cfg = pp.PostConfig(models=["a"], min2=False, phash_exact=False, joint=False)
    status = pp.statuses(neigh, {}, cfg)
    plain = pp.fit(neigh, status, labels, None, cfg)
    assert score(pp.apply(neigh, status, None, plain, labels, cfg), labels).f1 == pytest.approx(0.92)
    closed = pp.fit(neigh, status, labels, None, replace(cfg, closure=True))
    assert closed.closure.max_size == 3 and closed.to_dict()["closure"] == vars(closed.closure)
    assert score(pp.apply(neigh, status, None, closed, labels, cfg), labels).f1 == 1.0
    assert [n for n, _ in pp.ablation_steps(replace(cfg, closure=True), "a")][-1] == "+ closure"
