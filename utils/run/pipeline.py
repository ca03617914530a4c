"""Run the notebook chain with papermill: `python -m utils.pipeline run --config configs/demo.yaml`.

The chain is the stage table (`utils.run.stages`); a config's `data` section gives every stage its input
paths and `stages` its parameters, validated against the stages' schemas (`utils.stages`) before
anything runs. A stage is skipped when its fingerprint (`utils.run.cache`) is unchanged. Each stage runs
into a staging folder that replaces `<run_dir>/<stage>/` only on success, so a failure keeps the last good
outputs; one pipeline at a time holds a run folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import papermill as pm
import yaml
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from utils.core.cli import boundary
from utils.core.io import write_json
from utils.core.paths import EMBED, POSTPROCESS, ROOT, RUNS, STACKER, TRAIN
from utils.core.progress import ENV as PROGRESS_ENV
from utils.core.schema import ConfigError, validate
from utils.core.store import STAMP, RunStore
from utils.stages import params_class

from . import history
from .cache import fingerprint, outputs_manifest, run_lock
from .stages import NAMES, markdown_table, stage

TOP_KEYS = ("run", "data", "params", "stages", "kaggle", "submission")
SUBMITTING = (POSTPROCESS, STACKER)  # the stages that write a submission.csv
# data keys that are paths (resolved against the project root) and passed to the stages declaring them
PATH_KEYS = ("train_csv", "test_csv", "test_labels_csv", "train_images", "test_images", "reference_csv",
             "distractors_csv")
DATA_KEYS = (*PATH_KEYS, "images", "generate", "public_test")
# paths a stage may run without ("" then): labels for scoring, the EDA's reference, images of a text-only set,
# real distractors (without them the distractors are test postings)
OPTIONAL_PATHS = ("test_labels_csv", "reference_csv", "train_images", "test_images", "distractors_csv")
STAGING = ".staging"


class StageFailed(RuntimeError):
    """A notebook cell raised; the message names the stage, the cell and the executed notebook."""


def _resolve(value: str | None) -> str:
    if not value:
        return ""
    p = Path(value)
    return str(p if p.is_absolute() else (ROOT / p).resolve())


def _unknown(where: str, given, valid) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(valid)}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key written twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} written twice", mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> dict:
    try:
        cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a safe loader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at position {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config is a mapping with keys {list(TOP_KEYS[:4])}, got {type(cfg).__name__}")
    return cfg


def load_config(path: str | Path, overrides: list[str] = ()) -> dict:
    """Read a pipeline YAML, apply `--set` overrides (`stage.param=v`, `data.key=v`, `run=NAME` or `param=v`)
    and validate it: unknown keys at any level, bad types and out-of-range values are errors naming them."""
    path = Path(path)
    cfg = _read_yaml(path)
    _unknown(str(path), cfg, TOP_KEYS)
    for key in ("run", "data", "stages"):
        if key not in cfg:
            raise ConfigError(f"{path}: missing top-level key {key!r}")
    cfg["data"] = cfg["data"] or {}
    cfg["params"] = cfg.get("params") or {}
    for key in ("data", "params"):
        if not isinstance(cfg[key], dict):
            raise ConfigError(f"{path}: {key} must be a mapping of keys to values, got {cfg[key]!r}")
    if not isinstance(cfg["stages"], dict) or not cfg["stages"]:
        raise ConfigError(f"{path}: 'stages' must map stage names to their parameters; known: {list(NAMES)}")
    _unknown(f"{path}: stages", cfg["stages"], NAMES)
    for name, section in cfg["stages"].items():
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"{path}: stages.{name} must be a mapping of its parameters (or empty), got {section!r}")
    cfg["stages"] = {name: dict(v or {}) for name, v in cfg["stages"].items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: {raw!r} is not a YAML value") from None
        head, _, rest = key.partition(".")
        if key == "run":
            if value is None or not str(value).strip():
                raise ConfigError("--set run= needs a run name (a folder under outputs/runs/) or an absolute path")
            cfg["run"] = str(value)
        elif rest and head in cfg["stages"]:
            _set_nested(cfg["stages"][head], rest, value, key)
        elif rest and head == "data":
            cfg["data"][rest] = value
        elif not rest:
            cfg["params"][key] = value
        else:
            raise ConfigError(f"--set {key}: {head!r} is neither a stage of this config {list(cfg['stages'])} "
                              "nor 'data'")
    validate_config(cfg, str(path))
    return cfg


def _set_nested(section: dict, dotted: str, value: object, key: str) -> None:
    """`--set stage.a.b=v`: set `b` inside the mapping `a` of the stage's section (created when absent), so one
    field of a model's settings changes without restating the others."""
    *path, last = dotted.split(".")
    for part in path:
        inner = section.setdefault(part, {})
        if inner is None:
            inner = section[part] = {}
        if not isinstance(inner, dict):
            raise ConfigError(f"--set {key}: {part!r} holds {inner!r}, not a mapping of keys")
        section = inner
    section[last] = value


def validate_config(cfg: dict, where: str) -> None:
    """Every key of the config known to the stage that receives it, every value of the right type and range."""
    run = str(cfg["run"])
    if not run or not Path(run).is_absolute() and ("/" in run or run.startswith(".")):
        raise ConfigError(f"{where}: run must be a folder name (under outputs/runs/) or an absolute path, got {run!r}")
    if (RUNS / run).exists() and not (RUNS / run).is_dir():
        raise ConfigError(f"{where}: run {run!r} names a file ({RUNS / run}), not a run folder")
    _unknown(f"{where}: data", cfg["data"], DATA_KEYS)
    chain = [s for s in NAMES if s in cfg["stages"]]
    chosen = cfg.get("submission")
    if chosen is not None and chosen not in [s for s in SUBMITTING if s in chain]:
        raise ConfigError(f"{where}: submission must name a stage of this config that writes one "
                          f"{[s for s in SUBMITTING if s in chain]}, got {chosen!r}")
    fields = {s: set(params_class(s).__dataclass_fields__) for s in chain}
    for key in cfg.get("params") or {}:
        if not any(key in f for f in fields.values()):
            raise ConfigError(f"{where}: parameter {key!r} (params or --set {key}=...) is declared by no stage of "
                              f"this config {chain}; prefix it with a stage (--set 03_knn.{key}=...)")
    pools, resolved = {}, {}
    for s in chain:
        values = {k: v for k, v in (cfg.get("params") or {}).items() if k in fields[s]} | (cfg["stages"][s] or {})
        validate(params_class(s), values, f"{where}: stages.{s}")
        resolved[s] = values
        if "distractors" in fields[s]:
            pools[s] = values.get("distractors", 0)
    if len(set(map(str, pools.values()))) > 1:
        raise ConfigError(f"{where}: distractors differ between stages {pools}; the stages share one training pool, "
                          "so set it once under params")
    if (resolved.get(STACKER, {}).get("validation") == "slices" and resolved.get(TRAIN, {}).get("cv")
            and EMBED in resolved and not resolved[EMBED].get("fold_test")):
        raise ConfigError(f"{where}: 05_stacker validation: slices compares a slice's test postings in each fold "
                          "model's space; set 02_embed fold_test: true")


def ensure_data(data: dict) -> None:
    """Generate the demo dataset when the config says how and the training CSV is missing."""
    gen = data.get("generate")
    if not data.get("train_csv"):  # e.g. the valuation stage, which names its own listings file
        return
    train = Path(_resolve(data["train_csv"]))
    if train.exists() or not gen:
        return
    from utils.synth.shopee import generate

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
    from utils.core.data import assign_folds, read_postings
    from utils.core.io import write_csv

    train = read_postings(_resolve(data["train_csv"]), require_labels=True)
    holdout = float(guard.get("holdout", 0.2))
    if not 0 < holdout < 1:
        raise ConfigError(f"data.public_test.holdout must be in (0, 1), got {holdout}")
    folds = assign_folds(train, n_splits=max(2, round(1 / holdout)), seed=int(guard.get("seed", 0)))
    out = run_dir / "data"
    for name, frame in (("train.csv", train[folds != 0]), ("test.csv", train[folds == 0].drop(columns="label_group")),
                        ("test_solution.csv", train[folds == 0])):
        path = out / name
        if not path.exists() or path.read_text(encoding="utf-8") != frame.to_csv(index=False):
            write_csv(path, frame)  # rewritten only when it changes: its mtime is part of every fingerprint
    print(f"[data] {test_csv} has {n_test} rows (public test): CV on {int((folds == 0).sum())} held-out train rows "
          f"instead, written to {out}", flush=True)
    return {**data, "train_csv": str(out / "train.csv"), "test_csv": str(out / "test.csv"),
            "test_labels_csv": str(out / "test_solution.csv"), "test_images": data.get("train_images", "")}


def stage_parameters(cfg: dict, name: str, run_dir: Path) -> dict:
    """Parameters for one notebook: run_dir, the data paths it declares, common and stage params.

    A data path the stage declares but the config does not set is passed as "" when optional and is an
    error otherwise: a notebook's demo default never stands in for a configured dataset.
    """
    declared = params_class(name).__dataclass_fields__
    data = cfg["data"]
    params = {"run_dir": str(run_dir)}
    for key in PATH_KEYS:
        if key not in declared or key in cfg["stages"].get(name, {}):
            continue
        if key in data:
            params[key] = _resolve(data[key])
        elif key in OPTIONAL_PATHS:
            params[key] = ""
        else:
            raise ConfigError(f"data.{key} is not set, and stage {name} reads it")
    if "use_images" in declared:
        params["use_images"] = bool(data.get("images", True))
    params.update({k: v for k, v in (cfg.get("params") or {}).items() if k in declared})
    params.update(cfg["stages"].get(name) or {})
    return params


@contextmanager
def _kernel_files_in(folder: Path) -> Iterator[Callable[..., None]]:
    """Jupyter writes the kernel's connection file (it holds the kernel's key) to the temp folder: make that a
    private folder inside the run. Yields a hook that empties it once the kernel is up (both ends then hold the
    key in memory only), so a run killed while cells execute leaves no key on disk; the folder goes afterwards
    (and, after a run killed during a kernel start, with the next run's staging folder)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    previous = tempfile.tempdir
    tempfile.tempdir = str(folder)

    def forget(**_) -> None:
        for f in folder.iterdir():
            f.unlink(missing_ok=True)

    try:
        yield forget
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(folder, ignore_errors=True)


def run_stage(name: str, params: dict, run_dir: Path, stamp: dict, verbose: bool = False) -> Path:
    """Execute one notebook into a staging folder and swap it in on success.

    On failure the last good `<run_dir>/<stage>/` is kept and the executed notebook with the error is
    `<run_dir>/notebooks/<stage>.failed.ipynb`; StageFailed names the cell. Quiet by default (batch runs
    write logs): no cell output, no progress bars, kernel warnings off; `verbose` shows all of it.
    """
    staging_root = run_dir / STAGING
    staging, staged_nb = staging_root / name, staging_root / f"{name}.ipynb"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    final, notebooks = run_dir / name, run_dir / "notebooks"
    notebooks.mkdir(parents=True, exist_ok=True)
    quiet = {} if verbose else {"extra_arguments": ["--IPKernelApp.log_level=CRITICAL"]}
    os.environ[PROGRESS_ENV] = "1" if verbose and sys.stderr.isatty() else "0"  # inherited by the kernel
    try:
        with _kernel_files_in(staging_root / f"{name}.kernel") as forget:
            pm.execute_notebook(str(stage(name).notebook), str(staged_nb), cwd=str(ROOT), kernel_name="python3",
                                parameters={**params, "out_dir": str(staging)}, progress_bar=False,
                                log_output=verbose, on_notebook_start=forget, **quiet)
    except BaseException as e:  # a failing cell, a dead kernel, Ctrl-C: the last good outputs stay
        failed_nb = notebooks / f"{name}.failed.ipynb"
        if staged_nb.exists():
            os.replace(staged_nb, failed_nb)
        shutil.rmtree(staging, ignore_errors=True)
        if not isinstance(e, Exception):
            raise
        kept = f"the last good outputs in {final} are kept" if final.is_dir() else "it has no earlier outputs"
        where = (f"in cell {e.exec_count} ({e.ename}: {e.evalue})" if isinstance(e, pm.PapermillExecutionError)
                 else f"({type(e).__name__}: {e})")
        raise StageFailed(f"stage {name} failed {where}; the executed notebook is {failed_nb}; {kept}") from None
    if not (staging / "metrics.json").exists():
        os.replace(staged_nb, notebooks / f"{name}.failed.ipynb")
        shutil.rmtree(staging, ignore_errors=True)
        raise StageFailed(f"stage {name} finished without writing metrics.json (the stage contract); the executed "
                          f"notebook is {notebooks / f'{name}.failed.ipynb'}")
    write_json(staging / STAMP, {**stamp, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                 "outputs": outputs_manifest(staging, skip=(STAMP,))})
    old = staging_root / f"{name}.previous"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    out_nb = notebooks / f"{name}.ipynb"
    os.replace(staged_nb, out_nb)
    (notebooks / f"{name}.failed.ipynb").unlink(missing_ok=True)
    return out_nb


def key_metric(run_dir: Path, stage: str) -> tuple[str, object]:
    """The headline figure a stage named in its metrics.json, for the summary table."""
    m = RunStore(run_dir).metrics(stage)
    key = m.get("key_metric")
    value = m.get(key, "")
    return key or "", round(value, 4) if isinstance(value, float) else value


def run(cfg: dict, stages: list[str] | None = None, force: bool = False, verbose: bool = False,
        reuse: str | None = None) -> list[dict]:
    """Run the configured chain (or `stages` of it) in order and return the summary rows. With `reuse` (another
    run's name), a stage that is up to date there under this config is copied from it instead of recomputed."""
    validate_config(cfg, f"config {cfg.get('run')!r}")
    run_dir = RUNS / cfg["run"]
    source = RUNS / reuse if reuse else None
    if source is not None and (not source.is_dir() or source.resolve() == run_dir.resolve()):
        raise ConfigError(f"--from {reuse}: " + ("the run itself" if source.is_dir() else f"no run at {source}"))
    chain = [s for s in NAMES if s in cfg["stages"]]
    if stages:
        bad = set(stages) - set(chain)
        if bad:
            raise ConfigError(f"--stages {sorted(bad)} not in this config's chain {chain}")
        chain = [s for s in chain if s in stages]
    with run_lock(run_dir):
        for previous in (run_dir / STAGING).glob("*.previous"):  # a run killed in the middle of a swap
            if not (run_dir / previous.name.removesuffix(".previous")).exists():
                os.replace(previous, run_dir / previous.name.removesuffix(".previous"))
        shutil.rmtree(run_dir / STAGING, ignore_errors=True)  # left by a killed run: staged outputs, kernel files
        try:
            summary = _run_chain(cfg, chain, run_dir, force, verbose, source)
        finally:
            shutil.rmtree(run_dir / STAGING, ignore_errors=True)
    return summary


def _run_chain(cfg: dict, chain: list[str], run_dir: Path, force: bool, verbose: bool,
               source: Path | None = None) -> list[dict]:
    """The stages in order, each skipped when up to date (or copied from `source` when up to date there); then
    the last stage's submission is published."""
    ensure_data(cfg["data"])
    cfg = {**cfg, "data": public_test_guard(cfg["data"], run_dir)}
    summary = []
    for n, name in enumerate(chain, 1):
        prefix = f"[{n}/{len(chain)}] {name}"
        params, upstream, fp, state = _state(cfg, run_dir, name)
        if not force and state == CURRENT:
            print(f"{prefix}: up to date, skipped (use --force to re-run)", flush=True)
            summary.append({"stage": name, "status": "cached", "seconds": 0.0, **_metric(run_dir, name)})
            continue
        if not force and source is not None and _reusable(cfg, source, name, upstream):
            _reuse(source, run_dir, name, (params, upstream, fp, state))
            print(f"{prefix}: up to date in {source.name}, reused (linked, not recomputed)", flush=True)
            summary.append({"stage": name, "status": f"from {source.name}", "seconds": 0.0, **_metric(run_dir, name)})
            continue
        if state == EDITED:
            print(f"{prefix}: its outputs changed since it ran (a file edited, added or deleted): re-running",
                  flush=True)
        t0 = time.perf_counter()
        stamp = {"fingerprint": fp, "run_id": uuid.uuid4().hex, "upstream": upstream, "parameters": params}
        with heartbeat(prefix, enabled=sys.stdout.isatty() and not verbose):
            run_stage(name, params, run_dir, stamp, verbose)
        seconds = time.perf_counter() - t0
        print(f"{prefix}: done in {seconds:.1f}s", flush=True)
        metric = _metric(run_dir, name)
        history.record(run_dir, name, seconds, params, metric["metric"], metric["value"],
                       run_dir.parent / "history.csv")
        summary.append({"stage": name, "status": "ran", "seconds": round(seconds, 1), **metric})
    _publish_submission(cfg, run_dir)
    return summary


def _reusable(cfg: dict, source: Path, name: str, upstream: dict) -> bool:
    """Whether another run holds this stage up to date under this config, computed from the same upstream runs
    as this run's (a stage recomputed here makes every stage below it differ from the other run's)."""
    _, source_upstream, _, state = _state({**cfg, "run": str(source)}, source, name)
    return state == CURRENT and source_upstream == upstream


def _reuse(source: Path, run_dir: Path, name: str, state: tuple[dict, dict, str, str]) -> None:
    """Copy (hard links where the file system allows) a stage's outputs and executed notebook from another run,
    and stamp them with this run's fingerprint, so that the stage reads as up to date here."""
    params, upstream, fp, _ = state
    target = run_dir / name
    staging = run_dir / STAGING / f"{name}.reused"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source / name, staging, copy_function=_link_or_copy)
    old = RunStore(source).stamp(name)
    write_json(staging / STAMP, {**old, "fingerprint": fp, "upstream": upstream, "parameters": params,
                                 "reused_from": str(source), "outputs": outputs_manifest(staging, skip=(STAMP,))})
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    executed = source / "notebooks" / f"{name}.ipynb"
    if executed.exists():
        (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
        shutil.copy2(executed, run_dir / "notebooks" / f"{name}.ipynb")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


@contextmanager
def heartbeat(prefix: str, enabled: bool, every: float = 1.0) -> Iterator[None]:
    """On a terminal, keep one line alive while a stage runs ("[3/6] 03_knn: running 42s"); off in logs."""
    if not enabled:
        yield
        return
    done = threading.Event()
    t0 = time.perf_counter()

    def beat() -> None:
        while not done.wait(every):
            print(f"{prefix}: running {time.perf_counter() - t0:.0f}s", end="\r", flush=True)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


CURRENT, EDITED, STALE = "current", "outputs edited", "stale"


def _state(cfg: dict, run_dir: Path, name: str) -> tuple[dict, dict, str, str]:
    """A stage's parameters, upstream run ids and fingerprint under this config, and whether its outputs are
    CURRENT (same fingerprint, its files as it left them), EDITED (same fingerprint, files changed) or STALE."""
    params = stage_parameters(cfg, name, run_dir)
    upstream = {r: RunStore(run_dir).stamp(r).get("run_id", "absent") for r in stage(name).reads}
    fp = fingerprint(stage(name).notebook, params, upstream)
    last = RunStore(run_dir).stamp(name)
    if last.get("fingerprint") != fp:
        return params, upstream, fp, STALE
    intact = last.get("outputs") == outputs_manifest(run_dir / name, skip=(STAMP,))
    return params, upstream, fp, CURRENT if intact else EDITED


def _metric(run_dir: Path, stage: str) -> dict:
    name, value = key_metric(run_dir, stage)
    return {"metric": name, "value": value}


def _publish_submission(cfg: dict, run_dir: Path) -> None:
    """Copy the submission of the config's `submission` stage (default: its last stage that writes one) to
    `<run_dir>/submission.csv`, only while that stage is up to date with the whole config (a partial run does not
    make it so); otherwise the last up-to-date one, saying so loudly, or none."""
    store = RunStore(run_dir)
    writers = [s for s in SUBMITTING if s in cfg["stages"]]
    if not writers:
        return
    wanted = cfg.get("submission") or writers[-1]
    current = [s for s in writers if store.submission_path(s).exists() and _state(cfg, run_dir, s)[3] == CURRENT]
    if not current:
        print(f"WARNING: no stage writing a submission is up to date with this config ({writers}); "
              f"{store.submission_path()} was left as it was", flush=True)
        return
    source = wanted if wanted in current else current[-1]
    if source != wanted:
        print(f"WARNING: {wanted} is not up to date with this config (run it: --stages {wanted}); the run's "
              f"submission is {source}'s instead", flush=True)
    name, value = key_metric(run_dir, source)
    figure = f", {name} {value}" if name else ""
    print(f"submission: {store.publish_submission(source)} (from {source}{figure})", flush=True)


def write_notebook(cfg: dict, name: str, folder: str | Path | None = None) -> Path:
    """A ready-to-run copy of a stage's notebook for Jupyter: the run's parameters injected (absolute paths, so it
    runs from any folder), written to `folder` (default `<run_dir>/jupyter/`). Run by hand it writes into
    `<run_dir>/<stage>/`; the next pipeline run sees those outputs as edited and re-runs the stage."""
    validate_config(cfg, f"config {cfg.get('run')!r}")
    chain = [s for s in NAMES if s in cfg["stages"]]
    if name not in chain:
        raise ConfigError(f"stage {name!r} is not in this config's chain {chain}")
    run_dir = (RUNS / cfg["run"]).resolve()
    ensure_data(cfg["data"])
    params = stage_parameters({**cfg, "data": public_test_guard(cfg["data"], run_dir)}, name, run_dir)
    nb = parameterize_notebook(load_notebook_node(str(stage(name).notebook)), params)
    out = Path(folder or run_dir / "jupyter") / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(out))
    return out


def format_summary(rows: list[dict]) -> str:
    header = f"{'stage':<22}{'status':<20}{'seconds':>9}  key metric"
    lines = [header, "-" * len(header)]
    for r in rows:
        metric = f"{r['metric']} = {r['value']}" if r["metric"] else ""
        lines.append(f"{r['stage']:<22}{r['status']:<20}{r['seconds']:>9.1f}  {metric}")
    return "\n".join(lines)


@contextmanager
def _cell_output(verbose: bool) -> Iterator[None]:
    """With `verbose`, print the cell output papermill logs at INFO (and its cell markers) on stdout."""
    if not verbose:
        yield
        return
    logger = logging.getLogger("papermill")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


@boundary(takes_verbose=True)
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.pipeline")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the notebook chain of a config")
    r.add_argument("--config", required=True, help="pipeline YAML, e.g. configs/demo.yaml")
    r.add_argument("--stages", help="comma-separated subset of stages, e.g. 03_knn,04_postprocess")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override: stage.param=v (stage.a.b=v inside a mapping), data.key=v, run=NAME, or param=v "
                        "for every stage declaring it")
    r.add_argument("--from", dest="reuse", metavar="RUN",
                   help="reuse the stages of another run that are up to date there under this config (linked, "
                        "not recomputed): try a variant without retraining")
    r.add_argument("--force", action="store_true", help="re-run stages even when up to date")
    r.add_argument("--verbose", action="store_true", help="stream every cell's output, progress bars and kernel logs")
    nb = sub.add_parser("notebook", help="write a stage's notebook with a run's parameters injected, for Jupyter")
    nb.add_argument("stage", help="e.g. 04_postprocess")
    nb.add_argument("--config", required=True, help="pipeline YAML, e.g. configs/demo.yaml")
    nb.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, as in run")
    nb.add_argument("--out", help="folder to write it to (default: <run_dir>/jupyter/)")
    c = sub.add_parser("compare", help="two runs' metrics side by side")
    c.add_argument("runs", nargs=2, metavar="RUN", help="run names (folders under outputs/runs/) or paths")
    sub.add_parser("stages", help="print the stage table (name, job, reads, writes)")
    args = ap.parse_args(argv)
    if args.cmd == "stages":
        print(markdown_table())
        return 0
    if args.cmd == "compare":
        print(history.compare(*args.runs))
        return 0
    if args.cmd == "notebook":
        path = write_notebook(load_config(args.config, args.set), args.stage, args.out)
        print(f"{path}\nopen it with: jupyter lab {path}")
        return 0
    try:
        with _cell_output(args.verbose):
            cfg = load_config(args.config, args.set)
            rows = run(cfg, args.stages.split(",") if args.stages else None, force=args.force,
                       verbose=args.verbose, reuse=args.reuse)
    except StageFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n" + format_summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
