"""Metric-learning training loop for image, text and joint encoders (01_train_arcface).

Per epoch: mean loss, and the out-of-fold F1 at the best threshold (the competition metric on the
held-out fold, each row matched among the fold's rows). Epoch 0 is the untrained model, so the gain
of training is read off the same table. Checkpoints carry their config.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from utils.core.data import assign_folds, scored_rows
from utils.core.device import cuda_available, usable_cores
from utils.core.progress import progress
from utils.core.store import ArtifactName, RunStore, checkpoint_set
from utils.matching.decide import DEFAULT_GRID, f1_curve
from utils.matching.knn import neighbours

from .losses import PAIR_LOSSES, make_loss
from .nn.encoders import build_encoder
from .schedule import warmup_scheduler

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything a training run needs; saved inside each checkpoint."""

    modality: str = "text"  # image | text | joint
    image: dict = field(default_factory=dict)  # ImageEncoder arguments: backbone, weights, pooling, trainable_blocks
    text: dict = field(default_factory=dict)  # kind (wordllama | transformer | sentence_transformers), model_dir, ...
    # trainable_layers, max_length
    embedding_size: int = 256
    loss: str = "arcface"  # arcface | softmax | triplet | cosent
    loss_params: dict = field(default_factory=dict)  # e.g. margin, scale, easy_margin
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3  # encoder learning rate
    head_lr: float = 1e-2  # learning rate of the neck and the loss's class weights
    weight_decay: float = 1e-4
    warmup_ratio: float = 0.1  # share of the steps spent warming up
    schedule: str = "linear"  # linear | cosine | constant (after warm-up)
    agc_clip: float = 0.0  # adaptive gradient clipping factor (NFNet recipe); 0 = off
    amp: bool = True  # mixed precision with GradScaler, on CUDA only
    amp_init_scale: float = 1024.0  # GradScaler's starting loss scale (PyTorch's 65,536 overflows fp16 for 3-4 steps)
    samples_per_class: int = 0  # >0: class-balanced batches (forced to 2 for triplet / CoSENT)
    image_size: int = 128
    fold: int = 0  # held-out GroupKFold fold; -1 trains on every row (no validation)
    n_folds: int = 5
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = -1  # image-decoding processes; -1: `default_workers()` on CUDA, none on the CPU

    def __post_init__(self) -> None:
        if self.schedule not in ("linear", "cosine", "constant"):
            raise ValueError(f"schedule must be linear, cosine or constant, got {self.schedule!r}")
        if self.fold >= self.n_folds:
            raise ValueError(f"fold {self.fold} does not exist with n_folds={self.n_folds}")


class PostingDataset(Dataset):
    """Rows of a postings frame as dicts: title, label, and the transformed image when needed."""

    def __init__(self, df: pd.DataFrame, images_dir: str | Path | None, transform=None,
                 labels: np.ndarray | None = None):
        self.titles = df["title"].tolist()
        self.files = [Path(images_dir) / f for f in df["image"]] if images_dir else None
        self.transform = transform
        self.labels = labels if labels is not None else np.zeros(len(df), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.titles)

    def __getitem__(self, i: int) -> dict:
        item = {"title": self.titles[i], "label": int(self.labels[i])}
        if self.files is not None:
            with Image.open(self.files[i]) as im:
                item["image"] = self.transform(im.convert("RGB"))
        return item


def collate(items: list[dict]) -> dict:
    out = {"title": [it["title"] for it in items], "label": torch.tensor([it["label"] for it in items])}
    if "image" in items[0]:
        out["image"] = torch.stack([it["image"] for it in items])
    return out


def image_transforms(data_config: dict, size: int, train: bool):
    from torchvision import transforms as T

    norm = T.Normalize(data_config["mean"], data_config["std"])
    if train:
        return T.Compose([T.RandomResizedCrop(size, scale=(0.6, 1.0)), T.RandomHorizontalFlip(),
                          T.ColorJitter(0.2, 0.2, 0.2), T.ToTensor(), norm])
    return T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), norm])


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    return torch.device(device)


def default_workers() -> int:
    """Image-decoding worker processes: every core but one (the main process feeds the model), at most 16."""
    return max(0, min(16, usable_cores() - 1))


def image_loader(dataset: Dataset, workers: int, cuda: bool, **kwargs) -> DataLoader:
    """A DataLoader whose `workers` processes decode and augment images: started by forkserver (a plain fork
    of a process that already runs threads, as a notebook kernel or torch does, may deadlock), kept alive
    across epochs, and writing batches into pinned memory on CUDA for asynchronous copies."""
    extra = {}
    if workers > 0:
        if "forkserver" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload([__name__])  # the server imports torch once; each worker forks from it
        else:
            ctx = multiprocessing.get_context("spawn")
        extra = {"multiprocessing_context": ctx, "persistent_workers": True, "prefetch_factor": 4}
    return DataLoader(dataset, collate_fn=collate, num_workers=workers, pin_memory=cuda, **extra, **kwargs)


def _stop_workers(loader: DataLoader | None) -> None:
    """End a persistent loader's worker processes now, not when the loader is garbage-collected."""
    iterator = getattr(loader, "_iterator", None)  # torch keeps the persistent workers' iterator here
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


def _to_device(batch: dict, dev: torch.device) -> dict:
    """The batch's images on `dev`, channels_last on CUDA (the layout its convolution kernels prefer)."""
    if "image" in batch:
        layout = torch.channels_last if dev.type == "cuda" else torch.preserve_format
        batch["image"] = batch["image"].to(dev, non_blocking=True, memory_format=layout)
    return batch


@torch.no_grad()
def encode(encoder: nn.Module, df: pd.DataFrame, images_dir: str | Path | None, image_size: int = 128,
           batch_size: int = 128, device: str = "auto", desc: str = "embed", num_workers: int | None = None,
           amp: bool = True) -> np.ndarray:
    """L2-normalised float32 embeddings of every row of `df` (row order kept).

    Images are decoded by `num_workers` DataLoader processes (default: `default_workers()`), into pinned
    memory on CUDA, where the model runs in channels_last with fp16 autocast (`amp`); a GPU then waits on
    JPEG decoding far less (one core decodes about 144 photos a second).
    """
    dev = resolve_device(device)
    workers = default_workers() if num_workers is None else num_workers
    loader = ordered_loader(encoder, df, images_dir, image_size, workers, dev, batch_size)
    return encode_batches(encoder, loader, dev, amp, desc)


def ordered_loader(encoder: nn.Module, df: pd.DataFrame, images_dir, image_size: int, workers: int,
                   dev: torch.device, batch_size: int = 128) -> DataLoader:
    """`df`'s rows in order, as the encoder reads them (images only for an image or joint encoder, with the
    evaluation transform and `workers` decoding processes)."""
    needs_images = encoder.modality in ("image", "joint")
    tf = image_transforms(encoder.data_config, image_size, train=False) if needs_images else None
    return image_loader(PostingDataset(df, images_dir if needs_images else None, tf),
                        workers if needs_images else 0, dev.type == "cuda" and needs_images,
                        batch_size=batch_size, shuffle=False)


@torch.no_grad()
def encode_batches(encoder: nn.Module, loader: DataLoader, dev: torch.device, amp: bool = True,
                   desc: str = "embed") -> np.ndarray:
    """L2-normalised float32 embeddings of every batch of `loader`, in order; on CUDA in channels_last with
    fp16 autocast (`amp`)."""
    cuda = dev.type == "cuda"
    encoder = encoder.to(dev).eval()
    if cuda and encoder.modality in ("image", "joint"):
        encoder = encoder.to(memory_format=torch.channels_last)
    out = []
    for batch in progress(loader, desc=desc, leave=False):
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=cuda and amp):
            emb = encoder(_to_device(batch, dev))
        out.append(nn.functional.normalize(emb.float()).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def evaluate(encoder: nn.Module, df: pd.DataFrame, images_dir, cfg: TrainConfig,
             loader: DataLoader | None = None) -> tuple[float, float]:
    """Best-threshold F1 of the encoder on `df` (rows matched among themselves; a training pool's distractors
    are searched, never scored) and that threshold. `loader`, when given, yields `df`'s rows in order (a
    training run keeps one, with its workers, for every epoch)."""
    if loader is None:
        X = encode(encoder, df, images_dir, cfg.image_size, device=cfg.device, desc="validate", amp=cfg.amp)
    else:
        X = encode_batches(encoder, loader, resolve_device(cfg.device), cfg.amp, desc="validate")
    idx, sims, _ = neighbours(X, k=min(50, len(df)), backend="auto")
    curve = f1_curve(idx, sims, df["label_group"].to_numpy(), rows=scored_rows(df))
    best = int(np.argmax(curve))
    return float(curve[best]), float(DEFAULT_GRID[best])


def training_workers(cfg: TrainConfig, device: torch.device, needs_images: bool) -> int:
    """Image-decoding processes for training: the config's, or by default every core but one on CUDA (where
    decoding is the wall) and none on the CPU (where the model is, and the workers would take its cores)."""
    if not needs_images:
        return 0
    if cfg.num_workers >= 0:
        return cfg.num_workers
    return default_workers() if device.type == "cuda" else 0


def _loader(train_df: pd.DataFrame, labels: np.ndarray, images_dir, tf, cfg: TrainConfig, workers: int,
            cuda: bool) -> DataLoader:
    """Shuffled training batches; workers draw their augmentations from seeds the loader's generator gives
    them, so a seed repeats a run for a given worker count."""
    ds = PostingDataset(train_df, images_dir, tf, labels)
    m = cfg.samples_per_class or (2 if cfg.loss in PAIR_LOSSES else 0)
    g = torch.Generator().manual_seed(cfg.seed)
    if m:
        from pytorch_metric_learning.samplers import MPerClassSampler

        batch = max(m, cfg.batch_size // m * m)
        sampler = MPerClassSampler(labels, m=m, batch_size=batch, length_before_new_iter=len(ds))
        return image_loader(ds, workers, cuda, batch_size=batch, sampler=sampler, drop_last=True, generator=g)
    return image_loader(ds, workers, cuda, batch_size=cfg.batch_size, shuffle=True,
                        drop_last=len(ds) > cfg.batch_size, generator=g)


def fit(cfg: TrainConfig, df: pd.DataFrame, images_dir: str | Path | None, out_dir: str | Path) -> dict:
    """Train one encoder; writes `best.pt` (and `last.pt`) under `out_dir`; returns the history. A training
    pool's distractors (`utils.core.data.read_training`) train as classes of their own: real look-alikes that
    the loss pushes every group away from (hard negatives), held out by fold like any row."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # noqa: NPY002 - pytorch-metric-learning's sampler draws from numpy's global RNG
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    folds = assign_folds(df, cfg.n_folds, cfg.seed)
    train_df = df[folds != cfg.fold] if cfg.fold >= 0 else df
    val_df = df[folds == cfg.fold] if cfg.fold >= 0 else None
    classes, labels = np.unique(train_df["label_group"].to_numpy(), return_inverse=True)

    encoder = build_encoder(cfg.modality, cfg.image, cfg.text, cfg.embedding_size).to(device)
    loss_fn = make_loss(cfg.loss, len(classes), cfg.embedding_size, **cfg.loss_params).to(device)
    needs_images = cfg.modality in ("image", "joint")
    images_dir = images_dir if needs_images else None
    cuda = device.type == "cuda"
    workers = training_workers(cfg, device, needs_images)
    tf = image_transforms(encoder.data_config, cfg.image_size, train=True) if needs_images else None
    loader = _loader(train_df, labels, images_dir, tf, cfg, workers, cuda and needs_images)
    val_loader = None if val_df is None else ordered_loader(encoder, val_df, images_dir, cfg.image_size, workers,
                                                            device)
    if cuda and needs_images:
        encoder = encoder.to(memory_format=torch.channels_last)

    try:
        head = [p for n, p in encoder.named_parameters() if "neck" in n and p.requires_grad]
        head += list(loss_fn.parameters())
        body = [p for n, p in encoder.named_parameters() if "neck" not in n and p.requires_grad]
        opt = torch.optim.AdamW([{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}],
                                weight_decay=cfg.weight_decay)
        total = max(1, cfg.epochs * len(loader))
        sched = warmup_scheduler(opt, cfg.schedule, int(cfg.warmup_ratio * total), total)
        use_amp = cfg.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", init_scale=cfg.amp_init_scale, enabled=use_amp)

        history: list[dict] = []
        val_f1, val_thr = float("nan"), float("nan")
        if val_df is not None:
            val_f1, val_thr = evaluate(encoder, val_df, images_dir, cfg, val_loader)
        history.append({"epoch": 0, "loss": float("nan"), "val_f1": val_f1, "val_threshold": val_thr, "seconds": 0.0})
        run = f"{cfg.modality} model, " + (f"fold{cfg.fold} of {cfg.n_folds}" if cfg.fold >= 0 else "all rows")
        log.info("%s: epoch 0 (untrained): val F1 %.4f", run, val_f1)
        best = -1.0
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            encoder.train()
            loss_fn.train()
            losses, skipped, seen = [], 0, 0
            for batch in progress(loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False):
                seen += len(batch["label"])
                y = batch["label"].to(device, non_blocking=True)
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    loss = loss_fn(encoder(_to_device(batch, device)), y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.agc_clip > 0:
                    from timm.utils.agc import adaptive_clip_grad

                    scaler.unscale_(opt)
                    adaptive_clip_grad(body + head, clip_factor=cfg.agc_clip)
                scale = scaler.get_scale()
                scaler.step(opt)
                scaler.update()
                if use_amp and scaler.get_scale() < scale:  # inf / NaN gradients: the optimiser skipped this step
                    skipped += 1
                else:  # the schedule follows the optimiser's steps, not the batches
                    sched.step()
                losses.append(loss.item())
            train_seconds = time.perf_counter() - t0  # the loss's .item() waits for the GPU: the step is done
            if val_df is not None:
                val_f1, val_thr = evaluate(encoder, val_df, images_dir, cfg, val_loader)
            row = {"epoch": epoch, "loss": float(np.mean(losses)), "val_f1": val_f1, "val_threshold": val_thr,
                   "steps": len(losses), "skipped_steps": skipped, "seconds": round(time.perf_counter() - t0, 1),
                   "rows_per_second": round(seen / max(train_seconds, 1e-9), 1)}  # training only, validation excluded
            history.append(row)
            log.info("%s: epoch %d/%d: loss %.4f, val F1 %.4f, %.0f rows/s", run, epoch, cfg.epochs, row["loss"],
                     val_f1, row["rows_per_second"])
            ckpt = {"config": asdict(cfg), "state_dict": encoder.state_dict(), "epoch": epoch, "history": history}
            torch.save(ckpt, out_dir / "last.pt")
            score_now = val_f1 if val_df is not None else float(epoch)
            if score_now > best:
                best = score_now
                torch.save(ckpt, out_dir / "best.pt")
        return {"history": history, "best": str(out_dir / "best.pt"), "classes": len(classes),
                "train_rows": len(train_df), "val_rows": 0 if val_df is None else len(val_df)}
    finally:  # workers and their pinned memory end with the run, also when it fails (a kernel keeps the traceback)
        for dl in (loader, val_loader):
            _stop_workers(dl)


def load_encoder(path: str | Path, device: str = "cpu") -> tuple[nn.Module, TrainConfig]:
    """Rebuild an encoder from a checkpoint written by `fit` (no download: weights come from the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found (run 01_train_arcface, or fix 'checkpoints')")
    ckpt = torch.load(path, map_location=device, weights_only=True)  # a plain dict: no pickled code runs
    cfg = TrainConfig(**ckpt["config"])
    image = {**cfg.image, "weights": None}  # the checkpoint holds the trained weights
    encoder = build_encoder(cfg.modality, image, cfg.text, cfg.embedding_size)
    encoder.load_state_dict(ckpt["state_dict"])
    return encoder.eval(), cfg


def plot_history(histories: dict[str, list[dict]], path: str | Path) -> Path:
    """Training curves: loss and held-out F1 per epoch, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, hist in histories.items():
        ep = [h["epoch"] for h in hist]
        a.plot(ep[1:], [h["loss"] for h in hist[1:]], marker="o", label=name)
        b.plot(ep, [h["val_f1"] for h in hist], marker="o", label=name)
    a.set(xlabel="epoch", ylabel="training loss", title="Loss")
    b.set(xlabel="epoch (0 = untrained)", ylabel="F1 at best threshold", title="Held-out fold F1")
    a.legend()
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def train_cv(cfg: TrainConfig, df: pd.DataFrame, images_dir, out_dir: str | Path) -> dict:
    """One model per fold (`fold<k>/`, each validated on its fold) and one on every row (`full/`).

    The fold models give every training row an embedding from a model that never saw its group
    (honest thresholds downstream); the full model embeds the test rows.
    """
    out_dir = Path(out_dir)
    runs = {f"fold{k}": fit(replace(cfg, fold=k), df, images_dir, out_dir / f"fold{k}") for k in range(cfg.n_folds)}
    runs["full"] = fit(replace(cfg, fold=-1), df, images_dir, out_dir / "full")
    folds = [runs[f"fold{k}"]["history"] for k in range(cfg.n_folds)]
    epochs = len(folds[0])
    mean = [{"epoch": e, "loss": float(np.mean([h[e]["loss"] for h in folds])),
             "val_f1": float(np.mean([h[e]["val_f1"] for h in folds])),
             "val_threshold": float(np.mean([h[e]["val_threshold"] for h in folds])),
             "seconds": float(np.sum([h[e]["seconds"] for h in folds])),
             "rows_per_second": float(np.mean([h[e].get("rows_per_second", np.nan) for h in folds]))}  # none at epoch 0
            for e in range(epochs)]
    return {"history": mean, "best": str(out_dir / "full" / "best.pt"), "classes": runs["full"]["classes"],
            "train_rows": runs["full"]["train_rows"], "val_rows": len(df), "runs": runs}


def embed_split(folder: str | Path, name: str, split: str, df: pd.DataFrame, images_dir, store: RunStore,
                batch_size: int = 128, amp: bool = True, fold_test: bool = False) -> list[Path]:
    """Embed one split with a trained model folder; writes embedding artifacts to the store, returns their paths.

    Test rows use the full (or single) model. Train rows use the fold models when there are some:
    `train_<name>@fold<k>` holds every row embedded by the model that did not see fold k, and its
    sidecar lists fold k's rows, whose neighbours `03_knn` stitches into `train_<name>`.
    Without fold models the train embedding is in-sample, which its sidecar says. With `fold_test`, the
    test rows are also embedded by every fold model (`test_<name>@fold<k>`, for 05's test-like slices).
    """
    ckpts = checkpoint_set(folder)
    encoder, cfg = load_encoder(ckpts["test"])
    if cfg.modality != "text" and images_dir is None:
        log.warning("%s: %s model skipped (dataset without images)", name, cfg.modality)
        return []

    def encoded(enc: nn.Module, enc_cfg: TrainConfig, desc: str) -> np.ndarray:
        return encode(enc, df, images_dir, enc_cfg.image_size, batch_size, desc=desc, amp=amp)

    paths = []
    if split == "test" or not ckpts["folds"]:
        meta = {"model": name, "checkpoint": str(ckpts["test"]), "split": split, "in_sample": split == "train"}
        paths.append(store.save_embedding(ArtifactName(split, name), encoded(encoder, cfg, f"{name} {split}"), meta))
        if split == "train" or not fold_test:
            return paths
    folds = assign_folds(df, cfg.n_folds, cfg.seed) if split == "train" else None
    for k, path in ckpts["folds"].items():
        enc_k, cfg_k = load_encoder(path)
        meta = {"model": name, "checkpoint": str(path), "split": split, "oof_fold": k}
        if folds is not None:
            meta["fold_rows"] = np.flatnonzero(folds == k).tolist()
        X = encoded(enc_k, cfg_k, f"{name} {split} fold {k}")
        paths.append(store.save_embedding(ArtifactName(split, name, k), X, meta))
    return paths
