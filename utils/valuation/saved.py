"""A trained HMG-Net on disk and the pricing of new listings with it.

The folder holds `model.json` (the model's configuration, the fitted `Preprocessor`, the column mapping of the
training data, the conformal interval's bounds) and `weights.safetensors` (parameters and the market graph's
reference listings; no pickle). `Valuer.predict` encodes new listings exactly as the training rows were and
writes per row the price, delta, the interval and the feature groups that moved delta most.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.torch import load_file, save_file

from utils.core.data import DataError
from utils.core.io import read_json, write_json

from .explain import feature_effects, top_effects
from .features import Backbone, Preprocessor
from .fit import predict
from .listings import MISSING
from .metrics import IntervalBounds, apply_interval
from .model import HMGConfig, HMGNet

log = logging.getLogger(__name__)
CONFIG_FILE, WEIGHTS_FILE = "model.json", "weights.safetensors"
FORMAT = 1


def save_model(folder: str | Path, model: HMGNet, pre: Preprocessor, bounds: IntervalBounds | tuple[float, float],
               level: float, mapping: dict | None = None, info: dict | None = None) -> Path:
    """Write `model` with its preprocessing and interval bounds (`metrics.calibrate`, or one overall pair) to
    `folder`; the wide part and the sentence encoder's settings go with it only when the model uses them."""
    bounds = bounds if isinstance(bounds, IntervalBounds) else IntervalBounds(tuple(bounds))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    preprocessor = pre.to_dict()
    preprocessor.update(wide=preprocessor["wide"] if model.cfg.wide else None,
                        sentence=preprocessor["sentence"] if model.cfg.text == "minilm" else None)
    write_json(folder / CONFIG_FILE, {"format": FORMAT, "config": model.cfg.to_dict(), "preprocessor": preprocessor,
                                      "interval": {"level": level, **bounds.to_dict()}, "mapping": mapping,
                                      "info": info or {}})
    return folder


@dataclass
class Valuer:
    """A saved HMG-Net, ready to price listings."""

    cfg: HMGConfig
    pre: Preprocessor
    state: dict
    level: float
    bounds: IntervalBounds
    mapping: dict | None

    @classmethod
    def load(cls, folder: str | Path) -> Valuer:
        folder = Path(folder)
        files = [folder / CONFIG_FILE, folder / WEIGHTS_FILE]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{folder}: not a saved HMG-Net (missing {', '.join(missing)})")
        meta = read_json(files[0])
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise DataError(f"{files[0]}: model format {found!r}, this code reads {FORMAT}")
        try:
            state = load_file(str(files[1]))
        except Exception as e:  # safetensors raises its own error types for a truncated or foreign file
            raise DataError(f"{files[1]}: unreadable weights ({type(e).__name__}: {e}); the file is truncated or "
                            "not this model's") from None
        try:
            return cls(HMGConfig(**meta["config"]), Preprocessor.from_dict(meta["preprocessor"]), state,
                       float(meta["interval"]["level"]), IntervalBounds.from_dict(meta["interval"]),
                       meta.get("mapping"))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{files[0]}: incomplete or edited ({type(e).__name__}: {e})") from None

    def model_for(self, df: pd.DataFrame, images_dir: str | None = None,
                  backbone: Backbone | None = None) -> HMGNet:
        """The saved model reading the listings `df` (encoded with the training rows' preprocessing)."""
        inputs = self.pre.transform(df, images_dir, backbone, progress_bar=False)
        reference = {k[4:]: v for k, v in self.state.items() if k.startswith("ref_")} or None
        model = HMGNet(self.cfg, inputs, reference)
        model.load_state_dict(self.state)
        return model.eval()

    def check(self, df: pd.DataFrame, images_dir: str | None = None) -> None:
        """Refuse listings this model cannot price honestly (none, a numeric column holding text, an age below 0,
        a photo folder that does not exist); warn, naming the rows, where it prices with a stand-in."""
        if df.empty:
            raise DataError("no listings to price")
        if images_dir and not Path(images_dir).is_dir():
            raise DataError(f"{images_dir}: no such photo folder")
        if self.pre.image and not images_dir:
            log.warning("this model reads photos and no photo folder was given: every listing is priced with a "
                        "blank photo (pass --images)")
        for col in self.pre.numeric:
            if col not in df:
                log.warning("column %r is missing: every listing gets the training mean for it", col)
                continue
            given = df[col].notna() & ~df[col].astype(str).str.strip().isin(MISSING)
            values = pd.to_numeric(df[col].where(given), errors="coerce")
            text = values.isna() & given
            if text.any():
                raise DataError(f"column {col!r} needs numbers; text such as {df[col][text].iloc[0]!r} in rows "
                                f"{np.flatnonzero(text)[:10].tolist()}")
            if col == "age_years" and (values < 0).any():
                raise DataError(f"column 'age_years' below 0 (a listing from the future) in rows "
                                f"{np.flatnonzero(values < 0)[:10].tolist()}")
            odd = (values < 0) | ((values > 100) if col == "age_years" else False)
            if odd.any():
                log.warning("column %r has implausible values (negative%s) in rows %s", col,
                            ", or over 100 years" if col == "age_years" else "", np.flatnonzero(odd)[:10].tolist())

    def predict(self, df: pd.DataFrame, images_dir: str | None = None, top: int = 3) -> pd.DataFrame:
        """Per listing: price, delta, the interval at the saved level and the `top` feature-group effects."""
        self.check(df, images_dir)
        model = self.model_for(df, images_dir)
        rows = np.arange(len(df))
        out = predict(model, rows)
        by = self.bounds.by
        lo, hi = apply_interval(out["price"], self.bounds.for_rows(df[by].astype(str).to_numpy() if by in df else None))
        pct = round(100 * self.level)
        result = pd.DataFrame({"listing_id": df["listing_id"].to_numpy(), "price": out["price"], "delta": out["delta"],
                               f"lo_{pct}": lo, f"hi_{pct}": hi, "anchor": model.inputs.anchor.numpy(),
                               "anchor_estimated": model.inputs.anchor_estimated.numpy()})
        if top:
            result["top_attributions"] = top_effects(feature_effects(model, rows, self.pre.numeric), top)
        return result
