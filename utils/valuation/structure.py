"""Level 2, structural consistency: accessory nodes from the text against object nodes from the image.

Object nodes come from learned object queries (DETR-style slots) attending over the feature map: no
pretrained detector (Faster R-CNN) loads offline, and queries train end to end from the price loss.
Each accessory gets an image presence score (its best-matching object node); the text gives a claim
per accessory (+1 claimed, -1 denied, 0 silent). Consistency = presence of what is claimed; the penalty
is what the text claims but the image lacks.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

DEFAULT_ACCESSORIES = ("charger", "box", "case", "mouse", "strap", "cushion", "lock", "light", "controller",
                       "manual", "remote", "cable", "lens")
_NEG = r"(?:no|missing|without|lacks?|minus)\s+(?:the\s+|original\s+|any\s+)?"


def parse_claims(texts: list[str], accessories: list[str] | tuple[str, ...]) -> np.ndarray:
    """[N, A] claims per accessory: -1 when negated ("no box", "missing charger", "box not included"), +1 when
    mentioned otherwise, 0 when not mentioned."""
    out = np.zeros((len(texts), len(accessories)), dtype=np.float32)
    for j, acc in enumerate(accessories):
        word = rf"{re.escape(acc)}s?\b"
        neg = re.compile(rf"\b{_NEG}{word}|\b{word}\s+(?:is\s+|are\s+)?not\s+included", re.I)
        pos = re.compile(rf"\b{word}", re.I)
        for i, t in enumerate(texts):
            if neg.search(t):
                out[i, j] = -1
            elif pos.search(t):
                out[i, j] = 1
    return out


class StructuralConsistency(nn.Module):
    """Object queries over patches, accessory-object matching, and the claimed-but-absent penalty."""

    def __init__(self, dim: int, n_accessories: int, n_objects: int = 6):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_objects, dim) * 0.1)
        self.key = nn.Linear(dim, dim)
        self.accessory = nn.Parameter(torch.randn(n_accessories, dim) * 0.1)
        self.bias = nn.Parameter(torch.zeros(n_accessories))
        self.out = nn.Linear(2 * n_accessories + 3, dim)
        self.scale = dim ** -0.5

    def forward(self, patches: torch.Tensor, claims: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """patches [B, P, d], claims [B, A] -> F_meso [B, d] and the parts (presence, penalty, match)."""
        attn = torch.softmax(self.queries @ self.key(patches).transpose(1, 2) * self.scale, dim=-1)  # [B, Q, P]
        objects = attn @ patches  # [B, Q, d]
        sim = torch.einsum("bqd,ad->baq", objects, self.accessory) * self.scale  # accessory x object
        presence = torch.sigmoid(sim.max(dim=-1).values + self.bias)  # [B, A]
        claimed, denied = claims.clamp(min=0), (-claims).clamp(min=0)
        penalty = (claimed * (1 - presence)).sum(1, keepdim=True)  # text says yes, image says no
        contradiction = (denied * presence).sum(1, keepdim=True)  # text says no, image says yes
        match = (claimed * presence).sum(1, keepdim=True) / (claimed.sum(1, keepdim=True) + 1e-6)
        feats = torch.cat([presence, claims, penalty, contradiction, match], dim=1)
        return self.out(feats), {"presence": presence, "penalty": penalty, "match": match}
