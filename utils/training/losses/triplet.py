"""Batch-hard triplet loss on cosine distance, via pytorch-metric-learning's loss and miner."""

from __future__ import annotations

import torch
from pytorch_metric_learning import distances, losses, miners
from torch import nn


class TripletLoss(nn.Module):
    """For each anchor: its hardest positive and hardest negative in the batch, with a margin."""

    def __init__(self, margin: float = 0.2):
        super().__init__()
        distance = distances.CosineSimilarity()
        self.miner = miners.BatchHardMiner(distance=distance)
        self.loss = losses.TripletMarginLoss(margin=margin, distance=distance)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = embeddings.float()
        return self.loss(emb, labels, self.miner(emb, labels))
