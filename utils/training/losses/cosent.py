"""CoSENT (seed 003): every positive pair in the batch should be more similar than every negative pair.

loss = log(1 + sum over (pos (i,j), neg (k,l)) of exp(scale * (cos_kl - cos_ij))).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CoSENTLoss(nn.Module):
    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = F.normalize(embeddings.float())
        cos = emb @ emb.T
        upper = torch.triu(torch.ones_like(cos, dtype=torch.bool), diagonal=1)
        same = (labels[:, None] == labels[None, :]) & upper
        diff = (labels[:, None] != labels[None, :]) & upper
        if not same.any() or not diff.any():
            return cos.sum() * 0.0  # no pair to rank in this batch
        pos, neg = cos[same] * self.scale, cos[diff] * self.scale
        # log(1 + sum exp(neg - pos)) = logsumexp over [0, neg_k - pos_i for all i, k]
        terms = (neg[None, :] - pos[:, None]).flatten()
        return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)
