"""Level 1, defect-sensitive cross-attention (DSCA): text tokens attend to image patches with sparsemax.

A_ij = sparsemax((t_i W_Q)(v_j W_K)^T / sqrt(d)) over the patches j, F_micro = sum_i sum_j A_ij (v_j W_V)
(averaged over the real tokens). Sparsemax (the `entmax` package) gives exact zeros, so a token like
"scratch" puts its weight on a few patches instead of smearing it over the background.
Besides the text tokens, `learned_queries` trainable query vectors always attend: they look for defects
the seller did not mention (an extension of the seed's text-only queries; 0 switches them off). Their
output is kept apart from the text tokens' mean, so that a long description does not dilute it.
A defect detector scores every patch from the image alone; its best patch gives a defect logit that is
part of F_micro and that the text supervises (`fit.train`: does the description name a defect?). From the
price alone a random-init patch embedding learns too little about small defects; the sellers' words
teach it, and then it also sees the defects a seller left out.
"""

from __future__ import annotations

import torch
from entmax import sparsemax
from torch import nn


class DSCA(nn.Module):
    """Cross-attention from tokens [B, L, d] to patches [B, P, d]; `attention` sparsemax or softmax."""

    def __init__(self, dim: int, attention: str = "sparsemax", learned_queries: int = 2):
        super().__init__()
        if attention not in ("sparsemax", "softmax"):
            raise ValueError(f"attention must be sparsemax or softmax, got {attention!r}")
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.queries = nn.Parameter(torch.randn(learned_queries, dim) * 0.1)
        self.detector = nn.Linear(dim, 1)  # per-patch defect score
        self.attention = attention
        self.scale = dim ** -0.5
        self.out_dim = dim * (2 if learned_queries else 1) + 1

    def weights(self, tokens: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """A [B, L, P]: each token's distribution over the patches (rows sum to 1)."""
        return self._attend(tokens, self.k(patches))

    def _attend(self, tokens: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        scores = self.q(tokens) @ keys.transpose(1, 2) * self.scale
        return sparsemax(scores, dim=-1) if self.attention == "sparsemax" else torch.softmax(scores, dim=-1)

    def forward(self, tokens: torch.Tensor, patches: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """F_micro [B, out_dim] (text tokens' mean, the learned queries' mean, the defect logit) and the parts:
        `attention` A [B, Q + L, P] (learned queries first), `defect_logit` [B]; `mask` [B, L] marks real tokens."""
        B, n_q = tokens.shape[0], self.queries.shape[0]
        tokens = torch.cat([self.queries.unsqueeze(0).expand(B, -1, -1), tokens], dim=1)
        mask = torch.cat([mask.new_ones(B, n_q), mask], dim=1)
        keys = self.k(patches)
        A = self._attend(tokens, keys) * mask.unsqueeze(-1)
        per_token = A @ self.v(patches)  # [B, Q + L, d]
        text = per_token[:, n_q:].sum(1) / mask[:, n_q:].sum(1, keepdim=True).clamp(min=1)
        defect = self.detector(keys).squeeze(-1).max(dim=-1).values  # [B]
        parts = [text] + ([per_token[:, :n_q].mean(1)] if n_q else []) + [defect.unsqueeze(-1)]
        return torch.cat(parts, dim=-1), {"attention": A, "defect_logit": defect}
