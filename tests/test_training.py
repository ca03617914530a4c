"""Encoders and the training loop on tiny data (seconds on a CPU)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from utils.core.data import read_postings
from utils.core.store import RunStore, checkpoint_set
from utils.training.loop import TrainConfig, embed_split, encode, fit, load_encoder, train_cv
from utils.training.nn.encoders import ImageEncoder, TransformerTextEncoder, build_encoder
from utils.training.nn.pooling import GeM


def test_gem_between_average_and_max():
    x = torch.rand(2, 3, 4, 4)
    g = GeM(p=3.0)(x)
    assert (g >= x.mean(dim=(2, 3)) - 1e-6).all() and (g <= x.amax(dim=(2, 3)) + 1e-6).all()
    assert torch.allclose(GeM(p=1.0)(x), x.mean(dim=(2, 3)), atol=1e-6)


def test_image_encoder_freezing_and_missing_weights(tmp_path):
    enc = ImageEncoder("resnet10t", embedding_size=16, trainable_blocks=1)
    trainable = {n for n, p in enc.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("layer4") for n in trainable)
    out = enc({"image": torch.rand(2, 3, 64, 64)})
    assert out.shape == (2, 16)
    with pytest.raises(FileNotFoundError, match="'weights'"):
        ImageEncoder("resnet10t", weights=str(tmp_path / "missing.pth"))


@pytest.fixture(scope="module")
def tiny_transformer(tmp_path_factory):
    """A 2-layer BERT with a word-level tokenizer, saved like a local model folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "kopi", "susu", "teh", "250ml", "ready"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tmp_path_factory.mktemp("tiny_bert")
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(folder)
    return folder


def test_transformer_encoder_from_local_folder(tiny_transformer, tmp_path):
    enc = TransformerTextEncoder(str(tiny_transformer), embedding_size=8, trainable_layers=1)
    trainable = {n for n, p in enc.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("encoder.layer.1.") for n in trainable)
    enc.eval()
    out = enc({"title": ["kopi susu 250ml", "teh"]})
    assert out.shape == (2, 8)
    with pytest.raises(FileNotFoundError, match="model_dir"):
        TransformerTextEncoder(str(tmp_path / "nope"))


def test_sentence_transformers_encoder_from_a_local_folder(tiny_transformer, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    folder = tmp_path / "tiny_st"
    SentenceTransformer(modules=[Transformer(str(tiny_transformer)), Pooling(16, "mean")]).save(str(folder))
    enc = build_encoder("text", text={"kind": "sentence_transformers", "model_dir": str(folder),
                                      "trainable_layers": 1}, embedding_size=8)
    trainable = {n for n, p in enc.model.named_parameters() if p.requires_grad}
    assert trainable and all(".layer.1." in n for n in trainable)
    out = enc.train()({"title": ["kopi susu 250ml", "teh", "kopi"]})
    assert out.shape == (3, 8)
    out.sum().backward()  # gradients reach the transformer's last layer
    assert any(p.grad is not None for n, p in enc.model.named_parameters() if ".layer.1." in n)
    with pytest.raises(FileNotFoundError, match="model_dir"):
        build_encoder("text", text={"kind": "sentence_transformers", "model_dir": str(tmp_path)})


def test_minilm_default_is_extracted_once_into_the_cache(tmp_path, monkeypatch):
    from utils.core.weights import minilm_folder

    monkeypatch.setenv("SUITE_CACHE", str(tmp_path))
    folder = minilm_folder()
    assert folder == tmp_path / "all-MiniLM-L6-v2" and (folder / "modules.json").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert minilm_folder() == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    enc = build_encoder("text", text={"kind": "sentence_transformers"}, embedding_size=8).eval()
    assert enc({"title": ["kopi susu", "teh botol"]}).shape == (2, 8)


def test_joint_encoder(tiny_transformer):
    enc = build_encoder("joint", image={"backbone": "resnet10t"},
                        text={"kind": "transformer", "model_dir": str(tiny_transformer)}, embedding_size=8).eval()
    assert enc({"image": torch.rand(2, 3, 64, 64), "title": ["kopi", "teh"]}).shape == (2, 8)
    with pytest.raises(ValueError, match="modality"):
        build_encoder("audio")


@pytest.fixture(scope="module")
def small_titles(real_titles):
    df = read_postings(real_titles / "dev.csv", require_labels=True)
    return df[df["label_group"].isin(df["label_group"].unique()[:60])].reset_index(drop=True)


def test_fit_text_history_checkpoint_and_embeddings(small_titles, tmp_path):
    cfg = TrainConfig(modality="text", epochs=2, batch_size=32, lr=3e-3, n_folds=3, embedding_size=32)
    result = fit(cfg, small_titles, None, tmp_path)
    hist = result["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2] and np.isnan(hist[0]["loss"]) and hist[2]["loss"] < hist[1]["loss"]
    assert all(0 < h["val_f1"] <= 1 for h in hist)
    assert all(h["steps"] > 0 and h["skipped_steps"] == 0 for h in hist[1:])  # no loss scaling on the CPU
    encoder, loaded = load_encoder(tmp_path / "best.pt")
    assert loaded == cfg
    X = encode(encoder, small_titles, None)
    assert X.shape == (len(small_titles), 32) and np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    # same seed, same weights
    fit(cfg, small_titles, None, tmp_path / "again")
    a = torch.load(tmp_path / "best.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "again" / "best.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_cv_and_out_of_fold_embeddings(small_titles, tmp_path):
    cfg = TrainConfig(modality="text", epochs=1, batch_size=32, n_folds=3, embedding_size=16)
    result = train_cv(cfg, small_titles, None, tmp_path / "text")
    assert len(result["history"]) == 2 and set(result["runs"]) == {"fold0", "fold1", "fold2", "full"}
    folds = [result["runs"][f"fold{k}"]["history"][-1]["rows_per_second"] for k in range(3)]
    assert result["history"][-1]["rows_per_second"] == pytest.approx(np.mean(folds)) and min(folds) > 0
    ckpts = checkpoint_set(tmp_path / "text")
    assert sorted(ckpts["folds"]) == [0, 1, 2] and ckpts["test"].parent.name == "full"
    store = RunStore(tmp_path / "run", "02_embed")
    paths = embed_split(tmp_path / "text", "text_arcface", "train", small_titles, None, store)
    assert [p.name for p in paths] == [f"train_text_arcface@fold{k}.npy" for k in range(3)]
    rows = np.concatenate([json.loads(p.with_suffix(".json").read_text())["fold_rows"] for p in paths])
    assert sorted(rows.tolist()) == list(range(len(small_titles)))  # every row in exactly one fold
    test_paths = embed_split(tmp_path / "text", "text_arcface", "test", small_titles, None, store)
    assert [p.name for p in test_paths] == ["test_text_arcface.npy"]


def test_image_fit_on_tiny_demo(tiny_demo, tmp_path):
    df = pd.read_csv(tiny_demo / "train.csv")
    cfg = TrainConfig(modality="image", image={"backbone": "resnet10t", "pooling": "gem"}, image_size=48, epochs=1,
                      batch_size=16, n_folds=3, embedding_size=16, agc_clip=0.05, schedule="cosine", loss="softmax")
    result = fit(cfg, df, tiny_demo / "train_images", tmp_path)
    assert len(result["history"]) == 2 and (tmp_path / "best.pt").exists()
    encoder, _ = load_encoder(tmp_path / "best.pt")
    one = encode(encoder, df, tiny_demo / "train_images", 48, batch_size=16, num_workers=0)
    two = encode(encoder, df, tiny_demo / "train_images", 48, batch_size=16, num_workers=2)  # order kept
    np.testing.assert_allclose(one, two, atol=1e-6)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")


def test_image_training_with_decoding_workers_repeats_for_a_seed(tiny_demo, tmp_path):
    """Workers (forkserver, persistent) decode and augment; their seeds come from the loader's generator, so two
    runs with the same worker count train the same weights."""
    import multiprocessing
    import warnings

    from utils.training.loop import PostingDataset, image_loader, training_workers

    df = pd.read_csv(tiny_demo / "train.csv")
    cfg = TrainConfig(modality="image", image={"backbone": "resnet10t"}, image_size=32, epochs=2, batch_size=16,
                      n_folds=3, embedding_size=8, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # Python 3.12 warns on fork() after threads
        runs = [fit(cfg, df, tiny_demo / "train_images", tmp_path / str(i))["history"] for i in range(2)]
    assert [h["loss"] for h in runs[0][1:]] == [h["loss"] for h in runs[1][1:]]
    assert not multiprocessing.active_children()  # the persistent workers ended with each run
    assert np.isfinite([h["loss"] for h in runs[0][1:]]).all()
    loader = image_loader(PostingDataset(df, None), 2, cuda=False, batch_size=8)
    assert loader.multiprocessing_context.get_start_method() == "forkserver" and loader.persistent_workers
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto = TrainConfig(modality="image")
    assert training_workers(auto, cpu, True) == 0 and training_workers(auto, cuda, True) >= 1
    assert training_workers(cfg, cpu, True) == 2 and training_workers(cfg, cuda, needs_images=False) == 0


def test_pool_distractors_train_as_classes_of_their_own_and_are_never_scored(small_titles, tmp_path):
    from utils.core.data import DISTRACTOR_COLUMN

    singles = small_titles.drop_duplicates("label_group").head(20).assign(
        posting_id=lambda d: "s_" + d["posting_id"], label_group=np.arange(10**9, 10**9 + 20))
    pool = pd.concat([small_titles.assign(**{DISTRACTOR_COLUMN: False}), singles.assign(**{DISTRACTOR_COLUMN: True})],
                     ignore_index=True)
    cfg = TrainConfig(modality="text", epochs=1, batch_size=32, n_folds=3, embedding_size=16)
    plain, negatives = fit(cfg, small_titles, None, tmp_path / "a"), fit(cfg, pool, None, tmp_path / "b")
    assert negatives["classes"] > plain["classes"] and negatives["train_rows"] > plain["train_rows"]
    # held-out F1 is over the labelled rows only: a distractor alone in its group would score a free 1.0
    encoder, _ = load_encoder(tmp_path / "b" / "best.pt")
    from utils.training.loop import evaluate

    labelled = pool[~pool[DISTRACTOR_COLUMN]]
    assert evaluate(encoder, pool, None, cfg)[0] <= evaluate(encoder, labelled, None, cfg)[0] + 1e-9
