"""Rendering of product packshots (one per product variant) and of seller photos of them (one per posting)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

CANVAS = 256


@dataclass(frozen=True)
class Look:
    """What a product looks like: its shape, colours, brand text and variant text."""

    shape: str
    body: tuple[int, int, int]
    accent: tuple[int, int, int]
    brand: str
    variant: str
    pattern: int  # 0 plain, 1 stripes, 2 dots: the family's design motif


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _outline(shape: str, w: int, h: int) -> list[tuple[float, float]]:
    """Silhouette polygon of a shape inside a w x h box."""
    if shape == "bottle":
        return [(0.35 * w, 0), (0.65 * w, 0), (0.65 * w, 0.18 * h), (0.85 * w, 0.3 * h), (0.85 * w, h),
                (0.15 * w, h), (0.15 * w, 0.3 * h), (0.35 * w, 0.18 * h)]
    if shape == "can":
        return [(0.2 * w, 0.05 * h), (0.8 * w, 0.05 * h), (0.8 * w, 0.95 * h), (0.2 * w, 0.95 * h)]
    if shape == "jar":
        return [(0.1 * w, 0.3 * h), (0.9 * w, 0.3 * h), (0.9 * w, 0.95 * h), (0.1 * w, 0.95 * h)]
    if shape == "tube":
        return [(0.3 * w, 0.02 * h), (0.7 * w, 0.02 * h), (0.8 * w, 0.85 * h), (0.6 * w, h), (0.4 * w, h),
                (0.2 * w, 0.85 * h)]
    if shape == "pouch":
        return [(0.1 * w, 0.05 * h), (0.9 * w, 0.05 * h), (0.95 * w, h), (0.05 * w, h)]
    if shape == "shirt":
        return [(0.3 * w, 0.05 * h), (0.42 * w, 0.12 * h), (0.58 * w, 0.12 * h), (0.7 * w, 0.05 * h),
                (w, 0.25 * h), (0.85 * w, 0.4 * h), (0.78 * w, 0.33 * h), (0.78 * w, h), (0.22 * w, h),
                (0.22 * w, 0.33 * h), (0.15 * w, 0.4 * h), (0, 0.25 * h)]
    if shape == "card":
        return [(0.2 * w, 0.15 * h), (0.8 * w, 0.15 * h), (0.8 * w, 0.85 * h), (0.3 * w, 0.85 * h),
                (0.2 * w, 0.75 * h)]
    return [(0.1 * w, 0.1 * h), (0.9 * w, 0.1 * h), (0.9 * w, 0.95 * h), (0.1 * w, 0.95 * h)]  # box


def render_packshot(look: Look, size: int = 200) -> Image.Image:
    """The product on a transparent background: silhouette, motif, label band with brand and variant."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    poly = _outline(look.shape, size, size)
    d.polygon(poly, fill=look.body + (255,), outline=(20, 20, 20, 255))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(poly, fill=255)
    motif = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    md = ImageDraw.Draw(motif)
    if look.pattern == 1:
        for y in range(0, size, 18):
            md.rectangle([0, y, size, y + 6], fill=look.accent + (160,))
    elif look.pattern == 2:
        for y in range(6, size, 22):
            for x in range(6, size, 22):
                md.ellipse([x, y, x + 8, y + 8], fill=look.accent + (170,))
    img.paste(motif, (0, 0), Image.composite(motif, Image.new("RGBA", motif.size), mask))
    if look.shape in ("bottle", "jar"):
        top = 0 if look.shape == "bottle" else int(0.18 * size)
        d.rectangle([0.33 * size if look.shape == "bottle" else 0.15 * size, top,
                     0.67 * size if look.shape == "bottle" else 0.85 * size, top + 0.12 * size],
                    fill=look.accent + (255,))
    band_top, band_h = int(0.45 * size), int(0.28 * size)
    d.rectangle([0.22 * size, band_top, 0.78 * size, band_top + band_h], fill=(250, 250, 245, 255))
    d.text((size / 2, band_top + band_h * 0.35), look.brand[:10], fill=look.accent + (255,),
           font=_font(int(size * 0.09)), anchor="mm")
    d.text((size / 2, band_top + band_h * 0.78), look.variant[:12], fill=(40, 40, 40, 255),
           font=_font(int(size * 0.065)), anchor="mm")
    return img


@dataclass(frozen=True)
class PhotoPlan:
    """Every random choice of one seller photo, drawn before any pixel is drawn, so that photos can be rendered
    in other processes while the draws stay in the generator's single random stream."""

    background: tuple[int, int, int]
    table_edge: int | None  # y of a darker table edge, None for a plain background
    side: int  # the packshot's side after scaling
    angle: float
    x: int
    y: int
    sticker: str | None  # a seller's promo sticker across the top
    crop: int | None  # pixels cropped from every border, then resized back
    brightness: float
    contrast: float
    blur: float | None  # Gaussian blur radius


def plan_photo(rng: np.random.Generator, shot_width: int = 200, canvas: int = CANVAS) -> PhotoPlan:
    """One seller's photo of the product: background, scale, rotation, offset, sticker, crop, lighting, blur."""
    background = tuple(int(c) for c in rng.integers(150, 256, size=3))
    table_edge = int(rng.integers(canvas // 2, canvas)) if rng.random() < 0.4 else None
    side = max(16, int(shot_width * rng.uniform(0.6, 1.1)))
    angle = float(rng.uniform(-15, 15))
    x = int(rng.integers(-side // 6, max(1, canvas - side + side // 6)))
    y = int(rng.integers(-side // 6, max(1, canvas - side + side // 6)))
    sticker = str(rng.choice(["PROMO", "READY", "COD", "ORI 100%"])) if rng.random() < 0.3 else None
    crop = int(rng.integers(0, canvas // 8)) if rng.random() < 0.5 else None
    brightness, contrast = float(rng.uniform(0.75, 1.25)), float(rng.uniform(0.8, 1.2))
    blur = float(rng.uniform(0.5, 1.5)) if rng.random() < 0.2 else None
    return PhotoPlan(background, table_edge, side, angle, x, y, sticker, crop, brightness, contrast, blur)


def render_photo(packshot: Image.Image, plan: PhotoPlan, canvas: int = CANVAS) -> Image.Image:
    """The seller photo `plan` describes (deterministic: the same plan gives the same pixels)."""
    bg = Image.new("RGB", (canvas, canvas), plan.background)
    if plan.table_edge is not None:  # a gradient or a table edge
        d = ImageDraw.Draw(bg)
        d.rectangle([0, plan.table_edge, canvas, canvas], fill=tuple(int(c * 0.75) for c in plan.background))
    shot = packshot.resize((plan.side, plan.side), Image.BILINEAR).rotate(plan.angle, expand=True,
                                                                         resample=Image.BILINEAR)
    bg.paste(shot, (plan.x, plan.y), shot)
    if plan.sticker is not None:
        d = ImageDraw.Draw(bg)
        d.rectangle([0, 0, canvas, 22], fill=(220, 30, 30))
        d.text((canvas / 2, 11), plan.sticker, fill="white", font=_font(14), anchor="mm")
    if plan.crop is not None:
        c = plan.crop
        bg = bg.crop((c, c, canvas - c, canvas - c)).resize((canvas, canvas), Image.BILINEAR)
    bg = ImageEnhance.Brightness(bg).enhance(plan.brightness)
    bg = ImageEnhance.Contrast(bg).enhance(plan.contrast)
    if plan.blur is not None:
        bg = bg.filter(ImageFilter.GaussianBlur(plan.blur))
    return bg
