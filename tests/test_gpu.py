"""GPU paths against their CPU twins: same answers (up to ties and float summation order).

Marked `gpu`: skipped where no CUDA device is present (tests/conftest.py). Run with `pytest -m gpu`.
"""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from utils.core.data import read_postings
from utils.core.device import lightgbm_has_cuda, xgboost_has_cuda
from utils.matching.knn import available_backends, neighbours
from utils.matching.stacker import StackerConfig, make_classifier

pytestmark = pytest.mark.gpu


def unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_same_neighbours_up_to_ties(X, gi, gs, ci, cs, atol: float = 1e-4) -> None:
    """Two searches agree: the same similarities, each reported similarity is the true one of the id returned,
    and per row the same set of neighbours strictly above the row's last similarity; at the boundary, rows tied
    with the k-th may be any of the tied ones."""
    from utils.matching.fusion import pair_similarity

    np.testing.assert_allclose(gs, cs, atol=atol)
    rows = np.repeat(np.arange(len(gi)), gi.shape[1])
    np.testing.assert_allclose(pair_similarity(X, rows, gi.ravel(), device="cpu"), gs.ravel(), atol=atol)
    above = cs > cs[:, -1:] + atol
    for r in np.flatnonzero((gi != ci).any(axis=1)):
        assert set(gi[r][above[r]]) == set(ci[r][above[r]]), r


@pytest.mark.parametrize("backend", ["cuml", "faiss-gpu", "torch"])
def test_gpu_knn_matches_faiss_cpu(backend):
    if backend not in available_backends():
        pytest.skip(f"{backend} not installed")
    pytest.importorskip("faiss")
    X = unit(20_000, 128)
    gi, gs, used = neighbours(X, k=30, backend=backend)
    ci, cs, _ = neighbours(X, k=30, backend="faiss-cpu")
    assert used == backend
    assert_same_neighbours_up_to_ties(X, gi, gs, ci, cs)


def test_torch_sparse_knn_on_cuda_matches_sklearn(real_titles):
    """Real titles have exact duplicates, so many similarities tie: ids may differ only inside a tie."""
    from utils.matching.embed import embed

    X = embed("tfidf_char", read_postings(real_titles / "test.csv"))
    gi, gs, used = neighbours(X, k=30, backend="torch")
    ci, cs, _ = neighbours(X, k=30, backend="sklearn")
    assert used == "torch"
    assert_same_neighbours_up_to_ties(X, gi, gs, ci, cs)


def test_pair_similarity_on_cuda_matches_the_cpu():
    from utils.matching.fusion import pair_similarity

    X = unit(5_000, 256)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 5_000, 300_000), rng.integers(0, 5_000, 300_000)
    np.testing.assert_allclose(pair_similarity(X, rows, cols, device="cuda"),
                               pair_similarity(X, rows, cols, device="cpu"), atol=1e-5)


def test_cudf_loading_matches_pandas(real_titles):
    pytest.importorskip("cudf")
    for name in ("dev.csv", "test.csv"):
        pd.testing.assert_frame_equal(read_postings(real_titles / name, backend="cudf"),
                                      read_postings(real_titles / name, backend="pandas"))


def _pairs(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 12)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] * X[:, 2] + 0.3 * rng.standard_normal(n) > 0.4).astype(int)
    return X, y


@pytest.mark.parametrize("model", ["lightgbm", "xgboost"])
def test_boosters_on_cuda_agree_with_cpu(model):
    pytest.importorskip(model)
    if model == "lightgbm" and not lightgbm_has_cuda():
        pytest.skip("this LightGBM build has no CUDA tree learner")
    if model == "xgboost" and not xgboost_has_cuda():
        pytest.skip("this XGBoost build has no CUDA (the xgboost-cpu wheel)")
    X, y = _pairs()
    Xt, yt = _pairs(5_000, seed=1)
    probs = {}
    for device in ("cpu", "cuda"):
        clf = make_classifier(StackerConfig(model=model, n_estimators=200, device=device))
        probs[device] = clf.fit(X, y).predict_proba(Xt)[:, 1]
    auc = {d: roc_auc_score(yt, p) for d, p in probs.items()}
    assert abs(auc["cpu"] - auc["cuda"]) < 0.01, auc
    assert np.corrcoef(probs["cpu"], probs["cuda"])[0, 1] > 0.99
    assert np.abs(probs["cpu"] - probs["cuda"]).mean() < 0.02


def test_amp_image_training_on_cuda(tiny_demo, tmp_path):
    """Mixed precision with GradScaler trains on CUDA, and its checkpoint embeds alike on CUDA and CPU."""
    import torch

    from utils.training.loop import TrainConfig, encode, fit, load_encoder
    from utils.training.nn.encoders import build_encoder

    df = read_postings(tiny_demo / "train.csv", require_labels=True)
    images = tiny_demo / "train_images"
    cfg = TrainConfig(modality="image", image={"backbone": "resnet10t"}, image_size=64, epochs=3, batch_size=32,
                      lr=3e-3, n_folds=3, embedding_size=32, amp=True, device="cuda")
    torch.manual_seed(cfg.seed)  # the initial weights fit starts from
    before = {k: v.clone() for k, v in build_encoder("image", {"backbone": "resnet10t"}, {}, 32).state_dict().items()}
    hist = fit(cfg, df, images, tmp_path)["history"]
    losses = [h["loss"] for h in hist[1:]]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], hist
    # the optimiser stepped on most batches (the scaler skips only overflowing ones) and the weights moved
    assert sum(h["skipped_steps"] for h in hist[1:]) <= 2 < sum(h["steps"] for h in hist[1:]), hist
    encoder, _ = load_encoder(tmp_path / "best.pt")
    after = encoder.state_dict()
    assert max(float((after[k].float() - v.float()).abs().max()) for k, v in before.items()
               if v.is_floating_point()) > 1e-3
    on_gpu = encode(encoder, df, images, cfg.image_size, device="cuda", amp=False)
    on_cpu = encode(encoder, df, images, cfg.image_size, device="cpu")
    np.testing.assert_allclose(on_gpu, on_cpu, atol=2e-3)
    fp16 = encode(encoder, df, images, cfg.image_size, device="cuda", num_workers=2)  # autocast, channels_last
    assert np.abs(fp16 - on_cpu).max() < 2e-2 and (np.einsum("ij,ij->i", fp16, on_cpu) > 0.999).all()


def test_stacker_stage_on_cuda_decides_as_on_the_cpu(tiny_demo, tmp_path):
    """05 with XGBoost on CUDA and on the CPU, from the same 02-04 outputs: the same kind of decision and test F1
    within noise (histogram boosters on two devices split alike but not bit for bit)."""
    import json
    import shutil

    pytest.importorskip("xgboost")
    if not xgboost_has_cuda():
        pytest.skip("this XGBoost build has no CUDA (the xgboost-cpu wheel)")
    from utils.stages import embed, knn, postprocess, stacker

    models = ["tfidf_word", "tfidf_char", "phash"]
    data = {"train_csv": str(tiny_demo / "train.csv"), "test_csv": str(tiny_demo / "test.csv")}
    images = {"train_images": str(tiny_demo / "train_images"), "test_images": str(tiny_demo / "test_images")}
    labels = str(tiny_demo / "test_solution.csv")
    base = tmp_path / "base"
    embed.run(embed.Params(run_dir=str(base), models=models, **data, **images))
    knn.run(knn.Params(run_dir=str(base), k=20))
    postprocess.run(postprocess.Params(run_dir=str(base), models=models, n_folds=3, test_labels_csv=labels, **data))
    result = {}
    for device in ("cpu", "cuda"):
        run_dir = tmp_path / device
        shutil.copytree(base, run_dir)
        stacker.run(stacker.Params(run_dir=str(run_dir), models=models, k=20, n_folds=3, n_estimators=100,
                                   model="xgboost", device=device, test_labels_csv=labels, **data, **images))
        result[device] = json.loads((run_dir / "05_stacker" / "metrics.json").read_text())
    cpu, cuda = result["cpu"], result["cuda"]
    assert cpu["stage"] == cuda["stage"], (cpu["stage"], cuda["stage"])
    assert abs(cpu["oof_f1"] - cuda["oof_f1"]) < 0.02 and abs(cpu["test_f1"] - cuda["test_f1"]) < 0.02
    assert abs(cpu["threshold"] - cuda["threshold"]) <= 0.1
