"""When a stage is up to date: a fingerprint of everything it depends on, and one run at a time per run folder.

The fingerprint hashes the notebook, the parameters, the size and mtime of the input files they name and of
the files in the folders they name, the run ids of the upstream stages' last successful runs (so a re-run
upstream, even with the same fingerprint under `--force`, re-runs everything below it) and the source of
every `utils` module the notebook imports, followed transitively (so editing `utils/matching/postprocess.py`
re-runs 04 and 05).
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from utils.core.paths import ROOT

PACKAGE = "utils"


class RunLocked(RuntimeError):
    """Another pipeline holds the run folder."""


def _module_file(module: str) -> Path | None:
    """The file of a `utils` module (`utils.core.store` -> utils/core/store.py), or None if it is no module."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """The `utils` modules a source imports (absolute and relative), submodules named in `from x import y` too."""
    found = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}")}
    # importing a.b.c runs the __init__ of a and a.b as well
    return {".".join(m.split(".")[: i + 1]) for m in found for i in range(len(m.split(".")))}


@cache
def _closure(module: str) -> frozenset[Path]:
    seen: set[str] = set()
    todo = [module]
    files = set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = _module_file(mod)
        if path is None:
            continue
        files.add(path)
        todo += sorted(_imported_modules(path.read_text(encoding="utf-8"), mod, path.name == "__init__.py"))
    return frozenset(files)


def notebook_sources(notebook: Path) -> list[Path]:
    """Every `utils` source file a notebook's code cells import, directly or through other modules."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    files: set[Path] = set()
    for mod in sorted(_imported_modules(code, "__notebook__", False)):
        files |= _closure(mod)
    return sorted(files)


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) and value else []


def _file_state(value: str) -> str | None:
    """Size and mtime of a named file, or of every file in a named folder (an image edited in place counts)."""
    p = Path(value) if Path(value).is_absolute() else ROOT / value
    try:
        if p.is_file():
            st = p.stat()
            return f"{value}:{st.st_size}:{st.st_mtime_ns}"
        if p.is_dir():
            entries = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(p) if e.is_file())
            return f"{value}:" + hashlib.sha256(repr(entries).encode()).hexdigest()
    except OSError:
        return None
    return None


def fingerprint(notebook: Path, params: dict, upstream: dict[str, str]) -> str:
    """Hash of the notebook, parameters, named input files / folders, upstream run ids and imported sources."""
    h = hashlib.sha256(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    # paths anywhere in the parameters (nested too: checkpoints, weights), relative ones from the project root;
    # the run folder itself is followed through the upstream run ids (its mtime changes with every stage)
    for value in sorted(set(_strings({k: v for k, v in params.items() if k != "run_dir"}))):
        state = _file_state(value)
        if state:
            h.update(state.encode())
    h.update(json.dumps(upstream, sort_keys=True).encode())
    for path in notebook_sources(notebook):
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()



def outputs_manifest(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, list[int]]:
    """Every file a stage left in its folder with its size and modification time (ns): a stage whose files no
    longer match (one edited, deleted or written by a notebook run by hand) is not up to date. Sizes and times,
    not hashes: hashing gigabytes of embeddings at every run would cost more than the check is worth."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in skip):
        st = path.stat()
        out[path.relative_to(folder).as_posix()] = [st.st_size, st.st_mtime_ns]
    return out


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `<run_dir>/.lock` for the whole run; a second pipeline on the same run gets a clear error."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise RunLocked(f"run {run_dir.name!r} is in use by another pipeline (pid {holder}); wait for it to "
                            "finish, or run under another name with --set run=NAME") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
