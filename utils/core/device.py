"""Which accelerator this process has: one cached answer for every module that picks a device."""

from __future__ import annotations

import functools


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
