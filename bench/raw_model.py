"""Raw batched model rate on the benchmark's own texts: no HTTP, no Ray, no database.

Run as a subprocess by run_bench.py (so torch's threads and memory leave with it):

    .venv/bin/python -m bench.raw_model --seconds 5 --batch-sizes 1 32 [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import time

from bench.loadgen import new_tag, text_for
from serve_app.classifier import SentimentClassifier


def measure(classifier: SentimentClassifier, batch_size: int, seconds: float) -> dict:
    # The load's texts, tag included: a shorter text would make the model look faster.
    tag = new_tag()
    offset = 0
    for _ in range(3):  # warm-up: allocator, kernels, tokenizer caches
        classifier.predict([text_for(offset + i, tag) for i in range(batch_size)])
        offset += batch_size
    batches = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        classifier.predict([text_for(offset + i, tag) for i in range(batch_size)])
        offset += batch_size
        batches += 1
    elapsed = time.perf_counter() - start
    return {"batch_size": batch_size, "sentences_per_s": round(batches * batch_size / elapsed, 1),
            "ms_per_batch": round(elapsed / batches * 1000, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--model-dir", default=None, help="default: the shipped model")
    args = parser.parse_args()
    import torch

    classifier = SentimentClassifier.load(args.model_dir)
    rates = [measure(classifier, size, args.seconds) for size in args.batch_sizes]
    print(json.dumps({"torch_threads": torch.get_num_threads(), "rates": rates}))


if __name__ == "__main__":
    main()
