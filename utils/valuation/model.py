"""HMG-Net: micro (DSCA), meso (structural consistency), macro (global) levels, the market graph, and the
depreciation layer; every part switchable for the ablations. Missing parts of the data switch themselves
off: no image -> no DSCA, structure or image global; no location/time -> no market graph."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch
from safetensors.numpy import load_file
from torch import nn

from utils.core.weights import wordllama_files

from .depreciation import DepreciationHead, DirectHead
from .dsca import DSCA
from .features import Inputs
from .market import MarketGraph, market_edges
from .structure import StructuralConsistency


@functools.cache
def word_table() -> torch.Tensor:
    """The WordLlama static token table shipped in the wheel, loaded once per process."""
    return torch.from_numpy(load_file(str(wordllama_files()[0]))["embedding.weight"].astype("float32"))


@dataclass
class HMGConfig:
    """Which parts are on, and sizes."""

    dsca: bool = True  # level 1: defect-sensitive cross-attention
    structure: bool = True  # level 2: structural consistency
    global_image: bool = True  # level 3: pooled image features (pooled text is always on)
    market: bool = True  # the location / time graph
    head: str = "depreciation"  # depreciation | direct
    attention: str = "sparsemax"  # sparsemax | softmax (DSCA)
    patches: str = "pixels"  # DSCA / structure cells: pixels (ViT-style patch embedding, trained) | timm (frozen map)
    patch_size: int = 8  # pixel patch side for patches="pixels"
    dim: int = 64
    claim_weight: float = 0.3  # weight of the text's supervision of the image detectors (accessories, defects)
    gamma: float = 1.0  # initial market weight
    wide: bool = False  # the depreciation head starts from the wide part (a Ridge on sparse words) and corrects it
    text: str = "wordllama"  # pooled text: wordllama (mean of the static token table) | minilm (frozen sentence
    # embedding); both through a trained projection, and DSCA reads the WordLlama tokens either way

    def to_dict(self) -> dict:
        return asdict(self)


def market_reference(inputs: Inputs, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """The market graph's reference listings (the training rows): tabular ids and numbers, location, month;
    kept in the model's buffers (and checkpoints) as `ref_<name>`."""
    idx = torch.as_tensor(rows)
    ref = {f"cat_{c}": t[idx] for c, t in inputs.categorical.items()}
    return {**ref, "numeric": inputs.numeric[idx], "location": inputs.location[idx], "month": inputs.month[idx]}


class HMGNet(nn.Module):
    """Price [B] and delta [B] for a batch of row indices into `inputs` (settable: new listings are priced by
    giving the model their `Inputs`, encoded by the training rows' `Preprocessor`). With the market graph,
    `reference` (`market_reference` of the training rows) holds the listings that shape the market nodes."""

    def __init__(self, cfg: HMGConfig, inputs: Inputs, reference: dict[str, torch.Tensor] | None = None,
                 init_log_price: float = 0.0):
        super().__init__()
        if cfg.head not in ("depreciation", "direct"):
            raise ValueError(f"head must be depreciation or direct, got {cfg.head!r}")
        if cfg.wide and cfg.head != "depreciation":
            raise ValueError("the wide part corrects the depreciation head; the direct head has none")
        if cfg.wide and inputs.wide is None:
            raise ValueError("the wide part needs the inputs' wide predictions (a Preprocessor fitted with wide=True)")
        if cfg.text not in ("wordllama", "minilm"):
            raise ValueError(f"text must be wordllama or minilm, got {cfg.text!r}")
        if cfg.text == "minilm" and inputs.sentences is None:
            raise ValueError("text minilm needs the inputs' sentence embeddings (a Preprocessor fitted with sentence)")
        self.cfg, d = cfg, cfg.dim
        images = inputs.patches is not None
        self.use_dsca, self.use_structure = cfg.dsca and images, cfg.structure and images
        self.use_global_image = cfg.global_image and images
        self.use_market = cfg.market and inputs.location is not None and inputs.month is not None
        table = word_table()
        self.register_buffer("words", table, persistent=False)  # frozen and shared: not in checkpoints
        self.text = nn.Linear(table.shape[1], d)
        if cfg.text == "minilm":
            self.sentence = nn.Sequential(nn.Linear(inputs.sentences.shape[1], d), nn.GELU())
        self.cat = nn.ModuleDict({c: nn.Embedding(n, 8) for c, n in inputs.sizes.items()
                                  if c in inputs.categorical})
        tab_dim = 8 * len(self.cat) + inputs.numeric.shape[1]
        self.tab = nn.Sequential(nn.Linear(tab_dim, d), nn.GELU())
        entity = 2 * d  # tabular + pooled text
        if cfg.patches not in ("pixels", "timm"):
            raise ValueError(f"patches must be pixels or timm, got {cfg.patches!r}")
        if images and cfg.patches == "pixels":  # ViT patch embedding, trained end to end
            self.patch = nn.Sequential(nn.Conv2d(3, d, cfg.patch_size, stride=cfg.patch_size), nn.GELU(),
                                       nn.Conv2d(d, d, 1))
        elif images:  # a small per-cell adapter on the frozen timm map
            self.patch = nn.Sequential(nn.Conv2d(inputs.patches.shape[1], d, 1), nn.GELU(), nn.Conv2d(d, d, 1))
        if self.use_dsca:
            self.dsca = DSCA(d, cfg.attention)
            entity += self.dsca.out_dim
        if self.use_structure:
            self.structure = StructuralConsistency(d, inputs.claims.shape[1])
            entity += d
        if self.use_global_image:
            self.image = nn.Sequential(nn.Linear(inputs.pooled.shape[1], d), nn.GELU())
            entity += d
        market_dim = 0
        if self.use_market:
            if reference is None:
                raise ValueError("the market graph needs its reference listings (market_reference of training rows)")
            self.market = MarketGraph(tab_dim, inputs.sizes["location"], inputs.sizes["month"], dim=32)
            for name, t in reference.items():
                self.register_buffer(f"ref_{name}", t.clone())
            market_dim = 32
        self.head = DepreciationHead(entity, market_dim, cfg.gamma, cfg.wide) if cfg.head == "depreciation" else \
            DirectHead(entity, market_dim, init_log_price)
        self.inputs = inputs

    def _tabular(self, categorical: dict[str, torch.Tensor], numeric: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.cat[c](categorical[c]) for c in self.cat] + [numeric], dim=-1)

    def _market(self, idx: torch.Tensor) -> torch.Tensor:
        """E_market [B, 32] of rows `idx`: the reference listings and these rows as item nodes, the reference
        ones sending to the location / month nodes, these only receiving."""
        inp = self.inputs
        ref_x = self._tabular({c: getattr(self, f"ref_cat_{c}") for c in self.cat}, self.ref_numeric)
        x = self._tabular({c: inp.categorical[c][idx] for c in self.cat}, inp.numeric[idx])
        edges = market_edges(self.ref_location, self.ref_month, inp.location[idx], inp.month[idx],
                             self.market.time.num_embeddings)
        return self.market(torch.cat([ref_x, x]), edges)[len(ref_x):]

    def patches(self, idx: torch.Tensor, images: torch.Tensor | None = None,
                maps: torch.Tensor | None = None) -> torch.Tensor:
        """[B, P, d] image cells; `images` ([B, 3, S, S] in [0, 1]) or `maps` replace the cached ones (occlusion)."""
        if self.cfg.patches == "pixels":
            x = images if images is not None else self.inputs.pixels[idx].float() / 255.0
            x = (x - 0.5) / 0.25
        else:
            x = (maps if maps is not None else self.inputs.patches[idx]).float()
        return self.patch(x).flatten(2).transpose(1, 2)

    def forward(self, idx: torch.Tensor, images: torch.Tensor | None = None, maps: torch.Tensor | None = None,
                pooled: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Price, delta, the head's scores and the attention / structure parts for rows `idx`; `images`,
        `maps` and `pooled` override the cached image inputs (occlusion studies)."""
        inp = self.inputs
        tokens = inp.tokens[idx]
        mask = (tokens != 0).float()
        T = self.text(nn.functional.embedding(tokens, self.words))
        if self.cfg.text == "minilm":
            text_pool = self.sentence(inp.sentences[idx])
        else:
            text_pool = (T * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        tabular = self._tabular({c: inp.categorical[c][idx] for c in self.cat}, inp.numeric[idx])
        parts, out = [self.tab(tabular), text_pool], {}
        if self.use_dsca or self.use_structure:
            P = self.patches(idx, images, maps)
            seen = inp.has_image[idx].float().unsqueeze(-1)
        if self.use_dsca:
            micro, info = self.dsca(T, P, mask)
            parts.append(micro * seen)
            out.update(info)
        if self.use_structure:
            meso, info = self.structure(P, inp.claims[idx])
            parts.append(meso * seen)
            out.update(info)
        if self.use_global_image:
            g = (pooled if pooled is not None else inp.pooled[idx]).float()
            parts.append(self.image(g) * inp.has_image[idx].float().unsqueeze(-1))
        e_market = self._market(idx) if self.use_market else None
        wide = inp.wide[idx] if self.cfg.wide else None
        price, delta, scores = self.head(inp.anchor[idx], torch.cat(parts, dim=-1), e_market, wide)
        return {"price": price, "delta": delta, **scores, **out}
