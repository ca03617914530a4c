"""Image, text and joint encoders. Each maps a batch dict to embeddings [B, D] through a
projection + BatchNorm neck, and can freeze all but its last N blocks / layers (seed 003)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from utils.core.registry import Registry

from .pooling import make_pool

log = logging.getLogger(__name__)


def _neck(in_dim: int, out_dim: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim))


def _train_last_layers(model: nn.Module, n: int) -> None:
    """Freeze every parameter but those of the last `n` layers of the model's transformer layer list."""
    layers = next((m for name, m in model.named_modules()
                   if isinstance(m, nn.ModuleList) and name.split(".")[-1] in ("layer", "layers", "h", "block")), None)
    if layers is None:
        raise ValueError("cannot find the encoder layers of this transformer to freeze")
    for p in model.parameters():
        p.requires_grad = False
    for layer in list(layers)[len(layers) - n:] if n > 0 else []:
        for p in layer.parameters():
            p.requires_grad = True


class ImageEncoder(nn.Module):
    """timm backbone (any name) -> GeM / average pooling -> dropout -> linear -> BatchNorm.

    weights: a local checkpoint file (loaded through timm's `pretrained_cfg_overlay`), "hub" to let timm
    download (online only), or None to train from scratch. A path that does not exist is an error.
    """

    modality = "image"

    def __init__(self, backbone: str = "resnet18", weights: str | None = None, pooling: str = "gem",
                 embedding_size: int = 512, dropout: float = 0.1, trainable_blocks: int = -1):
        super().__init__()
        import timm

        kwargs: dict = {"num_classes": 0, "global_pool": ""}
        if weights and weights != "hub":
            if not Path(weights).is_file():
                raise FileNotFoundError(f"{weights}: image weights not found (set the training parameter 'weights')")
            kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
        if not weights:
            log.info("image backbone %s built without pretrained weights", backbone)
        self.backbone = timm.create_model(backbone, pretrained=bool(weights), **kwargs)
        self.data_config = timm.data.resolve_data_config({}, model=self.backbone)
        self.pool = make_pool(pooling)
        self.neck = _neck(self.backbone.num_features, embedding_size, dropout)
        if trainable_blocks >= 0:
            self._freeze_all_but(trainable_blocks)

    def _freeze_all_but(self, n: int) -> None:
        """Freeze the backbone except its last `n` coarse groups (stem, stages, head as timm groups them)."""
        from timm.models import group_parameters

        groups = group_parameters(self.backbone, self.backbone.group_matcher(coarse=True))
        keep = set(sorted(groups)[len(groups) - n:]) if n > 0 else set()
        trainable = {name for g in keep for name in groups[g]}
        for name, p in self.backbone.named_parameters():
            p.requires_grad = name in trainable

    def forward(self, batch: dict) -> torch.Tensor:
        return self.neck(self.pool(self.backbone.forward_features(batch["image"])))


class WordLlamaEncoder(nn.Module):
    """The WordLlama static token table as a trainable mean-pooled EmbeddingBag (offline, 256-d)."""

    modality = "text"

    def __init__(self, embedding_size: int = 256, dropout: float = 0.0, trainable_layers: int = 1,
                 weights: str | None = None, tokenizer: str | None = None, max_length: int = 64):
        super().__init__()
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        from utils.core.weights import wordllama_files

        default_w, default_t = wordllama_files()
        table = torch.from_numpy(load_file(str(weights or default_w))["embedding.weight"].astype("float32"))
        self.tokenizer = Tokenizer.from_file(str(tokenizer or default_t))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_length = max_length
        self.bag = nn.EmbeddingBag.from_pretrained(table, freeze=trainable_layers == 0, mode="mean")
        self.neck = _neck(table.shape[1], embedding_size, dropout)

    def forward(self, batch: dict) -> torch.Tensor:
        ids = [enc.ids[: self.max_length] or [0] for enc in
               self.tokenizer.encode_batch(batch["title"], add_special_tokens=False)]
        device = self.bag.weight.device
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=device)
        offsets = torch.tensor([0] + [len(r) for r in ids[:-1]], device=device).cumsum(0)
        return self.neck(self.bag(flat, offsets))


class TransformerTextEncoder(nn.Module):
    """A transformers / sentence-transformers model from a local folder: mean pooling over the last
    layer, max length, and only the last `trainable_layers` encoder layers trainable."""

    modality = "text"

    def __init__(self, model_dir: str, embedding_size: int = 512, dropout: float = 0.1, trainable_layers: int = 2,
                 max_length: int = 64):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        if not Path(model_dir).is_dir():
            raise FileNotFoundError(f"{model_dir}: transformer folder not found (set the text parameter 'model_dir')")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True)
        self.max_length = max_length
        self.neck = _neck(self.model.config.hidden_size, embedding_size, dropout)
        if trainable_layers >= 0:
            _train_last_layers(self.model, trainable_layers)

    def forward(self, batch: dict) -> torch.Tensor:
        device = self.neck[1].weight.device
        tok = self.tokenizer(list(batch["title"]), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(device)
        hidden = self.model(**tok).last_hidden_state
        mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return self.neck((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0))


class SentenceTransformerTextEncoder(nn.Module):
    """Any local sentence-transformers folder, with its own tokenizer and pooling, fine-tuned whole under the
    ArcFace neck; the default is all-MiniLM-L6-v2 from its pip package (offline). `trainable_layers` >= 0
    freezes all but the last that many transformer layers (0: the neck alone learns)."""

    modality = "text"

    def __init__(self, model_dir: str | None = None, embedding_size: int = 512, dropout: float = 0.1,
                 trainable_layers: int = -1, max_length: int = 48):
        super().__init__()
        from utils.core.weights import load_sentence_transformer

        self.model = load_sentence_transformer(model_dir, max_length)
        self.neck = _neck(self.model.get_embedding_dimension(), embedding_size, dropout)
        if trainable_layers >= 0:
            _train_last_layers(self.model, trainable_layers)

    def forward(self, batch: dict) -> torch.Tensor:
        device = self.neck[1].weight.device
        prepare = getattr(self.model, "preprocess", None) or self.model.tokenize  # renamed in sentence-transformers 6
        tokens = prepare(list(batch["title"]))
        features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in tokens.items()}
        return self.neck(self.model(features)["sentence_embedding"])


class JointEncoder(nn.Module):
    """Image and text encoders whose normalised outputs are concatenated and projected (6th place)."""

    modality = "joint"

    def __init__(self, image: ImageEncoder, text: nn.Module, embedding_size: int = 512):
        super().__init__()
        self.image, self.text = image, text
        self.data_config = image.data_config
        dim = image.neck[1].out_features + text.neck[1].out_features
        self.neck = _neck(dim, embedding_size, 0.0)

    def forward(self, batch: dict) -> torch.Tensor:
        parts = [nn.functional.normalize(self.image(batch)), nn.functional.normalize(self.text(batch))]
        return self.neck(torch.cat(parts, dim=1))


# a text model's `kind` -> its encoder class
TEXT_ENCODERS: Registry[type[nn.Module]] = Registry("text kind", {
    "wordllama": WordLlamaEncoder, "transformer": TransformerTextEncoder,
    "sentence_transformers": SentenceTransformerTextEncoder})


def build_encoder(modality: str, image: dict | None = None, text: dict | None = None,
                  embedding_size: int = 512) -> nn.Module:
    """Encoder from plain config dicts: image={backbone, weights, pooling, ...}, text={kind, ...}."""
    def make_text(cfg: dict) -> nn.Module:
        cfg = dict(cfg)
        return TEXT_ENCODERS[cfg.pop("kind", "wordllama")](**{"embedding_size": embedding_size, **cfg})

    if modality == "image":
        return ImageEncoder(**{"embedding_size": embedding_size, **(image or {})})
    if modality == "text":
        return make_text(text or {})
    if modality == "joint":
        return JointEncoder(ImageEncoder(**{"embedding_size": embedding_size, **(image or {})}),
                            make_text(text or {}), embedding_size)
    raise ValueError(f"modality must be 'image', 'text' or 'joint', got {modality!r}")
