"""A second-hand market with known truth: listings, photos, and the recorded mechanism behind each price.

Two pricing modes; the items, photos, texts, claims, categories, regions and dates are the same for a seed in
both (they come from one random stream, drawn in the same order), only the price, the listed `msrp` and the
`condition` word differ. All parts are saved in `truth.csv` (evaluation only).

`mode="aligned"`: the price follows the form of the HMG-Net model (delta = sigmoid(F_entity + gamma F_market)),
and the `condition` word is the true entity depreciation plus noise, binned (a near label):

    entity   = 1 - (1 - age_part) * (1 - defect_part) * (1 - accessory_part)
      age_part       = brand_retention * (1 - exp(-category_rate * age_years))
      defect_part    = DEFECT_COST[type] * (0.5 + size)        (size in [0, 1]; 0 without a defect)
      accessory_part = sum of ACCESSORY_COST over the category's accessories missing from the photo
    market   = region_demand + trend * years_since_start       (positive: the market pays less)
    delta    = clip(sigmoid(logit(entity) + gamma * market) + noise, 0.01, 0.97),  noise ~ N(0, noise_sd = 0.03)
    price    = msrp * (1 - delta),  msrp_true = msrp, anchor_error = 1, condition_flipped = False

`mode="independent"` (default): the price is built from additive and multiplicative terms in currency, not a
sigmoid of a sum, and the listed anchor is noisy:

    retention   = (1 - FIRST_YEAR_DROP * min(age_years, 1)) * exp(-category_rate * BRAND_DECAY[brand] * age_years)
    repair      = REPAIR_COST[type] * REPAIR_SCALE[category] * (0.5 + size)      (currency; 0 without a defect)
    accessories = sum of ACCESSORY_PRICE over the category's accessories missing from the photo (currency)
    value       = msrp_true * retention - repair - accessories
    price       = clip(value * exp(-MARKET_SCALE * gamma * market + noise), PRICE_FLOOR * msrp_true,
                       PRICE_CAP * msrp_true),                    noise ~ N(0, noise_sd = 0.10) (lognormal factor)
    msrp        = round(msrp_true * u, 2),  u log-uniform in [1 / 1.2, 1.2]       (the anchor the model sees)
    market as above (region_demand + trend * years_since_start; positive: lower prices)
    FIRST_YEAR_DROP = 0.10, BRAND_DECAY = (0.6, 0.7, 0.85, 1.0) by brand rank, MARKET_SCALE = 0.5,
    PRICE_FLOOR = 0.03, PRICE_CAP = 0.99; REPAIR_COST, REPAIR_SCALE, ACCESSORY_PRICE below

  with truth.csv columns  msrp_true, anchor_error = msrp / msrp_true (after rounding), age_part = 1 - retention,
  defect_part = repair / msrp_true, accessory_part = accessories / msrp_true,
  entity = age_part + defect_part + accessory_part (so value = msrp_true * (1 - entity); may exceed 1, then the
  floor holds), noise = the log-price noise, delta = 1 - price / msrp (the listed msrp, so delta < 0 can happen
  through the anchor error alone). `condition` is what a seller judges from what they see, never the truth's
  depreciation: level = max(age level, defect level), age (as listed, 2 decimals) < 1 / < 3 / < 6 / older ->
  0 / 1 / 2 / 3, no defect / size < 0.35 / < 0.7 / larger or any crack -> 0 / 1 / 2 / 3, words CONDITIONS[level]
  ("like new", "good", "fair", "poor"); a share CONDITION_FLIP of sellers picks a neighbouring word at random
  (`condition_flipped` in truth.csv). The anchor error and flips come from a second stream of the seed.

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
MODES = ("independent", "aligned")
NOISE_SD = {"aligned": 0.03, "independent": 0.10}  # default noise: of delta (aligned), of log price (independent)
# independent mode: currency amounts and multiplicative factors (see the module docstring)
FIRST_YEAR_DROP = 0.10  # share of the new price lost over the first year of use, on top of the decay
BRAND_DECAY = (0.6, 0.7, 0.85, 1.0)  # multiplier of the category's yearly decay rate per brand rank
REPAIR_COST = {"scratch": 20.0, "stain": 30.0, "dent": 55.0, "crack": 110.0}  # at size 0.5, before the scale
REPAIR_SCALE = {"phone": 1.0, "laptop": 1.4, "camera": 1.2, "watch": 0.9, "chair": 0.4, "bike": 0.8, "speaker": 0.5,
                "drone": 1.2}
ACCESSORY_PRICE = {"charger": 25.0, "box": 10.0, "case": 15.0, "mouse": 20.0, "strap": 20.0, "cushion": 25.0,
                   "lock": 20.0, "light": 12.0, "controller": 90.0}
MARKET_SCALE = 0.5  # log-price effect of one unit of market (the aligned logit effect is about twice as large)
PRICE_FLOOR, PRICE_CAP = 0.03, 0.99  # price bounds, as shares of msrp_true
ANCHOR_ERROR = 1.2  # listed msrp / msrp_true is log-uniform in [1 / ANCHOR_ERROR, ANCHOR_ERROR]
CONDITIONS = ("like new", "good", "fair", "poor")
CONDITION_FLIP = 0.15  # share of sellers who pick a neighbouring condition word


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


def true_value(item: Listing, gamma: float = 1.0) -> dict[str, float]:
    """The independent mode's price mechanism without noise and bounds, part by part (`item.msrp` is msrp_true)."""
    retention = ((1 - FIRST_YEAR_DROP * min(item.age_years, 1.0))
                 * math.exp(-item.category.rate * BRAND_DECAY[item.brand_rank] * item.age_years))
    repair = (REPAIR_COST[item.defect] * REPAIR_SCALE[item.category.name] * (0.5 + item.defect_size)
              if item.defect else 0.0)
    accessories = sum(ACCESSORY_PRICE[a] for a in item.category.accessories if a not in item.present)
    age, defect, accessory = 1 - retention, repair / item.msrp, accessories / item.msrp
    years = (item.listed_at - START).days / 365.25
    market = REGIONS[item.region] + TREND_PER_YEAR * years
    value = item.msrp * retention - repair - accessories
    return {"age_part": age, "defect_part": defect, "accessory_part": accessory, "entity": age + defect + accessory,
            "market": market, "repair": repair, "accessories": accessories, "value": value,
            "price_clean": value * math.exp(-MARKET_SCALE * gamma * market)}


def seller_condition(age_years: float, defect: str, defect_size: float) -> int:
    """The condition level (index into CONDITIONS) a seller judges from the age and the visible defect."""
    age_level = next((k for k, limit in enumerate((1.0, 3.0, 6.0)) if age_years < limit), 3)
    if not defect:
        defect_level = 0
    elif defect == "crack" or defect_size >= 0.7:
        defect_level = 3
    else:
        defect_level = 1 if defect_size < 0.35 else 2
    return max(age_level, defect_level)


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


def _flip_condition(level: int, aux: np.random.Generator) -> tuple[int, bool]:
    """A share CONDITION_FLIP of sellers picks a neighbouring word (the only one at either end)."""
    if aux.random() >= CONDITION_FLIP:
        return level, False
    neighbours = [k for k in (level - 1, level + 1) if 0 <= k < len(CONDITIONS)]
    return int(neighbours[int(aux.integers(len(neighbours)))]), True


def generate(out: str | Path, n: int = 3000, seed: int = 0, defect_rate: float = 0.45, noise_sd: float | None = None,
             gamma: float = 1.0, image_size: int = IMAGE_SIZE, mode: str = "independent") -> dict:
    """Write `listings.csv`, `images/` and `truth.csv` (defect boxes, delta parts; evaluation only).

    `mode`: "independent" (prices not of the model's form, noisy anchor, condition from what the seller sees) or
    "aligned" (the model's own form); see the module docstring. `noise_sd` None: NOISE_SD of the mode.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if n < 10:
        raise ValueError("need at least 10 listings")
    noise_sd = NOISE_SD[mode] if noise_sd is None else noise_sd
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    aux = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))  # independent mode's own draws
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
        noise = float(rng.normal(0, noise_sd))  # the same draw in both modes keeps their streams in step
        if mode == "aligned":
            parts = true_delta(item, gamma)
            delta = float(np.clip(parts["delta_clean"] + noise, 0.01, 0.97))
            msrp = item.msrp
            price = msrp * (1 - delta)
        else:
            parts = true_value(item, gamma)
            msrp = round(item.msrp * float(np.exp(aux.uniform(-math.log(ANCHOR_ERROR), math.log(ANCHOR_ERROR)))), 2)
            price = float(np.clip(parts["price_clean"] * math.exp(noise), PRICE_FLOOR * item.msrp,
                                  PRICE_CAP * item.msrp))
            delta = 1 - price / msrp
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
        title = f"{BRANDS[cat.name][item.brand_rank]} {cat.name} model {int(rng.integers(1, 9))}"
        description = describe(item, rng, mention, claims)
        condition = _condition(parts["entity"], rng)  # drawn in both modes (same stream); kept in aligned only
        flipped = False
        if mode == "independent":
            level, flipped = _flip_condition(seller_condition(round(item.age_years, 2), defect, size), aux)
            condition = CONDITIONS[level]
        rows.append({"listing_id": listing_id, "title": title, "description": description, "category": cat.name,
                     "brand": BRANDS[cat.name][item.brand_rank], "condition": condition,
                     "msrp": msrp, "price": price, "location": item.region,
                     "listed_at": item.listed_at.date().isoformat(), "image": name,
                     "age_years": round(item.age_years, 2)})
        truth.append({"listing_id": listing_id, "delta": delta, **{k: parts[k] for k in (
            "age_part", "defect_part", "accessory_part", "entity", "market")}, "noise": noise,
            "defect": defect, "defect_size": size, "defect_x0": item.defect_box[0], "defect_y0": item.defect_box[1],
            "defect_x1": item.defect_box[2], "defect_y1": item.defect_box[3], "defect_mention": mention,
            "subtle_defect": bool(defect and size < 0.35), "accessories_present": " ".join(present),
            "false_claim": any(c == "yes" and a not in present for a, c in claims.items()),
            "msrp_true": item.msrp, "anchor_error": msrp / item.msrp, "condition_flipped": flipped})
    listings = pd.DataFrame(rows)
    truth_df = pd.DataFrame(truth)
    write_csv(out / "listings.csv", listings)
    write_csv(out / "truth.csv", truth_df)
    summary = {"listings": n, "seed": seed, "mode": mode, "image_size": image_size, "defect_rate": defect_rate,
               "noise_sd": noise_sd, "gamma": gamma, "categories": listings["category"].value_counts().to_dict(),
               "median_delta": float(truth_df["delta"].median())}
    write_json(out / "market.json", summary)
    return summary
