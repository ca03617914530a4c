import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from utils.core.store import ArtifactName, RunStore
from utils.matching.embed import embed, load_wordllama, phash_bits
from utils.matching.knn import available_backends, choose_backend, neighbours, self_first

TITLES = pd.DataFrame({"title": ["Kopi Susu 250ml", "kopi susu 250 ml", "Teh Hijau 500ml", "Sabun Muka 30gr"],
                       "image_phash": ["ffffffffffffffff", "fffffffffffffff0", "0000000000000000",
                                       "ffffffffffffffff"]})


def test_phash_bits_cosine_is_hamming():
    X = phash_bits(TITLES["image_phash"])
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0)
    assert X[0] @ X[1] == pytest.approx(1 - 2 * 4 / 64)
    assert X[0] @ X[2] == pytest.approx(-1.0) and X[0] @ X[3] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["tfidf_word", "tfidf_char", "wordllama", "phash"])
def test_embedders_normalised(name):
    X = embed(name, TITLES)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(1))).ravel() if sp.issparse(X) else np.linalg.norm(X, axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_wordllama_offline_and_meaningful():
    X = embed("wordllama", TITLES)
    assert X.shape == (4, 256) and X.dtype == np.float32
    assert X[0] @ X[1] > X[0] @ X[3]  # the same product written twice is closer than another product


def test_wordllama_missing_file_names_parameter(tmp_path):
    with pytest.raises(FileNotFoundError, match="wordllama_weights"):
        load_wordllama(weights=tmp_path / "none.safetensors")


def test_unknown_model():
    with pytest.raises(KeyError, match="unknown embedding model"):
        embed("nope", TITLES)


@pytest.mark.parametrize("name", ["tfidf_char", "phash"])
def test_save_load_roundtrip(tmp_path, name):
    X = embed(name, TITLES)
    store = RunStore(tmp_path, "02_embed")
    store.save_embedding(ArtifactName("train", name), X, {"model": name})
    Y, meta = store.load_embedding(f"train_{name}")
    assert meta["model"] == name and meta["rows"] == 4 and meta["sparse"] == sp.issparse(X)
    np.testing.assert_array_equal(Y.toarray() if sp.issparse(Y) else Y, X.toarray() if sp.issparse(X) else X)
    assert store.embeddings() == [ArtifactName("train", name)]
    assert (tmp_path / "02_embed" / f"train_{name}.json").exists()


def unit(n, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


CPU_BACKENDS = [b for b in ("torch", "faiss-cpu", "sklearn", "numpy") if b in available_backends()]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backends_agree_dense(backend):
    X = unit(500, 32)
    ref_idx, ref_sims, _ = neighbours(X, k=10, backend="numpy", chunk=1000)
    idx, sims, used = neighbours(X, k=10, backend=backend, chunk=64)  # chunking must not change answers
    assert used == backend and idx.dtype == np.int32 and sims.dtype == np.float32
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    assert (idx == ref_idx).mean() > 0.99  # identical up to float ties
    assert (idx[:, 0] == np.arange(500)).all() and (np.diff(sims[:, 1:], axis=1) <= 1e-6).all()


def test_sparse_backends_agree_and_auto_skips_faiss():
    X = embed("tfidf_char", pd.DataFrame({"title": [f"produk {i % 37} varian {i}" for i in range(300)]}))
    a = neighbours(X, k=8, backend="sklearn")
    b = neighbours(X, k=8, backend="numpy", chunk=50)
    c = neighbours(X, k=8, backend="torch", chunk=64)  # sparse CSR x dense query chunks
    d = neighbours(X, k=8, backend="sparse-topn", chunk=64)  # sparse x sparse-transpose, top k kept while multiplying
    for other in (b, c, d):
        np.testing.assert_allclose(a[1], other[1], atol=1e-5)
    recomputed = np.asarray(X[np.repeat(np.arange(300), 8)].multiply(X[d[0].ravel()]).sum(axis=1)).reshape(300, 8)
    np.testing.assert_allclose(recomputed, d[1], atol=1e-5)  # the ids carry the listed sims: equal up to ties
    assert choose_backend("auto", sparse=True) in ("cuml", "torch", "sparse-topn")
    with pytest.raises(ValueError, match="needs dense input"):
        choose_backend("faiss-cpu", sparse=True)
    with pytest.raises(ValueError, match="needs sparse input"):
        choose_backend("sparse-topn", sparse=False)


def test_sparse_topn_fills_short_rows_with_distinct_zero_rows():
    # rows sharing no word have fewer than k non-zero neighbours: the list is filled with other rows at 0
    titles = ["alpha beta", "alpha gamma", "delta", "epsilon", "zeta eta", "theta", "alpha"]
    X = embed("tfidf_word", pd.DataFrame({"title": titles}))
    idx, sims, _ = neighbours(X, k=4, backend="sparse-topn")
    ref_idx, ref_sims, _ = neighbours(X, k=4, backend="numpy")
    np.testing.assert_allclose(sims, ref_sims, atol=1e-6)
    assert (idx[:, 0] == np.arange(7)).all()
    assert all(len(set(r)) == 4 for r in idx.tolist())  # no row twice in a list
    assert idx[2].tolist() == [2, 0, 1, 3]  # "delta" shares nothing: the lowest other rows, at similarity 0
    assert set(idx[0, :3].tolist()) == {0, 1, 6} and sims[0, 3] == 0


def test_self_first_with_duplicates():
    X = np.repeat(unit(3, 8), 4, axis=0)  # 4 exact copies of each vector: self may not come first, or at all
    idx, sims, _ = neighbours(X, k=3, backend="numpy")
    assert (idx[:, 0] == np.arange(12)).all() and np.allclose(sims[:, :3], 1.0, atol=1e-5)
    i, s = self_first(np.array([[1, 2, 3]]), np.array([[1.0, 0.9, 0.8]], np.float32), np.array([1.0], np.float32))
    assert i.tolist() == [[0, 1, 2]] and s.tolist()[0][:2] == [1.0, 1.0]


def test_torch_backend_precision_and_auto_choice():
    X = unit(400, 32)
    ref_idx, ref_sims, _ = neighbours(X, k=10, backend="faiss-cpu")
    idx, sims, _ = neighbours(X, k=10, backend="torch", chunk=128, precision="bf16")
    assert (idx[:, 0] == np.arange(400)).all() and np.abs(sims - ref_sims).max() < 0.02  # bf16 keeps ~3 digits
    assert (idx == ref_idx).mean() > 0.6
    with pytest.raises(ValueError, match="precision must be one of"):
        neighbours(X, backend="torch", precision="fp8")
    import torch

    assert (choose_backend("auto") == "torch") == (torch.cuda.is_available() and "cuml" not in available_backends()
                                                  and "faiss-gpu" not in available_backends())


def test_k_larger_than_rows_and_bad_backend():
    idx, _, _ = neighbours(unit(5, 4), k=50, backend="numpy")
    assert idx.shape == (5, 5)
    with pytest.raises(ValueError, match="unknown KNN backend"):
        neighbours(unit(5, 4), backend="annoy")


def test_load_split_neighbours(tmp_path):
    store = RunStore(tmp_path, "03_knn")
    idx, sims, _ = neighbours(unit(6, 4), k=3, backend="numpy")
    store.save_neighbours("train_a", idx, sims)
    loaded = RunStore(tmp_path).load_neighbours("train", ["a"])
    np.testing.assert_array_equal(loaded["a"][0], idx)
    assert loaded["a"][0].dtype == np.int32 and loaded["a"][1].dtype == np.float32
    with pytest.raises(FileNotFoundError, match=r"no test neighbours for \['a'\]"):
        store.load_neighbours("test", ["a"])


def test_zero_shot_minilm_embeds_titles_offline():
    titles = pd.DataFrame({"title": ["kopi susu bubuk 250 gram", "bubuk kopi susu 250gr", "sepatu lari pria"]})
    X = embed("minilm", titles)
    assert X.shape == (3, 384) and np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert X[0] @ X[1] > X[0] @ X[2]  # the same product written twice is closer than another product
