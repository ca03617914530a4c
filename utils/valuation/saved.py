"""A trained HMG-Net on disk and the pricing of new listings with it.

The folder holds `model.json` (the model's configuration, the fitted `Preprocessor`, the column mapping of the
training data, the conformal interval's bounds) and `weights.safetensors` (parameters and the market graph's
reference listings; no pickle). `Valuer.predict` encodes new listings exactly as the training rows were and
writes per row the price, delta, the interval and the feature groups that moved delta most.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.torch import load_file, save_file

from utils.core.data import DataError
from utils.core.io import write_json

from .explain import feature_effects, top_effects
from .features import Backbone, Preprocessor
from .fit import predict
from .metrics import apply_interval
from .model import HMGConfig, HMGNet

CONFIG_FILE, WEIGHTS_FILE = "model.json", "weights.safetensors"
FORMAT = 1


def save_model(folder: str | Path, model: HMGNet, pre: Preprocessor, bounds: tuple[float, float], level: float,
               mapping: dict | None = None, info: dict | None = None) -> Path:
    """Write `model` with its preprocessing and interval bounds (`metrics.interval_quantiles`) to `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    write_json(folder / CONFIG_FILE, {"format": FORMAT, "config": model.cfg.to_dict(), "preprocessor": pre.to_dict(),
                                      "interval": {"level": level, "bounds": list(bounds)}, "mapping": mapping,
                                      "info": info or {}})
    return folder


@dataclass
class Valuer:
    """A saved HMG-Net, ready to price listings."""

    cfg: HMGConfig
    pre: Preprocessor
    state: dict
    level: float
    bounds: tuple[float, float]
    mapping: dict | None

    @classmethod
    def load(cls, folder: str | Path) -> Valuer:
        folder = Path(folder)
        files = [folder / CONFIG_FILE, folder / WEIGHTS_FILE]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{folder}: not a saved HMG-Net (missing {', '.join(missing)})")
        meta = json.loads(files[0].read_text())
        if meta.get("format") != FORMAT:
            raise DataError(f"{files[0]}: model format {meta.get('format')!r}, this code reads {FORMAT}")
        return cls(HMGConfig(**meta["config"]), Preprocessor.from_dict(meta["preprocessor"]), load_file(str(files[1])),
                   float(meta["interval"]["level"]), tuple(meta["interval"]["bounds"]), meta.get("mapping"))

    def model_for(self, df: pd.DataFrame, images_dir: str | None = None,
                  backbone: Backbone | None = None) -> HMGNet:
        """The saved model reading the listings `df` (encoded with the training rows' preprocessing)."""
        inputs = self.pre.transform(df, images_dir, backbone, progress_bar=False)
        reference = {k[4:]: v for k, v in self.state.items() if k.startswith("ref_")} or None
        model = HMGNet(self.cfg, inputs, reference)
        model.load_state_dict(self.state)
        return model.eval()

    def predict(self, df: pd.DataFrame, images_dir: str | None = None, top: int = 3) -> pd.DataFrame:
        """Per listing: price, delta, the interval at the saved level and the `top` feature-group effects."""
        model = self.model_for(df, images_dir)
        rows = np.arange(len(df))
        out = predict(model, rows)
        lo, hi = apply_interval(out["price"], self.bounds)
        pct = round(100 * self.level)
        result = pd.DataFrame({"listing_id": df["listing_id"].to_numpy(), "price": out["price"], "delta": out["delta"],
                               f"lo_{pct}": lo, f"hi_{pct}": hi, "anchor": model.inputs.anchor.numpy(),
                               "anchor_estimated": model.inputs.anchor_estimated.numpy()})
        if top:
            result["top_attributions"] = top_effects(feature_effects(model, rows, self.pre.numeric), top)
        return result
