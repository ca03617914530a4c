"""Loading and validating competition-format postings (train.csv / test.csv + an images folder)."""

from __future__ import annotations

import codecs
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import GroupKFold

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("posting_id", "image", "image_phash", "title")
LABEL_COLUMN = "label_group"
DISTRACTOR_COLUMN = "distractor"  # True on rows of a training pool known to match no labelled row
_ESCAPE_RUN = re.compile(r"(?:\\x[0-9a-fA-F]{2})+")
_PHASH = re.compile(r"^[0-9a-f]{16}$")
_SHOW = 10  # how many offending values an error message lists


class DataError(ValueError):
    """Bad input data; the message names the file, the column and the rows."""


def decode_title(title: str) -> str:
    """Turn literal `\\xNN` byte escapes (as in real Shopee titles) back into UTF-8 text."""

    def _decode(m: re.Match) -> str:
        raw = bytes(int(h, 16) for h in m.group(0).split("\\x")[1:])
        return raw.decode("utf-8", errors="replace")

    return _ESCAPE_RUN.sub(_decode, title)


def _rows(mask: np.ndarray | pd.Series) -> str:
    """Format offending rows as CSV line numbers (header is line 1)."""
    idx = np.flatnonzero(np.asarray(mask))
    shown = ", ".join(str(i + 2) for i in idx[:_SHOW])
    more = f" and {len(idx) - _SHOW} more" if len(idx) > _SHOW else ""
    return f"{len(idx)} row(s), CSV line(s) {shown}{more}"


def _has_cudf() -> bool:
    try:
        import cudf  # noqa: F401

        return True
    except Exception:  # not installed, or installed without a usable GPU
        return False


def check_text_file(path: str | Path, what: str = "file") -> Path:
    """The path of an existing, non-empty UTF-8 text file; otherwise a DataError that says which and where."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a {what}")
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines, offset, content = 1, 0, False
    with open(path, "rb") as f:  # in blocks: a large listings file is not read into memory at once
        for block in iter(lambda: f.read(1 << 22), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                at = max(0, min(e.start, len(block) - 1))
                line = lines + block[:at].count(b"\n")
                raise DataError(f"{path}: line {line} is not UTF-8 text (byte 0x{block[at]:02x} at offset "
                                f"{offset + at}); save the file as UTF-8") from None
            lines, offset, content = lines + block.count(b"\n"), offset + len(block), content or bool(block.strip())
    if not content:
        raise DataError(f"{path}: empty {what} ({offset} bytes)")
    return path


def read_text_csv(path: Path, backend: str = "auto") -> pd.DataFrame:
    """Every column as text, empty fields as "": parsed by cuDF on the GPU when present, else pandas.

    Either way a pandas frame comes back, so validation and everything after it is one code path.
    """
    if backend not in ("auto", "cudf", "pandas"):
        raise ValueError(f"backend must be auto, cudf or pandas, got {backend!r}")
    if backend == "cudf" or (backend == "auto" and _has_cudf()):
        import cudf

        columns = pd.read_csv(path, nrows=0).columns
        gdf = cudf.read_csv(path, dtype={c: "str" for c in columns}, keep_default_na=False, na_filter=False)
        return gdf.to_pandas().fillna("").astype(str)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def read_postings(path: str | Path, require_labels: bool = False, backend: str = "auto") -> pd.DataFrame:
    """Read and validate a postings CSV; titles are decoded, `label_group` kept when present.

    Raises DataError naming the file, the column and the rows for: missing columns, duplicate
    `posting_id`, malformed `image_phash` (an empty one is unknown, kept as ""), empty titles, missing or
    non-integer labels.
    `backend` parses with cuDF or pandas (see `read_text_csv`).
    """
    path = check_text_file(path, "postings CSV")
    try:
        df = read_text_csv(path, backend)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: not a readable CSV ({e})") from None
    wanted = list(REQUIRED_COLUMNS) + ([LABEL_COLUMN] if require_labels else [])
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    if df.empty:
        raise DataError(f"{path}: no rows")

    dup = df["posting_id"].duplicated(keep=False)
    if dup.any():
        ids = sorted(set(df.loc[dup, "posting_id"]))[:_SHOW]
        raise DataError(f"{path}: column 'posting_id' has duplicates {ids} in {_rows(dup)}")
    for col in ("posting_id", "image"):
        empty = df[col].str.strip() == ""
        if empty.any():
            raise DataError(f"{path}: column '{col}' is empty in {_rows(empty)}")

    phash = df["image_phash"].str.strip().str.lower()
    bad = ~phash.str.match(_PHASH) & (phash != "")  # empty: unknown (a source without hashes), not malformed
    if bad.any():
        examples = list(df.loc[bad, "image_phash"].head(3))
        raise DataError(
            f"{path}: column 'image_phash' must be 16 hex digits (64-bit pHash) or empty (unknown); "
            f"bad values {examples} in {_rows(bad)}"
        )
    df["image_phash"] = phash

    df["title"] = df["title"].map(decode_title).str.strip()
    empty = df["title"] == ""
    if empty.any():
        raise DataError(f"{path}: column 'title' is empty in {_rows(empty)}")

    if LABEL_COLUMN in df.columns:
        df[LABEL_COLUMN] = parse_labels(df[LABEL_COLUMN], path)
    return df.reset_index(drop=True)


_INT = re.compile(r"^[+-]?\d+$")


def parse_labels(values: pd.Series, path: Path) -> pd.Series:
    """Integer `label_group` values as int64; text that is no integer, or an integer beyond int64 (which
    would wrap and merge groups), is a DataError naming the rows."""
    text = values.astype(str).str.strip().str.replace(r"\.0+$", "", regex=True)  # "12.0" as written by pandas
    bad = ~text.str.match(_INT)
    if bad.any():
        raise DataError(f"{path}: column '{LABEL_COLUMN}' must be an integer in {_rows(bad)}")
    big = text.map(lambda t: not -(2**63) <= int(t) < 2**63)
    if big.any():
        raise DataError(f"{path}: column '{LABEL_COLUMN}' has integers beyond 64 bits in {_rows(big)}; "
                        "re-number the groups")
    return text.map(int).astype(np.int64)


@dataclass
class ImageReport:
    """Result of checking a postings table against its images folder."""

    folder: Path
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def bad(self) -> list[str]:
        return self.missing + self.unreadable

    def summary(self) -> str:
        parts = []
        for name, files in (("missing", self.missing), ("unreadable", self.unreadable)):
            if files:
                more = f" and {len(files) - _SHOW} more" if len(files) > _SHOW else ""
                parts.append(f"{len(files)} {name} ({', '.join(files[:_SHOW])}{more})")
        return f"{self.folder}: " + ("; ".join(parts) if parts else "all images readable")


def image_is_whole(path: Path) -> bool:
    """PIL can parse the file, and a JPEG is complete: `verify` alone passes a truncated JPEG, which then fails
    mid-run. Cheap for the usual file (it ends with the end-of-image marker); a JPEG that does not (truncated,
    or with data appended, like a phone's motion photo) is decoded to decide."""
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
        if fmt != "JPEG":
            return True
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 64))
            if f.read().rstrip(b"\x00").endswith(b"\xff\xd9"):
                return True
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # PIL raises many types for corrupt files
        return False


def check_images(df: pd.DataFrame, folder: str | Path, verify: bool = True) -> ImageReport:
    """List image files of `df` that are missing from `folder` or that PIL cannot open."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: images folder not found (set the stage's images parameter)")
    report = ImageReport(folder)
    for name in df["image"].unique():
        p = folder / name
        if not p.is_file():
            report.missing.append(name)
        elif verify and not image_is_whole(p):
            report.unreadable.append(name)
    return report


def require_images(df: pd.DataFrame, folder: str | Path, on_bad: str = "error") -> np.ndarray:
    """Check images and apply the policy; returns a boolean mask of rows whose image is usable.

    on_bad="error" raises DataError listing the files; on_bad="skip" logs them and the stage keeps
    those rows (text and pHash still match them) with no image features.
    """
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    report = check_images(df, folder)
    if report.bad and on_bad == "error":
        raise DataError(
            report.summary() + ". Replace those files, or remove their rows from the CSV, or run the dataset "
            "without images (data.images: false)."
        )
    if report.bad:
        log.warning("%s: rows kept without image features", report.summary())
    return ~df["image"].isin(set(report.bad)).to_numpy()


def assign_folds(df: pd.DataFrame, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id per row: GroupKFold over `label_group` with shuffled, seeded group order.

    In a training pool (`read_training`) the labelled rows get the folds they get alone, so fold models
    trained on the train CSV stay out of fold, and distractors are dealt round-robin: held out like any row,
    never tuned on."""
    if LABEL_COLUMN not in df.columns:
        raise DataError(f"folds need column '{LABEL_COLUMN}'")
    labelled = ~distractor_mask(df)
    n_groups = df.loc[labelled, LABEL_COLUMN].nunique()
    if n_groups < n_splits:
        raise DataError(f"{n_groups} label groups cannot make {n_splits} folds")
    folds = np.empty(len(df), dtype=np.int8)
    splitter = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rows = np.flatnonzero(labelled)
    for k, (_, val) in enumerate(splitter.split(rows, groups=df[LABEL_COLUMN].to_numpy()[rows])):
        folds[rows[val]] = k
    folds[~labelled] = np.arange(int((~labelled).sum())) % n_splits
    return folds


def distractor_mask(df: pd.DataFrame) -> np.ndarray:
    """True on distractor rows of a training pool; all False for a plain postings table."""
    if DISTRACTOR_COLUMN not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return df[DISTRACTOR_COLUMN].to_numpy(dtype=bool)


def scored_rows(df: pd.DataFrame) -> np.ndarray:
    """Indices of the labelled rows: the rows that thresholds are tuned on and F1 is averaged over."""
    return np.flatnonzero(~distractor_mask(df))


def distractor_count(setting: int | str, n_train: int, n_test: int, n_available: int | None = None,
                     source: str = "test rows") -> int:
    """How many distractors join the training pool: "auto" fills it to the test split's size (none when the
    test split is not larger; at most the `n_available` rows of their source, by default the test rows), a
    number is taken as given (at most every row of the source)."""
    available = n_test if n_available is None else n_available
    if setting == "auto":
        return min(available, max(0, n_test - n_train))
    if isinstance(setting, bool) or not isinstance(setting, int) or not 0 <= setting <= available:
        raise DataError(f"distractors must be 'auto' or a whole number from 0 to the {available:,} {source}, "
                        f"got {setting!r}")
    return setting


def distinct_postings(train: pd.DataFrame, test: pd.DataFrame, why: str) -> None:
    """Refuse test postings that are also training rows: they could not be known non-matches of them."""
    clash = test["posting_id"].isin(set(train["posting_id"]))
    if clash.any():
        raise DataError(f"{int(clash.sum())} test posting_id(s) are also training rows (e.g. "
                        f"{list(test.loc[clash, 'posting_id'].head(3))}): {why}")


def read_training(train_csv: str | Path, test_csv: str | Path = "", distractors: int | str = 0,
                  test_images: str | Path = "", seed: int = 0, backend: str = "auto",
                  distractors_csv: str | Path = "") -> pd.DataFrame:
    """The labelled training postings, then `distractors` test postings (sampled with `seed`) as known non-matches,
    or, with `distractors_csv`, rows of that file: real postings known to match no training or test posting
    (e.g. the real-titles judge's single postings), so no test posting is needed to set the density.

    Test postings match no training posting when train and test hold disjoint label groups (Kaggle's split,
    and the real-titles files). In the training pool they give each train row as many look-alikes as a test
    row meets (`"auto"`: the pool gets the test split's size), so thresholds and the stacker are fitted at the
    test split's density. Each distractor gets a label of its own and `distractor` True: it is searched and
    featurised, never trained, tuned on or scored, and a pair of two distractors has no known target. Their
    own `label_group`, if the file has one, is never read. With `test_images` a test posting's `image` becomes
    the absolute path of its file there, which the train images folder joins unchanged (a `distractors_csv`
    row's image is read from the train images folder).
    """
    train = read_postings(train_csv, require_labels=True, backend=backend)
    if distractors == 0:
        return train
    if not test_csv:
        raise DataError("distractors fill the training pool to the test split's size, and no test_csv is set")
    test = read_postings(test_csv, backend=backend).drop(columns=LABEL_COLUMN, errors="ignore")
    source = read_postings(distractors_csv, backend=backend).drop(columns=LABEL_COLUMN, errors="ignore") \
        if distractors_csv else test
    what = f"rows of {distractors_csv}" if distractors_csv else "test rows"
    n = distractor_count(distractors, len(train), len(test), len(source), what)
    if n == 0:
        return train
    distinct_postings(train, source, f"{distractors_csv or test_csv}: postings of the training set cannot be "
                                     "distractors")
    picked = np.sort(np.random.default_rng(seed).choice(len(source), size=n, replace=False))
    extra = source.iloc[picked].reset_index(drop=True)
    if test_images and not distractors_csv:
        folder = Path(test_images).resolve()
        extra["image"] = [str(folder / name) for name in extra["image"]]
    start = int(train[LABEL_COLUMN].max()) + 1
    if start + n > 2**63 - 1:  # no room above the labels: below them then
        start = int(train[LABEL_COLUMN].min()) - n
    extra[LABEL_COLUMN] = np.arange(start, start + n, dtype=np.int64)
    pool = pd.concat([train.assign(**{DISTRACTOR_COLUMN: False}), extra.assign(**{DISTRACTOR_COLUMN: True})],
                     ignore_index=True)
    return pool[[*train.columns, DISTRACTOR_COLUMN]]


USAGE_COLUMN = "Usage"  # Kaggle's solution-file column; rows marked "Ignored" are searched but not scored


def read_truth(path: str | Path, posting_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`label_group` of `posting_ids` from a labelled CSV (e.g. a test solution), in their order, and the
    indices of the rows to score: all of them, or, when the file has Kaggle's `Usage` column, those not
    marked "Ignored" (look-alike postings that a judge searches among but does not score)."""
    path = check_text_file(path, "labels CSV")
    try:
        truth = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: not a readable CSV ({e})") from None
    missing = [c for c in ("posting_id", LABEL_COLUMN) if c not in truth.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(truth.columns)}")
    truth[LABEL_COLUMN] = parse_labels(truth[LABEL_COLUMN], path)
    labels_per_id = truth.groupby("posting_id")[LABEL_COLUMN].nunique()
    conflicting = list(labels_per_id.index[labels_per_id > 1])
    if conflicting:
        raise DataError(f"{path}: {len(conflicting)} posting(s) listed twice with different '{LABEL_COLUMN}', e.g. "
                        f"{conflicting[:5]}; keep one label per posting")
    truth = truth.drop_duplicates("posting_id").set_index("posting_id")  # exact repeats are harmless
    absent = [p for p in posting_ids if p not in truth.index]
    if absent:
        raise DataError(f"{path}: no '{LABEL_COLUMN}' for {len(absent)} posting(s), e.g. {absent[:5]}")
    rows = truth.loc[list(posting_ids)]
    ignored = (rows[USAGE_COLUMN].str.strip().str.lower() == "ignored").to_numpy() if USAGE_COLUMN in rows \
        else np.zeros(len(rows), dtype=bool)
    if ignored.all():
        raise DataError(f"{path}: every row is marked Ignored in '{USAGE_COLUMN}': nothing to score")
    return rows[LABEL_COLUMN].to_numpy(), np.flatnonzero(~ignored)
