"""Tiny random Hugging Face classifiers built at test time (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

from serve_app import encoder_layers


def tiny_hf_model_dir(tmp_path: Path, initializer_range: float = 0.02) -> Path:
    """A tiny random BERT classifier with the packaged tokenizer, saved as an HF directory.
    At the default initializer_range it answers about 1/3 per label whatever the text; a wider
    one makes its answers depend on the text."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=37,
                        num_labels=3, id2label={0: "sad", 1: "meh", 2: "glad"},
                        label2id={"sad": 0, "meh": 1, "glad": 2},
                        initializer_range=initializer_range)
    model_dir = tmp_path / "tiny-bert-sentiment"
    BertForSequenceClassification(config).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(encoder_layers.packaged_encoder_dir()).save_pretrained(model_dir)
    return model_dir
