"""`python -m utils.bench gpu`: the one prepared check for a GPU machine, each part under a time cap, into one
JSON report (rewritten after every part, so a machine taken back early still leaves what was measured).

Parts, in order: the machine; `pytest -m gpu` (per test: passed, failed or skipped and why); KNN at 70,000 x 512
(torch fp32 / fp16 / bf16 against faiss-cpu, with their agreement); the generator (rows/s on one core and on
every core, same files); image training throughput (resnet10t at 96 px: rows/s and GPU utilisation, decoding
workers off and on); the full competition-34k chain (per-stage seconds). Runs on a CPU too (the parts that
need CUDA say so), which is how its tests run it.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.core.io import write_json
from utils.core.paths import ROOT

from .bench import json_result, knn_in_own_process, run_capped


@dataclass
class Budget:
    """Seconds left of the whole check; each part gets its own cap or what is left, whichever is less."""

    total: float
    started: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        return self.total - (time.perf_counter() - self.started)

    def cap(self, seconds: float) -> float:
        return max(0.0, min(seconds, self.left()))


def capped_part(name: str, kwargs: dict, timeout: float) -> dict:
    """One of this module's parts run in a capped process of its own (`python -m utils.run.bench_gpu NAME JSON`)."""
    return json_result([sys.executable, "-m", "utils.run.bench_gpu", name, json.dumps(kwargs)], timeout)


def machine() -> dict:
    """What the check ran on: Python, torch and CUDA, the GPU, the cores, and the optional GPU packages."""
    import importlib.util

    import torch

    from utils.core.device import cuda_available, lightgbm_has_cuda, usable_cores, xgboost_has_cuda

    cuda = cuda_available()
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": cuda,
            "cpu_cores": usable_cores(), "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None}
    packages = ("faiss", "cuml", "cudf", "cupy", "xgboost", "lightgbm", "papermill")
    info["packages"] = {p: importlib.util.find_spec(p) is not None for p in packages}
    info["xgboost_cuda"] = info["packages"]["xgboost"] and xgboost_has_cuda()
    info["lightgbm_cuda"] = info["packages"]["lightgbm"] and lightgbm_has_cuda()
    return info


def gpu_tests(timeout: float) -> dict:
    """`pytest -m gpu`, every test's outcome with the skip or failure message; past the cap, the outcomes of the
    tests that finished (from pytest's verbose lines) and `timed_out`."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "gpu.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-p", "no:cacheprovider", f"--junitxml={xml}"]
        t0 = time.perf_counter()
        code, out, _ = run_capped(cmd, timeout)
        seconds = time.perf_counter() - t0
        tests = _junit_outcomes(xml) if xml.exists() else _verbose_outcomes(out)
    counts = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failed", "skipped")}
    return {"seconds": round(seconds, 1), "exit_code": code, "timed_out": code is None, **counts, "tests": tests}


def _verbose_outcomes(out: str) -> list[dict]:
    """Outcomes from pytest -v lines ("tests/test_gpu.py::name PASSED [ 10%]"), for a run stopped early."""
    found = re.findall(r"^\S+?::(\S+(?:\[[^\]]*\])?) (PASSED|FAILED|SKIPPED|ERROR)", out, flags=re.M)
    outcome = {"PASSED": "passed", "FAILED": "failed", "ERROR": "failed", "SKIPPED": "skipped"}
    return [{"test": f"test_gpu::{name}", "outcome": outcome[o], "message": "", "seconds": None} for name, o in found]


def _junit_outcomes(xml: Path) -> list[dict]:
    out = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (el.get("message") or "").splitlines()[0][:300] if el.get("message") else ""
                break
        out.append({"test": f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}",
                    "outcome": outcome, "message": message, "seconds": round(float(case.get("time", 0)), 1)})
    return out


KNN_VARIANTS = (("torch", "fp32"), ("torch", "fp16"), ("torch", "bf16"), ("faiss-cpu", "fp32"))


def knn(n: int, d: int, k: int, cap: Callable[[], float]) -> dict:
    """Each variant in a fresh process (CUDA start-up included, its own peak memory) under `cap()` seconds (asked
    anew for each), then each one's agreement with the reference (faiss-cpu, else torch fp32): the share of the
    reference's neighbours found, and the largest similarity difference."""
    from utils.matching.knn import available_backends

    variants, found = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend, precision in KNN_VARIANTS:
            name = f"{backend} {precision}" if backend == "torch" else backend
            if backend not in available_backends():
                variants.append({"variant": name, "skipped": f"{backend} not installed"})
                continue
            save = Path(tmp) / f"{backend}-{precision}.npz"
            result = knn_in_own_process(backend, n, d, k, precision=precision, save=str(save), timeout=cap())
            variants.append({"variant": name, **result})
            if "seconds" not in result:  # timed out or failed
                continue
            with np.load(save) as z:
                found[name] = (z["idx"], z["sims"])
    reference = "faiss-cpu" if "faiss-cpu" in found else "torch fp32" if "torch fp32" in found else None
    for v in variants:
        if v["variant"] in found and reference:
            v.update(agreement(*found[v["variant"]], *found[reference]), reference=reference)
    return {"n": n, "d": d, "k": k, "variants": variants}


def agreement(idx: np.ndarray, sims: np.ndarray, ref_idx: np.ndarray, ref_sims: np.ndarray) -> dict:
    """Recall of the reference's neighbour sets (order and ties aside) and the largest similarity difference."""
    k = idx.shape[1]
    hits = (np.sort(idx, axis=1)[:, :, None] == np.sort(ref_idx, axis=1)[:, None, :]).any(axis=2).sum(axis=1)
    return {"recall_of_reference": round(float(hits.mean() / k), 5),
            "max_similarity_difference": round(float(np.abs(sims - ref_sims).max()), 5)}


def generator(folder: str, groups: int, one_core_groups: int) -> dict:
    """Rows per second on every core (the data the next parts use, unless already there) against one core (a
    smaller set), and the check that one and every core write the same files (on the smaller set)."""
    from utils.synth.shopee import generate

    folder = Path(folder)
    t0 = time.perf_counter()
    cached = (folder / "train.csv").exists()  # the data was there already: its rate is not measured
    summary = generate(folder, groups=groups, seed=0, test_share=0.673) if not cached \
        else json.loads((folder / "synth.json").read_text())
    every = time.perf_counter() - t0
    rows = summary["train_rows"] + summary["test_rows"]
    with tempfile.TemporaryDirectory() as tmp:
        timed = {}
        for workers in (1, None):
            t0 = time.perf_counter()
            small = generate(Path(tmp) / str(workers), groups=one_core_groups, seed=1, workers=workers)
            timed[workers] = time.perf_counter() - t0
        same = all((Path(tmp) / "1" / f).read_bytes() == (Path(tmp) / "None" / f).read_bytes()
                   for f in ("train.csv", "test.csv"))
    small_rows = small["train_rows"] + small["test_rows"]
    one_core = small_rows / timed[1]
    return {"groups": groups, "rows": rows, "seconds": round(every, 1), "cached": cached,
            "rows_per_second": None if cached else round(rows / every, 1),
            "one_core_rows_per_second": round(one_core, 1), "small_set_rows": small_rows,
            "speed_up": None if cached else round(rows / every / one_core, 2), "same_files": same}


@contextmanager
def gpu_utilisation(every: float = 0.25):
    """Sample the GPU's utilisation (%) in a thread while the block runs; yields the list of samples."""
    samples: list[float] = []
    stop = threading.Event()

    def read() -> float | None:
        try:
            import torch

            return float(torch.cuda.utilization())
        except Exception:  # no pynvml: ask nvidia-smi  # noqa: BLE001
            pass
        if shutil.which("nvidia-smi") is None:
            return None
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True).stdout.split()
        return float(out[0]) if out else None

    def loop() -> None:
        while not stop.wait(every):
            value = read()
            if value is None:
                return
            samples.append(value)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def training(folder: str, rows: int, epochs: int, image_size: int = 96) -> dict:
    """Image training rows/s (resnet10t, batch 64, training steps only) with decoding workers off and on (the
    default), each epoch's figure and the GPU utilisation while it trained."""
    import pandas as pd

    from utils.core.device import cuda_available
    from utils.training.loop import TrainConfig, fit, resolve_device, training_workers

    folder = Path(folder)
    df = pd.read_csv(folder / "train.csv").head(rows)
    out = {"rows": len(df), "image_size": image_size, "device": "cuda" if cuda_available() else "cpu", "runs": []}
    for workers, n_epochs in ((0, 1), (-1, epochs)):
        cfg = TrainConfig(modality="image", image={"backbone": "resnet10t", "pooling": "avg"}, image_size=image_size,
                          epochs=n_epochs, batch_size=64, lr=3e-3, fold=-1, num_workers=workers, embedding_size=64)
        with tempfile.TemporaryDirectory() as tmp, gpu_utilisation() as util:
            history = fit(cfg, df, folder / "train_images", tmp)["history"][1:]
        per_epoch = [h["rows_per_second"] for h in history]
        used = training_workers(cfg, resolve_device(cfg.device), needs_images=True)
        out["runs"].append({"workers": used, "epochs": n_epochs,
                            "rows_per_second_by_epoch": per_epoch, "rows_per_second": max(per_epoch),
                            "gpu_utilisation_mean": round(float(np.mean(util)), 1) if util else None,
                            "gpu_utilisation_max": max(util) if util else None})
    return out


def chain(config: str, overrides: list[str], timeout: float, stages: str | None = None,
          runs: Path | None = None) -> dict:
    """The pipeline on `config` in a fresh run folder under `runs` (default outputs/runs/), under `timeout`;
    per-stage seconds from the history lines the run adds (the stages that finished, when the cap cut it short)."""
    from utils.core.paths import RUNS

    run = (runs or RUNS) / f"bench-gpu-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = [sys.executable, "-m", "utils.pipeline", "run", "--config", config, "--set", f"run={run}"]
    for o in overrides:
        cmd += ["--set", o]
    if stages:
        cmd += ["--stages", stages]
    t0 = time.perf_counter()
    code, out, err = run_capped(cmd, timeout)
    finished = code == 0
    tail = out.strip().splitlines()[-3:] + err.strip().splitlines()[-2:]
    if code is None:
        tail.append(f"stopped at the cap of {timeout:.0f} s")
    seconds = time.perf_counter() - t0
    lines = []
    if (run.parent / "history.csv").exists():
        import pandas as pd

        history = pd.read_csv(run.parent / "history.csv")
        mine = history["run"].isin([run.name, str(run)])
        lines = history[mine][["stage", "seconds", "metric", "value"]].to_dict(orient="records")
    inference = sum(r["seconds"] for r in lines if r["stage"] not in ("00_eda", "01_train_arcface"))
    return {"config": config, "run": str(run), "finished": finished, "seconds": round(seconds, 1), "stages": lines,
            "inference_seconds_02_to_05": round(inference, 1), "tail": tail}


def report(path: Path, budget_s: float = 540, knn_n: int = 70_000, knn_d: int = 512, knn_k: int = 50,
           groups: int = 33_500, one_core_groups: int = 300, train_rows: int = 8_000, train_epochs: int = 3,
           data: Path | None = None, chain_config: str | None = "configs/competition-34k.yaml",
           chain_overrides: list[str] | None = None, chain_stages: str | None = None, runs: Path | None = None,
           caps: dict[str, float] | None = None) -> dict:
    """Every part in order under one budget; the report is rewritten to `path` after each part."""
    caps = {"gpu_tests": 150, "knn": 60, "generator": 150, "training": 90, **(caps or {})}
    budget = Budget(budget_s)
    data = data or ROOT / "inputs" / ("competition-34k" if groups == 33_500 else f"bench-gpu-{groups}")
    on_data = [f"data.{key}={data / name}" for key, name in (
        ("train_csv", "train.csv"), ("test_csv", "test.csv"), ("test_labels_csv", "test_solution.csv"),
        ("train_images", "train_images"), ("test_images", "test_images"))]  # the chain runs on the data made here
    result: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_seconds": budget_s}

    def part(name: str, fn) -> None:
        t0 = time.perf_counter()
        if budget.left() <= 5:
            result[name] = {"skipped": "the budget is spent"}
        else:
            try:
                result[name] = fn()
            except Exception as e:  # one part's failure is a finding, not the end of the check  # noqa: BLE001
                result[name] = {"error": f"{type(e).__name__}: {e}"}
        result[name]["part_seconds"] = round(time.perf_counter() - t0, 1)
        result["elapsed_seconds"] = round(budget_s - budget.left(), 1)
        write_json(path, result)
        print(f"[bench gpu] {name}: {result[name]['part_seconds']} s", flush=True)

    part("machine", machine)
    part("gpu_tests", lambda: gpu_tests(budget.cap(caps["gpu_tests"])))
    part("knn", lambda: knn(knn_n, knn_d, knn_k, lambda: budget.cap(caps["knn"])))
    part("generator", lambda: capped_part("generator", {"folder": str(data), "groups": groups,
                                                        "one_core_groups": one_core_groups},
                                          budget.cap(caps["generator"])))
    part("training", lambda: capped_part("training", {"folder": str(data), "rows": train_rows,
                                                      "epochs": train_epochs}, budget.cap(caps["training"])))
    if chain_config:
        part("chain", lambda: chain(chain_config, on_data + (chain_overrides or []), budget.cap(budget.left() - 5),
                                    chain_stages, runs))
    return result


def summary_lines(r: dict) -> list[str]:
    """The report in a few lines for the terminal."""
    lines = [f"GPU check ({r['machine'].get('gpu') or 'no GPU'}, {r['machine'].get('cpu_cores')} cores): "
             f"{r['elapsed_seconds']:.0f} s of {r['budget_seconds']:.0f}"]
    t = r.get("gpu_tests", {})
    if "tests" in t:
        lines.append(f"pytest -m gpu: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped")
        lines += [f"  {x['outcome']:<8}{x['test']}  {x['message'][:90]}"
                  for x in t["tests"] if x["outcome"] != "passed"]
    for v in r.get("knn", {}).get("variants", []):
        figure = f"{v['seconds']:.2f} s" if "seconds" in v else next(
            (f"{k}: {v[k]}" for k in ("skipped", "error", "timed_out") if k in v), "")
        extra = f", recall of {v['reference']} {v['recall_of_reference']:.4f}" if "reference" in v else ""
        lines.append(f"KNN {r['knn']['n']:,} x {r['knn']['d']} {v['variant']:<12}{figure}{extra}")
    g = r.get("generator", {})
    if "same_files" in g:
        rate = "already there (not timed)" if g["cached"] else (
            f"at {g['rows_per_second']:.0f} rows/s on every core, {g['speed_up']}x one core's")
        lines.append(f"generator: {g['rows']:,} rows {rate}; one core {g['one_core_rows_per_second']:.0f} rows/s; "
                     f"one and every core write the same files: {g['same_files']}")
    for run in r.get("training", {}).get("runs", []):
        lines.append(f"training resnet10t {r['training']['image_size']} px, {run['workers']} workers: "
                     f"{run['rows_per_second']:.0f} images/s, GPU utilisation {run['gpu_utilisation_mean']}%")
    c = r.get("chain", {})
    if "stages" in c:
        lines.append(f"chain {c['config']}: {'finished' if c['finished'] else 'NOT finished'} in {c['seconds']:.0f} s; "
                     f"02-05 {c['inference_seconds_02_to_05']:.0f} s")
        lines += [f"  {s['stage']:<20}{s['seconds']:>8.1f} s" for s in c["stages"]]
    for name, part in r.items():
        if isinstance(part, dict) and "error" in part:
            lines.append(f"{name}: {part['error']}")
    return lines


if __name__ == "__main__":  # one part in a capped process of its own: `python -m utils.run.bench_gpu NAME JSON`
    print(json.dumps({"generator": generator, "training": training}[sys.argv[1]](**json.loads(sys.argv[2]))))
