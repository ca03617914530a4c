"""Metric-learning losses, one class per file; `make_loss(name, ...)` builds one by name.

Every loss maps (embeddings [B, D], integer labels [B]) to a scalar; class-based losses (ArcFace,
softmax) own their class weights, which are trained with the head's learning rate.
"""

from __future__ import annotations

from torch import nn

from utils.core.registry import Registry

from .arcface import ArcFaceLoss
from .cosent import CoSENTLoss
from .softmax import SoftmaxLoss
from .triplet import TripletLoss

LOSSES: Registry[type[nn.Module]] = Registry("loss", {"arcface": ArcFaceLoss, "softmax": SoftmaxLoss,
                                                     "triplet": TripletLoss, "cosent": CoSENTLoss})
PAIR_LOSSES = {"triplet", "cosent"}  # need several rows per class in a batch


def make_loss(name: str, num_classes: int, embedding_size: int, **params) -> nn.Module:
    """The loss called `name` (an unknown name fails with the known ones); class-based losses get their sizes."""
    loss = LOSSES[name]
    if name in PAIR_LOSSES:
        return loss(**params)
    return loss(num_classes=num_classes, embedding_size=embedding_size, **params)


__all__ = ["ArcFaceLoss", "CoSENTLoss", "SoftmaxLoss", "TripletLoss", "LOSSES", "PAIR_LOSSES", "make_loss"]
