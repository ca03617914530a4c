"""Baseline embedders (TF-IDF word/char, offline WordLlama, pHash bits).

Every embedder maps a postings frame to L2-normalised rows: dense float32 or, for TF-IDF, sparse CSR
(a dense 70,000 x 25,000 matrix would not fit); `utils.core.store.RunStore` writes them as artifacts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from utils.core.registry import Registry
from utils.core.store import Embedding
from utils.core.text import normalize_title
from utils.core.weights import wordllama_files


def tfidf(titles: pd.Series, analyzer: str = "word", ngram_min: int = 1, ngram_max: int = 1,
          max_features: int | None = 50_000, min_df: int = 1, sublinear_tf: bool = True) -> sp.csr_matrix:
    """TF-IDF of normalised titles, fitted on the titles given (the split that is searched)."""
    vec = TfidfVectorizer(analyzer=analyzer, ngram_range=(ngram_min, ngram_max), max_features=max_features,
                          min_df=min_df, sublinear_tf=sublinear_tf, dtype=np.float32,
                          token_pattern=r"(?u)\b\w+\b" if analyzer == "word" else None)
    return vec.fit_transform(titles.map(normalize_title)).astype(np.float32).tocsr()


def load_wordllama(weights: str | Path | None = None, tokenizer: str | Path | None = None):
    """WordLlama static token embeddings loaded from local files (the wheel's own by default).

    `WordLlama.load()` looks in the wrong folder and tries to download, so the two files are read
    with safetensors + tokenizers and handed to the library's own inference class.
    """
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer
    from wordllama.inference import WordLlamaInference

    default_w, default_t = wordllama_files()
    weights, tokenizer = Path(weights or default_w), Path(tokenizer or default_t)
    for p, param in ((weights, "wordllama_weights"), (tokenizer, "wordllama_tokenizer")):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: WordLlama file not found (set the parameter {param})")
    table = load_file(str(weights))["embedding.weight"]
    return WordLlamaInference(table, Tokenizer.from_file(str(tokenizer)))


def wordllama(titles: pd.Series, weights: str | None = None, tokenizer: str | None = None,
              batch_size: int = 2048) -> np.ndarray:
    """Mean-pooled, normalised WordLlama embeddings of the titles (256-d)."""
    model = load_wordllama(weights, tokenizer)
    return model.embed(titles.tolist(), norm=True, batch_size=batch_size).astype(np.float32)


def sentence_transformer(titles: pd.Series, model_dir: str | None = None, batch_size: int = 128,
                         max_length: int = 32) -> np.ndarray:
    """Zero-shot embeddings of the titles by a local sentence-transformers folder (default: all-MiniLM-L6-v2
    from its pip package), mean-pooled as the model was trained, normalised."""
    from utils.core.weights import load_sentence_transformer

    model = load_sentence_transformer(model_dir, max_length)
    return model.encode(titles.tolist(), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False).astype(np.float32)


def phash_known(phash_hex: pd.Series | np.ndarray) -> np.ndarray:
    """True where the row has a pHash; an empty one is unknown (a source without hashes)."""
    return np.array([bool(h) for h in phash_hex], dtype=bool)


def phash_ints(phash_hex: pd.Series | np.ndarray) -> np.ndarray:
    """pHash hex strings as unsigned 64-bit integers; an unknown (empty) pHash is 0 (see `phash_known`)."""
    return np.array([int(h, 16) if h else 0 for h in phash_hex], dtype=np.uint64)


def phash_bits(phash_hex: pd.Series) -> np.ndarray:
    """pHash as 64 signed bits scaled to unit length: cosine = 1 - 2 * hamming / 64. A row without a pHash is
    a zero row (cosine 0 with every row: below any tuned threshold); a file with no pHash at all is an error."""
    known = phash_known(phash_hex)
    if not known.any():
        raise ValueError("the phash model needs image_phash, and no row of this file has one: remove 'phash' from "
                         "the models of 02_embed, 04_postprocess and 05_stacker")
    ints = phash_ints(phash_hex)
    bits = ((ints[:, None] >> np.arange(63, -1, -1, dtype=np.uint64)) & np.uint64(1)).astype(np.float32)
    return np.where(known[:, None], (bits * 2 - 1) / 8.0, 0.0).astype(np.float32)


# name -> function(frame, **params) -> embedding; new model families register here (EMBEDDERS.register)
EMBEDDERS: Registry[Callable[..., Embedding]] = Registry("embedding model", {
    "tfidf_word": lambda df, **kw: tfidf(df["title"], analyzer="word", **kw),
    "tfidf_char": lambda df, **kw: tfidf(df["title"], **{"analyzer": "char_wb", "ngram_min": 2,
                                                           "ngram_max": 4, **kw}),
    "wordllama": lambda df, **kw: wordllama(df["title"], **kw),
    "minilm": lambda df, **kw: sentence_transformer(df["title"], **kw),
    "phash": lambda df, **kw: phash_bits(df["image_phash"]),
})


def embed(name: str, df: pd.DataFrame, **params) -> Embedding:
    """Run the embedder `name` on a postings frame; rows come back L2-normalised."""
    X = EMBEDDERS[name](df, **params)
    return normalize(X, copy=False) if sp.issparse(X) else normalize(X).astype(np.float32)


def concat(parts: list[Embedding]) -> Embedding:
    """Concatenation of L2-normalised embeddings, renormalised: cosine = mean of the parts' cosines."""
    if any(sp.issparse(p) for p in parts):
        return normalize(sp.hstack([sp.csr_matrix(p) for p in parts]).tocsr())
    return normalize(np.hstack(parts)).astype(np.float32)
