"""Each CPU backend against torch fp32: speed, answers, accuracy and calibration, one run.

    flock /tmp/sentiment-heavy.lock .venv/bin/python -m bench.backends \\
        [--data ../shared/data] [--model-dir DIR] [--seconds 5] [--out bench/backends.json]

One thread for every backend. For each held-out set of ``training.data`` (the model card's):
macro-recall (SST-2, which has no neutral class: binary accuracy), ECE (SST-2: of P(positive)
against P(negative), as the model card's), the share of labels equal to torch fp32's and the
largest change of any probability. Speed: texts/s at batch 1 and 32 on the load's texts
(bench.raw_model), and at batch 32 on a mix of short and long texts with and without the
length grouping. Also checks the accuracy targets a backend must meet to
ship by default: macro-recall within 0.005 of torch fp32, >= 97% equal labels, ECE <= 0.03.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import torch

from bench.raw_model import BACKENDS, backend_rates
from serve_app.classifier import SentimentClassifier
from training.evaluate import (
    calibration_error,
    headline_score,
    held_out_sets,
    predict_in_batches,
)

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"macro_recall_drop": 0.005, "agreement": 0.97, "ece": 0.03}


def quality(classifier, predictions, reference, gold) -> dict:
    labels = classifier.labels
    predicted = [p.label for p in predictions]
    scores = [p.scores for p in predictions]
    return {
        "macro_recall": round(headline_score(gold, predicted, scores), 4),
        "ece": round(calibration_error(gold, scores, labels), 4),  # as the model card
        "agreement": round(sum(p.label == r.label for p, r in zip(predictions, reference))
                           / len(gold), 4),
        "max_probability_change": round(max(abs(p.scores[k] - r.scores[k])
                                            for p, r in zip(predictions, reference)
                                            for k in labels), 4),
        "n": len(gold),
    }  # fmt: skip


def mixed_texts(sets: dict, count: int = 512) -> list[str]:
    """Short and long texts mixed: three in four held-out texts as they are, one in four six
    of them joined (near the 128-token window)."""
    pool = [t for texts, _ in sets.values() for t in texts]
    return [pool[i % len(pool)] if i % 4 else " ".join(pool[i % len(pool) :][:6])
            for i in range(count)]


def grouping_rates(classifier: SentimentClassifier, texts: list[str], seconds: float) -> dict:
    found = {}
    for grouping in (False, True):
        classifier.length_grouping = grouping
        classifier.predict(texts[:32])
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            batch = [texts[(done + i) % len(texts)] for i in range(32)]
            classifier.predict(batch)
            done += 32
        found["grouped" if grouping else "padded"] = round(done / (time.perf_counter() - start), 1)
    classifier.length_grouping = True
    return found


def unmet_targets(row: dict, torch_row: dict) -> list[str]:
    """The targets a backend misses, per held-out set (empty: it may ship by default)."""
    unmet = []
    for name, q in row["sets"].items():
        if q["agreement"] < TARGETS["agreement"]:
            unmet.append(f"{name}: agreement {q['agreement']}")
        drop = torch_row["sets"][name]["macro_recall"] - q["macro_recall"]
        if drop > TARGETS["macro_recall_drop"]:
            unmet.append(f"{name}: macro-recall {q['macro_recall']}")
        if q["ece"] > TARGETS["ece"]:
            unmet.append(f"{name}: ECE {q['ece']}")
    return unmet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--model-dir", default=None, help="default: the shipped model")
    parser.add_argument("--seconds", type=float, default=5.0, help="per rate")
    parser.add_argument("--limit", type=int, default=None, help="texts per held-out set")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "backends.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread each; ONNX Runtime sessions follow torch
    sets = {name: (examples.texts[: args.limit], examples.labels[: args.limit])
            for name, examples in held_out_sets(args.data).items()}  # fmt: skip
    mixed = mixed_texts(sets)
    rows, reference = {}, {}
    for name, options in BACKENDS.items():
        classifier = SentimentClassifier.load(args.model_dir, device="cpu", **options)
        row = {"model_version": classifier.model_version, "sets": {}}
        for set_name, (texts, gold) in sets.items():
            predictions = predict_in_batches(classifier, texts)
            reference.setdefault(set_name, predictions)  # torch fp32 runs first
            row["sets"][set_name] = quality(classifier, predictions, reference[set_name], gold)
        row["mixed_batch_32"] = grouping_rates(classifier, mixed, args.seconds)
        rows[name] = row
        print(name, json.dumps(row), flush=True)
        del classifier
        gc.collect()
    for name, rates in backend_rates(args.model_dir, args.seconds, [1, 32]).items():
        rows[name].update(rates)
    for name, row in rows.items():
        row["unmet_targets"] = unmet_targets(row, rows["torch"])
        row["speedup_vs_torch"] = {key: round(row[key] / rows["torch"][key], 2)
                                   for key in ("batch_1", "batch_32")}  # fmt: skip
    results = {"threads": 1, "targets": TARGETS, "backends": rows,
               "command": "python -m bench.backends"}  # fmt: skip
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(rows)
    print(f"wrote {args.out}")
    return 0


def print_table(rows: dict) -> None:
    print(f"\n{'backend':<10} {'b1/s':>7} {'b32/s':>7} {'mix pad':>8} {'mix grp':>8}  "
          "set: agreement / max dp / macro-recall / ECE")
    for name, row in rows.items():
        sets = "; ".join(f"{s}: {q['agreement']:.3f}/{q['max_probability_change']:.3f}/"
                         f"{q['macro_recall']:.4f}/{q['ece']:.3f}" for s, q in row["sets"].items())
        mixed = row["mixed_batch_32"]
        print(f"{name:<10} {row['batch_1']:>7} {row['batch_32']:>7} {mixed['padded']:>8} "
              f"{mixed['grouped']:>8}  {sets}")


if __name__ == "__main__":
    raise SystemExit(main())
