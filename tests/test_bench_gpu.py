"""The prepared GPU check (`python -m utils.bench gpu`) run here, on the CPU, at toy sizes: every part reports
figures a GPU machine would fill in, the parts needing CUDA say so, and a failing part does not stop the rest."""

from __future__ import annotations

import json
import time

import numpy as np

from utils.run import bench_gpu


def test_the_gpu_check_reports_every_part_on_a_cpu(tiny_demo, tmp_path):
    path = tmp_path / "gpu.json"
    data = {k: str(tiny_demo / v) for k, v in (("train_csv", "train.csv"), ("test_csv", "test.csv"),
                                                ("test_labels_csv", "test_solution.csv"),
                                                ("train_images", "train_images"), ("test_images", "test_images"))}
    r = bench_gpu.report(path, budget_s=400, knn_n=2_000, knn_d=16, knn_k=10, groups=40, one_core_groups=30,
                         train_rows=128, train_epochs=2, data=tiny_demo, chain_config="configs/demo.yaml",
                         chain_overrides=[f"data.{k}={v}" for k, v in data.items()], chain_stages="00_eda",
                         runs=tmp_path / "runs")
    assert json.loads(path.read_text()) == json.loads(json.dumps(r))  # the file holds the whole report
    assert r["machine"]["cuda"] is False and r["machine"]["cpu_cores"] >= 1
    tests = r["gpu_tests"]["tests"]
    assert len(tests) >= 10 and all(t["outcome"] == "skipped" and "CUDA" in t["message"] for t in tests)
    variants = {v["variant"]: v for v in r["knn"]["variants"]}
    assert variants["torch fp32"]["recall_of_reference"] > 0.99 and variants["torch fp32"]["reference"] == "faiss-cpu"
    assert variants["faiss-cpu"]["recall_of_reference"] == 1.0
    g = r["generator"]
    assert g["cached"] and g["speed_up"] is None and g["same_files"] and g["one_core_rows_per_second"] > 0
    runs = r["training"]["runs"]
    assert [x["workers"] for x in runs] == [0, 0]  # auto: no decoding workers on the CPU
    assert all(x["rows_per_second"] > 0 and x["gpu_utilisation_mean"] is None for x in runs)
    c = r["chain"]
    assert c["finished"] and [s["stage"] for s in c["stages"]] == ["00_eda"], c
    assert (tmp_path / "runs" / c["run"].rsplit("/", 1)[-1] / "00_eda" / "metrics.json").exists()
    text = "\n".join(bench_gpu.summary_lines(r))
    assert "pytest -m gpu: 0 passed, 0 failed" in text and "KNN 2,000 x 16 torch fp32" in text


def test_a_part_that_fails_or_runs_out_of_time_is_reported_and_the_rest_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_gpu, "machine", lambda: {"gpu": None, "cpu_cores": 2})
    monkeypatch.setattr(bench_gpu, "gpu_tests", lambda timeout: 1 / 0)
    monkeypatch.setattr(bench_gpu, "knn", lambda *a: time.sleep(1.5) or {"variants": []})
    r = bench_gpu.report(tmp_path / "r.json", budget_s=6, data=tmp_path / "none", chain_config="configs/demo.yaml")
    assert r["gpu_tests"]["error"].startswith("ZeroDivisionError") and r["knn"]["part_seconds"] >= 1.5
    for part in ("generator", "training", "chain"):
        assert r[part]["skipped"] == "the budget is spent"
    assert "gpu_tests: ZeroDivisionError" in "\n".join(bench_gpu.summary_lines(r))


def test_a_part_past_its_cap_is_killed_with_its_children_and_reported(monkeypatch):
    t0 = time.perf_counter()
    code, out, _ = bench_gpu.run_capped(["bash", "-c", "echo started; sleep 30 & sleep 30"], timeout=1)
    assert code is None and out.strip() == "started" and time.perf_counter() - t0 < 10
    r = bench_gpu.capped_part("training", {"folder": "/nonexistent", "rows": 1, "epochs": 1}, timeout=60)
    assert "No such file" in r["error"] or "not found" in r["error"].lower(), r
    verbose = "tests/test_gpu.py::test_a PASSED [ 50%]\ntests/test_gpu.py::test_b[torch] SKIPPED (no) [100%]\n"
    assert [(t["test"], t["outcome"]) for t in bench_gpu._verbose_outcomes(verbose)] == [
        ("test_gpu::test_a", "passed"), ("test_gpu::test_b[torch]", "skipped")]


def test_agreement_counts_shared_neighbours_whatever_their_order():
    ref = np.array([[0, 1, 2], [1, 0, 2]])
    got = np.array([[0, 2, 1], [1, 0, 3]])
    sims = np.ones((2, 3), dtype=np.float32)
    a = bench_gpu.agreement(got, sims, ref, sims - 0.01)
    assert a["recall_of_reference"] == round(5 / 6, 5) and a["max_similarity_difference"] == 0.01
