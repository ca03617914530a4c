"""The depreciation layer P = P_anchor * (1 - delta), delta = sigmoid(F_entity + gamma * F_market), and the
direct-price head it is compared with."""

from __future__ import annotations

import torch
from torch import nn


class DepreciationHead(nn.Module):
    """delta in [0, 1] from the entity and market scores; the price never exceeds the anchor."""

    def __init__(self, entity_dim: int, market_dim: int = 0, gamma: float = 1.0):
        super().__init__()
        self.entity = nn.Sequential(nn.Linear(entity_dim, 64), nn.GELU(), nn.Linear(64, 1))
        self.market = nn.Linear(market_dim, 1) if market_dim else None
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))  # learnable weight of the market term

    def forward(self, anchor: torch.Tensor, e_entity: torch.Tensor,
                e_market: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Price [B], delta [B] and the two scores (for attribution)."""
        f_entity = self.entity(e_entity).squeeze(-1)
        f_market = self.market(e_market).squeeze(-1) if self.market is not None and e_market is not None \
            else torch.zeros_like(f_entity)
        delta = torch.sigmoid(f_entity + self.gamma * f_market)
        return anchor * (1 - delta), delta, {"f_entity": f_entity, "f_market": f_market}


class DirectHead(nn.Module):
    """log(price) regressed directly from the same features; the anchor is only an input feature (the
    standardised log anchor in the tabular numbers), not a multiplicative structure."""

    def __init__(self, entity_dim: int, market_dim: int = 0, init_log_price: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(entity_dim + market_dim, 64), nn.GELU(), nn.Linear(64, 1))
        nn.init.constant_(self.net[-1].bias, init_log_price)

    def forward(self, anchor: torch.Tensor, e_entity: torch.Tensor,
                e_market: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        parts = [e_entity] + ([e_market] if e_market is not None else [])
        price = torch.exp(self.net(torch.cat(parts, dim=-1)).squeeze(-1).clamp(-20, 30))  # no overflow to inf
        return price, 1 - price / anchor, {}
