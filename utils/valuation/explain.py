"""Attribution: occlusion maps of delta over the image, "this region changes delta by X%", pointing game."""

from __future__ import annotations

import numpy as np
import torch

from .features import Backbone, load_image
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
