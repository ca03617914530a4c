"""Vocabulary of the synthetic Shopee market: categories, product nouns (Indonesian / English),
descriptors, colours, promo words and how sellers write units."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Category:
    name: str
    nouns: tuple[tuple[str, str], ...]  # (Indonesian, English)
    quantity: str  # weight | volume | pieces | memory | length | colour
    values: tuple[float, ...]  # base-unit values a variant can take (g, ml, pieces, GB, m)
    shapes: tuple[str, ...]
    descriptors: tuple[str, ...]


CATEGORIES: tuple[Category, ...] = (
    Category("skincare", (("Krim Wajah", "Face Cream"), ("Serum Wajah", "Face Serum"), ("Masker Wajah", "Face Mask"),
                          ("Sabun Muka", "Facial Wash"), ("Lotion Tubuh", "Body Lotion"), ("Pelembab", "Moisturizer")),
             "weight", (15, 20, 30, 50, 60, 100, 175, 250), ("jar", "tube"),
             ("Brightening", "Whitening", "Acne", "Green Tea", "Aloe Vera", "Vitamin C", "Night", "Day", "Crème",
              "BPOM", "Glowing", "Peel-Off")),
    Category("beverage", (("Kopi", "Coffee"), ("Teh", "Tea"), ("Susu", "Milk"), ("Jus Lemon", "Lemon Juice"),
                          ("Minuman Jahe", "Ginger Drink"), ("Sirup", "Syrup")),
             "volume", (180, 220, 250, 330, 500, 1000, 1500), ("bottle", "can"),
             ("Latte", "Original", "Less Sugar", "Café", "Éclair", "Fresh", "Halal", "Vanilla", "Mocca", "Gula Aren")),
    Category("snack", (("Keripik Kentang", "Potato Chips"), ("Kue Kering", "Cookies"), ("Mie Instan", "Instant Noodle"),
                       ("Coklat Batang", "Chocolate Bar"), ("Kacang", "Peanuts"), ("Sambal", "Chili Sauce")),
             "weight", (40, 75, 100, 200, 250, 500, 1000), ("pouch", "box"),
             ("Pedas", "Balado", "Keju", "Original", "Rumput Laut", "Extra Hot", "Crunchy", "Homemade", "Kiloan")),
    Category("fashion", (("Kaos Polos", "T-Shirt"), ("Celana Jeans", "Jeans"), ("Daster Batik", "Batik Dress"),
                         ("Hijab Instan", "Hijab"), ("Kemeja Flanel", "Flannel Shirt"), ("Jaket Hoodie", "Hoodie")),
             "colour", (), ("shirt",),
             ("Lengan Pendek", "Oversize", "Highwaist", "Slim Fit", "Katun", "Premium", "Unisex", "Korean Style",
              "All Size", "Motif")),
    Category("electronics", (("Kabel Data", "Data Cable"), ("Flashdisk", "Flash Drive"),
                             ("Kartu Memori", "Memory Card"),
                             ("Powerbank", "Power Bank"), ("Earphone", "Headset")),
             "memory", (8, 16, 32, 64, 128, 256), ("card", "box"),
             ("Fast Charging", "Type C", "Micro USB", "Garansi Resmi", "High Speed", "Class 10", "Bluetooth",
              "Original 100%")),
    Category("household", (("Lakban", "Tape"), ("Sikat Gigi", "Toothbrush"), ("Kantong Plastik", "Plastic Bag"),
                           ("Spons Cuci", "Sponge"), ("Gantungan Baju", "Hanger"), ("Ikat Rambut", "Hair Tie")),
             "pieces", (1, 2, 3, 5, 10, 12, 50, 100), ("box", "pouch"),
             ("Murah", "Elastis", "Warna Polos", "Grosir", "Serbaguna", "Anti Slip", "Tebal", "Kuat")),
    Category("baby", (("Popok Bayi", "Baby Diapers"), ("Tisu Basah", "Wet Wipes"), ("Minyak Telon", "Baby Oil"),
                      ("Bedak Bayi", "Baby Powder")),
             "pieces", (10, 20, 24, 40, 50, 60, 80), ("pouch", "bottle"),
             ("Newborn", "Soft", "Tanpa Alkohol", "Hypoallergenic", "Jumbo Pack", "Size M", "Size L")),
)

COLOURS: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ("Hitam", "Black", (30, 30, 30)), ("Putih", "White", (235, 235, 235)), ("Merah", "Red", (200, 40, 40)),
    ("Biru", "Blue", (40, 80, 200)), ("Hijau", "Green", (40, 150, 70)), ("Kuning", "Yellow", (230, 200, 40)),
    ("Abu", "Grey", (130, 130, 130)), ("Navy", "Navy", (20, 30, 90)), ("Maroon", "Maroon", (110, 20, 40)),
    ("Pink", "Pink", (240, 150, 180)), ("Coklat", "Brown", (120, 80, 40)), ("Mustard", "Mustard", (200, 160, 30)),
)

PROMO = ("READY STOCK", "READY", "ORIGINAL", "ORI", "COD", "BISA COD", "PROMO", "MURAH", "TERMURAH", "GROSIR",
         "BEST SELLER", "100% ORI", "FREE GIFT", "NEW", "HOT SALE", "IMPORT", "LOKAL", "Bayar Ditempat")
ABBREVIATIONS = {"original": "ori", "ready": "rdy", "stock": "stok", "premium": "prem", "gram": "gr",
                 "pieces": "pcs", "murah": "mrh", "import": "imp", "dengan": "dg", "untuk": "utk"}

_SYLLABLES = ("ko", "jie", "san", "fre", "man", "wa", "ri", "sa", "lu", "ni", "to", "ma", "pe", "ro", "ga", "vi",
              "zo", "la", "ne", "mo", "ta", "ka", "bi", "su", "do", "re", "xi", "ya", "ha", "no", "ve", "li")


def brand_name(rng: np.random.Generator) -> str:
    """A pronounceable made-up brand, e.g. 'Kojiesan' or 'Fre-Ma'."""
    n = rng.choice([2, 2, 3])
    word = "".join(rng.choice(_SYLLABLES, size=n))
    if rng.random() < 0.15:
        word = word[: len(word) // 2] + " " + word[len(word) // 2:]
    return word.title() if rng.random() < 0.7 else word.upper()


def unit_spellings(quantity: str, value: float) -> list[str]:
    """The ways sellers write one quantity (all equal once normalised: 1000 g = 1 kg = 1000gr)."""
    v = f"{value:g}"
    if quantity == "weight":
        out = [f"{v}g", f"{v}gr", f"{v} gr", f"{v} gram", f"{v}gram", f"{v} Gram", f"{v}GR"]
        if value >= 1000:
            out += [f"{value / 1000:g}kg", f"{value / 1000:g} kg", f"{value / 1000:g}KG"]
        return out
    if quantity == "volume":
        out = [f"{v}ml", f"{v} ml", f"{v}mL", f"{v} ML", f"{v}ML"]
        if value >= 1000:
            out += [f"{value / 1000:g}L", f"{value / 1000:g} liter", f"{value / 1000:g} ltr"]
        return out
    if quantity == "pieces":
        return [f"{v}pcs", f"{v} pcs", f"isi {v}", f"{v} Pcs", f"{v}pc", f"{v} lembar", f"{v}PCS"]
    if quantity == "memory":
        return [f"{v}GB", f"{v} GB", f"{v}gb", f"{v} Gb"]
    raise ValueError(f"no unit spellings for {quantity!r}")


def escape_non_ascii(text: str) -> str:
    """Write non-ASCII characters as literal UTF-8 byte escapes, as in real Shopee titles (`\\xc3\\x89`)."""
    return "".join(c if ord(c) < 128 else "".join(f"\\x{b:02x}" for b in c.encode("utf-8")) for c in text)
