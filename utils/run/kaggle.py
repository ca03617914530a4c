"""Kaggle kernels from a pipeline config: `python -m utils.kaggle build --config configs/shopee.yaml`.

Writes one folder per stage (`kernel-metadata.json` + the notebook with Kaggle paths), a `submit`
kernel that runs the inference chain in one session (the only kind Kaggle re-runs on the hidden test),
and dataset folders for the code (`utils/`, `notebooks/`, the Kaggle config) and the wheels the Kaggle
image lacks. Paths map by convention: `inputs/<name>/...` is the attached dataset
`/kaggle/input/<name>/...`; the run folder is `/kaggle/working/run`.

This module imports only the standard library (and yaml / papermill / nbformat for building), because a
kernel calls `setup_kernel` before the wheels it installs are importable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from utils.core.cli import boundary

from .stages import BY_NAME, NAMES

KAGGLE_INPUT = "/kaggle/input"
KAGGLE_WORKING = "/kaggle/working"
SUBMIT = "submit"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$")


class KaggleBuildError(ValueError):
    """The config cannot be turned into kernels (a path outside inputs/, a bad slug, no user)."""


def slug(text: str) -> str:
    """Kaggle's URL slug of a title: lowercase, runs of other characters become one hyphen."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def kaggle_path(value, inputs_root: Path, field: str, kaggle_input: str = KAGGLE_INPUT):
    """Map local paths under `inputs/` to `/kaggle/input/` inside strings, lists and dicts (recursively).

    Paths under the project's inputs folder (relative to the project root, `..` resolved, or absolute) are
    mapped; `{run_dir}` templates and other settings stay; any other local path is an error naming the field.
    """
    if isinstance(value, dict):
        return {k: kaggle_path(v, inputs_root, f"{field}.{k}", kaggle_input) for k, v in value.items()}
    if isinstance(value, list):
        return [kaggle_path(v, inputs_root, field, kaggle_input) for v in value]
    if not isinstance(value, str) or not value or value.startswith(("{run_dir}", kaggle_input)):
        return value
    looks_local = value.startswith(("inputs/", "/", "./", "../")) or (inputs_root.parent / value).exists()
    if not looks_local:  # a setting ("auto", "lightgbm") or a hub name ("hf-hub:timm/...")
        return value
    # relative paths are relative to the project root (inputs/...); ".." is resolved before the check
    p = Path(os.path.normpath(value if Path(value).is_absolute() else inputs_root.parent / value))
    if p.is_relative_to(inputs_root) and p != inputs_root:
        return f"{kaggle_input}/{p.relative_to(inputs_root).as_posix()}"
    raise KaggleBuildError(f"{field}: {value} is outside inputs/, so no Kaggle dataset holds it; "
                           "put it under inputs/<dataset-name>/ (or set it to \"\")")


def _datasets_used(kcfg: dict, settings: dict) -> set[str]:
    """Names of the `/kaggle/input/<name>` folders the config refers to, the competition excluded.

    Every kernel attaches all of them: a checkpoint trained in one stage keeps the path of its base model
    (a transformer folder), which a later stage needs to load it.
    """
    pattern = re.escape(settings["input_root"]) + r"/([^/\"']+)"
    found = set(re.findall(pattern, json.dumps([kcfg["data"], kcfg["stages"]])))
    return found - {settings["competition"]}


def _literal(value) -> str:
    """A Python literal for a parameter value (JSON types only, as papermill passes them)."""
    return repr(value)


def rewrite_parameters(source: str, params: dict) -> str:
    """The parameters cell with the given values put in place, each line keeping its comment."""
    out, seen = [], set()
    for line in source.splitlines():
        m = re.match(r"^(\w+)(\s*:[^=]+)?\s*=\s*(.*?)(\s+#.*)?$", line)  # name[: annotation] = value  # help
        if m and m.group(1) in params:
            name = m.group(1)
            seen.add(name)
            line = f"{name}{m.group(2) or ''} = {_literal(params[name])}{m.group(4) or ''}"
        out.append(line)
    missing = set(params) - seen
    if missing:
        raise KaggleBuildError(f"parameters {sorted(missing)} are not declared in the parameters cell")
    return "\n".join(out)


def setup_source(settings: dict, upstream: dict[str, str]) -> str:
    """The first cell of every kernel: put the code dataset on sys.path, install wheels, link upstream outputs."""
    code_dir = f"{settings['input_root']}/{settings['code_dataset']}"
    wheels_dir = f"{settings['input_root']}/{settings['wheels_dataset']}"
    return "\n".join([
        "# Kaggle setup, written by `python -m utils.kaggle build`: offline code, wheels and upstream outputs",
        "import sys",
        "",
        f"sys.path.insert(0, {code_dir!r})",
        "from utils.run.kaggle import setup_kernel  # noqa: E402",
        "",
        f"setup_kernel(wheels_dir={wheels_dir!r}, packages={list(settings['wheels'])!r},",
        f"             upstream={upstream!r}, run_dir={settings['run_dir']!r})",
    ])


def setup_kernel(wheels_dir: str, packages: list[str], upstream: dict[str, str], run_dir: str) -> None:
    """Install the project's wheels offline and link each upstream kernel's stage folder into `run_dir`.

    `upstream` maps a stage to the folder its kernel's output appears at once attached; a missing one is
    an error naming the kernel to attach, rather than a later, obscure file-not-found inside the stage.
    """
    missing = [p for p in packages if not _installed(p)]
    if missing:
        if not Path(wheels_dir).is_dir():
            raise FileNotFoundError(f"packages {missing} are not installed and the wheels dataset {wheels_dir} "
                                    "is not attached; add it to the kernel's data")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--find-links",
                        wheels_dir, *missing], check=True)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    for stage, src in upstream.items():
        if not Path(src).is_dir():
            raise FileNotFoundError(f"{src} not found: attach the output of the kernel that runs {stage} "
                                    "(kernel_sources in kernel-metadata.json)")
        link = run / stage
        if link.is_symlink() or link.exists():
            continue
        link.symlink_to(src, target_is_directory=True)
    print(f"kaggle setup: run folder {run_dir}; linked {sorted(upstream) or 'nothing'}", flush=True)


def _installed(package: str) -> bool:
    """Whether a distribution is installed (import names differ from distribution names, e.g. faiss-cpu)."""
    from importlib import metadata

    try:
        metadata.version(package)
        return True
    except metadata.PackageNotFoundError:
        return False


def settings_of(cfg: dict, user: str | None) -> dict:
    """The config's `kaggle` section with defaults, the user resolved (argument, section, KAGGLE_USERNAME)."""
    k = dict(cfg.get("kaggle") or {})
    k["user"] = user or k.get("user") or os.environ.get("KAGGLE_USERNAME")
    if not k["user"]:
        raise KaggleBuildError("no Kaggle user: pass --user, set kaggle.user in the config or KAGGLE_USERNAME")
    k.setdefault("competition", "shopee-product-matching")
    k.setdefault("prefix", "shopee")
    k.setdefault("code_dataset", f"{k['prefix']}-suite-code")
    k.setdefault("wheels_dataset", f"{k['prefix']}-suite-wheels")
    k.setdefault("wheels", [])
    k.setdefault("gpu", [])
    k.setdefault("private", True)
    k.setdefault("submit_stages", [])
    k.setdefault("input_root", KAGGLE_INPUT)  # other roots only to rehearse a kernel outside Kaggle (tests)
    k.setdefault("working_root", KAGGLE_WORKING)
    k["run_dir"] = f"{k['working_root']}/run"
    for name in (k["user"], k["code_dataset"], k["wheels_dataset"]):
        if not _SLUG.match(slug(name)) or slug(name) != name.lower():
            raise KaggleBuildError(f"{name!r} is not a valid Kaggle slug (lowercase letters, digits, hyphens)")
    return k


def kernel_title(settings: dict, stage: str) -> str:
    """Title whose slug is the kernel id (Kaggle warns when the two disagree)."""
    return f"{settings['prefix']} {stage.replace('_', ' ')}"


def kernel_id(settings: dict, stage: str) -> str:
    return f"{settings['user']}/{slug(kernel_title(settings, stage))}"


def metadata_for(settings: dict, stage: str, code_file: str, datasets: set[str], reads: tuple[str, ...]) -> dict:
    """kernel-metadata.json of one kernel, internet explicitly off."""
    sources = [f"{settings['user']}/{settings['code_dataset']}"]
    if settings["wheels"]:
        sources.append(f"{settings['user']}/{settings['wheels_dataset']}")
    sources += [f"{settings['user']}/{d}" for d in sorted(datasets)]
    return {"id": kernel_id(settings, stage), "title": kernel_title(settings, stage), "code_file": code_file,
            "language": "python", "kernel_type": "notebook", "is_private": bool(settings["private"]),
            "enable_gpu": stage in settings["gpu"], "enable_internet": False, "dataset_sources": sources,
            "competition_sources": [settings["competition"]],
            "kernel_sources": [kernel_id(settings, s) for s in reads]}


def _upstream_dirs(settings: dict, reads: tuple[str, ...]) -> dict[str, str]:
    """Where each upstream stage's folder appears: `/kaggle/input/<kernel slug>/run/<stage>`."""
    return {s: f"{settings['input_root']}/{kernel_id(settings, s).split('/')[1]}/run/{s}" for s in reads}


def kaggle_config(cfg: dict, settings: dict) -> dict:
    """The config with every path mapped to Kaggle's layout and the run folder in /kaggle/working."""
    from utils.core.paths import INPUTS

    root = settings["input_root"]
    out = json.loads(json.dumps(cfg))
    out["run"] = settings["run_dir"]
    out["data"] = {k: kaggle_path(v, INPUTS, f"data.{k}", root) for k, v in cfg["data"].items()}
    out["data"].pop("generate", None)
    out["stages"] = {s: kaggle_path(p or {}, INPUTS, s, root) for s, p in cfg["stages"].items()}
    return out


def build_stage(kcfg: dict, settings: dict, stage: str, out: Path) -> Path:
    """One stage's kernel folder: its notebook with Kaggle parameters and a setup cell first."""
    import nbformat

    from utils.core.paths import NOTEBOOKS

    from .pipeline import stage_parameters

    params = stage_parameters(kcfg, stage, Path(settings["run_dir"]))
    nb = nbformat.read(NOTEBOOKS / f"{stage}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = rewrite_parameters(cell.source, params)
    reads = tuple(s for s in BY_NAME[stage].reads if s in kcfg["stages"])
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(first_code, _setup_cell(settings, reads))
    return _write_kernel(nb, kcfg, settings, stage, reads, out)


def _setup_cell(settings: dict, reads: tuple[str, ...]):
    import nbformat

    return nbformat.v4.new_code_cell(setup_source(settings, _upstream_dirs(settings, reads)),
                                     metadata={"tags": ["kaggle-setup"]})


def _write_kernel(nb, kcfg: dict, settings: dict, name: str, reads: tuple[str, ...], out: Path) -> Path:
    """`<out>/<name>/`: the notebook and its kernel-metadata.json."""
    import nbformat

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{name}.ipynb")
    meta = metadata_for(settings, name, f"{name}.ipynb", _datasets_used(kcfg, settings), reads)
    (folder / "kernel-metadata.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def build_submit(kcfg: dict, settings: dict, config_name: str, out: Path) -> Path | None:
    """The submission kernel: runs `submit_stages` with the pipeline in one session, writes submission.csv."""
    import nbformat

    chain = [s for s in settings["submit_stages"] if s in kcfg["stages"]]
    if not chain:
        return None
    reads = tuple(sorted({r for s in chain for r in BY_NAME[s].reads if r in kcfg["stages"] and r not in chain}))
    code_dir = f"{settings['input_root']}/{settings['code_dataset']}"
    params = "\n".join([
        f"config = {code_dir + '/configs/' + config_name!r}  # pipeline config inside the code dataset",
        f"stages = {chain!r}  # stages run here; upstream ones come attached as kernel outputs",
        "overrides = {}  # pipeline overrides, e.g. {'05_stacker.n_estimators': 500}",
    ])
    body = "\n".join([
        "import json",
        "import shutil",
        "",
        "from utils.run import pipeline",
        "",
        "cfg = pipeline.load_config(config, [f'{k}={json.dumps(v)}' for k, v in overrides.items()])",
        "rows = pipeline.run(cfg, stages)",
        "print(pipeline.format_summary(rows))",
        f"shutil.copyfile(f\"{{cfg['run']}}/submission.csv\", {settings['working_root'] + '/submission.csv'!r})",
    ])
    nb = nbformat.v4.new_notebook(cells=[_setup_cell(settings, reads),
                                         nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return _write_kernel(nb, kcfg, settings, SUBMIT, reads, out)


def _dataset_metadata(settings: dict, name: str, title: str) -> dict:
    return {"title": title, "id": f"{settings['user']}/{name}", "licenses": [{"name": "CC0-1.0"}]}


def build_code_dataset(kcfg: dict, settings: dict, config_name: str, out: Path) -> Path:
    """`datasets/<code>/`: the utils package, the notebooks and the Kaggle config, ready to upload."""
    import yaml

    from utils.core.paths import NOTEBOOKS, ROOT

    folder = out / "datasets" / settings["code_dataset"]
    shutil.rmtree(folder, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "utils", folder / "utils", ignore=ignore)
    shutil.copytree(NOTEBOOKS, folder / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (folder / "configs").mkdir()
    (folder / "configs" / config_name).write_text(yaml.safe_dump(kcfg, sort_keys=False), encoding="utf-8")
    meta = _dataset_metadata(settings, settings["code_dataset"], f"{settings['prefix']} suite code")
    (folder / "dataset-metadata.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def build_wheels_dataset(settings: dict, out: Path, python_version: str, download: bool) -> Path:
    """`datasets/<wheels>/`: binary wheels of the packages the Kaggle image lacks (`pip download`)."""
    folder = out / "datasets" / settings["wheels_dataset"]
    folder.mkdir(parents=True, exist_ok=True)
    meta = _dataset_metadata(settings, settings["wheels_dataset"], f"{settings['prefix']} suite wheels")
    (folder / "dataset-metadata.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if download and settings["wheels"]:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", python_version, "--platform", "manylinux2014_x86_64",
                        "--dest", str(folder), *settings["wheels"]], check=True)
    return folder


def build(cfg: dict, config_name: str, out: str | Path, user: str | None = None, wheels: bool = False,
          python_version: str = "3.11") -> list[Path]:
    """Write every kernel folder of the config (stages, then `submit`) and the dataset folders under `out`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KaggleBuildError(f"--out {out}: is a file; name a folder (it is created if missing)")
    settings = settings_of(cfg, user)
    kcfg = kaggle_config(cfg, settings)
    folders = [build_stage(kcfg, settings, s, out) for s in NAMES if s in kcfg["stages"]]
    submit = build_submit(kcfg, settings, config_name, out)
    folders += [submit] if submit else []
    folders.append(build_code_dataset(kcfg, settings, config_name, out))
    folders.append(build_wheels_dataset(settings, out, python_version, wheels))
    return folders


@boundary
def main(argv: list[str] | None = None) -> int:
    from utils.core.paths import ROOT

    from .pipeline import load_config

    ap = argparse.ArgumentParser(prog="python -m utils.kaggle")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write kernels/<stage>/ folders and the code / wheels dataset folders")
    b.add_argument("--config", default="configs/shopee.yaml", help="pipeline YAML with a `kaggle` section")
    b.add_argument("--out", default=str(ROOT / "kernels"), help="output folder (default: kernels/)")
    b.add_argument("--user", help="Kaggle user name (default: kaggle.user of the config, or KAGGLE_USERNAME)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, as in pipeline")
    b.add_argument("--wheels", action="store_true", help="download the wheels with pip (needs the package index)")
    b.add_argument("--python-version", default="3.11", help="Kaggle image's Python, for the wheels")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.set)
    folders = build(cfg, Path(args.config).name, args.out, args.user, args.wheels, args.python_version)
    for f in folders:
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
