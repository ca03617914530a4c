"""ArcFace (additive angular margin): logits s*cos(theta + m) for the true class, s*cos(theta) otherwise."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ArcFaceLoss(nn.Module):
    """Cross-entropy over ArcFace logits.

    margin: angular margin m in radians; scale: s; easy_margin: apply the margin only where
    cos(theta) > 0 (otherwise the standard fallback cos(theta) - m*sin(m) past theta > pi - m).
    """

    def __init__(self, num_classes: int, embedding_size: int, margin: float = 0.5, scale: float = 30.0,
                 easy_margin: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)
        self.margin, self.scale, self.easy_margin = margin, scale, easy_margin
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float())).clamp(-1, 1)
        sine = torch.sqrt((1.0 - cosine**2).clamp_min(1e-12))
        phi = cosine * self.cos_m - sine * self.sin_m  # cos(theta + m)
        if self.easy_margin:
            phi = torch.where(cosine > 0, phi, cosine)
        else:
            phi = torch.where(cosine > self.th, phi, cosine - self.mm)
        one_hot = F.one_hot(labels, cosine.shape[1]).bool()
        return self.scale * torch.where(one_hot, phi, cosine)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)
