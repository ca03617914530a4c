"""Progress bars where a person watches them (a terminal, an interactive notebook), never in logs.

`SUITE_PROGRESS=1` forces bars on, `0` off; unset, they show on a terminal or in a Jupyter kernel and stay
off under CI (`CI=true`) or when stderr is a file. The pipeline sets 0 for the kernels it runs in batch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from tqdm.auto import tqdm

ENV = "SUITE_PROGRESS"


def enabled() -> bool:
    """Whether progress bars should be drawn in this process."""
    forced = os.environ.get(ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        return False
    if "ipykernel" in sys.modules:  # an interactive notebook
        return True
    return sys.stderr.isatty()


def progress(iterable: Iterable | None = None, **kwargs) -> tqdm:
    """`tqdm(iterable, **kwargs)`, disabled unless `enabled()`; a caller's `disable=True` still wins."""
    kwargs["disable"] = bool(kwargs.get("disable", False)) or not enabled()
    return tqdm(iterable, **kwargs)
