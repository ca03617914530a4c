"""03_knn: top-K cosine neighbours of every embedding within its split (out-of-fold parts stitched)."""

from __future__ import annotations

from dataclasses import dataclass

from utils.core.schema import at_least, one_of, param
from utils.matching.knn import AVAILABLE, PRECISIONS

from .common import RunParams


@dataclass
class Params(RunParams):
    k: int = param(50, "neighbours kept per row, the row itself included (a Shopee group has at most 50 postings)")
    backend: str = param("auto", "auto | cuml | faiss-gpu | torch | faiss-cpu | sklearn | numpy")
    chunk: int = param(2048, "query rows per chunk: bounds memory at chunk x N similarities")
    precision: str = param("fp32", "matmul precision of the torch backend: fp32, fp16 or bf16 (the others compute "
                                   "in fp32)")

    def __post_init__(self) -> None:
        at_least("k", self.k, 2)  # the row itself and at least one neighbour
        at_least("chunk", self.chunk)
        one_of("precision", self.precision, PRECISIONS)
        one_of("backend", self.backend, ("auto", *AVAILABLE))
