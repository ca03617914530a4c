"""The listings format (`listings.csv`) and the mapping of other datasets (CarDekho, Mercari) onto it.

Columns: listing_id, title, description, category, brand, condition, msrp, price, location, listed_at,
image, plus optional numeric columns (e.g. age_years, kms). Only listing_id and price are required;
the model uses what is there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.data import DataError, check_text_file

log = logging.getLogger(__name__)
TEXT_COLUMNS = ("title", "description", "category", "brand", "condition", "location", "image")
COLUMNS = ("listing_id", "title", "description", "category", "brand", "condition", "msrp", "price", "location",
           "listed_at", "image")
_SHOW = 10
# how a missing number is written in the datasets we map (pandas' own NA words); text columns keep them as text
MISSING = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "-"})



def listing_text(df: pd.DataFrame) -> pd.Series:
    """What the text models read: "title. description" (either may be absent)."""
    blank = pd.Series("", index=df.index)
    return df.get("title", blank).astype(str) + ". " + df.get("description", blank).fillna("").astype(str)

def _rows(mask: pd.Series) -> str:
    lines = (np.flatnonzero(mask.to_numpy()) + 2)[:_SHOW]  # CSV line numbers: header is line 1
    return f"line(s) {', '.join(map(str, lines))}" + (" ..." if mask.sum() > _SHOW else "")


def _numbers(values: pd.Series, column: str) -> pd.Series:
    """A column as numbers, missing values (empty, NA) as NaN; any other text is an error naming the rows."""
    given = ~values.astype(str).str.strip().isin(MISSING)
    numbers = pd.to_numeric(values.where(given), errors="coerce")
    bad = numbers.isna() & given
    if bad.any():
        raise DataError(f"column {column!r} needs numbers; text such as {values[bad].iloc[0]!r} in {_rows(bad)}")
    return numbers


def map_columns(raw: pd.DataFrame, mapping: dict | None, optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rename a dataset's columns to the listings format.

    `mapping`: `columns` (listings name -> source column), `describe` (source columns written into
    the description as "name: value"), `numeric` (listings name -> source column, kept as numbers),
    `log_columns` (listings name -> source column holding the natural log of the value, e.g. used phones'
    log prices), `age_from_year` ({column, reference}: age_years = reference - year). Without `listing_id`
    the row number is used. Names in `optional` (the price, for new listings) may lack their source column.
    """
    if not mapping:
        return raw.copy()
    out = pd.DataFrame(index=raw.index)
    kinds = (("columns", lambda v, src: v), ("numeric", _numbers),
             ("log_columns", lambda v, src: np.exp(_numbers(v, src))))
    for key, convert in kinds:
        for name, src in (mapping.get(key) or {}).items():
            if src in raw.columns:
                out[name] = convert(raw[src], src)
            elif name not in optional:
                raise DataError(f"mapping: source column {src!r} (for {name!r}) not in {list(raw.columns)}")
    age = mapping.get("age_from_year")
    if age:
        if age["column"] not in raw.columns:
            raise DataError(f"mapping: source column {age['column']!r} (for 'age_years') not in {list(raw.columns)}")
        out["age_years"] = float(age["reference"]) - _numbers(raw[age["column"]], age["column"])
        future = out["age_years"] < 0
        if future.any():
            raise DataError(f"column {age['column']!r}: a year after the reference year {age['reference']} "
                            f"(age below 0) in {_rows(future)}")
    extra = mapping.get("describe") or []
    if extra:
        parts = raw[extra].astype(str).apply(lambda r: ", ".join(f"{c}: {v}" for c, v in r.items()), axis=1)
        out["description"] = (out["description"].fillna("").astype(str) + ". " + parts) if "description" in out \
            else parts
    if "listing_id" not in out:
        out.insert(0, "listing_id", [f"row{i}" for i in range(len(out))])
    return out


def read_listings(path: str | Path, mapping: dict | None = None, sep: str | None = None,
                  require_price: bool = True, drop_nonpositive_price: bool = False) -> pd.DataFrame:
    """Read, map and validate listings; errors name the file, the column and the CSV lines.

    Checks: listing_id present and unique; price (when required) a positive number; msrp, when the
    column exists, a positive number or empty; listed_at a date or empty. Text columns become strings.
    `drop_nonpositive_price` drops rows priced 0 or below (Mercari has some) instead of stopping.
    """
    path = check_text_file(path, "listings file")
    sep = sep or ("\t" if path.suffix == ".tsv" else ",")
    try:  # every column as text: a title or an id "NA" stays "NA"; numbers are parsed per column below
        raw = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: not a readable table ({e})") from None
    try:
        df = map_columns(raw, mapping, optional=() if require_price else ("price",))
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    if df.empty:
        raise DataError(f"{path}: no listings (a header without rows)")
    required = ["listing_id"] + (["price"] if require_price else [])
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)} (set a column mapping)")
    df["listing_id"] = df["listing_id"].astype(str).str.strip()
    empty = df["listing_id"] == ""
    if empty.any():
        raise DataError(f"{path}: column 'listing_id' is empty in {_rows(empty)}")
    if drop_nonpositive_price and "price" in df:
        keep = ~(pd.to_numeric(df["price"], errors="coerce") <= 0)
        if (~keep).any():
            log.warning("%s: dropped %d row(s) priced 0 or below", path, int((~keep).sum()))
        df = df[keep].reset_index(drop=True)
    dup = df["listing_id"].duplicated(keep=False)
    if dup.any():
        raise DataError(f"{path}: column 'listing_id' has duplicates in {_rows(dup)}")
    for col in ("price", "msrp"):
        if col not in df:
            continue
        given = ~df[col].astype(str).str.strip().isin(MISSING)
        values = pd.to_numeric(df[col].where(given), errors="coerce")
        bad = (values.isna() & given) | (values <= 0) | np.isinf(values)
        if col == "price" and require_price:
            bad |= values.isna()
        if bad.any():
            raise DataError(f"{path}: column '{col}' needs positive finite numbers; bad values in {_rows(bad)}")
        df[col] = values.astype(float)
    if "msrp" in df and "price" in df:
        above = df["price"] > df["msrp"]
        if above.any():  # possible (collectibles, inflation), but worth a look: said, not hidden
            log.warning("%s: %d listing(s) priced above their msrp (delta < 0), %s", path, int(above.sum()),
                        _rows(above))
    for col in df.columns.difference([*COLUMNS, *TEXT_COLUMNS]):  # optional columns that are all numbers
        if df[col].dtype == object:
            given = ~df[col].astype(str).str.strip().isin(MISSING)
            numbers = pd.to_numeric(df[col].where(given), errors="coerce")
            if not (numbers.isna() & given).any():
                df[col] = numbers
    if "listed_at" in df:
        given = ~df["listed_at"].astype(str).str.strip().isin(MISSING)
        dates = pd.to_datetime(df["listed_at"].where(given), errors="coerce")
        bad = dates.isna() & given
        if bad.any():
            raise DataError(f"{path}: column 'listed_at' has unreadable dates in {_rows(bad)}")
        df["listed_at"] = dates
    for col in TEXT_COLUMNS:
        if col in df:
            df[col] = df[col].fillna("").astype(str)
    return df.reset_index(drop=True)
