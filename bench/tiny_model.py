"""A near-free stand-in for a GPU-fast model: a tiny random classifier, built at run time.

On a GPU the forward pass costs next to nothing, so what a request costs there is the serving
path. A one-layer BERT of hidden size 32 with the packaged tokenizer and the default model's
labels shows that path on a CPU: the model is a Hugging Face sequence-classification
directory, loaded through `model_dir` like any other, and nothing is shipped or downloaded.

    .venv/bin/python -m bench.tiny_model /tmp/tiny-model     # writes the directory
"""

from __future__ import annotations

import argparse
from pathlib import Path

from serve_app.encoder_layers import LayersConfig, packaged_encoder_dir

DEFAULT_LAYERS_DIR = Path(__file__).resolve().parent.parent / "models" / "default"
SEED = 0


def build_tiny_model(directory: Path) -> Path:
    """Write the tiny classifier (config, weights, tokenizer) to `directory`; return it."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    labels = LayersConfig.read(DEFAULT_LAYERS_DIR).labels
    tokenizer = AutoTokenizer.from_pretrained(packaged_encoder_dir())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
        num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )  # fmt: skip
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(config).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    print(build_tiny_model(parser.parse_args().directory))


if __name__ == "__main__":
    main()
