"""The run store: artifact names built and parsed in one place, typed reads and writes, staging folders."""

import numpy as np
import pytest

from utils.core.store import ArtifactName, RunStore, checkpoint_set


@pytest.mark.parametrize("stem, split, model, fold", [
    ("train_tfidf_char", "train", "tfidf_char", None),
    ("test_text_arcface", "test", "text_arcface", None),
    ("train_text_arcface@fold3", "train", "text_arcface", 3),
    ("train_text+image", "train", "text+image", None),
])
def test_artifact_names_round_trip(stem, split, model, fold):
    name = ArtifactName.parse(stem)
    assert (name.split, name.model, name.fold) == (split, model, fold)
    assert name.stem == stem and name.whole == ArtifactName(split, model)


@pytest.mark.parametrize("stem, searched", [("train_minilm", True), ("train_minilm@fold2", True),
                                             ("test_minilm", True), ("test_minilm@fold2", False)])
def test_03_searches_all_but_a_fold_models_test_part(stem, searched):
    assert ArtifactName.parse(stem).searched is searched


@pytest.mark.parametrize("stem", ["valid_x", "train_", "train_a@fold", "train_a@foldx", "tfidf", "train_a/b"])
def test_bad_artifact_names_are_refused(stem):
    with pytest.raises(ValueError, match="artifact name|model name"):
        ArtifactName.parse(stem)


def test_a_dot_in_a_model_name_is_part_of_the_name(tmp_path):
    store = RunStore(tmp_path, "02_embed")
    store.save_embedding("train_vit.b16", np.ones((2, 3)), {})
    store.save_embedding("train_vit", np.zeros((2, 3)), {})
    (tmp_path / "02_embed" / "metrics.json").write_text("{}")  # other JSON files are no artifacts
    assert sorted(n.model for n in store.embeddings()) == ["vit", "vit.b16"]
    assert store.load_embedding("train_vit.b16")[0].sum() == 6


def test_staging_folder_receives_the_running_stage_only(tmp_path):
    run, staging = tmp_path / "run", tmp_path / "staging"
    store = RunStore(run, "03_knn", staging)
    assert store.out == staging and store.dir("02_embed") == run / "02_embed"
    store.save_neighbours("test_a", np.zeros((2, 1), dtype=np.int64), np.ones((2, 1)))
    assert (staging / "test_a.npz").exists() and not (run / "03_knn").exists()
    with pytest.raises(ValueError, match="without a stage"):
        _ = RunStore(run).out


def test_missing_stage_outputs_name_the_stage(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(FileNotFoundError, match="02_embed"):
        store.embeddings()
    with pytest.raises(FileNotFoundError, match="no embedding train_x"):
        RunStore(tmp_path, "02_embed").load_embedding("train_x")
    assert store.thresholds() == {} and store.metrics("04_postprocess") == {}


def test_thresholds_written_by_04_are_read_back(tmp_path):
    RunStore(tmp_path, "04_postprocess").write_thresholds({"models": {"a": {"threshold": 0.7}}})
    assert RunStore(tmp_path, "05_stacker").thresholds()["models"]["a"]["threshold"] == 0.7


def test_checkpoint_set_prefers_the_full_model(tmp_path):
    store = RunStore(tmp_path, "01_train_arcface")
    for fold in (0, 1, "full"):
        d = store.checkpoint_dir("text", fold)
        d.mkdir(parents=True)
        (d / "best.pt").write_bytes(b"")
    ckpts = checkpoint_set(store.checkpoint_dir("text"))
    assert ckpts["test"] == store.checkpoint_dir("text", "full") / "best.pt" and sorted(ckpts["folds"]) == [0, 1]
    with pytest.raises(FileNotFoundError, match="run 01_train_arcface"):
        checkpoint_set(tmp_path / "nothing")


def test_neighbours_of_another_row_count_are_refused(tmp_path):
    RunStore(tmp_path, "03_knn").save_neighbours("train_a", np.zeros((5, 2), dtype=np.int64), np.ones((5, 2)))
    store = RunStore(tmp_path)
    assert store.load_neighbours("train", ["a"], 5)["a"][0].shape == (5, 2)
    with pytest.raises(ValueError, match="same data and distractors"):
        store.load_neighbours("train", ["a"], 8)


def test_fold_parts_load_as_one_fold_embedding(tmp_path):
    store = RunStore(tmp_path, "02_embed")
    for k, rows in enumerate(([0, 2], [1, 3])):  # fold k's rows, every row embedded by fold k's model
        store.save_embedding(f"train_m@fold{k}", np.full((4, 2), k + 1.0), {"oof_fold": k, "fold_rows": rows})
    store.save_embedding("test_m", np.ones((3, 2)), {})
    X, _ = store.split_embeddings("train", ["m"], folds=True)["m"]
    assert X.fold_of_row.tolist() == [0, 1, 0, 1] and X.shape == (4, 2) and X.parts[1].max() == 2
    assert "m" not in store.split_embeddings("train", ["m"])  # whole embeddings only, unless asked
    assert store.split_embeddings("test", ["m"], folds=True)["m"][0].shape == (3, 2)
    store.save_embedding("train_g@fold0", np.ones((4, 2)), {"oof_fold": 0, "fold_rows": [0, 1]})
    with pytest.raises(ValueError, match="2 train rows of g belong to no fold part"):
        store.split_embeddings("train", ["g"], folds=True)
