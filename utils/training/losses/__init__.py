"""Metric-learning losses, one class per file; `make_loss(name, ...)` builds one by name.

Every loss maps (embeddings [B, D], integer labels [B]) to a scalar; class-based losses (ArcFace,
softmax) own their class weights, which are trained with the head's learning rate.
"""

from __future__ import annotations

from torch import nn

from .arcface import ArcFaceLoss
from .cosent import CoSENTLoss
from .softmax import SoftmaxLoss
from .triplet import TripletLoss

LOSSES: dict[str, type[nn.Module]] = {"arcface": ArcFaceLoss, "softmax": SoftmaxLoss, "triplet": TripletLoss,
                                      "cosent": CoSENTLoss}
PAIR_LOSSES = {"triplet", "cosent"}  # need several rows per class in a batch


def make_loss(name: str, num_classes: int, embedding_size: int, **params) -> nn.Module:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    if name in PAIR_LOSSES:
        return LOSSES[name](**params)
    return LOSSES[name](num_classes=num_classes, embedding_size=embedding_size, **params)


__all__ = ["ArcFaceLoss", "CoSENTLoss", "SoftmaxLoss", "TripletLoss", "LOSSES", "PAIR_LOSSES", "make_loss"]
