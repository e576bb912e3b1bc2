"""Raw batched model rate on the benchmark's own texts: no HTTP, no Ray, no database.

Run as a subprocess by run_bench.py (so the threads and memory leave with it):

    .venv/bin/python -m bench.raw_model --seconds 5 --batch-sizes 1 32 [--model-dir DIR]

Prints one JSON line:
  rates                 the backend the service runs by default (ONNX Runtime on a CPU), with
                        as many threads as this process may use: what the service's ratios
                        compare against;
  backends              texts/s at batch 1 and 32 of each backend (torch fp32, onnx, onnx-int8),
                        one thread each, in this same run;
  cpu_speedup_vs_torch  the default CPU backend's rate over torch fp32's, one thread each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench.loadgen import new_tag, text_for
from serve_app.classifier import SentimentClassifier

# (name, load options) of every CPU backend, compared side by side.
BACKENDS = {"torch": {"backend": "torch"}, "onnx": {"backend": "onnx", "int8": False},
            "onnx-int8": {"backend": "onnx", "int8": True}}  # fmt: skip


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


def backend_rates(model_dir: str | None, seconds: float, batch_sizes: list[int],
                  rounds: int = 3) -> dict:
    """Texts/s per backend and batch size, one thread each (call with torch at one thread).
    The backends take turns, `rounds` times, and each keeps its median: a shared machine's
    load then weighs on all of them alike."""
    classifiers = {name: SentimentClassifier.load(model_dir, device="cpu", **options)
                   for name, options in BACKENDS.items()}  # fmt: skip
    seen: dict = {name: {size: [] for size in batch_sizes} for name in classifiers}
    for _ in range(rounds):
        for size in batch_sizes:
            for name, classifier in classifiers.items():
                rate = measure(classifier, size, seconds / rounds)["sentences_per_s"]
                seen[name][size].append(rate)
    return {name: {f"batch_{size}": statistics.median(rates) for size, rates in by_size.items()}
            for name, by_size in seen.items()}  # fmt: skip


def speedup(backends: dict, shipped: str) -> dict:
    return {key: round(rate / backends["torch"][key], 2) if backends["torch"][key] else None
            for key, rate in backends[shipped].items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--model-dir", default=None, help="default: the shipped model")
    parser.add_argument("--skip-backends", action="store_true",
                        help="only the default backend's rates")
    args = parser.parse_args()
    import torch

    classifier = SentimentClassifier.load(args.model_dir)
    found = {"torch_threads": torch.get_num_threads(), "backend": classifier.backend,
             "model_version": classifier.model_version,
             "rates": [measure(classifier, size, args.seconds) for size in args.batch_sizes]}
    del classifier
    if not args.skip_backends:
        torch.set_num_threads(1)  # ONNX Runtime sessions follow torch's thread count
        found["backends"] = backend_rates(args.model_dir, args.seconds, args.batch_sizes)
        found["cpu_speedup_vs_torch"] = speedup(found["backends"], found["backend"])
    print(json.dumps(found))


if __name__ == "__main__":
    main()
