import pandas as pd
import pytest

from utils.core.text import extract_quantities, normalize_title


def kinds(title):
    return {(q.kind, q.value) for q in extract_quantities(title)}


@pytest.mark.parametrize("a, b", [
    ("Kojie San Face Lightening Cream 30g", "Kojie San Face Lightening Cream 30gr"),
    ("Beras 1kg", "Beras 1000 gram"),
    ("Minyak 1 L", "Minyak 1000ml"),
    ("Flashdisk 1TB", "Flashdisk 1024 GB"),
])
def test_equal_quantities(a, b):
    assert kinds(a) == kinds(b) and kinds(a)


def test_different_quantities():
    assert kinds("Indonesia Fresh Sari Lemon 250ml") != kinds("Indonesia Fresh Sari Lemon 500ml")
    assert kinds("Lemon 250ml") == {("volume", 250.0)}


def test_no_false_units():
    assert extract_quantities("Alat Cukur Rambut HK900") == []
    assert extract_quantities("Baju Gamis 2 Warna") == []


def test_real_titles_units(real_titles):
    df = pd.read_csv(real_titles / "test.csv")
    found = df["title"].map(extract_quantities)
    assert (found.map(len) > 0).mean() > 0.15
    freeman = df[df["title"].str.contains("FREEMAN Mask 175ML")]["title"].iloc[0]
    assert ("volume", 175.0) in kinds(freeman)


def test_normalize_title():
    assert normalize_title("[READY] Kopi-Susu / 250ML!!") == "ready kopi susu 250ml"
