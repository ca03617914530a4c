"""Attribution: occlusion maps of delta over the image, "this region changes delta by X%", pointing game, and
per-listing effects of each feature group (the predict command's top attributions)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from .features import Backbone, Inputs, load_image
from .fit import predict
from .model import HMGNet


def occlusion_map(model: HMGNet, backbone: Backbone, row: int, image_path: str, patch: int = 16,
                  stride: int = 8) -> tuple[np.ndarray, float]:
    """Per-pixel change of delta when a square of the local surface colour covers that pixel (mean over the
    squares covering it), and the unoccluded delta. Positive: covering the region lowers delta, i.e. the
    region raises it."""
    img = load_image(image_path, backbone.size)
    S = backbone.size
    starts = list(range(0, S - patch + 1, stride))
    boxes = [(y, x) for y in starts for x in starts]
    batch = img.unsqueeze(0).repeat(len(boxes) + 1, 1, 1, 1)
    for b, (y, x) in enumerate(boxes, start=1):
        batch[b, :, y:y + patch, x:x + patch] = _fill(img, y, x, patch)
    maps, pooled = backbone(batch)
    idx = torch.full((len(batch),), row, dtype=torch.long)
    model.eval()
    with torch.no_grad():
        delta = model(idx, images=batch, maps=maps, pooled=pooled)["delta"].numpy()
    heat, count = np.zeros((S, S)), np.zeros((S, S))
    for b, (y, x) in enumerate(boxes, start=1):
        heat[y:y + patch, x:x + patch] += delta[0] - delta[b]
        count[y:y + patch, x:x + patch] += 1
    return heat / np.maximum(count, 1), float(delta[0])


def _fill(img: torch.Tensor, y: int, x: int, patch: int) -> torch.Tensor:
    """Occluder colour: the median of a window three times the square around it (the local surface, so the
    occluder removes what is there without drawing a new grey blob the model could read as a defect)."""
    window = img[:, max(0, y - patch):y + 2 * patch, max(0, x - patch):x + 2 * patch]
    return window.reshape(3, -1).median(dim=1).values.view(3, 1, 1)


def region_effect(model: HMGNet, backbone: Backbone, row: int, image_path: str,
                  box: tuple[int, int, int, int]) -> float:
    """Change of delta (in percentage points) caused by the region `box`: delta(image) - delta(region greyed)."""
    img = load_image(image_path, backbone.size)
    occluded = img.clone()
    x0, y0, x1, y1 = box
    occluded[:, y0:y1, x0:x1] = _fill(img, y0, x0, max(x1 - x0, y1 - y0))
    batch = torch.stack([img, occluded])
    maps, pooled = backbone(batch)
    model.eval()
    with torch.no_grad():
        delta = model(torch.tensor([row, row]), images=batch, maps=maps, pooled=pooled)["delta"].numpy()
    return float(100 * (delta[0] - delta[1]))


def pointing_game(heat: np.ndarray, box: tuple[int, int, int, int], tolerance: int = 4) -> bool:
    """Whether the heatmap's peak falls in the true box (grown by `tolerance` pixels)."""
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    x0, y0, x1, y1 = box
    return bool(x0 - tolerance <= x < x1 + tolerance and y0 - tolerance <= y < y1 + tolerance)


def chance_rate(box: tuple[int, int, int, int], size: int, tolerance: int = 4) -> float:
    """The share of the image the grown box covers: a random peak's hit rate."""
    x0, y0, x1, y1 = box
    w = min(x1 + tolerance, size) - max(x0 - tolerance, 0)
    h = min(y1 + tolerance, size) - max(y0 - tolerance, 0)
    return w * h / size ** 2


def _without(inputs: Inputs, group: str) -> Inputs:
    """`inputs` with one feature group set to what the model reads as absent or average."""
    if group == "text":  # the words and what is parsed from them
        return replace(inputs, tokens=torch.zeros_like(inputs.tokens), claims=torch.zeros_like(inputs.claims),
                       defect_mentioned=torch.zeros_like(inputs.defect_mentioned))
    if group == "photo":
        return replace(inputs, has_image=torch.zeros_like(inputs.has_image))
    if group == "location":
        return replace(inputs, location=torch.zeros_like(inputs.location))
    if group in inputs.categorical:
        return replace(inputs, categorical={**inputs.categorical, group: torch.zeros_like(inputs.categorical[group])})
    numeric = inputs.numeric.clone()
    numeric[:, int(group.split(":")[1])] = 0.0  # standardised: 0 is the training mean
    return replace(inputs, numeric=numeric)


def feature_effects(model: HMGNet, rows: np.ndarray, numeric_names: list[str]) -> pd.DataFrame:
    """Per row and feature group, delta(listing) - delta(group removed) in percentage points: positive means
    the group raises the depreciation (lowers the price). Groups: the text, each categorical column, the log
    anchor and each numeric column (set to the training mean), the photo and the location (set to unknown)."""
    inputs = model.inputs
    groups = {"text": "text", **{c: c for c in model.cat}, "msrp level": "num:0",
              **{c: f"num:{j}" for j, c in enumerate(numeric_names, start=1)}}
    if inputs.has_image is not None and (model.use_dsca or model.use_structure or model.use_global_image):
        groups["photo"] = "photo"
    if model.use_market:
        groups["location"] = "location"
    base = predict(model, rows)["delta"]
    out = {}
    try:
        for name, group in groups.items():
            model.inputs = _without(inputs, group)
            out[name] = 100 * (base - predict(model, rows)["delta"])
    finally:
        model.inputs = inputs
    return pd.DataFrame(out, index=rows)


def top_effects(effects: pd.DataFrame, top: int = 3) -> list[str]:
    """Each row's `top` largest effects by size, as "age_years +4.1; brand -1.2; text +0.8" (delta points)."""
    names = effects.columns.to_numpy()
    values = effects.to_numpy()
    order = np.argsort(-np.abs(values), axis=1)[:, :top]
    return ["; ".join(f"{names[j]} {values[i, j]:+.1f}" for j in row) for i, row in enumerate(order)]
