"""Plain classification: a linear layer over the embedding and cross-entropy (seed 002's first models)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SoftmaxLoss(nn.Module):
    def __init__(self, num_classes: int, embedding_size: int):
        super().__init__()
        self.classifier = nn.Linear(embedding_size, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.classifier(embeddings.float()), labels)
