"""What a 20,000-character text costs the model, against the batches it shares.

    flock /tmp/sentiment-heavy.lock .venv/bin/python -m bench.long_text [--seconds 20]

A text past the model's window is classified over overlapping windows that are batched like
other texts, so it should cost about its windows' share of a batch of full windows. Prints, for
the default model on this machine's CPU: the text's windows, CPU ms per full batch of 32
one-window texts of the window size, CPU ms for the long text alone, and the ratio of the long
text's cost to `windows / 32` batches (1.0 = exactly its share).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from serve_app.classifier import SentimentClassifier

REVIEW = ("We stayed four nights. The room was small and the street was loud after midnight, "
          "but breakfast was excellent, the staff went out of their way to help, and the "
          "location could not be better for walking to the old town. ")
BATCH = 32


def long_text(chars: int = 20_000) -> str:
    return (REVIEW * (chars // len(REVIEW) + 1))[:chars]


def full_window_texts(classifier: SentimentClassifier, count: int, offset: int) -> list[str]:
    """Texts of exactly one full window each (different words, so none is cached anywhere)."""
    words = long_text(2_000).split()
    texts = []
    for i in range(count):
        text, n = words[(offset + i) % len(words)], offset + i
        while True:
            longer = f"{text} {words[(n := n + 7) % len(words)]}"
            if len(classifier.tokenizer(longer)["input_ids"]) > classifier.max_length:
                break
            text = longer
        texts.append(text)
    return texts


def cpu_seconds(fn, seconds: float) -> float:
    """Median CPU seconds of this process per call: the cost, and far less moved than wall time
    by other processes on a shared machine."""
    fn()  # warm-up
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    args = parser.parse_args(argv)

    classifier = SentimentClassifier.load(device="cpu")
    text = long_text()
    windows = classifier.predict([text])[0].windows
    batch = full_window_texts(classifier, BATCH, 0)
    assert all(p.windows == 1 for p in classifier.predict(batch))
    batch_s = cpu_seconds(lambda: classifier.predict(batch), args.seconds)
    long_s = cpu_seconds(lambda: classifier.predict([text]), args.seconds)
    share_s = windows / BATCH * batch_s
    print(f"model {classifier.model_version}, torch threads {torch.get_num_threads()}, "
          f"window {classifier.max_length} tokens, overlap {classifier.window_overlap}")
    print(f"20,000-character text: {windows} windows")
    print("CPU time (all torch threads) per call, median:")
    print(f"batch of {BATCH} one-window texts: {batch_s * 1000:.0f} ms "
          f"({batch_s / BATCH * 1000:.1f} ms per window)")
    print(f"the long text alone: {long_s * 1000:.0f} ms ({long_s / windows * 1000:.1f} ms per "
          f"window); its windows' share of batches: {share_s * 1000:.0f} ms; "
          f"ratio {long_s / share_s:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
