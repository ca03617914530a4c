"""A Shopee-like dataset with images: product families with size/colour variants (hard negatives),
seller-noisy titles, per-posting photos, shared images, Shopee-like group sizes.

Each label group is one variant of a product family; siblings differ only in size or colour and share
the packshot design, so they are near-identical in image and title, like `Fresh Sari Lemon 250ml` vs
`500ml` in the real data.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from utils.core.device import usable_cores
from utils.core.io import write_csv, write_json
from utils.core.progress import progress

from .catalog import ABBREVIATIONS, CATEGORIES, COLOURS, PROMO, Category, brand_name, escape_non_ascii, unit_spellings
from .packshot import Look, PhotoPlan, plan_photo, render_packshot, render_photo

MAX_GROUP = 50


@dataclass
class Variant:
    family: int
    category: Category
    brand: str
    noun: tuple[str, str]
    line: str  # the family's product line or model code ("HK900", "Lumina"), "" when none
    descriptors: list[str]
    variant_id: str  # Indonesian colour name, or the quantity in its base unit
    variant_en: str
    look: Look


def group_sizes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Shopee-like sizes: about 64% pairs, 15% triples, then a power-law tail up to 50."""
    u = rng.random(n)
    tail = np.minimum(4 + np.floor(rng.pareto(1.5, n) * 2.0), MAX_GROUP).astype(int)
    return np.where(u < 0.645, 2, np.where(u < 0.80, 3, tail))


def _families(n_groups: int, rng: np.random.Generator) -> list[Variant]:
    """Product families of 1-4 variants each until `n_groups` variants exist."""
    out: list[Variant] = []
    family = 0
    while len(out) < n_groups:
        cat = CATEGORIES[rng.integers(len(CATEGORIES))]
        brand = brand_name(rng)
        noun = cat.nouns[rng.integers(len(cat.nouns))]
        desc = list(rng.choice(cat.descriptors, size=int(rng.integers(1, 5)), replace=False))
        line = _product_line(rng) if rng.random() < 0.7 else ""
        shape = str(rng.choice(cat.shapes))
        body = tuple(int(c) for c in rng.integers(30, 230, size=3))
        accent = tuple(int(c) for c in rng.integers(0, 200, size=3))
        pattern = int(rng.integers(3))
        n_var = int(rng.choice([1, 2, 3, 4], p=[0.7, 0.17, 0.09, 0.04]))
        if cat.quantity == "colour":
            picks = rng.choice(len(COLOURS), size=n_var, replace=False)
            variants = [(COLOURS[i][0], COLOURS[i][1], COLOURS[i][2]) for i in picks]
        else:
            values = rng.choice(cat.values, size=min(n_var, len(cat.values)), replace=False)
            variants = [(f"{v:g}", f"{v:g}", None) for v in values]
        for vid, ven, colour in variants:
            label = ven if cat.quantity == "colour" else unit_spellings(cat.quantity, float(vid))[0]
            look = Look(shape, colour or body, accent, brand, label, pattern)
            out.append(Variant(family, cat, brand, noun, line, desc, vid, ven, look))
        family += 1
    return out[:n_groups]


def _product_line(rng: np.random.Generator) -> str:
    """A model code ("HK900", "X-12") or a made-up line name ("Lumina")."""
    if rng.random() < 0.5:
        letters = "".join(rng.choice(list("ABCDEFGHJKLMNPRSTVXZ"), size=int(rng.integers(1, 3))))
        return f"{letters}{'-' if rng.random() < 0.3 else ''}{int(rng.integers(1, 999))}"
    return brand_name(rng).title().replace(" ", "")


def _typo(word: str, rng: np.random.Generator) -> str:
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))
    return word[:i] + word[i + 1:] if rng.random() < 0.5 else word[:i - 1] + word[i] + word[i - 1] + word[i + 1:]


def make_title(v: Variant, rng: np.random.Generator) -> str:
    """One seller's title for a variant: vocabulary mix, unit spelling, promo words and noise."""
    lang = rng.random()
    noun = v.noun[0] if lang < 0.45 else v.noun[1] if lang < 0.8 else f"{v.noun[0]} / {v.noun[1]}"
    words = [v.brand] if rng.random() < 0.9 else []
    words.append(noun)
    if v.line and rng.random() < 0.75:
        words.append(v.line)
    desc = [d for d in v.descriptors if rng.random() < 0.7]
    rng.shuffle(desc)
    words += desc
    if v.category.quantity == "colour":
        colour = v.variant_id if rng.random() < 0.6 else v.variant_en
        words.append(colour if rng.random() < 0.7 else f"Warna {colour}")
    elif rng.random() < 0.45:
        words.append(str(rng.choice(unit_spellings(v.category.quantity, float(v.variant_id)))))
    if rng.random() < 0.3:
        rng.shuffle(words)
    text = " ".join(words)
    if rng.random() < 0.55:
        promo = " ".join(rng.choice(PROMO, size=int(rng.integers(1, 3)), replace=False))
        style = rng.integers(4)
        text = [f"{promo} {text}", f"{text} {promo}", f"[{promo}] {text}", f"{text} - {promo}"][style]
    if rng.random() < 0.25:
        text = " ".join(ABBREVIATIONS.get(w.lower(), w) for w in text.split())
    toks = text.split()
    alpha = [j for j, t in enumerate(toks) if t.isalpha()]  # typos never touch quantities
    if alpha and rng.random() < 0.15:
        j = alpha[int(rng.integers(len(alpha)))]
        toks[j] = _typo(toks[j], rng)
        text = " ".join(toks)
    sep = rng.random()
    if sep < 0.15:
        text = text.replace(" / ", " | ")
    elif sep < 0.25:
        text = text.replace(" ", " - ", 1)
    case = rng.random()
    text = text.upper() if case < 0.2 else text.lower() if case < 0.3 else text
    return escape_non_ascii(text)


def _unique_ints(rng: np.random.Generator, low: int, high: int, n: int) -> np.ndarray:
    """`n` distinct random integers in [low, high), in random order."""
    out = np.zeros(0, dtype=np.int64)
    while len(out) < n:
        out = np.unique(np.concatenate([out, rng.integers(low, high, size=n, dtype=np.int64)]))
    return rng.permutation(out)[:n]


def _posting_ids(prefix: str, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.array([f"{prefix}_{i}" for i in _unique_ints(rng, 10**8, 5 * 10**9, n)])


@dataclass(frozen=True)
class _Photos:
    """One group's new photos to render: the product's look, and per photo its plan, file and JPEG quality."""

    look: Look
    photos: tuple[tuple[PhotoPlan, Path, int], ...]


def _render_group(group: _Photos) -> dict[str, str]:
    """Render, save and pHash one group's new photos (in a worker process); returns file name -> pHash."""
    shot = render_packshot(group.look)
    hashes = {}
    for plan, path, quality in group.photos:
        render_photo(shot, plan).save(path, quality=quality)
        with Image.open(path) as saved:  # hash the JPEG as written, like the real data
            hashes[path.name] = str(imagehash.phash(saved))
    return hashes


def _render(groups: list[_Photos], workers: int, desc: str) -> dict[str, str]:
    """Every group's photos, on up to `workers` processes (forkserver: safe after threads; one process a
    200 photos at most, since starting one costs about as much as rendering 200); file name -> pHash."""
    total = sum(len(g.photos) for g in groups)
    workers = min(workers, max(1, total // 200))
    bar = progress(total=total, desc=desc, unit="photo", leave=False)
    hashes: dict[str, str] = {}
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) if workers > 1 else None
    try:
        done = map(_render_group, groups) if pool is None else pool.map(
            _render_group, groups, chunksize=max(1, len(groups) // (16 * workers)))
        for group, rendered in zip(groups, done, strict=True):
            hashes.update(rendered)
            bar.update(len(group.photos))
    finally:  # on Ctrl-C or an error, drop the photos not started rather than render them all first
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        bar.close()
    return hashes


def _write_split(variants: list[Variant], sizes: np.ndarray, prefix: str, out: Path,
                 rng: np.random.Generator, reuse_within: float, reuse_across: float, workers: int) -> pd.DataFrame:
    """Titles and photos of one split's postings; photos into `<out>/<prefix>_images/`.

    Every random draw happens here, in one stream and in a fixed order; only the rendering runs on the
    workers, so a seed gives the same rows and the same image bytes whatever the number of workers.
    """
    img_dir = out / f"{prefix}_images"
    img_dir.mkdir(parents=True, exist_ok=True)
    by_family: dict[int, list[int]] = {}
    for g, v in enumerate(variants):
        by_family.setdefault(v.family, []).append(g)
    rows, group_files, to_render = [], {}, []
    labels = _unique_ints(rng, 10**6, 4 * 10**9, len(variants))
    for g, (v, n) in enumerate(zip(variants, sizes, strict=True)):
        files, new = [], []
        for _ in range(n):
            siblings = [s for s in by_family[v.family] if s != g and s in group_files]
            if files and rng.random() < reuse_within:  # the same seller photo uploaded again
                name = files[int(rng.integers(len(files)))]
            elif siblings and rng.random() < reuse_across:  # a sibling variant's photo reused
                sib = group_files[siblings[int(rng.integers(len(siblings)))]]
                name = sib[int(rng.integers(len(sib)))]
            else:
                plan = plan_photo(rng)
                name = hashlib.md5(rng.bytes(16)).hexdigest() + ".jpg"
                new.append((plan, img_dir / name, int(rng.integers(60, 96))))
            files.append(name)
            rows.append((name, make_title(v, rng), labels[g]))
        group_files[g] = files
        to_render.append(_Photos(v.look, tuple(new)))
    phash = _render(to_render, workers, f"synth {prefix}")
    df = pd.DataFrame(rows, columns=["image", "title", "label_group"])
    df.insert(1, "image_phash", df["image"].map(phash))
    df.insert(0, "posting_id", _posting_ids(prefix, len(df), rng))
    return df.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(drop=True)


def generate(out: str | Path, groups: int = 600, seed: int = 0, test_share: float = 0.3,
             reuse_within: float = 0.12, reuse_across: float = 0.02, workers: int | None = None) -> dict:
    """Write train.csv, train_images/, test.csv (no labels), test_images/ and test_solution.csv.

    Photos render on `workers` processes (default: every core); the files are the same for any number.

    Families are split whole between train and test (open set, as in the competition), so hard
    negatives are in both. Returns the summary also written to `<out>/synth.json`.
    """
    if groups < 4:
        raise ValueError("need at least 4 groups")
    workers = usable_cores() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    variants = _families(groups, rng)
    sizes = group_sizes(len(variants), rng)
    families = np.unique([v.family for v in variants])
    test_fam = set(rng.choice(families, size=max(1, int(round(test_share * len(families)))), replace=False))
    is_test = np.array([v.family in test_fam for v in variants])
    frames = {}
    for prefix, sel in (("train", ~is_test), ("test", is_test)):
        idx = np.flatnonzero(sel)
        frames[prefix] = _write_split([variants[i] for i in idx], sizes[idx], prefix, out, rng,
                                      reuse_within, reuse_across, workers)
    write_csv(out / "train.csv", frames["train"])
    write_csv(out / "test.csv", frames["test"].drop(columns="label_group"))
    write_csv(out / "test_solution.csv", frames["test"])  # test with labels, for scoring only
    summary = {"groups": groups, "seed": seed, "test_share": test_share,
               "train_rows": len(frames["train"]), "test_rows": len(frames["test"]),
               "train_groups": int((~is_test).sum()), "test_groups": int(is_test.sum())}
    write_json(out / "synth.json", summary)
    return summary
