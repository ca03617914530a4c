"""Title normalisation, tokens and unit extraction (30g = 30gr = 30 gram; 1 kg = 1000 g)."""

from __future__ import annotations

import re
from typing import NamedTuple

_NON_WORD = re.compile(r"[^0-9a-z]+")
_NUMBER = r"(\d+(?:[.,]\d+)?)"

# unit spelling -> (quantity kind, factor to the base unit of that kind)
UNITS: dict[str, tuple[str, float]] = {
    **{u: ("weight", 1.0) for u in ("g", "gr", "grm", "gram", "grams", "gramm", "grs")},
    **{u: ("weight", 1000.0) for u in ("kg", "kgs", "kilo", "kilogram")},
    "mg": ("weight", 0.001),
    **{u: ("volume", 1.0) for u in ("ml", "mls", "mililiter", "milliliter", "cc")},
    **{u: ("volume", 1000.0) for u in ("l", "lt", "ltr", "liter", "litre", "liters")},
    "mm": ("length", 1.0),
    "cm": ("length", 10.0),
    **{u: ("length", 1000.0) for u in ("m", "meter", "metre", "mtr")},
    **{u: ("pieces", 1.0) for u in ("pcs", "pc", "pce", "pieces", "piece", "lembar", "biji", "pack", "pak",
                                   "sachet", "btl", "botol")},
    **{u: ("memory", 1.0) for u in ("gb",)},
    **{u: ("memory", 1024.0) for u in ("tb",)},
    "mb": ("memory", 1 / 1024),
}
_UNIT_RE = re.compile(
    _NUMBER + r"\s?(" + "|".join(sorted(map(re.escape, UNITS), key=len, reverse=True)) + r")(?![a-z])"
)


class Quantity(NamedTuple):
    kind: str
    value: float  # in the base unit of its kind (g, ml, mm, pieces, GB)
    text: str


def normalize_title(title: str) -> str:
    """Lowercase, and replace every run of punctuation with one space."""
    return _NON_WORD.sub(" ", title.lower()).strip()


def tokens(title: str) -> list[str]:
    return normalize_title(title).split()


def extract_quantities(title: str) -> list[Quantity]:
    """All quantities written in a title, converted to their kind's base unit."""
    out = []
    for m in _UNIT_RE.finditer(title.lower()):
        number, unit = m.groups()
        kind, factor = UNITS[unit]
        out.append(Quantity(kind, round(float(number.replace(",", ".")) * factor, 6), m.group(0)))
    return out
