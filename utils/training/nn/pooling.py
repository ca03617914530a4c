"""Generalised-mean pooling (GeM), the usual pooling for retrieval embeddings.

Written here because timm ships no standalone GeM layer for an arbitrary feature map.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from utils.core.registry import Registry


class GeM(nn.Module):
    """(mean over positions of x^p)^(1/p) with a learnable p; p=1 is average, large p tends to max."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p).flatten(1)


POOLINGS: Registry[Callable[[], nn.Module]] = Registry("pooling", {
    "gem": GeM, "avg": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))})


def make_pool(kind: str) -> nn.Module:
    """A fresh pooling layer by name (an unknown name fails with the known ones)."""
    return POOLINGS[kind]()
