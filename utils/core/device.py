"""Which accelerator and how many cores this process has, and which booster builds use CUDA: one cached answer
for every module that picks a device."""

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
def lightgbm_has_cuda() -> bool:
    """Whether this LightGBM build trains with `device_type="cuda"` (pip wheels are CPU-only builds)."""
    import lightgbm as lgb
    import numpy as np

    try:
        lgb.train({"device_type": "cuda", "verbose": -1, "num_iterations": 1},
                  lgb.Dataset(np.arange(20.0).reshape(10, 2), label=np.arange(10) % 2))
        return True
    except lgb.basic.LightGBMError:
        return False


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
