"""Title attributes (quantities, model codes, brand) and a rule table that raises or lowers the
similarity a pair needs (seed 003's rule-based threshold adjustments; seed 002's unit check).

A rule fires on a pair when both titles carry the attribute and the values conflict (no value in
common) or are shared; its `delta` is subtracted from the pair's similarity, so +0.1 means the pair
needs 0.1 more similarity to match, and a large delta removes the pair.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from utils.core.text import UNITS, extract_quantities, tokens

from .fusion import pair_similarity

PROMO_WORDS = {"ready", "stock", "stok", "rdy", "original", "ori", "cod", "bisa", "promo", "murah", "termurah",
               "grosir", "best", "seller", "free", "gift", "new", "hot", "sale", "import", "lokal", "bayar",
               "ditempat", "100",
               "paket", "bpom", "jual", "diskon", "bestseller", "terlaris", "asli", "official"}
_CODE = re.compile(r"^(?=.*\d)(?=.*[a-z])[a-z0-9]{3,}$")
_UNIT_TOKEN = re.compile(r"^\d+(?:[.,]\d+)?(?:" + "|".join(sorted(map(re.escape, UNITS), key=len, reverse=True)) + ")$")


@dataclass
class Rule:
    name: str
    attribute: str  # quantity | model | brand
    when: str  # conflict | shared
    delta: float


DEFAULT_RULES = (
    Rule("unit conflict", "quantity", "conflict", 0.0),
    Rule("model code conflict", "model", "conflict", 0.0),
    Rule("model code shared", "model", "shared", 0.0),
    Rule("brand differs", "brand", "conflict", 0.0),
)


def model_codes(title: str) -> set[str]:
    """Tokens mixing letters and digits (HK900, A51, X12) that are not quantities (250ml)."""
    return {t for t in tokens(title) if _CODE.match(t) and not _UNIT_TOKEN.match(t)}


def brand(title: str) -> str:
    """The first token that is not a promo word or a number: usually the brand in Shopee titles."""
    for t in tokens(title):
        if t not in PROMO_WORDS and not t.isdigit() and len(t) > 1:
            return t
    return ""


def extract_attributes(titles: pd.Series) -> dict[str, list]:
    """Per title: quantity kind -> set of values, model-code set, brand."""
    quantities = []
    for t in titles:
        q: dict[str, set] = {}
        for item in extract_quantities(t):
            q.setdefault(item.kind, set()).add(item.value)
        quantities.append(q)
    return {"quantity": quantities, "model": [model_codes(t) for t in titles], "brand": [brand(t) for t in titles]}


def _indicator(collections: list) -> sp.csr_matrix:
    """Binary rows x distinct items matrix of each row's collection (a set of codes, of quantity values)."""
    lengths = np.fromiter((len(c) for c in collections), dtype=np.int64, count=len(collections))
    codes, uniq = pd.factorize(pd.Series([x for c in collections for x in c], dtype=object))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return sp.csr_matrix((np.ones(len(codes), dtype=np.float32), codes, indptr),
                         shape=(len(collections), max(1, len(uniq))))


def _shares(collections: list, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(both rows have some item, they have one in common) for each pair, from sparse row products."""
    M = _indicator(collections)
    has = np.diff(M.indptr) > 0
    return has[rows] & has[cols], pair_similarity(M, rows, cols) > 0


def attribute_status(attr: str, values: list, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(both titles have the attribute and conflict, both have it and share a value) for each pair, vectorised
    over the pairs: quantities conflict when a unit kind both titles state has no value in common."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    if attr == "quantity":
        conflict = np.zeros(len(rows), dtype=bool)
        common = np.zeros(len(rows), dtype=bool)
        for kind in sorted({k for q in values for k in q}):
            both, share = _shares([q.get(kind, ()) for q in values], rows, cols)
            conflict |= both & ~share
            common |= both
        return conflict, common & ~conflict
    if attr == "model":
        both, share = _shares(values, rows, cols)
        return both & ~share, both & share
    codes, _ = pd.factorize(pd.Series(values, dtype=object))
    named = np.array([bool(v) for v in values], dtype=bool)
    both = named[rows] & named[cols]
    same = codes[rows] == codes[cols]
    return both & ~same, both & same


def pair_status(attrs: dict[str, list], indices: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For each attribute, [N, K] masks (conflict, shared) of every neighbour pair; computed once per model."""
    n, k = indices.shape
    rows, cols = np.repeat(np.arange(n), k), indices.ravel()
    out = {}
    for attr in ("quantity", "model", "brand"):
        conflict, shared = attribute_status(attr, attrs[attr], rows, cols)
        same = rows == cols
        out[attr] = ((conflict & ~same).reshape(n, k), (shared & ~same).reshape(n, k))
    return out


def pair_deltas(status: dict[str, tuple[np.ndarray, np.ndarray]], rules: list[Rule]) -> np.ndarray:
    """[N, K] sum of the deltas of the rules that fire on each neighbour pair."""
    first = next(iter(status.values()))[0]
    delta = np.zeros(first.shape, dtype=np.float32)
    for rule in rules:
        conflict, shared = status[rule.attribute]
        delta += rule.delta * (conflict if rule.when == "conflict" else shared)
    return delta


def apply_rules(indices: np.ndarray, sims: np.ndarray, status: dict[str, tuple[np.ndarray, np.ndarray]],
                rules: list[Rule]) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists with each pair's similarity lowered by its rules' deltas, re-sorted (self first)."""
    adjusted = sims - pair_deltas(status, rules)
    adjusted[:, 0] = np.inf
    order = np.argsort(-adjusted, axis=1, kind="stable")
    new_sims = np.take_along_axis(adjusted, order, axis=1)
    new_sims[:, 0] = sims[:, 0]
    return np.take_along_axis(indices, order, axis=1), new_sims.astype(np.float32)


def rules_table(rules: list[Rule]) -> pd.DataFrame:
    return pd.DataFrame([asdict(r) for r in rules])
