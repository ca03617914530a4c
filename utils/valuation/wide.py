"""The wide part: the sparse matrix the Ridge baseline reads (TF-IDF of title + description, one-hot attributes,
standardised numbers) fitted on the training rows and reproducible on new listings, and a Ridge on it
predicting log(price / anchor). HMG-Net's depreciation head can start from that prediction and learn the
residual (wide and deep), so that what a linear model gets from sparse words is not diluted by dense encoders."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold
from sklearn.preprocessing import OneHotEncoder

from .listings import listing_text

CATEGORICAL = ("category", "brand", "condition", "location")
NGRAMS = (1, 2)
ALPHA = 3.0  # Ridge's L2 weight (the baseline's)


@dataclass
class TextTabular:
    """The fitted featuriser: TF-IDF vocabulary and idf, one-hot categories, the numbers' scaler (log anchor,
    whether it was estimated, the numeric columns, years since the first training listing)."""

    vocabulary: dict[str, int]
    idf: list[float]
    categories: dict[str, list[str]]
    numeric: list[str]
    mean: list[float]
    scale: list[float]
    first_listed: str | None = None  # ISO date of the first training listing, when the data has dates

    @classmethod
    def fit(cls, df: pd.DataFrame, train_idx: np.ndarray, anchor: np.ndarray, estimated: np.ndarray,
            numeric: list[str] = ()) -> TextTabular:
        train = df.iloc[train_idx]
        tfidf = TfidfVectorizer(ngram_range=NGRAMS, min_df=2, max_features=30_000, sublinear_tf=True)
        tfidf.fit(listing_text(train))
        cats = {c: sorted(train[c].astype(str).unique()) for c in CATEGORICAL if c in df}
        first = None
        if "listed_at" in df and train["listed_at"].notna().any():
            first = train["listed_at"].min().isoformat()
        out = cls({k: int(v) for k, v in tfidf.vocabulary_.items()}, tfidf.idf_.tolist(), cats,
                  [c for c in numeric if c in df], [], [], first)
        num = out._numbers(df, anchor, estimated)[train_idx]
        out.mean, out.scale = np.nanmean(num, axis=0).tolist(), (np.nanstd(num, axis=0) + 1e-9).tolist()
        return out

    def _numbers(self, df: pd.DataFrame, anchor: np.ndarray, estimated: np.ndarray) -> np.ndarray:
        n = len(df)
        nums = [np.log(anchor), np.asarray(estimated, float)]
        nums += [pd.to_numeric(df[c], errors="coerce").to_numpy(float) if c in df else np.full(n, np.nan)
                 for c in self.numeric]
        if self.first_listed is not None:
            dates = df["listed_at"] if "listed_at" in df else pd.Series(pd.NaT, index=df.index)
            nums.append(((dates - pd.Timestamp(self.first_listed)).dt.days / 365.25).to_numpy(float))
        return np.stack(nums, axis=1)

    def transform(self, df: pd.DataFrame, anchor: np.ndarray, estimated: np.ndarray) -> sp.csr_matrix:
        """The matrix of every row of `df`: unknown words and categories are zeros, missing numbers the mean."""
        counts = CountVectorizer(ngram_range=NGRAMS, vocabulary=self.vocabulary).transform(listing_text(df))
        tfidf = TfidfTransformer(sublinear_tf=True)
        tfidf.idf_ = np.asarray(self.idf)
        blocks = [tfidf.transform(counts)]
        if self.categories:
            cols = list(self.categories)
            frame = pd.DataFrame({c: df[c].astype(str) if c in df else "" for c in cols}, index=df.index)
            enc = OneHotEncoder(categories=[self.categories[c] for c in cols], handle_unknown="ignore")
            known = pd.DataFrame({c: self.categories[c][:1] for c in cols})  # the categories are given: any row fits
            blocks.append(enc.fit(known).transform(frame))
        num = (self._numbers(df, anchor, estimated) - np.array(self.mean)) / np.array(self.scale)
        blocks.append(sp.csr_matrix(np.nan_to_num(num)))
        return sp.hstack(blocks).tocsr().astype(np.float32)


@dataclass
class WideModel:
    """Ridge of log(price / anchor) on the `TextTabular` matrix, fitted on the training rows."""

    features: TextTabular
    coef: list[float]
    intercept: float

    @classmethod
    def fit(cls, df: pd.DataFrame, train_idx: np.ndarray, anchor: np.ndarray, estimated: np.ndarray,
            numeric: list[str] = ()) -> WideModel:
        features = TextTabular.fit(df, train_idx, anchor, estimated, numeric)
        X = features.transform(df.iloc[train_idx], anchor[train_idx], estimated[train_idx])
        y = np.log(df["price"].to_numpy(float)[train_idx] / anchor[train_idx])
        ridge = Ridge(alpha=ALPHA).fit(X, y)
        return cls(features, ridge.coef_.astype(float).tolist(), float(ridge.intercept_))

    def predict(self, df: pd.DataFrame, anchor: np.ndarray, estimated: np.ndarray) -> np.ndarray:
        """log(price / anchor) of every row of `df`."""
        return self.features.transform(df, anchor, estimated) @ np.asarray(self.coef) + self.intercept

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WideModel:
        return cls(TextTabular(**d["features"]), d["coef"], d["intercept"])


def out_of_fold(df: pd.DataFrame, train_idx: np.ndarray, anchor: np.ndarray, estimated: np.ndarray,
                numeric: list[str] = (), folds: int = 5, seed: int = 0) -> np.ndarray:
    """The wide prediction of each training row from a Ridge fitted without it (K folds of the training rows):
    in-sample predictions would leave the deep part almost no residual to learn from, unlike on new rows."""
    out = np.zeros(len(train_idx))
    for fit_part, held in KFold(folds, shuffle=True, random_state=seed).split(train_idx):
        model = WideModel.fit(df, train_idx[fit_part], anchor, estimated, numeric)
        rows = train_idx[held]
        out[held] = model.predict(df.iloc[rows], anchor[rows], estimated[rows])
    return out
