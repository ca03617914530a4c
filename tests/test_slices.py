"""Test-like validation slices: fold k's rows among test postings, each model out of sample, no pair across slices."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from utils.core.data import DataError, scored_rows
from utils.core.store import RunStore
from utils.matching import slices
from utils.matching import stacker as st
from utils.matching.embed import embed

TRAIN = pd.DataFrame({"posting_id": [f"tr{i}" for i in range(6)], "image": [f"{i}.jpg" for i in range(6)],
                      "image_phash": ["f" * 16] * 6,
                      "title": ["kopi susu 250ml", "kopi susu 250 ml", "teh hijau 500ml", "teh hijau botol",
                                "sabun mandi cair", "sabun mandi cair 1L"],
                      "label_group": [1, 1, 2, 2, 3, 3]})
TEST = pd.DataFrame({"posting_id": [f"te{i}" for i in range(5)], "image": [f"t{i}.jpg" for i in range(5)],
                     "image_phash": ["0" * 16] * 5,
                     "title": ["kopi hitam", "kopi hitam 200g", "susu bubuk", "teh melati", "sabun batang"],
                     "label_group": [1, 1, 2, 2, 3]})  # the test file's labels: never read by the slices
FOLDS = np.array([0, 0, 1, 1, 1, 1], dtype=np.int8)


def test_slices_hold_each_fold_and_test_postings_up_to_the_test_size():
    sl = slices.build(TRAIN, TEST, FOLDS, seed=0)
    assert sl.bounds == [(0, 5), (5, 10)]  # 2 + 3 test postings, then 4 + 1: each slice has the test's 5 rows
    assert sl.slice_of.tolist() == [0] * 5 + [1] * 5
    labelled = ~sl.distractor
    assert sl.source[labelled].tolist() == [0, 1, 2, 3, 4, 5]
    assert (sl.frame["posting_id"].to_numpy()[labelled] == TRAIN["posting_id"].to_numpy()).all()
    picked = sl.frame.loc[sl.distractor, "posting_id"].tolist()
    assert picked == [f"te{i}" for i in sl.source[sl.distractor]] and len(set(picked[:3])) == 3
    # every test posting is a group of its own, whatever the test file says
    assert len(set(sl.labels[sl.distractor])) == 4 and not set(sl.labels[sl.distractor]) & {1, 2, 3}
    assert scored_rows(sl.frame).tolist() == np.flatnonzero(labelled).tolist()
    assert slices.build(TRAIN, TEST.iloc[:2], FOLDS).distractor.sum() == 0  # folds as large as the test: none


def test_slices_refuse_a_test_posting_that_is_a_training_row():
    with pytest.raises(DataError, match="also training rows"):
        slices.build(TRAIN, pd.concat([TEST, TRAIN.iloc[:1]]), FOLDS)
    with pytest.raises(ValueError, match="distractors"):
        slices.build(TRAIN.assign(distractor=[False] * 5 + [True]), TEST, FOLDS)


def test_neighbours_stay_within_their_slice():
    sl = slices.build(TRAIN, TEST, FOLDS)
    X = embed("tfidf_char", sl.frame)
    idx, sims = slices.neighbours({"c": X}, sl, k=50)["c"]
    assert idx.shape == (10, 5)  # cut to the slice size
    assert (sl.slice_of[idx] == sl.slice_of[:, None]).all() and (idx[:, 0] == np.arange(10)).all()
    assert (np.diff(sims, axis=1) <= 1e-6).all()


def _store(tmp_path, sl_folds=FOLDS, test_parts=2):
    store = RunStore(tmp_path, "02_embed")
    rng = np.random.default_rng(0)
    for k in range(2):
        store.save_embedding(f"train_m@fold{k}", rng.normal(size=(6, 3)),
                             {"model": "m", "checkpoint": "x", "oof_fold": k,
                              "fold_rows": np.flatnonzero(sl_folds == k).tolist()})
    for k in range(test_parts):
        store.save_embedding(f"test_m@fold{k}", rng.normal(size=(5, 3)), {"model": "m", "checkpoint": "x"})
    for split, df in (("train", TRAIN), ("test", TEST)):
        store.save_embedding(f"{split}_tfidf_word", embed("tfidf_word", df), {"model": "tfidf_word", "params": {}})
    return store


def test_each_model_embeds_a_slice_as_it_embeds_a_test_split(tmp_path):
    sl = slices.build(TRAIN, TEST, FOLDS)
    store = _store(tmp_path)
    emb = slices.embeddings(store, sl, ["m", "tfidf_word"])
    parts, test_parts = store.fold_parts("train", "m"), store.fold_parts("test", "m")
    for row in range(10):  # a cross-validated model: slice k's rows by fold k's model
        k, src = sl.slice_of[row], sl.source[row]
        expected = test_parts[k][src] if sl.distractor[row] else parts[k][src]
        assert np.allclose(emb["m"][row], expected)
    # TF-IDF refitted on each slice alone, as on the test split; vocabularies padded to one width
    assert sp.issparse(emb["tfidf_word"])
    for start, stop in sl.bounds:
        alone = embed("tfidf_word", sl.frame.iloc[start:stop])
        block = emb["tfidf_word"][start:stop]
        assert np.allclose((block @ block.T).toarray(), (alone @ alone.T).toarray())


def test_slices_need_every_fold_models_test_embedding_and_the_same_folds(tmp_path):
    sl = slices.build(TRAIN, TEST, FOLDS)
    with pytest.raises(FileNotFoundError, match="fold_test: true"):
        slices.embeddings(_store(tmp_path / "a", test_parts=1), sl, ["m"])
    with pytest.raises(ValueError, match="other folds"):
        slices.embeddings(_store(tmp_path / "b", sl_folds=1 - FOLDS), sl, ["m"])
    store = _store(tmp_path / "c")
    store.save_embedding("train_inside", np.ones((6, 2)), {"model": "inside", "checkpoint": "x", "in_sample": True})
    with pytest.raises(ValueError, match="in sample"):
        slices.embeddings(store, sl, ["inside"])


def test_pair_table_trains_on_some_splits_and_predicts_every_pair_out_of_fold():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(20), 2)
    folds = (labels % 2).astype(np.int8)  # groups whole in a fold: two folds

    def split(n_pairs):
        rows, cols = rng.integers(0, 40, size=n_pairs), rng.integers(0, 40, size=n_pairs)
        rows, cols = np.r_[rows, np.arange(0, 40, 2)], np.r_[cols, np.arange(1, 40, 2)]
        y = (labels[rows] == labels[cols]).astype(np.int8)
        return pd.DataFrame({"f": y + rng.normal(scale=0.3, size=len(y))}), y, rows, cols, folds

    first, second = split(100), split(60)
    table = st.PairTable.of([first, second])
    assert table.offsets == (0, 40) and table.n == 80 and table.rows[len(first[1]):].min() >= 40
    r, c, y = table.pairs_of(1, table.y)
    assert (r == second[2]).all() and (c == second[3]).all() and (y == second[1]).all()
    y_first = table.train_targets()
    assert (y_first[table.split == 1] == -1).all() and (y_first[table.split == 0] == first[1]).all()
    cfg = st.StackerConfig(n_estimators=20, max_train_pairs=None)
    prob = st.out_of_fold(table.X, y_first, table.rows, table.cols, table.folds, cfg)
    for k in (0, 1):  # the second split's pairs of fold k: scored by the model trained on the first split without k
        train = (folds[first[2]] != k) & (folds[first[3]] != k)
        clf = st.fit(first[0][train], first[1][train], cfg)
        sel = folds[second[2]] == k
        assert np.allclose(table.pairs_of(1, prob)[2][sel], clf.predict_proba(second[0][sel])[:, 1])

