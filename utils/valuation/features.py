"""Model inputs from listings: tokens, sentence embeddings, cached image feature maps, categorical ids, numbers,
anchors, claims."""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from utils.core.progress import enabled as progress_enabled
from utils.core.progress import progress
from utils.core.weights import load_sentence_transformer

from .listings import listing_text
from .structure import DEFAULT_DEFECTS, parse_claims
from .wide import WideModel, out_of_fold

log = logging.getLogger(__name__)
CATEGORICAL = ("category", "brand", "condition")  # entity side; location and time belong to the market graph
MAX_TOKENS = 48


@dataclass
class Inputs:
    """Everything the model reads, one row per listing (tensors on the CPU)."""

    tokens: torch.Tensor  # [N, L] WordLlama token ids, 0 = padding
    categorical: dict[str, torch.Tensor]  # name -> [N] ids, 0 = unknown
    numeric: torch.Tensor  # [N, k] standardised numbers (log anchor, age, ...)
    anchor: torch.Tensor  # [N] new price, or the estimate where missing
    anchor_estimated: torch.Tensor  # [N] bool
    claims: torch.Tensor  # [N, A] +1 claimed, -1 denied, 0 not mentioned
    defect_mentioned: torch.Tensor  # [N] float, 1 when the text names a defect ("small dent"), not "no dents"
    price: torch.Tensor  # [N]
    patches: torch.Tensor | None = None  # [N, C, h, w] float16 image feature map (backbone stage 2/3)
    pooled: torch.Tensor | None = None  # [N, C2] float16 pooled last-stage features
    pixels: torch.Tensor | None = None  # [N, 3, S, S] uint8 photos (for the trained ViT-style patch embedding)
    has_image: torch.Tensor | None = None  # [N] bool
    location: torch.Tensor | None = None  # [N] ids for the market graph, 0 = unknown
    month: torch.Tensor | None = None  # [N] months since the first listing
    sizes: dict[str, int] = field(default_factory=dict)  # vocabulary size per categorical column
    wide: torch.Tensor | None = None  # [N] the wide part's log(price / anchor) (out of fold on training rows)
    sentences: torch.Tensor | None = None  # [N, 384] frozen MiniLM embeddings of the listing text (text "minilm")


@dataclass
class AnchorTable:
    """Anchors for listings without an MSRP, fitted on the training rows (and saved with the model).

    Missing MSRPs take the median MSRP of the training rows with the same category and brand (then
    category, then all) when the column has values; without any MSRP, the anchor is the `quantile` of
    training prices of the same category and brand (a market ceiling, so price <= anchor mostly). A
    group counts only with at least `min_count` training rows.
    """

    source: str  # "msrp" (medians of training MSRPs) or "price" (a quantile of training prices)
    by_category_brand: dict[str, dict[str, float]]  # category -> brand -> anchor
    by_category: dict[str, float]
    overall: float

    @classmethod
    def fit(cls, train: pd.DataFrame, quantile: float = 0.95, min_count: int = 5) -> AnchorTable:
        if "msrp" in train and train["msrp"].notna().any():
            source, values, stat = "msrp", train["msrp"], (lambda s: float(s.median()))
        else:
            source, values, stat = "price", train["price"], (lambda s: float(s.quantile(quantile)))
        values = values.dropna()
        pairs, cats = {}, {}
        if "category" in train:
            rows = train.loc[values.index]
            if "brand" in train:
                for (c, b), g in values.groupby([rows["category"], rows["brand"]]):
                    if len(g) >= min_count:
                        pairs.setdefault(str(c), {})[str(b)] = stat(g)
            cats = {str(c): stat(g) for c, g in values.groupby(rows["category"]) if len(g) >= min_count}
        return cls(source, pairs, cats, stat(values))

    def apply(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The anchor of every row (its MSRP where known) and whether it was estimated."""
        n = len(df)
        msrp = df["msrp"].to_numpy(float) if "msrp" in df else np.full(n, np.nan)
        estimated = np.isnan(msrp)
        out = msrp.copy()
        cats = df["category"].astype(str).tolist() if "category" in df else [None] * n
        brands = df["brand"].astype(str).tolist() if "brand" in df else [None] * n
        for i in np.flatnonzero(estimated):
            value = self.by_category_brand.get(cats[i], {}).get(brands[i])
            out[i] = value if value is not None else self.by_category.get(cats[i], self.overall)
        return out, estimated


def estimate_anchor(df: pd.DataFrame, train_idx: np.ndarray, quantile: float = 0.95,
                    min_count: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The MSRP where known; elsewhere the `AnchorTable` of the training rows."""
    return AnchorTable.fit(df.iloc[train_idx], quantile, min_count).apply(df)


def tokenize(texts: list[str], max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    """WordLlama token ids (the offline tokenizer shipped in the wheel), padded with 0."""
    from tokenizers import Tokenizer

    from utils.core.weights import wordllama_files

    tok = Tokenizer.from_file(str(wordllama_files()[1]))
    ids = torch.zeros(len(texts), max_tokens, dtype=torch.long)
    for i, enc in enumerate(tok.encode_batch(texts)):
        seq = [t for t in enc.ids if t != 0][:max_tokens]
        ids[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return ids


class Backbone:
    """A frozen timm backbone giving the feature map at timm index `stage` (DSCA patches) and the pooled last
    stage. timm index 1 is ResNet's conv2_x (stride 4), 2 is conv3_x (stride 8): the seed's "stage 2/3".

    Without a weights file it is randomly initialised (no hub offline, seed 0): its early-stage maps still
    respond to local edges and blobs, which is what defect attention needs; give `weights` for
    pretrained features.
    """

    def __init__(self, backbone: str = "resnet10t", weights: str | None = None, size: int = 96, stage: int = 1):
        import timm

        kwargs = {"pretrained_cfg_overlay": {"file": str(weights)}} if weights else {}
        torch.manual_seed(0)
        self.net = timm.create_model(backbone, pretrained=bool(weights), features_only=True,
                                     out_indices=(stage, -1), **kwargs).eval()
        self.size = size
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, 3, S, S] in [0, 1] -> map [B, C, h, w], pooled [B, C2] (float32)."""
        mid, last = self.net((images - self.mean) / self.std)
        return mid, last.mean(dim=(2, 3))


def image_features(paths: list[str | None], backbone: Backbone, batch_size: int = 64,
                   disable: bool = False) -> tuple[torch.Tensor, ...]:
    """Photos (uint8), feature maps and pooled features of every image, computed once (float16) so that
    ablations train only the light heads on top."""
    pixels, maps, pooled = [], [], []
    for s in progress(range(0, len(paths), batch_size), desc="image features", unit="batch", leave=False,
                  disable=disable):
        images = torch.stack([load_image(p, backbone.size) for p in paths[s:s + batch_size]])
        mid, last = backbone(images)
        pixels.append((images * 255).round().to(torch.uint8))
        maps.append(mid.half())
        pooled.append(last.half())
    return torch.cat(pixels), torch.cat(maps), torch.cat(pooled)


def load_image(path: str | Path | None, size: int) -> torch.Tensor:
    """[3, size, size] in [0, 1]; a missing image is a mid-grey frame (the model also gets has_image)."""
    if not path or not Path(path).is_file():
        return torch.full((3, size, size), 0.5)
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def listing_images(df: pd.DataFrame, images_dir: str | None, backbone: Backbone,
                   progress_bar: bool = True) -> tuple[torch.Tensor, ...]:
    """Pixels, feature maps, pooled features and has_image of every listing's photo (column `image`)."""
    files = df["image"].tolist() if "image" in df and images_dir else [""] * len(df)
    paths = [str(Path(images_dir) / f) if isinstance(f, str) and f else None for f in files]
    bad = [i for i, p in enumerate(paths) if p and Path(p).is_file() and not _opens(p)]
    if bad:
        log.warning("%d photo(s) cannot be read as images and count as missing (rows %s, e.g. %s)", len(bad),
                    bad[:10], paths[bad[0]])
        for i in bad:
            paths[i] = None
    pixels, maps, pooled = image_features(paths, backbone, disable=not progress_bar)
    return pixels, maps, pooled, torch.tensor([bool(p) and Path(p).is_file() for p in paths])


def _opens(path: str) -> bool:
    """Whether PIL reads the file as an image (a truncated or non-image file does not)."""
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except (OSError, SyntaxError, ValueError):  # PIL's errors for unreadable, truncated or malformed files
        return False


def _ids(values: pd.Series, vocab: list[str]) -> torch.Tensor:
    index = {v: i + 1 for i, v in enumerate(vocab)}
    return torch.tensor([index.get(v, 0) for v in values], dtype=torch.long)


def _months(dates: pd.Series, origin: tuple[int, int]) -> pd.Series:
    return (dates.dt.year - origin[0]) * 12 + dates.dt.month - origin[1]


@functools.cache
def _sentence_model(model_dir: str | None, max_length: int):
    return load_sentence_transformer(model_dir, max_length)


def sentence_embeddings(texts: list[str], settings: dict, progress_bar: bool = True) -> torch.Tensor:
    """L2-normalised sentence-transformers embeddings of `texts` (default all-MiniLM-L6-v2, shipped in a wheel;
    `settings`: model_dir, max_length); the model loads once per process, so pricing one listing stays fast."""
    model = _sentence_model(settings.get("model_dir") or None, int(settings.get("max_length", 64)))
    X = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                     show_progress_bar=progress_bar and progress_enabled() and len(texts) > 256)
    return torch.from_numpy(np.asarray(X, dtype=np.float32))


@dataclass
class Preprocessor:
    """Everything learnt from the training rows that turns listings into `Inputs`: the anchor table,
    vocabularies, numeric scalers, the month origin, the accessory words and the image settings. Saved
    with the model, so that a new listing is encoded exactly as the training rows were."""

    anchor: AnchorTable
    vocab: dict[str, list[str]]  # categorical columns and location -> training values (id = position + 1)
    numeric: list[str]  # extra numeric columns (after the log anchor)
    mean: list[float]  # scaler of [log anchor, *numeric]
    scale: list[float]
    accessories: list[str]
    image: dict | None = None  # Backbone arguments when the model reads photos
    month_origin: tuple[int, int] | None = None  # (year, month) of the first training listing
    months: int = 0  # months spanned by the training listings
    wide: WideModel | None = None  # the Ridge of log(price / anchor) on sparse words, attributes and numbers
    sentence: dict | None = None  # sentence-transformers settings (model_dir, max_length) for text "minilm"

    @classmethod
    def fit(cls, df: pd.DataFrame, train_idx: np.ndarray, accessories: list[str], numeric: list[str] = (),
            image: dict | None = None, wide: bool = False, sentence: dict | None = None) -> Preprocessor:
        """Fitted on the training rows `train_idx`; with `wide`, the wide part (a Ridge on prices) too; with
        `sentence`, listings also get sentence embeddings."""
        train = df.iloc[train_idx]
        anchor = AnchorTable.fit(train)
        vocab = {c: sorted(train[c].astype(str).unique()) for c in (*CATEGORICAL, "location") if c in df}
        numeric = [c for c in numeric if c in df]
        cols = np.stack([np.log(anchor.apply(train)[0])] + [train[c].to_numpy(float) for c in numeric], axis=1)
        pre = cls(anchor, vocab, numeric, np.nanmean(cols, axis=0).tolist(),
                  (np.nanstd(cols, axis=0) + 1e-6).tolist(), list(accessories), image)
        if "listed_at" in df and train["listed_at"].notna().any():
            first, last = train["listed_at"].min(), train["listed_at"].max()
            pre.month_origin = (int(first.year), int(first.month))
            pre.months = int(_months(pd.Series([last]), pre.month_origin).iloc[0]) + 1
        if wide:
            pre.wide = WideModel.fit(df, train_idx, *anchor.apply(df), numeric)
        pre.sentence = dict(sentence) if sentence else None
        return pre

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessor:
        origin = tuple(d["month_origin"]) if d.get("month_origin") else None
        wide = WideModel.from_dict(d["wide"]) if d.get("wide") else None
        return cls(**{**d, "anchor": AnchorTable(**d["anchor"]), "month_origin": origin, "wide": wide})

    def transform(self, df: pd.DataFrame, images_dir: str | None = None, backbone: Backbone | None = None,
                  progress_bar: bool = True, images: tuple[torch.Tensor, ...] | None = None,
                  sentences: torch.Tensor | None = None) -> Inputs:
        """Inputs for every row of `df` (training rows or new listings); unknown values get id 0, dates
        outside the training months the nearest one, missing photos a grey frame with has_image False.
        `images` and `sentences`: `listing_images` and `sentence_embeddings` of `df` computed once (they do not
        depend on the training rows)."""
        n = len(df)
        anchor, estimated = self.anchor.apply(df)
        text = listing_text(df).tolist()
        cats = {c: _ids(df[c].astype(str), v) if c in df else torch.zeros(n, dtype=torch.long)
                for c, v in self.vocab.items() if c != "location"}
        sizes = {c: len(v) + 1 for c, v in self.vocab.items()}
        cols = [np.log(anchor)] + [df[c].to_numpy(float) if c in df else np.full(n, np.nan) for c in self.numeric]
        num = np.nan_to_num((np.stack(cols, axis=1) - np.array(self.mean)) / np.array(self.scale))
        price = df["price"].to_numpy(float) if "price" in df else np.full(n, np.nan)
        inputs = Inputs(tokens=tokenize(text), categorical=cats, numeric=torch.tensor(num, dtype=torch.float32),
                        anchor=torch.tensor(anchor, dtype=torch.float32), anchor_estimated=torch.tensor(estimated),
                        claims=torch.tensor(parse_claims(text, self.accessories), dtype=torch.float32),
                        defect_mentioned=torch.tensor((parse_claims(text, DEFAULT_DEFECTS) > 0).any(1),
                                                      dtype=torch.float32),
                        price=torch.tensor(price, dtype=torch.float32), sizes=sizes)
        if self.wide is not None:
            inputs.wide = torch.tensor(self.wide.predict(df, anchor, estimated), dtype=torch.float32)
        if self.sentence is not None:
            inputs.sentences = sentences if sentences is not None else sentence_embeddings(text, self.sentence,
                                                                                         progress_bar)
        if self.image is not None:
            inputs.pixels, inputs.patches, inputs.pooled, inputs.has_image = images or listing_images(
                df, images_dir, backbone or Backbone(**self.image), progress_bar)
        if "location" in self.vocab:
            inputs.location = _ids(df["location"].astype(str), self.vocab["location"]) if "location" in df \
                else torch.zeros(n, dtype=torch.long)
        if self.month_origin is not None:
            dates = df["listed_at"] if "listed_at" in df else pd.Series(pd.NaT, index=df.index)
            months = _months(dates, self.month_origin).fillna(self.months - 1).clip(0, self.months - 1)
            inputs.month = torch.tensor(months.to_numpy(int), dtype=torch.long)
            sizes["month"] = self.months
        return inputs



@dataclass
class SplitInputs:
    """The listings encoded with a preprocessor fitted on each split's training rows, once per split (the comparison
    asks for a split's inputs once per model); `preprocessors` keeps each split's fitted preprocessor for saving."""

    df: pd.DataFrame
    accessories: list[str]
    numeric: list[str]
    image: dict | None = None  # backbone settings; None: no images
    images_dir: str | None = None
    backbone: Backbone | None = None
    photos: tuple | None = None  # `listing_images`: the frozen backbone's outputs for every listing, computed once
    wide: bool = False  # fit the wide part (and its out-of-fold predictions on the training rows)
    sentence: dict | None = None  # sentence-transformers settings: listings get sentence embeddings (text "minilm")
    sentences: torch.Tensor | None = None  # those embeddings, computed once on first use
    preprocessors: dict = field(default_factory=dict)
    encoded: dict = field(default_factory=dict)

    def __call__(self, split) -> Inputs:
        if split.name not in self.encoded:
            self.preprocessors[split.name] = Preprocessor.fit(self.df, split.train, self.accessories, self.numeric,
                                                              self.image if self.images_dir else None, self.wide,
                                                              self.sentence)
            pre = self.preprocessors[split.name]
            if self.sentence is not None and self.sentences is None:
                self.sentences = sentence_embeddings(listing_text(self.df).tolist(), self.sentence)
            inputs = pre.transform(self.df, self.images_dir, self.backbone, images=self.photos,
                                   sentences=self.sentences)
            if inputs.wide is not None:  # training rows: the wide part's prediction from a Ridge not fitted on them
                anchor, estimated = pre.anchor.apply(self.df)
                inputs.wide[split.train] = torch.tensor(out_of_fold(self.df, split.train, anchor, estimated,
                                                                    pre.numeric, seed=split.seed), dtype=torch.float32)
            self.encoded[split.name] = inputs
        return self.encoded[split.name]
