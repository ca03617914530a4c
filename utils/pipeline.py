"""Run the notebook chain with papermill: `python -m utils.pipeline run --config configs/demo.yaml`.

Each stage's executed notebook goes to `<run_dir>/notebooks/`; a stage that already finished with the
same parameters and notebook is skipped unless `--force` (or unless an earlier stage ran again).
The config's `data` section gives every stage its input paths; `stages` gives stage parameters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import papermill as pm
import yaml

from .io import read_json, write_json
from .paths import NOTEBOOKS, ROOT, RUNS
from .progress import ENV as PROGRESS_ENV

# chain order; stages that need images skip their image models themselves on datasets without images
STAGES = ("00_eda", "01_train_arcface", "02_embed", "03_knn", "04_postprocess", "05_stacker", "06_hmgnet_valuation")
# data keys that are paths (resolved against the project root) and passed to stages declaring them
PATH_KEYS = ("train_csv", "test_csv", "test_labels_csv", "train_images", "test_images", "reference_csv")


class StageFailed(RuntimeError):
    """A notebook cell raised; the message names the stage, the cell and the executed notebook."""


def _resolve(value: str | None) -> str:
    if not value:
        return ""
    p = Path(value)
    return str(p if p.is_absolute() else (ROOT / p).resolve())


def load_config(path: str | Path, overrides: list[str] = ()) -> dict:
    """Read a pipeline YAML and apply `--set` overrides (`stage.param=v`, `data.key=v` or `param=v`)."""
    cfg = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    for key in ("run", "data", "stages"):
        if key not in cfg:
            raise ValueError(f"{path}: missing top-level key {key!r}")
    unknown = set(cfg["stages"]) - set(STAGES)
    if unknown:
        raise ValueError(f"{path}: unknown stage(s) {sorted(unknown)}; known: {list(STAGES)}")
    cfg.setdefault("params", {})
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        head, _, rest = key.partition(".")
        if key == "run":
            cfg["run"] = str(value)
        elif rest and head in cfg["stages"]:
            cfg["stages"][head] = {**(cfg["stages"][head] or {}), rest: value}
        elif rest and head == "data":
            cfg["data"][rest] = value
        elif not rest:
            cfg["params"][key] = value
        else:
            raise ValueError(f"--set {key}: {head!r} is neither a stage of this config nor 'data'")
    return cfg


def ensure_data(data: dict) -> None:
    """Generate the demo dataset when the config says how and the training CSV is missing."""
    gen = data.get("generate")
    if not data.get("train_csv"):  # e.g. the valuation stage, which names its own listings file
        return
    train = Path(_resolve(data["train_csv"]))
    if train.exists() or not gen:
        return
    from .synth.shopee import generate

    print(f"[data] {train} missing: generating synthetic data ({gen})", flush=True)
    generate(train.parent, **{k: v for k, v in gen.items() if k != "kind"})


def public_test_guard(data: dict, run_dir: Path) -> dict:
    """Kaggle's public `test.csv` has 3 rows: then hold out a share of the train groups as a labelled test.

    With `data.public_test: {max_rows: 3, holdout: 0.2, seed: 0}` and a test file of at most `max_rows`
    rows, writes `<run_dir>/data/{train,test,test_solution}.csv` (whole groups held out, so no leak) and
    returns the data section pointing at them; the same notebooks then report CV instead of a submission
    of 3 rows. On the hidden test (more rows) the data section is returned unchanged.
    """
    guard = data.get("public_test")
    if not guard:
        return data
    test_csv = Path(_resolve(data["test_csv"]))
    with open(test_csv, encoding="utf-8") as f:
        n_test = sum(1 for _ in f) - 1
    if n_test > int(guard.get("max_rows", 3)):
        return data
    from .data import assign_folds, read_postings
    from .io import write_csv

    train = read_postings(_resolve(data["train_csv"]), require_labels=True)
    holdout = float(guard.get("holdout", 0.2))
    if not 0 < holdout < 1:
        raise ValueError(f"data.public_test.holdout must be in (0, 1), got {holdout}")
    folds = assign_folds(train, n_splits=max(2, round(1 / holdout)), seed=int(guard.get("seed", 0)))
    out = run_dir / "data"
    write_csv(out / "train.csv", train[folds != 0])
    write_csv(out / "test.csv", train[folds == 0].drop(columns="label_group"))
    write_csv(out / "test_solution.csv", train[folds == 0])
    print(f"[data] {test_csv} has {n_test} rows (public test): CV on {int((folds == 0).sum())} held-out train rows "
          f"instead, written to {out}", flush=True)
    return {**data, "train_csv": str(out / "train.csv"), "test_csv": str(out / "test.csv"),
            "test_labels_csv": str(out / "test_solution.csv"), "test_images": data.get("train_images", "")}


def stage_parameters(cfg: dict, stage: str, run_dir: Path) -> dict:
    """Parameters for one notebook: run_dir, the data paths it declares, common and stage params."""
    declared = pm.inspect_notebook(str(NOTEBOOKS / f"{stage}.ipynb"))
    data = cfg["data"]
    params = {"run_dir": str(run_dir)}
    for key in PATH_KEYS:
        if key in declared and key in data:
            params[key] = _resolve(data[key])
    if "use_images" in declared:
        params["use_images"] = bool(data.get("images", True))
    params.update({k: v for k, v in cfg["params"].items() if k in declared})
    stage_params = cfg["stages"].get(stage) or {}
    unknown = set(stage_params) - set(declared)
    if unknown:
        raise ValueError(f"stage {stage}: unknown parameter(s) {sorted(unknown)}; it declares {sorted(declared)}")
    params.update(stage_params)
    return params


def _fingerprint(stage: str, params: dict) -> str:
    """Hash of the notebook, the parameters, and the size and mtime of every input file named."""
    h = hashlib.sha256((NOTEBOOKS / f"{stage}.ipynb").read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    for value in params.values():
        if isinstance(value, str) and value and Path(value).is_file():
            st = Path(value).stat()
            h.update(f"{value}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def run_stage(stage: str, params: dict, run_dir: Path, verbose: bool = False) -> Path:
    """Execute one notebook; raises StageFailed with the failing cell and the executed notebook path.

    Quiet by default (batch runs write logs): no cell output, no progress bars, kernel warnings off.
    `verbose` streams every cell's output and the kernel's own log.
    """
    out_nb = run_dir / "notebooks" / f"{stage}.ipynb"
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run_dir / stage, ignore_errors=True)  # no artifact of an earlier run may leak into this one
    quiet = {} if verbose else {"extra_arguments": ["--IPKernelApp.log_level=ERROR"]}
    os.environ[PROGRESS_ENV] = "1" if verbose and sys.stderr.isatty() else "0"  # inherited by the kernel
    try:
        pm.execute_notebook(str(NOTEBOOKS / f"{stage}.ipynb"), str(out_nb), parameters=params, cwd=str(ROOT),
                            kernel_name="python3", progress_bar=False, log_output=verbose, **quiet)
    except pm.PapermillExecutionError as e:
        raise StageFailed(f"stage {stage} failed in cell {e.exec_count} ({e.ename}: {e.evalue}); "
                          f"the executed notebook with the error is {out_nb}") from None
    return out_nb


def key_metric(run_dir: Path, stage: str) -> tuple[str, object]:
    path = run_dir / stage / "metrics.json"
    if not path.exists():
        return "", ""
    m = read_json(path)
    key = m.get("key_metric")
    value = m.get(key, "")
    return key or "", round(value, 4) if isinstance(value, float) else value


def run(cfg: dict, stages: list[str] | None = None, force: bool = False, verbose: bool = False) -> list[dict]:
    """Run the configured chain (or `stages` of it) in order and return the summary rows."""
    run_dir = RUNS / cfg["run"]
    chain = [s for s in STAGES if s in cfg["stages"]]
    if stages:
        bad = set(stages) - set(chain)
        if bad:
            raise ValueError(f"--stages {sorted(bad)} not in this config's chain {chain}")
        chain = [s for s in chain if s in stages]
    ensure_data(cfg["data"])
    cfg = {**cfg, "data": public_test_guard(cfg["data"], run_dir)}
    summary, upstream_ran = [], False
    for n, stage in enumerate(chain, 1):
        prefix = f"[{n}/{len(chain)}] {stage}"
        params = stage_parameters(cfg, stage, run_dir)
        stamp_path = run_dir / stage / ".fingerprint.json"
        fp = _fingerprint(stage, params)
        done = (run_dir / stage / "metrics.json").exists() and stamp_path.exists()
        if done and not force and not upstream_ran and read_json(stamp_path).get("fingerprint") == fp:
            print(f"{prefix}: up to date, skipped (use --force to re-run)", flush=True)
            summary.append({"stage": stage, "status": "cached", "seconds": 0.0, **_metric(run_dir, stage)})
            continue
        if sys.stdout.isatty():  # on a terminal the line is overwritten by its result; logs get one line a stage
            print(f"{prefix}: running ...", end="\r", flush=True)
        t0 = time.perf_counter()
        run_stage(stage, params, run_dir, verbose)
        seconds = time.perf_counter() - t0
        write_json(stamp_path, {"fingerprint": fp, "parameters": params})
        upstream_ran = True
        print(f"{prefix}: done in {seconds:.1f}s", flush=True)
        summary.append({"stage": stage, "status": "ran", "seconds": round(seconds, 1), **_metric(run_dir, stage)})
    _publish_submission(run_dir, chain)
    return summary


def _metric(run_dir: Path, stage: str) -> dict:
    name, value = key_metric(run_dir, stage)
    return {"metric": name, "value": value}


def _publish_submission(run_dir: Path, chain: list[str]) -> None:
    """Copy the last stage's submission.csv to `<run_dir>/submission.csv`."""
    for stage in reversed(chain):
        src = run_dir / stage / "submission.csv"
        if src.exists():
            tmp = run_dir / ".submission.csv.tmp"
            shutil.copyfile(src, tmp)
            tmp.replace(run_dir / "submission.csv")
            print(f"submission: {run_dir / 'submission.csv'} (from {stage})", flush=True)
            return


def format_summary(rows: list[dict]) -> str:
    header = f"{'stage':<22}{'status':<20}{'seconds':>9}  key metric"
    lines = [header, "-" * len(header)]
    for r in rows:
        metric = f"{r['metric']} = {r['value']}" if r["metric"] else ""
        lines.append(f"{r['stage']:<22}{r['status']:<20}{r['seconds']:>9.1f}  {metric}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.pipeline")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the notebook chain of a config")
    r.add_argument("--config", required=True, help="pipeline YAML, e.g. configs/demo.yaml")
    r.add_argument("--stages", help="comma-separated subset of stages, e.g. 03_knn,04_postprocess")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override: stage.param=v, data.key=v, run=NAME, or param=v for every stage declaring it")
    r.add_argument("--force", action="store_true", help="re-run stages even when up to date")
    r.add_argument("--verbose", action="store_true", help="stream every cell's output, progress bars and kernel logs")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        rows = run(cfg, args.stages.split(",") if args.stages else None, force=args.force, verbose=args.verbose)
    except (StageFailed, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n" + format_summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
