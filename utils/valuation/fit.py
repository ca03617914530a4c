"""Training and prediction of HMG-Net on row splits, keeping the epoch with the best validation RMSLE."""

from __future__ import annotations

import copy

import numpy as np
import torch

from utils.core.progress import progress as progress_bar
from utils.training.schedule import warmup_scheduler

from .features import Inputs
from .metrics import rmsle
from .model import HMGConfig, HMGNet, market_reference
from .structure import claim_loss, mention_loss


def detector_loss(out: dict[str, torch.Tensor], inputs: Inputs, idx: torch.Tensor) -> torch.Tensor:
    """The text's supervision of whichever image detectors the model has (`out` from `HMGNet.forward` on rows
    `idx` of `inputs`): accessory claims for the structure level, defect mentions for DSCA."""
    loss = torch.zeros(())
    if "presence_logit" in out:
        loss = loss + claim_loss(out["presence_logit"], inputs.claims[idx], inputs.has_image[idx])
    if "defect_logit" in out:
        loss = loss + mention_loss(out["defect_logit"], inputs.defect_mentioned[idx], inputs.has_image[idx])
    return loss


def predict(model: HMGNet, idx: np.ndarray, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Price and delta of the rows `idx`."""
    model.eval()
    prices, deltas = [], []
    with torch.no_grad():
        for s in range(0, len(idx), batch_size):
            out = model(torch.as_tensor(idx[s:s + batch_size]))
            prices.append(out["price"].numpy())
            deltas.append(out["delta"].numpy())
    return {"price": np.concatenate(prices), "delta": np.concatenate(deltas)}


def train(cfg: HMGConfig, inputs: Inputs, train_idx: np.ndarray, val_idx: np.ndarray, epochs: int = 20,
          lr: float = 3e-3, batch_size: int = 64, seed: int = 0, progress: bool = True,
          schedule: str = "cosine") -> tuple[HMGNet, list[dict]]:
    """Fit on `train_idx` with the log-price MSE (RMSLE's square), plus `cfg.claim_weight` times the text's
    supervision of the image detectors (accessory claims for the structure level, defect mentions for DSCA)
    when those parts are on. `schedule` (transformers' names: cosine, linear, constant) decays the learning
    rate after a one-epoch warm-up. Returns the model of the best validation epoch and the history (with the wide
    part, from epoch 0: the untrained model, the Ridge itself)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    y = inputs.price.numpy()
    reference = market_reference(inputs, train_idx) if inputs.location is not None and inputs.month is not None \
        else None
    model = HMGNet(cfg, inputs, reference, init_log_price=float(np.log(y[train_idx]).mean()))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    steps = -(-len(train_idx) // batch_size)
    sched = warmup_scheduler(opt, schedule, steps, steps * epochs)
    target = torch.log1p(inputs.price)
    history, best, best_state = [], np.inf, None
    if cfg.wide:  # untrained, the wide and deep model is the Ridge: kept unless an epoch beats it on validation
        best = rmsle(y[val_idx], predict(model, val_idx)["price"])
        best_state = copy.deepcopy(model.state_dict())
        history.append({"epoch": 0, "train_rmsle": float("nan"), "val_rmsle": best})
    bar = progress_bar(range(epochs), desc=f"hmgnet {cfg.head}", unit="epoch", leave=False, disable=not progress)
    for epoch in bar:
        model.train()
        order = rng.permutation(train_idx)
        losses = []
        for s in range(0, len(order), batch_size):
            idx = torch.as_tensor(order[s:s + batch_size])
            out = model(idx)
            price_loss = torch.mean((torch.log1p(out["price"]) - target[idx]) ** 2)
            loss = price_loss
            if cfg.claim_weight > 0:
                loss = loss + cfg.claim_weight * detector_loss(out, inputs, idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(price_loss.item())
        val = rmsle(y[val_idx], predict(model, val_idx)["price"])
        history.append({"epoch": epoch + 1, "train_rmsle": float(np.sqrt(np.mean(losses))), "val_rmsle": val})
        bar.set_postfix(val_rmsle=f"{val:.4f}")
        if val < best:
            best, best_state = val, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model, history
