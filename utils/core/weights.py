"""Weights that pip packages ship, found on disk (no model hub is reachable offline)."""

from __future__ import annotations

from pathlib import Path


def wordllama_files() -> tuple[Path, Path]:
    """The static token table and tokenizer shipped inside the wordllama wheel."""
    import wordllama

    root = Path(wordllama.__file__).parent
    return root / "weights" / "l2_supercat_256.safetensors", root / "tokenizers" / "l2_supercat_tokenizer_config.json"
