"""A second-hand market with known truth: listings, photos, and the recorded mechanism behind each price.

The true depreciation of a listing is (all parts saved in `truth.csv`, evaluation only):

    entity   = 1 - (1 - age_part) * (1 - defect_part) * (1 - accessory_part)
      age_part       = brand_retention * (1 - exp(-category_rate * age_years))
      defect_part    = DEFECT_COST[type] * (0.5 + size)        (size in [0, 1]; 0 without a defect)
      accessory_part = sum of ACCESSORY_COST over the category's accessories missing from the photo
    market   = region_demand + trend * years_since_start       (positive: the market pays less)
    delta    = clip(sigmoid(logit(entity) + market) + noise, 0.01, 0.97),  noise ~ N(0, noise_sd)
    price    = msrp * (1 - delta)

Defects are drawn at a recorded box on the item and mentioned truthfully, omitted, or misdescribed in
the text; accessories are drawn as objects and listed, denied ("no box") or falsely claimed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from utils.core.io import write_csv, write_json
from utils.core.progress import progress

IMAGE_SIZE = 96


@dataclass(frozen=True)
class Category:
    name: str
    msrp: tuple[float, float]  # log-uniform range of new prices
    rate: float  # yearly depreciation rate of the age part
    accessories: tuple[str, ...]
    colour: tuple[int, int, int]
    aspect: float  # item width / height


CATEGORIES = (
    Category("phone", (150, 1300), 0.45, ("charger", "box", "case"), (60, 60, 70), 0.55),
    Category("laptop", (350, 2600), 0.35, ("charger", "box", "mouse"), (150, 155, 165), 1.5),
    Category("camera", (250, 2200), 0.25, ("strap", "charger", "box"), (35, 35, 35), 1.3),
    Category("watch", (80, 3000), 0.15, ("strap", "box"), (190, 160, 90), 0.8),
    Category("chair", (40, 700), 0.20, ("cushion",), (140, 90, 50), 0.8),
    Category("bike", (200, 2500), 0.12, ("lock", "light"), (40, 110, 170), 1.6),
    Category("speaker", (60, 900), 0.30, ("charger", "box"), (90, 30, 30), 0.7),
    Category("drone", (300, 2000), 0.40, ("controller", "charger", "box"), (200, 200, 205), 1.4),
)
BRANDS = {c.name: [f"{c.name[:2].upper()}{s}" for s in ("corp", "tek", "ion", "ax")] for c in CATEGORIES}
# resale retention per brand rank: the first brands hold value better
BRAND_RETENTION = (0.75, 0.9, 1.05, 1.2)
DEFECT_COST = {"scratch": 0.06, "stain": 0.08, "dent": 0.12, "crack": 0.22}
ACCESSORY_COST = {"charger": 0.05, "box": 0.025, "case": 0.02, "mouse": 0.02, "strap": 0.04, "cushion": 0.05,
                  "lock": 0.02, "light": 0.015, "controller": 0.15}
ACCESSORY_LOOK = {"charger": ((245, 245, 245), "plug"), "box": ((170, 130, 80), "square"),
                  "case": ((200, 60, 140), "frame"), "mouse": ((80, 80, 80), "ellipse"),
                  "strap": ((120, 70, 30), "band"), "cushion": ((220, 200, 120), "ellipse"),
                  "lock": ((230, 190, 30), "ring"), "light": ((250, 250, 120), "ellipse"),
                  "controller": ((50, 50, 50), "pad")}
REGIONS = {"London": -0.35, "Manchester": -0.15, "Bristol": -0.1, "Leeds": 0.0, "Cardiff": 0.1,
           "Inverness": 0.3, "Truro": 0.4, "Countryside": 0.5}
DEFECT_WORDS = {"scratch": ["scratch", "scratches", "scuff"], "stain": ["stain", "mark", "discoloration"],
                "dent": ["dent", "ding", "dented corner"], "crack": ["crack", "cracked", "hairline crack"]}
START = pd.Timestamp("2024-01-01")
TREND_PER_YEAR = 0.15


@dataclass
class Listing:
    """One generated listing and its truth."""

    category: Category
    brand_rank: int
    msrp: float
    age_years: float
    defect: str  # "" for none
    defect_size: float
    defect_box: tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels; zeros without a defect
    present: tuple[str, ...]  # accessories in the photo
    region: str
    listed_at: pd.Timestamp


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def true_delta(item: Listing, gamma: float = 1.0) -> dict[str, float]:
    """The documented depreciation formula, without noise, part by part."""
    retention = BRAND_RETENTION[item.brand_rank]
    age = min(0.95, retention * (1 - math.exp(-item.category.rate * item.age_years)))
    defect = DEFECT_COST[item.defect] * (0.5 + item.defect_size) if item.defect else 0.0
    missing = [a for a in item.category.accessories if a not in item.present]
    accessory = sum(ACCESSORY_COST[a] for a in missing)
    entity = 1 - (1 - age) * (1 - defect) * (1 - accessory)
    years = (item.listed_at - START).days / 365.25
    market = REGIONS[item.region] + TREND_PER_YEAR * years
    return {"age_part": age, "defect_part": defect, "accessory_part": accessory, "entity": entity,
            "market": market, "delta_clean": 1 / (1 + math.exp(-(_logit(entity) + gamma * market)))}


def _item_box(cat: Category, size: int) -> tuple[int, int, int, int]:
    h = int(size * (0.62 if cat.aspect >= 1 else 0.72))
    w = min(int(h * cat.aspect), int(size * 0.78))
    x0, y0 = (size - w) // 2, int(size * 0.08)
    return x0, y0, x0 + w, y0 + h


def _draw_accessory(d: ImageDraw.ImageDraw, name: str, box: tuple[int, int, int, int]) -> None:
    colour, shape = ACCESSORY_LOOK[name]
    x0, y0, x1, y1 = box
    if shape == "square":
        d.rectangle(box, fill=colour, outline=(60, 40, 20))
    elif shape == "frame":
        d.rectangle(box, outline=colour, width=3)
    elif shape == "ellipse":
        d.ellipse(box, fill=colour, outline=(30, 30, 30))
    elif shape == "band":
        d.rectangle((x0, (y0 + y1) // 2 - 3, x1, (y0 + y1) // 2 + 3), fill=colour)
    elif shape == "ring":
        d.ellipse(box, outline=colour, width=3)
    elif shape == "pad":
        d.rounded_rectangle(box, radius=4, fill=colour)
        d.ellipse((x0 + 3, y0 + 3, x0 + 8, y0 + 8), fill=(200, 30, 30))
    else:  # plug: a block with a cable
        d.rectangle((x0, y0, x0 + (x1 - x0) // 2, y1), fill=colour, outline=(90, 90, 90))
        d.line((x0 + (x1 - x0) // 2, (y0 + y1) // 2, x1, y1), fill=(90, 90, 90), width=2)


def _draw_defect(d: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    if kind == "scratch":
        d.line((x0, y0 + rng.integers(0, max(1, y1 - y0)), x1, y1 - rng.integers(0, max(1, y1 - y0))),
               fill=(235, 235, 235), width=1)
        d.line((x0 + 1, y0 + 1, x1, y1), fill=(225, 225, 225), width=1)
    elif kind == "crack":
        n = 5
        xs = np.linspace(x0, x1, n)
        ys = y0 + rng.random(n) * (y1 - y0)
        d.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=(10, 10, 10), width=2)
    elif kind == "dent":
        d.ellipse(box, fill=(15, 15, 15))
        d.ellipse((x0 + 2, y0 + 2, x1 - 1, y1 - 1), fill=(90, 90, 90))
    else:  # stain
        d.ellipse(box, fill=(110, 80, 20))


def render(item: Listing, rng: np.random.Generator, size: int = IMAGE_SIZE) -> Image.Image:
    """The listing photo: background, the item, the defect in its recorded box, accessories below."""
    bg = tuple(int(v) for v in rng.integers(175, 245, 3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    body = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in item.category.colour)
    box = _item_box(item.category, size)
    d.rounded_rectangle(box, radius=6, fill=body, outline=(20, 20, 20))
    if item.defect:
        _draw_defect(d, item.defect, item.defect_box, rng)
    slots = [(4 + i * (size // 3), int(size * 0.78), 4 + i * (size // 3) + size // 4, size - 4) for i in range(3)]
    for name, slot in zip(item.present, rng.permutation(len(slots))[:len(item.present)], strict=False):
        _draw_accessory(d, name, slots[int(slot)])
    noise = rng.normal(0, 6, (size, size, 3))
    arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.GaussianBlur(0.3))


def _defect_box(item_box: tuple[int, int, int, int], size: float, rng: np.random.Generator) -> tuple[int, ...]:
    """A box inside the item, side 6..22 px growing with the defect size."""
    x0, y0, x1, y1 = item_box
    side = int(6 + 16 * size)
    bx = int(rng.integers(x0 + 2, max(x0 + 3, x1 - side - 2)))
    by = int(rng.integers(y0 + 2, max(y0 + 3, y1 - side - 2)))
    return bx, by, bx + side, by + side


def describe(item: Listing, rng: np.random.Generator, mention: str, claims: dict[str, str]) -> str:
    """Seller text: condition words, the defect as `mention` says, and accessory claims."""
    parts = [str(rng.choice(["Selling my", "For sale:", "Used", "Great"])) + f" {item.category.name}."]
    if item.defect and mention == "truthful":
        adj = "tiny" if item.defect_size < 0.35 else ("small" if item.defect_size < 0.7 else "large")
        where = rng.choice(["on the corner", "on the side", "on the front", "near the edge"])
        parts.append(f"{adj} {rng.choice(DEFECT_WORDS[item.defect])} {where}.")
    elif item.defect and mention == "wrong":
        other = rng.choice([k for k in DEFECT_WORDS if k != item.defect])
        parts.append(f"minor {rng.choice(DEFECT_WORDS[other])}, barely visible.")
    elif rng.random() < 0.5:
        parts.append(str(rng.choice(["no scratches or dents.", "excellent condition.", "works perfectly."])))
    for acc, claim in claims.items():
        if claim == "yes":
            parts.append(str(rng.choice([f"{acc} included.", f"comes with {acc}.", f"with original {acc}."])))
        elif claim == "no":
            parts.append(str(rng.choice([f"no {acc}.", f"missing {acc}.", f"without {acc}."])))
    return " ".join(parts)


def _condition(entity: float, rng: np.random.Generator) -> str:
    score = entity + rng.normal(0, 0.06)
    for limit, word in ((0.1, "like new"), (0.3, "good"), (0.55, "fair")):
        if score < limit:
            return word
    return "poor"


def generate(out: str | Path, n: int = 3000, seed: int = 0, defect_rate: float = 0.45, noise_sd: float = 0.03,
             gamma: float = 1.0, image_size: int = IMAGE_SIZE) -> dict:
    """Write `listings.csv`, `images/` and `truth.csv` (defect boxes, delta parts; evaluation only)."""
    if n < 10:
        raise ValueError("need at least 10 listings")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cat_weights = rng.dirichlet(np.full(len(CATEGORIES), 2.0))  # uneven: some categories are rare
    rows, truth = [], []
    for i in progress(range(n), desc="synth market", unit="listing", leave=False):
        cat = CATEGORIES[int(rng.choice(len(CATEGORIES), p=cat_weights))]
        lo, hi = np.log(cat.msrp)
        defect = str(rng.choice(list(DEFECT_COST))) if rng.random() < defect_rate else ""
        size = float(rng.beta(1.3, 2.0)) if defect else 0.0
        ibox = _item_box(cat, image_size)
        present = tuple(a for a in cat.accessories if rng.random() < 0.6)
        item = Listing(cat, int(rng.integers(len(BRAND_RETENTION))), round(float(np.exp(rng.uniform(lo, hi))), 2),
                       float(rng.gamma(2.0, 1.0)), defect, size,
                       _defect_box(ibox, size, rng) if defect else (0, 0, 0, 0), present,
                       str(rng.choice(list(REGIONS))), START + pd.Timedelta(days=int(rng.integers(0, 730))))
        parts = true_delta(item, gamma)
        noise = float(rng.normal(0, noise_sd))
        delta = float(np.clip(parts["delta_clean"] + noise, 0.01, 0.97))
        price = item.msrp * (1 - delta)
        mention = str(rng.choice(["truthful", "omitted", "wrong"], p=[0.6, 0.3, 0.1])) if defect else ""
        claims = {}
        for a in cat.accessories:
            u = rng.random()
            if a in present:
                claims[a] = "yes" if u < 0.7 else ""
            else:
                claims[a] = "no" if u < 0.45 else ("yes" if u < 0.6 else "")  # "yes" here is a false claim
        listing_id = f"L{i:06d}"
        name = f"{listing_id}.png"
        render(item, rng, image_size).save(out / "images" / name)
        rows.append({"listing_id": listing_id,
                     "title": f"{BRANDS[cat.name][item.brand_rank]} {cat.name} model {int(rng.integers(1, 9))}",
                     "description": describe(item, rng, mention, claims), "category": cat.name,
                     "brand": BRANDS[cat.name][item.brand_rank], "condition": _condition(parts["entity"], rng),
                     "msrp": item.msrp, "price": price, "location": item.region,
                     "listed_at": item.listed_at.date().isoformat(), "image": name,
                     "age_years": round(item.age_years, 2)})
        truth.append({"listing_id": listing_id, "delta": delta, **{k: parts[k] for k in (
            "age_part", "defect_part", "accessory_part", "entity", "market")}, "noise": noise,
            "defect": defect, "defect_size": size, "defect_x0": item.defect_box[0], "defect_y0": item.defect_box[1],
            "defect_x1": item.defect_box[2], "defect_y1": item.defect_box[3], "defect_mention": mention,
            "subtle_defect": bool(defect and size < 0.35), "accessories_present": " ".join(present),
            "false_claim": any(c == "yes" and a not in present for a, c in claims.items())})
    listings = pd.DataFrame(rows)
    truth_df = pd.DataFrame(truth)
    write_csv(out / "listings.csv", listings)
    write_csv(out / "truth.csv", truth_df)
    summary = {"listings": n, "seed": seed, "image_size": image_size, "defect_rate": defect_rate,
               "noise_sd": noise_sd, "gamma": gamma, "categories": listings["category"].value_counts().to_dict(),
               "median_delta": float(truth_df["delta"].median())}
    write_json(out / "market.json", summary)
    return summary
