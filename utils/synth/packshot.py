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


def seller_photo(packshot: Image.Image, rng: np.random.Generator, canvas: int = CANVAS) -> Image.Image:
    """One seller's photo of the product: background, scale, rotation, offset, crop, lighting, blur."""
    bg_col = tuple(int(c) for c in rng.integers(150, 256, size=3))
    bg = Image.new("RGB", (canvas, canvas), bg_col)
    if rng.random() < 0.4:  # a gradient or a table edge
        d = ImageDraw.Draw(bg)
        edge = int(rng.integers(canvas // 2, canvas))
        d.rectangle([0, edge, canvas, canvas], fill=tuple(int(c * 0.75) for c in bg_col))
    scale = rng.uniform(0.6, 1.1)
    side = max(16, int(packshot.width * scale))
    shot = packshot.resize((side, side), Image.BILINEAR).rotate(rng.uniform(-15, 15), expand=True,
                                                                   resample=Image.BILINEAR)
    x = int(rng.integers(-side // 6, max(1, canvas - side + side // 6)))
    y = int(rng.integers(-side // 6, max(1, canvas - side + side // 6)))
    bg.paste(shot, (x, y), shot)
    if rng.random() < 0.3:  # a promo sticker from the seller
        d = ImageDraw.Draw(bg)
        d.rectangle([0, 0, canvas, 22], fill=(220, 30, 30))
        d.text((canvas / 2, 11), str(rng.choice(["PROMO", "READY", "COD", "ORI 100%"])), fill="white",
               font=_font(14), anchor="mm")
    if rng.random() < 0.5:  # crop and resize back
        c = int(rng.integers(0, canvas // 8))
        bg = bg.crop((c, c, canvas - c, canvas - c)).resize((canvas, canvas), Image.BILINEAR)
    bg = ImageEnhance.Brightness(bg).enhance(rng.uniform(0.75, 1.25))
    bg = ImageEnhance.Contrast(bg).enhance(rng.uniform(0.8, 1.2))
    if rng.random() < 0.2:
        bg = bg.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return bg
