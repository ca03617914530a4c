"""Statistics and figures of a postings table, for the EDA notebook and for comparing the synthetic
demo data with the real Shopee titles."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from utils.core.text import extract_quantities, tokens  # noqa: E402


def phash_collisions(df: pd.DataFrame) -> dict[str, float]:
    """Pairs of rows with the same pHash, within one label group and across groups (unknown pHashes left out)."""
    pairs_within = pairs_across = 0
    known = df[df["image_phash"] != ""]
    for _, g in known.groupby("image_phash"):
        if len(g) < 2:
            continue
        counts = g["label_group"].value_counts().to_numpy() if "label_group" in g else np.array([len(g)])
        total = len(g) * (len(g) - 1) // 2
        within = int((counts * (counts - 1) // 2).sum())
        pairs_within += within
        pairs_across += total - within
    shared = known["image_phash"].duplicated(keep=False).reindex(df.index, fill_value=False)
    return {"phash_pairs_within_group": pairs_within, "phash_pairs_across_groups": pairs_across,
            "rows_sharing_phash": float(shared.mean())}


def dataset_stats(df: pd.DataFrame) -> dict[str, float]:
    """Headline numbers of a postings table (group sizes need `label_group`)."""
    words = df["title"].map(lambda t: len(t.split()))
    quantities = df["title"].map(extract_quantities)
    out = {"rows": len(df), "title_words_mean": float(words.mean()), "title_words_median": float(words.median()),
           "title_chars_mean": float(df["title"].str.len().mean()),
           "titles_with_unit": float((quantities.map(len) > 0).mean()),
           "titles_upper_case": float((df["title"] == df["title"].str.upper()).mean()),
           **phash_collisions(df)}
    if "label_group" in df:
        sizes = df["label_group"].value_counts()
        out.update({"groups": int(len(sizes)), "group_size_median": float(sizes.median()),
                    "group_size_p95": float(sizes.quantile(0.95)), "group_size_max": int(sizes.max()),
                    "group_size_mean": float(sizes.mean()), "share_groups_of_2": float((sizes == 2).mean())})
    return out


def top_tokens(df: pd.DataFrame, n: int = 25) -> pd.DataFrame:
    counts = Counter(t for title in df["title"] for t in set(tokens(title)))
    return pd.DataFrame(counts.most_common(n), columns=["token", "titles"])


def unit_frequencies(df: pd.DataFrame) -> pd.DataFrame:
    """How often each quantity kind and each unit spelling appears."""
    rows = [(q.kind, q.text.replace(" ", "").strip("0123456789.,") or "?") for t in df["title"]
            for q in extract_quantities(t)]
    return (pd.DataFrame(rows, columns=["kind", "unit"]).value_counts().rename("count").reset_index()
            if rows else pd.DataFrame(columns=["kind", "unit", "count"]))


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_compare(frames: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """Group-size and title-length distributions of several tables, overlaid (densities)."""
    out_dir = Path(out_dir)
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.arange(1.5, 51.5)
    for name, df in frames.items():
        if "label_group" in df:
            ax.hist(df["label_group"].value_counts(), bins=bins, density=True, alpha=0.5, label=name)
    ax.set(xscale="linear", yscale="log", xlabel="group size", ylabel="share of groups", title="Group sizes")
    ax.legend()
    paths.append(_save(fig, out_dir / "group_sizes.png"))
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, df in frames.items():
        ax.hist(df["title"].map(lambda t: len(t.split())), bins=np.arange(0, 41), density=True, alpha=0.5,
                label=name)
    ax.set(xlabel="words per title", ylabel="share of titles", title="Title length")
    ax.legend()
    paths.append(_save(fig, out_dir / "title_length.png"))
    return paths


def plot_bars(table: pd.DataFrame, label: str, value: str, title: str, path: str | Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, max(3, 0.25 * len(table))))
    ax.barh(table[label].astype(str)[::-1], table[value][::-1])
    ax.set(title=title, xlabel=value)
    return _save(fig, Path(path))


def plot_image_grid(df: pd.DataFrame, images: str | Path, path: str | Path, groups: int = 6, per_group: int = 6,
                    seed: int = 0) -> Path:
    """Sample postings of a few label groups, one group a row, titles under the photos."""
    rng = np.random.default_rng(seed)
    sizes = df["label_group"].value_counts()
    picks = rng.choice(sizes[sizes >= 3].index, size=min(groups, int((sizes >= 3).sum())), replace=False)
    fig, axes = plt.subplots(len(picks), per_group, figsize=(2.2 * per_group, 2.5 * len(picks)), squeeze=False)
    for r, lab in enumerate(picks):
        rows = df[df["label_group"] == lab].head(per_group)
        for c in range(per_group):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(rows):
                row = rows.iloc[c]
                p = Path(images) / row["image"]
                if p.is_file():
                    ax.imshow(Image.open(p))
                ax.set_title(row["title"][:28], fontsize=7)
    return _save(fig, Path(path))
