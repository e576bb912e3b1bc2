"""The network being trained: the top encoder layers (LoRA adapters, or full fine-tuning
with a rank-R export) and the classification head, and its export in the layers format
``serve_app.encoder_layers`` defines.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from serve_app import encoder_layers as layers
from training.data import LABELS

LINEAR_NAMES = ("attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense", "intermediate.dense", "output.dense")


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update B @ A (B starts at zero)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * ((x @ self.A.T) @ self.B.T)


def low_rank_factors(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``left @ right``: the best rank-``rank`` approximation of ``delta`` (truncated SVD)."""
    u, sv, vh = torch.linalg.svd(delta, full_matrices=False)
    return u[:, :rank] * sv[:rank], vh[:rank]


class TopModel(nn.Module):
    """Encoder layers ``first..`` with LoRA (or all trainable, with ``full_rank_export``),
    mean pooling and the classification head."""

    def __init__(self, encoder, first: int, rank: int, alpha: float, hidden: int,
                 full_rank_export: int = 0):
        super().__init__()
        self.config = encoder.config
        self.first = first
        self.alpha = alpha
        self.layers = nn.ModuleList(encoder.encoder.layer[first:])
        self.full_rank_export = full_rank_export
        # Full fine-tuning: every parameter of the top layers trains; the export compares
        # them with these originals.
        self.original = ({k: v.detach().clone() for k, v in self.layers.state_dict().items()}
                         if self.full else {})
        for p in self.layers.parameters():
            p.requires_grad_(self.full)
        self.lora: dict[str, LoRALinear] = {}
        for offset, layer in enumerate([] if self.full else self.layers):
            for name in LINEAR_NAMES:
                parent_name, _, attr = name.rpartition(".")
                parent = layer.get_submodule(parent_name)
                wrapped = LoRALinear(getattr(parent, attr), rank, alpha)
                setattr(parent, attr, wrapped)
                self.lora[f"encoder.layer.{first + offset}.{name}"] = wrapped
            for module in layer.modules():
                if isinstance(module, nn.LayerNorm):
                    module.requires_grad_(True)
        self.head = layers.ClassificationHead(self.config.hidden_size, len(LABELS), hidden)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attention = create_bidirectional_mask(config=self.config, inputs_embeds=hidden,
                                              attention_mask=mask)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=attention)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return self.head(layers.pool(hidden, mask, "mean"))

    @property
    def device(self) -> torch.device:
        return self.head.out.weight.device

    def to_device(self, device: str | torch.device) -> "TopModel":
        """``to(device)`` that also moves the original weights the export compares with."""
        self.original = {k: v.to(device) for k, v in self.original.items()}
        return self.to(device)

    @property
    def full(self) -> bool:
        return self.full_rank_export > 0

    def export(self) -> dict[str, torch.Tensor]:
        return self._export_full() if self.full else self._export_lora()

    @torch.no_grad()
    def project_to_export_rank(self) -> None:
        """Replace each linear weight change by its rank-R truncation: what the export keeps
        (a full fine-tuning change is far from low rank; truncated, it shifts logits by ~3)."""
        for key, value in self.layers.state_dict(keep_vars=True).items():
            delta = value - self.original[key]
            if value.dim() == 2 and delta.abs().max() > 0:
                left, right = low_rank_factors(delta, self.full_rank_export)
                value.copy_(self.original[key] + left @ right)

    def _export_full(self) -> dict[str, torch.Tensor]:
        """Weight changes as rank-R factors (alpha / R * B @ A), the rest outright."""
        tensors = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        rank = self.full_rank_export
        scale = self.alpha / rank
        for key, value in self.layers.state_dict().items():
            offset, _, param = key.partition(".")
            name = f"encoder.layer.{self.first + int(offset)}.{param}"
            delta = value - self.original[key]
            if not delta.abs().max() > 0:
                continue
            module, _, kind = name.rpartition(".")
            if kind == "weight" and delta.dim() == 2:
                left, right = low_rank_factors(delta, rank)
                tensors[f"lora.{module}.A"] = right
                tensors[f"lora.{module}.B"] = left / scale
            else:  # biases and LayerNorms: small, stored as they are
                tensors[f"encoder.{name}"] = value
        return {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}

    def _export_lora(self) -> dict[str, torch.Tensor]:
        tensors = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        for name, module in self.lora.items():
            tensors[f"lora.{name}.A"] = module.A
            tensors[f"lora.{name}.B"] = module.B
        for offset, layer in enumerate(self.layers):
            for name, module in layer.named_modules():
                if isinstance(module, nn.LayerNorm):
                    prefix = f"encoder.encoder.layer.{self.first + offset}.{name}"
                    tensors[f"{prefix}.weight"] = module.weight
                    tensors[f"{prefix}.bias"] = module.bias
        return {k: v.detach().cpu().clone() for k, v in tensors.items()}
