"""Shared fixtures: tiny generated datasets, paths to the real sample data, GPU skipping."""

from __future__ import annotations

from pathlib import Path

import pytest

from utils.core.paths import SAMPLES


def _has_cuda() -> bool:
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, no driver or no device: all mean no GPU here
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def real_titles() -> Path:
    return SAMPLES / "shopee-real-titles"


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A small synthetic dataset with images (40 groups), generated once per test session."""
    from utils.synth.shopee import generate

    out = tmp_path_factory.mktemp("demo")
    generate(out, groups=40, seed=1)
    return out
