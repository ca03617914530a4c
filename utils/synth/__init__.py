"""Synthetic data generators with known truth (`python -m utils.synth shopee --out DIR`)."""
