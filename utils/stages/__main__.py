"""`python -m utils.stages cells [--check]`: write (or check) every notebook's parameters cell from its schema."""

from __future__ import annotations

import argparse
import sys

import nbformat

from utils.core.cli import boundary
from utils.core.schema import parameters_cell
from utils.run.stages import STAGES

from . import params_class


def stale_cells(write: bool) -> list[str]:
    """Notebooks whose parameters cell differs from the one generated from the schema (rewritten if `write`)."""
    stale = []
    for s in STAGES:
        nb = nbformat.read(s.notebook, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        wanted = parameters_cell(params_class(s.name))
        if cell.source != wanted:
            stale.append(s.name)
            if write:
                cell.source = wanted
                nbformat.write(nb, s.notebook)
    return stale


@boundary
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.stages", description=__doc__)
    parser.add_argument("command", choices=["cells"], help="cells: the notebooks' parameters cells")
    parser.add_argument("--check", action="store_true", help="only report stale cells (exit 1 if any)")
    args = parser.parse_args(argv)
    stale = stale_cells(write=not args.check)
    verb = "stale" if args.check else "rewritten"
    print(f"{verb}: {', '.join(stale)}" if stale else "every parameters cell matches its schema")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
