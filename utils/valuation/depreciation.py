"""The depreciation layer P = P_anchor * (1 - delta), delta = sigmoid(F_entity + gamma * F_market), and the
direct-price head it is compared with."""

from __future__ import annotations

import torch
from torch import nn


class DepreciationHead(nn.Module):
    """delta in [0, 1] from the entity and market scores; the price never exceeds the anchor.

    With `wide`, the head starts from the wide part's log(price / anchor) and the scores correct it (wide and
    deep): 1 - delta = exp(wide + F_entity + gamma * F_market), the scores' last layers starting at 0, so the
    untrained model is the Ridge and training learns its residual (delta may then fall below 0: a price above
    the anchor, as some real listings have)."""

    def __init__(self, entity_dim: int, market_dim: int = 0, gamma: float = 1.0, wide: bool = False):
        super().__init__()
        self.entity = nn.Sequential(nn.Linear(entity_dim, 64), nn.GELU(), nn.Linear(64, 1))
        self.market = nn.Linear(market_dim, 1) if market_dim else None
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))  # learnable weight of the market term
        self.wide = wide
        if wide:
            for last in [self.entity[-1]] + ([self.market] if self.market is not None else []):
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)

    def forward(self, anchor: torch.Tensor, e_entity: torch.Tensor, e_market: torch.Tensor | None = None,
                wide: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Price [B], delta [B] and the two scores (for attribution); `wide`: the wide part's log ratio [B]."""
        f_entity = self.entity(e_entity).squeeze(-1)
        f_market = self.market(e_market).squeeze(-1) if self.market is not None and e_market is not None \
            else torch.zeros_like(f_entity)
        if self.wide:
            kept = torch.exp((wide + f_entity + self.gamma * f_market).clamp(-20, 5))  # 1 - delta
            return anchor * kept, 1 - kept, {"f_entity": f_entity, "f_market": f_market}
        delta = torch.sigmoid(f_entity + self.gamma * f_market)
        return anchor * (1 - delta), delta, {"f_entity": f_entity, "f_market": f_market}


class DirectHead(nn.Module):
    """log(price) regressed directly from the same features; the anchor is only an input feature (the
    standardised log anchor in the tabular numbers), not a multiplicative structure."""

    def __init__(self, entity_dim: int, market_dim: int = 0, init_log_price: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(entity_dim + market_dim, 64), nn.GELU(), nn.Linear(64, 1))
        nn.init.constant_(self.net[-1].bias, init_log_price)

    def forward(self, anchor: torch.Tensor, e_entity: torch.Tensor, e_market: torch.Tensor | None = None,
                wide: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        parts = [e_entity] + ([e_market] if e_market is not None else [])
        price = torch.exp(self.net(torch.cat(parts, dim=-1)).squeeze(-1).clamp(-20, 30))  # no overflow to inf
        return price, 1 - price / anchor, {}
