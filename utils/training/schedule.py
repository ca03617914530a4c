"""Learning-rate schedules shared by every trained model (ArcFace encoders, HMG-Net)."""

from __future__ import annotations

import torch
from transformers import get_scheduler


def warmup_scheduler(opt: torch.optim.Optimizer, schedule: str, warmup_steps: int,
                     total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then `schedule` (linear, cosine or constant) over `total_steps`: transformers' schedulers,
    stepped once per optimiser step."""
    name = {"constant": "constant_with_warmup"}.get(schedule, schedule)
    return get_scheduler(name, opt, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
