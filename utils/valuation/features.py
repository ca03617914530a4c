"""Model inputs from listings: tokens, cached image feature maps, categorical ids, numbers, anchors, claims."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from utils.core.progress import progress

from .structure import DEFAULT_DEFECTS, parse_claims

log = logging.getLogger(__name__)
CATEGORICAL = ("category", "brand", "condition")  # entity side; location and time belong to the market graph
MAX_TOKENS = 48


@dataclass
class Inputs:
    """Everything the model reads, one row per listing (tensors on the CPU)."""

    tokens: torch.Tensor  # [N, L] WordLlama token ids, 0 = padding
    categorical: dict[str, torch.Tensor]  # name -> [N] ids, 0 = unknown
    numeric: torch.Tensor  # [N, k] standardised numbers (log anchor, age, ...)
    anchor: torch.Tensor  # [N] new price, or the estimate where missing
    anchor_estimated: torch.Tensor  # [N] bool
    claims: torch.Tensor  # [N, A] +1 claimed, -1 denied, 0 not mentioned
    defect_mentioned: torch.Tensor  # [N] float, 1 when the text names a defect ("small dent"), not "no dents"
    price: torch.Tensor  # [N]
    patches: torch.Tensor | None = None  # [N, C, h, w] float16 image feature map (backbone stage 2/3)
    pooled: torch.Tensor | None = None  # [N, C2] float16 pooled last-stage features
    pixels: torch.Tensor | None = None  # [N, 3, S, S] uint8 photos (for the trained ViT-style patch embedding)
    has_image: torch.Tensor | None = None  # [N] bool
    location: torch.Tensor | None = None  # [N] ids for the market graph, 0 = unknown
    month: torch.Tensor | None = None  # [N] months since the first listing
    sizes: dict[str, int] = field(default_factory=dict)  # vocabulary size per categorical column


def estimate_anchor(df: pd.DataFrame, train_idx: np.ndarray, quantile: float = 0.95,
                    min_count: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The MSRP where known; elsewhere an anchor from the training rows.

    Missing MSRPs take the median MSRP of the training rows with the same category and brand (then
    category, then all) when the column has values; without any MSRP, the anchor is the `quantile`
    of training prices of the same category and brand (a market ceiling, so price <= anchor mostly).
    A group counts only with at least `min_count` training rows.
    """
    n = len(df)
    msrp = df["msrp"].to_numpy(float) if "msrp" in df else np.full(n, np.nan)
    estimated = np.isnan(msrp)
    if not estimated.any():
        return msrp, estimated
    train = df.iloc[train_idx]
    if "msrp" in df and train["msrp"].notna().any():
        source, stat = train["msrp"], (lambda s: s.median())
    else:
        source, stat = train["price"], (lambda s: s.quantile(quantile))
    out = msrp.copy()
    keys = [k for k in (["category", "brand"], ["category"]) if all(c in df for c in k)]
    for key in keys:
        groups = source.groupby([train[c] for c in key])
        table = groups.agg(stat)[groups.size() >= min_count]
        look = pd.MultiIndex.from_frame(df[key]) if len(key) > 1 else df[key[0]]
        vals = table.reindex(look).to_numpy(float)
        fill = np.isnan(out) & ~np.isnan(vals)
        out[fill] = vals[fill]
    out[np.isnan(out)] = float(stat(source))
    return out, estimated


def tokenize(texts: list[str], max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    """WordLlama token ids (the offline tokenizer shipped in the wheel), padded with 0."""
    from tokenizers import Tokenizer

    from utils.core.weights import wordllama_files

    tok = Tokenizer.from_file(str(wordllama_files()[1]))
    ids = torch.zeros(len(texts), max_tokens, dtype=torch.long)
    for i, enc in enumerate(tok.encode_batch(texts)):
        seq = [t for t in enc.ids if t != 0][:max_tokens]
        ids[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return ids


class Backbone:
    """A frozen timm backbone giving the feature map at timm index `stage` (DSCA patches) and the pooled last
    stage. timm index 1 is ResNet's conv2_x (stride 4), 2 is conv3_x (stride 8): the seed's "stage 2/3".

    Without a weights file it is randomly initialised (no hub offline, seed 0): its early-stage maps still
    respond to local edges and blobs, which is what defect attention needs; give `weights` for
    pretrained features.
    """

    def __init__(self, backbone: str = "resnet10t", weights: str | None = None, size: int = 96, stage: int = 1):
        import timm

        kwargs = {"pretrained_cfg_overlay": {"file": str(weights)}} if weights else {}
        torch.manual_seed(0)
        self.net = timm.create_model(backbone, pretrained=bool(weights), features_only=True,
                                     out_indices=(stage, -1), **kwargs).eval()
        self.size = size
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, 3, S, S] in [0, 1] -> map [B, C, h, w], pooled [B, C2] (float32)."""
        mid, last = self.net((images - self.mean) / self.std)
        return mid, last.mean(dim=(2, 3))


def image_features(paths: list[str | None], backbone: Backbone, batch_size: int = 64) -> tuple[torch.Tensor, ...]:
    """Photos (uint8), feature maps and pooled features of every image, computed once (float16) so that
    ablations train only the light heads on top."""
    pixels, maps, pooled = [], [], []
    for s in progress(range(0, len(paths), batch_size), desc="image features", unit="batch", leave=False):
        images = torch.stack([load_image(p, backbone.size) for p in paths[s:s + batch_size]])
        mid, last = backbone(images)
        pixels.append((images * 255).round().to(torch.uint8))
        maps.append(mid.half())
        pooled.append(last.half())
    return torch.cat(pixels), torch.cat(maps), torch.cat(pooled)


def load_image(path: str | Path | None, size: int) -> torch.Tensor:
    """[3, size, size] in [0, 1]; a missing image is a mid-grey frame (the model also gets has_image)."""
    if not path or not Path(path).is_file():
        return torch.full((3, size, size), 0.5)
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _ids(values: pd.Series, vocab: list[str]) -> torch.Tensor:
    index = {v: i + 1 for i, v in enumerate(vocab)}
    return torch.tensor([index.get(v, 0) for v in values], dtype=torch.long)


def build_inputs(df: pd.DataFrame, train_idx: np.ndarray, accessories: list[str], images_dir: str | None = None,
                 backbone: Backbone | None = None, numeric: list[str] = ()) -> Inputs:
    """Inputs for every row; vocabularies and scalers come from the training rows only."""
    train = df.iloc[train_idx]
    anchor, estimated = estimate_anchor(df, train_idx)
    text = (df.get("title", pd.Series("", index=df.index)) + ". " +
            df.get("description", pd.Series("", index=df.index))).tolist()
    cats, sizes = {}, {}
    for c in CATEGORICAL:
        if c in df:
            vocab = sorted(train[c].unique())
            cats[c], sizes[c] = _ids(df[c], vocab), len(vocab) + 1
    cols = [np.log(anchor)] + [df[c].to_numpy(float) for c in numeric if c in df]
    num = np.stack(cols, axis=1)
    mu, sd = np.nanmean(num[train_idx], axis=0), np.nanstd(num[train_idx], axis=0) + 1e-6
    num = np.nan_to_num((num - mu) / sd)
    inputs = Inputs(tokens=tokenize(text), categorical=cats, numeric=torch.tensor(num, dtype=torch.float32),
                    anchor=torch.tensor(anchor, dtype=torch.float32), anchor_estimated=torch.tensor(estimated),
                    claims=torch.tensor(parse_claims(text, accessories), dtype=torch.float32),
                    defect_mentioned=torch.tensor((parse_claims(text, DEFAULT_DEFECTS) > 0).any(1),
                                                  dtype=torch.float32),
                    price=torch.tensor(df["price"].to_numpy(float), dtype=torch.float32), sizes=sizes)
    if images_dir and "image" in df:
        paths = [str(Path(images_dir) / f) if f else None for f in df["image"]]
        inputs.pixels, inputs.patches, inputs.pooled = image_features(paths, backbone or Backbone())
        inputs.has_image = torch.tensor([bool(p) and Path(p).is_file() for p in paths])
    if "location" in df:
        vocab = sorted(train["location"].unique())
        inputs.location, sizes["location"] = _ids(df["location"], vocab), len(vocab) + 1
    if "listed_at" in df and df["listed_at"].notna().any():
        t = df["listed_at"]
        months = (t.dt.year - t.min().year) * 12 + t.dt.month - t.min().month
        inputs.month = torch.tensor(months.fillna(0).to_numpy(int), dtype=torch.long)
        sizes["month"] = int(inputs.month.max()) + 1
    return inputs
