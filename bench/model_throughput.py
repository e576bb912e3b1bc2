"""Raw model throughput: sentences per second at batch 1 and batch 32, no server involved.

    flock /tmp/sentiment-heavy.lock .venv/bin/python bench/model_throughput.py [--model DIR]
        [--device cpu|cuda] [--seconds 20] [--batch-sizes 1 32]

Texts are tweet- and review-length sentences (median ~20 tokens), cycled so every batch
holds different texts. Prints one line per batch size: sentences/s and latency per batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from serve_app.classifier import SentimentClassifier  # noqa: E402

SENTENCES = [
    "I absolutely love this phone, the battery lasts for days!",
    "Worst customer service ever. Two hours on hold and nobody answered.",
    "The meeting has been moved to Thursday at 10am.",
    "not sure how I feel about the new update tbh",
    "@united thanks for getting me home on time, great crew on flight 1123",
    "This film is a gorgeous, patient meditation on grief, and it earns every tear.",
    "The plot is thin, the jokes are stale and the whole thing drags on for two hours.",
    "Just landed in Chicago. Heading to the hotel now.",
    "Can't believe they cancelled the show after one season, so disappointed :(",
    "New study finds that coffee drinkers live slightly longer, researchers say.",
    "Honestly the best pizza I've had in years, we'll be back next week!",
    "My package was supposed to arrive yesterday and still nothing. Again.",
    "The store opens at nine on Sundays.",
    "A decent, if forgettable, thriller with one or two genuinely tense scenes.",
    "Watching the game tonight with friends, should be fun",
    "Why does every app need my location now? Ridiculous.",
]


def texts_for(batch_size: int, offset: int) -> list[str]:
    return [SENTENCES[(offset + i) % len(SENTENCES)] for i in range(batch_size)]


def measure(classifier: SentimentClassifier, batch_size: int, seconds: float) -> dict:
    for i in range(3):  # warm-up: allocator, kernels, tokenizer caches
        classifier.predict(texts_for(batch_size, i))
    latencies = []
    offset = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        classifier.predict(texts_for(batch_size, offset))
        latencies.append(time.perf_counter() - t0)
        offset += batch_size
    elapsed = time.perf_counter() - start
    return {
        "sentences_per_s": len(latencies) * batch_size / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": statistics.quantiles(latencies, n=20)[-1] * 1000 if len(latencies) > 1 else 0,
        "batches": len(latencies),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model directory (default: the default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=20.0, help="per batch size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args(argv)

    classifier = SentimentClassifier.load(args.model, device=args.device)
    print(f"model {classifier.model_version}  device {args.device}  "
          f"torch threads {torch.get_num_threads()}")
    for batch_size in args.batch_sizes:
        r = measure(classifier, batch_size, args.seconds)
        print(f"batch {batch_size:>3}: {r['sentences_per_s']:8.1f} sentences/s  "
              f"p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms per batch  "
              f"({r['batches']} batches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
