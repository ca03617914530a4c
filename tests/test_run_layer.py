"""The run layer: one stage table, schemas as the single source of defaults, validated configs, a cache that
is never stale, atomic stages and one pipeline per run folder."""

import ast
import json
import os
import shutil

import papermill as pm
import pytest
import yaml

from utils.core.paths import CONFIGS, ROOT
from utils.core.schema import ConfigError, defaults
from utils.run import cache, pipeline
from utils.run.cache import RunLocked, run_lock
from utils.run.stages import BY_NAME, NAMES, STAGES, markdown_table
from utils.stages import params_class
from utils.stages.__main__ import stale_cells


def test_stage_table_covers_every_notebook_and_reads_only_earlier_stages():
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == sorted(NAMES)
    for i, s in enumerate(STAGES):
        assert s.notebook.exists() and set(s.reads) <= set(NAMES[:i])
    assert markdown_table() in (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")  # the guide shows it


@pytest.mark.parametrize("name", NAMES)
def test_notebook_defaults_equal_the_schema(name):
    declared = pm.inspect_notebook(str(BY_NAME[name].notebook))
    schema = defaults(params_class(name))
    assert sorted(declared) == sorted(schema), "notebook parameters and schema fields differ"
    for key, p in declared.items():
        assert ast.literal_eval(p["default"]) == schema[key], f"{name}.{key}: notebook default differs"
        assert p["inferred_type_name"] != "None" and p["help"], f"{name}.{key}: papermill sees no type or help"


def test_parameters_cells_are_generated_from_the_schemas():
    assert stale_cells(write=False) == [], "run python -m utils.stages cells"


def test_code_configs_share_the_schema_defaults():
    from utils.matching.stacker import StackerConfig

    assert defaults(params_class("05_stacker"))["n_estimators"] == StackerConfig().n_estimators


def write_config(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


BASE = "run: x\ndata: {train_csv: a.csv, test_csv: b.csv}\nstages:\n  03_knn: {k: 10}\n"


@pytest.mark.parametrize("text, overrides, culprit", [
    (BASE.replace("train_csv", "train_cvs"), [], "train_cvs"),
    (BASE + "paramz: {seed: 1}\n", [], "paramz"),
    (BASE, ["kk=5"], "'kk'"),
    (BASE, ["03_knn.kk=5"], "kk"),
    (BASE, ["03_knn.k=abc"], "03_knn.k"),
    (BASE, ["03_knn.k=1"], "k must be at least 2"),
    (BASE, ["03_knn.backend=annoy"], "backend"),
    (BASE + "  04_postprocess: {min2: maybe}\n", [], "04_postprocess.min2"),
    (BASE + "  04_postprocess: {inb: {rounds: 1, threshold: 2.0}}\n", [], "inb.threshold"),
    (BASE + "  04_postprocess: {inb: {round: 1}}\n", [], "round"),
    (BASE + "  01_train_arcface: {models: {text: {modality: text, epochz: 3}}}\n", [], "epochz"),
    (BASE + "  01_train_arcface: {models: {text: {schedule: wavy}}}\n", [], "schedule"),
    (BASE, ["99_magic.k=3"], "99_magic"),
    ("run: x\ndata: {}\nstages: {99_magic: {}}\n", [], "99_magic"),
    (BASE + "  02_embed: {distractors: auto}\n  04_postprocess: {distractors: 0}\n", [], "distractors differ"),
    (BASE + "  04_postprocess: {distractors: -3}\n", [], "distractors must be"),
    (BASE + "  05_stacker: {distractors: many}\n", [], "distractors must be"),
    (BASE + "  05_stacker: {closure: sometimes}\n", [], "closure must be one of true, false, auto"),
    (BASE + "  05_stacker: {second_stage: sometimes}\n", [], "second_stage must be one of true, false, auto"),
    (BASE + "  04_postprocess: {closure: auto}\n", [], "04_postprocess.closure"),
    (BASE + "  05_stacker: {validation: folds}\n", [], "validation must be one of pooled, slices"),
    (BASE + "  05_stacker: {validation: slices, distractors: auto}\n", [], "set distractors: 0"),
    (BASE + "  01_train_arcface: {cv: [text]}\n  02_embed: {}\n  05_stacker: {validation: slices}\n", [],
     "02_embed fold_test: true"),
    ("run: [x\n", [], "not valid YAML"),
    ("", [], "a config is a mapping"),
])
def test_config_errors_name_the_culprit(tmp_path, text, overrides, culprit):
    with pytest.raises(ConfigError) as e:
        pipeline.load_config(write_config(tmp_path, text), overrides)
    assert culprit in str(e.value)


def test_valid_overrides_are_applied(tmp_path):
    cfg = pipeline.load_config(CONFIGS / "demo.yaml", ["03_knn.k=7", "data.images=false", "seed=4"])
    assert cfg["stages"]["03_knn"]["k"] == 7 and cfg["data"]["images"] is False and cfg["params"]["seed"] == 4
    for path in sorted(CONFIGS.glob("*.yaml")):  # every shipped config validates
        pipeline.load_config(path)


def test_missing_required_data_path_is_an_error_not_the_demo_default(tmp_path):
    path = write_config(tmp_path, "run: x\ndata: {test_csv: b.csv}\nstages: {04_postprocess: {}}\n")
    cfg = pipeline.load_config(path)
    with pytest.raises(ConfigError, match="data.train_csv is not set"):
        pipeline.stage_parameters(cfg, "04_postprocess", tmp_path)
    cfg["data"]["train_csv"] = "a.csv"
    assert pipeline.stage_parameters(cfg, "04_postprocess", tmp_path)["test_labels_csv"] == ""  # optional


def test_sources_followed_through_imports():
    files = {p.relative_to(ROOT).as_posix() for p in cache.notebook_sources(BY_NAME["05_stacker"].notebook)}
    assert {"utils/matching/stacker.py", "utils/matching/decide.py", "utils/core/metric.py",
            "utils/core/store.py", "utils/core/paths.py"} <= files
    assert not any(f.startswith("utils/valuation/") for f in files)


def test_editing_an_imported_module_changes_the_fingerprint(tmp_path, monkeypatch):
    fake = tmp_path / "root"
    (fake / "utils" / "core").mkdir(parents=True)
    for rel in ("utils/__init__.py", "utils/core/__init__.py"):
        (fake / rel).write_text("")
    (fake / "utils/core/a.py").write_text("from .b import f\n")
    (fake / "utils/core/b.py").write_text("def f():\n    return 1\n")
    nb = fake / "nb.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["from utils.core.a import f\n"]}]}))
    monkeypatch.setattr(cache, "ROOT", fake)
    cache._closure.cache_clear()
    before = cache.fingerprint(nb, {"k": 1}, {})
    (fake / "utils/core/b.py").write_text("def f():\n    return 2\n")
    cache._closure.cache_clear()
    assert cache.fingerprint(nb, {"k": 1}, {}) != before
    assert cache.fingerprint(nb, {"k": 1}, {"03_knn": "other run"}) != cache.fingerprint(nb, {"k": 1}, {})
    cache._closure.cache_clear()


def test_a_second_pipeline_on_the_same_run_is_refused(tmp_path):
    with run_lock(tmp_path / "run"), pytest.raises(RunLocked, match="in use by another pipeline"):
        with run_lock(tmp_path / "run"):
            pass
    with run_lock(tmp_path / "run"):  # released after the first run ends
        pass


def text_chain(data_dir, run_dir, **stages):
    cfg = {"run": str(run_dir), "params": {"seed": 0},
           "data": {"train_csv": str(data_dir / "train.csv"), "test_csv": str(data_dir / "test.csv"),
                    "test_labels_csv": str(data_dir / "test_solution.csv"), "images": False},
           "stages": {"02_embed": {"models": ["tfidf_word", "tfidf_char"]}, "03_knn": {"k": 20},
                      "04_postprocess": {"models": ["tfidf_word", "tfidf_char"], "n_folds": 3, "ablation": False}}}
    for name, values in stages.items():
        cfg["stages"][name] = {**cfg["stages"][name], **values}
    return cfg


def statuses(rows):
    return {r["stage"]: r["status"] for r in rows}


def test_cache_atomic_stages_and_failures(tiny_demo, tmp_path):
    run_dir = tmp_path / "run"
    cfg = text_chain(tiny_demo, run_dir)
    assert set(statuses(pipeline.run(cfg)).values()) == {"ran"}
    # 03's k changed, 03 re-run alone: 04 is then stale and re-runs on the next call, though its own inputs did not
    cfg12 = text_chain(tiny_demo, run_dir, **{"03_knn": {"k": 8}})  # k <= 10: the rank plot copes
    assert statuses(pipeline.run(cfg12, stages=["03_knn"])) == {"03_knn": "ran"}
    assert statuses(pipeline.run(cfg12, stages=["04_postprocess"])) == {"04_postprocess": "ran"}
    assert set(statuses(pipeline.run(cfg12)).values()) == {"cached"}
    # a failing re-run keeps the last good outputs and says so
    good = (run_dir / "04_postprocess" / "thresholds.json").read_text()
    broken = text_chain(tiny_demo, run_dir, **{"03_knn": {"k": 8}, "04_postprocess": {"models": ["wordllama"]}})
    with pytest.raises(pipeline.StageFailed) as e:
        pipeline.run(broken, stages=["04_postprocess"])
    assert "last good outputs" in str(e.value) and "04_postprocess.failed.ipynb" in str(e.value)
    assert (run_dir / "04_postprocess" / "thresholds.json").read_text() == good
    assert (run_dir / "notebooks" / "04_postprocess.failed.ipynb").exists()
    assert not (run_dir / ".staging" / "04_postprocess").exists()
    assert statuses(pipeline.run(cfg12, stages=["04_postprocess"])) == {"04_postprocess": "cached"}
    assert (run_dir / "submission.csv").exists()
    (run_dir / ".staging").mkdir(exist_ok=True)  # a run killed between the two renames of a swap
    os.replace(run_dir / "04_postprocess", run_dir / ".staging" / "04_postprocess.previous")
    assert statuses(pipeline.run(cfg12, stages=["04_postprocess"])) == {"04_postprocess": "cached"}
    shutil.rmtree(run_dir / "03_knn")  # a missing upstream output makes the stages below it stale too
    assert statuses(pipeline.run(cfg12)) == {"02_embed": "cached", "03_knn": "ran", "04_postprocess": "ran"}


def test_configs_parse_as_yaml_mappings():
    for path in sorted(CONFIGS.glob("*.yaml")):
        assert isinstance(yaml.safe_load(path.read_text()), dict)


def test_submission_key_chooses_the_published_stage(tmp_path, capsys, monkeypatch):
    cfg = pipeline.load_config(CONFIGS / "real-titles.yaml")
    assert cfg["submission"] == "04_postprocess"  # the judge's choice (docs/real-titles.md)
    with pytest.raises(ConfigError, match=r"submission must name a stage of this config that writes one"):
        pipeline.validate_config({**cfg, "submission": "03_knn"}, "cfg")
    for stage, text in (("04_postprocess", "a"), ("05_stacker", "b")):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "submission.csv").write_text(text)
        (tmp_path / stage / "metrics.json").write_text(json.dumps({"key_metric": "test_f1", "test_f1": 0.5}))
    states = {"04_postprocess": pipeline.CURRENT, "05_stacker": pipeline.CURRENT}
    monkeypatch.setattr(pipeline, "_state", lambda cfg, run_dir, name: ({}, {}, "", states[name]))
    pipeline._publish_submission(cfg, tmp_path)
    assert (tmp_path / "submission.csv").read_text() == "a"
    assert "(from 04_postprocess, test_f1 0.5)" in capsys.readouterr().out  # the summary names source and F1
    pipeline._publish_submission({**cfg, "submission": None}, tmp_path)
    assert (tmp_path / "submission.csv").read_text() == "b"
    # a partial run left 05 stale: the run's submission is 04's, and the run says so loudly
    states["05_stacker"] = pipeline.STALE
    pipeline._publish_submission({**cfg, "submission": None}, tmp_path)
    out = capsys.readouterr().out
    assert (tmp_path / "submission.csv").read_text() == "a" and "WARNING: 05_stacker is not up to date" in out
    states["04_postprocess"] = pipeline.EDITED  # nothing current: the file is left alone, with a warning
    pipeline._publish_submission({**cfg, "submission": None}, tmp_path)
    assert "no stage writing a submission is up to date" in capsys.readouterr().out


def test_cache_checks_the_outputs_it_wrote(tiny_demo, tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = text_chain(tiny_demo, run_dir)
    pipeline.run(cfg)
    neighbours = run_dir / "03_knn" / "test_tfidf_word.npz"
    neighbours.unlink()  # a deleted output: 03 re-runs, and 04 below it
    assert statuses(pipeline.run(cfg)) == {"02_embed": "cached", "03_knn": "ran", "04_postprocess": "ran"}
    assert "its outputs changed since it ran" in capsys.readouterr().out and neighbours.exists()
    thresholds = run_dir / "04_postprocess" / "thresholds.json"
    thresholds.write_text(thresholds.read_text() + " ")  # edited by hand (or by a notebook run outside the pipeline)
    assert statuses(pipeline.run(cfg))["04_postprocess"] == "ran"
    for damaged in (run_dir / "04_postprocess" / ".fingerprint.json", run_dir / "04_postprocess" / "metrics.json"):
        damaged.write_text(damaged.read_text()[:20])  # truncated: the stage is stale, never stuck
        assert statuses(pipeline.run(cfg))["04_postprocess"] == "ran"
    assert set(statuses(pipeline.run(cfg)).values()) == {"cached"}
