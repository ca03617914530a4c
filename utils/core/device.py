"""Which accelerator this process has: one cached answer for every module that picks a device."""

from __future__ import annotations

import functools
import os


@functools.cache
def cuda_available() -> bool:
    """Whether torch sees a CUDA device (False where torch is absent)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@functools.cache
def xgboost_has_cuda() -> bool:
    """Whether this XGBoost build trains on CUDA (the `xgboost-cpu` wheel does not)."""
    try:
        import xgboost
    except ImportError:
        return False
    return bool(xgboost.build_info().get("USE_CUDA"))


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity call on this platform (macOS)
        return os.cpu_count() or 1
