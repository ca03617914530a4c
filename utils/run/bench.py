"""Benchmarks that print figures: `python -m utils.bench knn [--n 70000 --d 512 --k 50]`, `stacker`,
`inference` (the whole chain on ~70,000 synthetic test rows, per-stage time and peak memory),
`valuation-predict` (pricing one listing and a file of them with a saved HMG-Net) and `gpu` (the prepared check
for a GPU machine, `utils.run.bench_gpu`).

Each backend runs in a fresh subprocess so that its peak memory (max RSS) is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from utils.core.cli import boundary


def random_unit_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def knn_one(backend: str, n: int, d: int, k: int, chunk: int, precision: str = "fp32", save: str | None = None) -> dict:
    """Time one backend on random unit vectors (run inside its own process); `save` keeps the neighbours (.npz)."""
    import psutil

    from utils.matching.knn import neighbours

    X = random_unit_vectors(n, d)
    data_mb = psutil.Process().memory_info().rss / 2**20
    t0 = time.perf_counter()
    idx, sims, used = neighbours(X, k=k, backend=backend, chunk=chunk, precision=precision)
    seconds = time.perf_counter() - t0
    if save:
        np.savez(save, idx=idx, sims=sims)
    return {"backend": used, "precision": precision, "n": n, "d": d, "k": k, "chunk": chunk,
            "seconds": round(seconds, 2),
            "peak_rss_mb": round(_peak_rss_mb(), 1), "peak_over_data_mb": round(_peak_rss_mb() - data_mb, 1),
            "self_first": bool((idx[:, 0] == np.arange(n)).all())}


def run_capped(cmd: list[str], timeout: float | None = None) -> tuple[int | None, str, str]:
    """Run `cmd` from the project root in a session of its own; past `timeout` kill its whole process group (the
    pytest or pipeline children with it) and return None as the exit code, with the output written so far."""
    import os
    import signal

    from utils.core.paths import ROOT

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # line by line, so a killed run still shows its progress
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=None if timeout is None else max(1.0, timeout))
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err


def json_result(cmd: list[str], timeout: float | None = None) -> dict:
    """The JSON object a command prints last, or what went wrong: `timed_out` past the cap, `error` (the last line
    of its stderr) when it failed."""
    code, out, err = run_capped(cmd, timeout)
    if code is None:
        return {"timed_out": True, "cap_seconds": round(timeout)}
    if code != 0:
        return {"error": (err.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.strip().splitlines()[-1])


def knn_in_own_process(backend: str, n: int, d: int, k: int, chunk: int = 2048, precision: str = "fp32",
                       save: str | None = None, timeout: float | None = None) -> dict:
    """`knn_one` in a fresh process (its own peak memory; CUDA start-up included)."""
    cmd = [sys.executable, "-m", "utils.bench", "knn-one", "--backend", backend, "--precision", precision, "--n",
           str(n), "--d", str(d), "--k", str(k), "--chunk", str(chunk)] + (["--save", save] if save else [])
    return json_result(cmd, timeout)


def bench_knn(n: int, d: int, k: int, chunk: int, backends: list[str]) -> list[dict]:
    rows = []
    for b in backends:
        rows.append({"backend": b, **knn_in_own_process(b, n, d, k, chunk)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_stacker(n: int, k: int, d: int = 64, seed: int = 0) -> dict:
    """Feature building and prediction time per million candidate pairs on clustered random data."""
    import lightgbm  # noqa: F401  (imported before timing)
    import pandas as pd

    from utils.matching import stacker as st
    from utils.matching.knn import neighbours

    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n // 3, size=n)
    centres = random_unit_vectors(n // 3, d, seed)
    vocab = np.array([f"w{i}" for i in range(5000)])
    titles = [" ".join(rng.choice(vocab, size=8)) + f" {rng.integers(1, 500)}ml" for _ in range(n)]
    df = pd.DataFrame({"title": titles, "image_phash": [f"{x:016x}" for x in rng.integers(0, 2**63, size=n)]})
    emb, neigh = {}, {}
    for m in ("a", "b"):
        x = centres[groups] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
        emb[m] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        neigh[m] = neighbours(emb[m], k=k, backend="faiss-cpu")[:2]
    t0 = time.perf_counter()
    rows, cols = st.candidates(neigh, k)
    X = st.build_features(neigh, rows, cols, df, emb)
    t_feat = time.perf_counter() - t0
    y = (groups[rows] == groups[cols]).astype(int)
    clf = st.make_classifier(st.StackerConfig(n_estimators=200, device="cpu")).fit(X, y)
    t0 = time.perf_counter()
    clf.predict_proba(X)
    t_pred = time.perf_counter() - t0
    million = len(rows) / 1e6
    return {"rows": n, "k": k, "pairs": len(rows), "features": X.shape[1],
            "feature_seconds_per_million_pairs": round(t_feat / million, 2),
            "predict_seconds_per_million_pairs": round(t_pred / million, 2), "peak_rss_mb": round(_peak_rss_mb(), 1)}


def bench_inference(config: str, overrides: list[str], limit_mb: float, stages: list[str] | None = None) -> dict:
    """Run a scale config's chain (data generated first if missing); per-stage seconds and peak memory.

    Every stage runs in its own notebook kernel and records its peak RSS in metrics.json, so the
    figures are per stage; the pipeline itself holds no data. The result file is rewritten after each
    stage and keeps the figures of stages not re-run, so `--stages` re-times part of the chain.
    """
    from utils.core.io import read_json, write_json
    from utils.core.paths import OUTPUTS, RUNS
    from utils.core.store import RunStore

    from .pipeline import ensure_data, load_config, run

    cfg = load_config(config, overrides)
    path = OUTPUTS / "bench" / f"inference-{cfg['run']}.json"
    previous = read_json(path) if path.exists() else {}
    by_stage = {s["stage"]: s for s in previous.get("stages", [])}
    t0 = time.perf_counter()
    ensure_data(cfg["data"])
    gen_seconds = round(time.perf_counter() - t0, 1)
    run_dir = RUNS / cfg["run"]
    result: dict = {}
    for stage in stages or list(cfg["stages"]):
        (r,) = run(cfg, [stage], force=True)
        m = RunStore(run_dir).metrics(stage)
        by_stage[stage] = {"stage": stage, "seconds": r["seconds"], "peak_rss_mb": m.get("peak_rss_mb"),
                           "metric": r["metric"], "value": r["value"], "measured": time.strftime("%Y-%m-%d %H:%M"),
                           "steps": m.get("steps")}
        result = _inference_summary(config, run_dir, [by_stage[s] for s in cfg["stages"] if s in by_stage],
                                    gen_seconds, limit_mb)
        write_json(path, result)
    return result


def _inference_summary(config: str, run_dir: Path, stages: list[dict], gen_seconds: float, limit_mb: float) -> dict:
    """Totals over the recorded stages: inference seconds (02 onwards) and the peak RSS of any stage."""
    from utils.core.store import RunStore

    inference = [s for s in stages if s["stage"] not in ("00_eda", "01_train_arcface")]
    submission = RunStore(run_dir).submission_path()
    test_rows = None
    if submission.exists():
        with open(submission, encoding="utf-8") as f:
            test_rows = sum(1 for _ in f) - 1
    peak = max(s["peak_rss_mb"] for s in stages)
    return {"config": config, "test_rows": test_rows, "data_generation_seconds": gen_seconds,
            "stages": stages, "inference_seconds": round(sum(s["seconds"] for s in inference), 1),
            "peak_rss_mb": peak, "limit_mb": limit_mb, "within_limit": peak <= limit_mb}


def bench_score(n: int, seed: int = 0) -> dict:
    """`python -m utils.score` end to end on an `n`-row labelled file and a submission of up to 10 matches a row."""
    import tempfile

    import pandas as pd

    from utils.core.score import main as score_main

    rng = np.random.default_rng(seed)
    ids = np.array([f"p{i}" for i in range(n)])
    labels = rng.integers(0, max(1, n // 4), n)
    frame = pd.DataFrame({"posting_id": ids, "image": [f"{i}.jpg" for i in ids], "image_phash": "f" * 16,
                          "title": "item", "label_group": labels})
    order = np.argsort(labels, kind="stable")  # rows of a group are adjacent: predict a window around each row
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    window = [" ".join(dict.fromkeys([ids[i], *ids[order[max(0, pos[i] - 4):pos[i] + 5]]])) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        data, sub = Path(tmp) / "data.csv", Path(tmp) / "sub.csv"
        frame.to_csv(data, index=False)
        pd.DataFrame({"posting_id": ids, "matches": window}).to_csv(sub, index=False)
        t0 = time.perf_counter()
        rc = score_main(["--data", str(data), "--submission", str(sub)])
        seconds = time.perf_counter() - t0
    return {"rows": n, "seconds": round(seconds, 2), "exit_code": rc}


def bench_valuation_predict(model: str, listings: str, images: str | None, repeat: int) -> dict:
    """Seconds to load a saved HMG-Net and price its first listing (in this process, median of `repeat`), the
    same for every listing of the file, and the command line's wall time for one listing (Python start included)."""
    import tempfile

    import pandas as pd

    from utils.valuation.listings import read_listings
    from utils.valuation.saved import Valuer

    df = read_listings(listings, mapping=Valuer.load(model).mapping, require_price=False)

    def timed(frame) -> float:
        t0 = time.perf_counter()
        Valuer.load(model).predict(frame, images)
        return time.perf_counter() - t0

    timed(df.head(1))  # warm-up: first imports and the token table
    one = float(np.median([timed(df.head(1)) for _ in range(repeat)]))
    every = timed(df)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "one.csv"
        raw = pd.read_csv(listings, sep="\t" if listings.endswith(".tsv") else ",", dtype=str, keep_default_na=False)
        raw.head(1).to_csv(path, index=False)
        cmd = [sys.executable, "-m", "utils.valuation", "predict", "--model", model, "--listings", str(path),
               "--out", str(Path(tmp) / "out.csv")] + (["--images", images] if images else [])
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        cli = time.perf_counter() - t0
    return {"one_listing_seconds": round(one, 3), "listings": len(df), "all_listings_seconds": round(every, 2),
            "cli_one_listing_seconds": round(cli, 2)}


def _print_inference(r: dict) -> None:
    rows = f"{r['test_rows']:,}" if r["test_rows"] else "?"
    print(f"\ninference chain on {rows} test rows ({r['config']}); data generation "
          f"{r['data_generation_seconds']:.0f} s (skipped when the data existed)")
    print(f"{'stage':<20}{'seconds':>10}{'peak RSS MB':>14}  {'measured':<18}key metric")
    for s in r["stages"]:
        metric = f"{s['metric']} = {s['value']}" if s["metric"] else ""
        measured = s.get("measured", "")[:16]
        print(f"{s['stage']:<20}{s['seconds']:>10.1f}{s['peak_rss_mb']:>14.0f}  {measured:<18}{metric}")
        for step, seconds in (s.get("steps") or {}).items():
            print(f"    {step:<52}{seconds:>8.1f} s")
    verdict = "within" if r["within_limit"] else "OVER"
    print(f"inference stages (02-05): {r['inference_seconds']:.0f} s; peak of any stage {r['peak_rss_mb']:.0f} MB, "
          f"{verdict} the {r['limit_mb']:.0f} MB limit")


@boundary
def main(argv: list[str] | None = None) -> int:
    from utils.matching.knn import available_backends

    ap = argparse.ArgumentParser(prog="python -m utils.bench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("knn", "knn-one"):
        p = sub.add_parser(name)
        p.add_argument("--n", type=int, default=70_000, help="rows (the hidden Shopee test has ~70,000)")
        p.add_argument("--d", type=int, default=512, help="embedding dimension")
        p.add_argument("--k", type=int, default=50, help="neighbours per row")
        p.add_argument("--chunk", type=int, default=2048, help="query rows per chunk")
        if name == "knn":
            p.add_argument("--backends", default=",".join(b for b in available_backends()),
                           help="comma-separated backends (default: all available here)")
        else:
            p.add_argument("--backend", required=True)
            p.add_argument("--precision", default="fp32", help="torch matmul precision: fp32, fp16 or bf16")
            p.add_argument("--save", help="write the neighbours to this .npz")
    p = sub.add_parser("stacker", help="stacker feature building and prediction per million candidate pairs")
    p.add_argument("--n", type=int, default=20_000, help="rows (pairs are about n * 2k)")
    p.add_argument("--k", type=int, default=50, help="neighbours per row and model")
    p = sub.add_parser("score", help="the command-line scorer on a large data / submission pair")
    p.add_argument("--n", type=int, default=200_000, help="rows of the data and the submission")
    p = sub.add_parser("inference", help="the chain on ~70,000 synthetic test rows: stage times and peak memory")
    p.add_argument("--config", default="configs/scale-70k.yaml", help="scale config (data generated if missing)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, as in pipeline")
    p.add_argument("--limit-mb", type=float, default=8192, help="memory limit the peak is checked against")
    p.add_argument("--stages", help="comma-separated subset, e.g. 02_embed,03_knn,04_postprocess,05_stacker "
                                    "(re-times inference when the training stage's output exists)")
    p = sub.add_parser("valuation-predict", help="pricing listings with a saved HMG-Net (06's <stage>/model)")
    p.add_argument("--model", required=True, help="saved model folder")
    p.add_argument("--listings", required=True, help="listings in the training data's format")
    p.add_argument("--images", default=None, help="photo folder, when the model reads photos")
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions of the one-listing case")
    p = sub.add_parser("gpu", help="the prepared GPU check: GPU tests, KNN, generator, training, the 34k chain")
    p.add_argument("--out", help="report file (default outputs/bench/gpu-<time>.json)")
    p.add_argument("--budget", type=float, default=540, help="seconds for the whole check (default 9 minutes)")
    p.add_argument("--groups", type=int, default=33_500, help="groups of the generated competition data")
    p.add_argument("--data", help="folder of that data (default inputs/competition-34k, the chain's)")
    p.add_argument("--knn-n", type=int, default=70_000, help="rows of the KNN comparison (512 dimensions, K=50)")
    p.add_argument("--train-rows", type=int, default=8_000, help="rows of the training-throughput runs")
    p.add_argument("--chain-config", default="configs/competition-34k.yaml", help="'' skips the chain")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="chain config override")
    args = ap.parse_args(argv)
    if args.cmd == "gpu":
        from utils.core.paths import OUTPUTS

        from .bench_gpu import report, summary_lines

        out = Path(args.out) if args.out else OUTPUTS / "bench" / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
        r = report(out, budget_s=args.budget, knn_n=args.knn_n, groups=args.groups,
                   data=Path(args.data) if args.data else None,
                   train_rows=args.train_rows, chain_config=args.chain_config or None, chain_overrides=args.set)
        print("\n".join(summary_lines(r)))
        print(f"report: {out}")
        return 0
    if args.cmd == "valuation-predict":
        r = bench_valuation_predict(args.model, args.listings, args.images, args.repeat)
        print(json.dumps(r))
        print(f"\none listing: {r['one_listing_seconds']} s (load, encode, price, attributions; in process); "
              f"{r['listings']:,} listings: {r['all_listings_seconds']} s; the command line for one listing "
              f"{r['cli_one_listing_seconds']} s with Python's start")
        return 0
    if args.cmd == "inference":
        r = bench_inference(args.config, args.set, args.limit_mb, args.stages.split(",") if args.stages else None)
        _print_inference(r)
        return 0 if r["within_limit"] else 1
    if args.cmd == "score":
        r = bench_score(args.n)
        print(json.dumps(r))
        return r["exit_code"]
    if args.cmd == "stacker":
        r = bench_stacker(args.n, args.k)
        print(json.dumps(r))
        print(f"\nstacker on {r['pairs']:,} candidate pairs ({r['features']} features, CPU): "
              f"features {r['feature_seconds_per_million_pairs']} s per million pairs, prediction "
              f"{r['predict_seconds_per_million_pairs']} s per million pairs, peak RSS {r['peak_rss_mb']:.0f} MB")
        return 0
    if args.cmd == "knn-one":
        print(json.dumps(knn_one(args.backend, args.n, args.d, args.k, args.chunk, args.precision, args.save)))
        return 0
    rows = bench_knn(args.n, args.d, args.k, args.chunk, args.backends.split(","))
    print(f"\nKNN on {args.n:,} random unit vectors, d={args.d}, K={args.k}, chunk={args.chunk}")
    print(f"{'backend':<12}{'seconds':>10}{'peak RSS MB':>14}{'over data MB':>14}")
    for r in rows:
        if "error" in r:
            print(f"{r['backend']:<12}  failed: {r['error']}")
        else:
            print(f"{r['backend']:<12}{r['seconds']:>10.1f}{r['peak_rss_mb']:>14.0f}{r['peak_over_data_mb']:>14.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
