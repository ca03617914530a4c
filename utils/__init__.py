"""Shared logic of the notebook suite: data, metric, embeddings, KNN, matching, pipeline."""

__version__ = "0.1.0"
