"""Scoring a model on the default model's held-out sets, or on a labelled file.

    python -m training.evaluate [--model DIR] [--held-out tweeteval semeval ...] [--json FILE]
    python -m training.evaluate --data FILE [--labels FILE] [--model DIR]

Without ``--data`` the model is scored on the held-out rows of ``../shared/data`` (``--data-dir``),
the same rows the model card reports, so any model directory compares on equal terms. ``--data``
alone is a TSV file (``sentence<TAB>label``); with ``--labels`` it is a TweetEval text file and its
labels file. Prints accuracy, macro-F1, macro-recall and recall per label, the calibration error,
and for two-label data the binary accuracy of P(positive) against P(negative).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def macro_scores(gold: list[str], predicted: list[str],
                 labels: list[str] | None = None) -> dict[str, float]:
    """Accuracy, macro-F1 and macro-recall over the labels present in ``gold``."""
    labels = labels or sorted(set(gold))
    recalls, f1s = [], []
    for label in labels:
        tp = sum(g == label and p == label for g, p in zip(gold, predicted))
        gold_n = sum(g == label for g in gold)
        pred_n = sum(p == label for p in predicted)
        recall = tp / gold_n if gold_n else 0.0
        precision = tp / pred_n if pred_n else 0.0
        recalls.append(recall)
        f1s.append(2 * precision * recall / (precision + recall) if tp else 0.0)
    correct = sum(g == p for g, p in zip(gold, predicted))
    return {
        "accuracy": correct / len(gold),
        "macro_f1": sum(f1s) / len(f1s),
        "macro_recall": sum(recalls) / len(recalls),
        **{f"recall_{label}": recall for label, recall in zip(labels, recalls)},
    }


def binary_accuracy(gold: list[str], scores: list[dict[str, float]]) -> float:
    """Accuracy on negative/positive data, ignoring the neutral probability."""
    right = sum((s["positive"] > s["negative"]) == (g == "positive") for g, s in zip(gold, scores))
    return right / len(gold)


def is_two_label(gold: list[str]) -> bool:
    """Negative/positive data (SST-2): judged by binary accuracy, not macro-recall."""
    return set(gold) <= {"negative", "positive"}


def headline_score(gold: list[str], predicted: list[str],
                   scores: list[dict[str, float]]) -> float:
    """The figure a held-out set is judged by: macro-recall; on two-label data the binary
    accuracy of P(positive) against P(negative)."""
    if is_two_label(gold):
        return binary_accuracy(gold, scores)
    return macro_scores(gold, predicted)["macro_recall"]


def binary_calibration_inputs(gold: list[str], scores: list[dict[str, float]]):
    """P(negative), P(positive) renormalised, and the gold index (1: positive), for ECE on
    two-label data, which says nothing about P(neutral)."""
    pairs = torch.tensor([[s["negative"], s["positive"]] for s in scores])
    return pairs / pairs.sum(-1, keepdim=True), torch.tensor([g == "positive" for g in gold]).long()


def expected_calibration_error(probabilities: torch.Tensor, gold: torch.Tensor,
                               bins: int = 15) -> float:
    """ECE of the top-label confidence, equal-width bins."""
    confidence, predicted = probabilities.max(dim=-1)
    correct = (predicted == gold).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            gap = (confidence[in_bin].mean() - correct[in_bin].mean()).abs()
            ece += gap * in_bin.float().mean()
    return float(ece)


def calibration_error(gold: list[str], scores: list[dict[str, float]],
                      labels: list[str]) -> float:
    """ECE of the model's probabilities; on two-label data (for a model with both labels) that
    of P(positive) against P(negative), since such data says nothing about P(neutral)."""
    if is_two_label(gold) and {"negative", "positive"} <= set(labels):
        return expected_calibration_error(*binary_calibration_inputs(gold, scores))
    probs = torch.tensor([[s[label] for label in labels] for s in scores])
    return expected_calibration_error(probs, torch.tensor([labels.index(g) for g in gold]))


def predict_in_batches(classifier, texts: list[str], batch_size: int = 64) -> list:
    return [p for start in range(0, len(texts), batch_size)
            for p in classifier.predict(texts[start : start + batch_size])]  # fmt: skip


def evaluate(classifier, texts: list[str], gold: list[str], batch_size: int = 64) -> dict:
    predictions = predict_in_batches(classifier, texts, batch_size)
    report = macro_scores(gold, [p.label for p in predictions])
    scores = [p.scores for p in predictions]
    if is_two_label(gold) and {"negative", "positive"} <= set(classifier.labels):
        report["binary_accuracy"] = binary_accuracy(gold, scores)
    if set(gold) <= set(classifier.labels):
        report["ece"] = calibration_error(gold, scores, list(classifier.labels))
    report["n"] = len(gold)
    return report


def held_out_sets(data_dir: Path) -> dict:
    """The held-out rows of the shared data, by set name (the split is fixed and seeded)."""
    from training.data import split_shared_data

    return split_shared_data(data_dir).tests


def main(argv: list[str] | None = None) -> int:
    from serve_app.classifier import SentimentClassifier
    from training.data import read_labelled

    parser = argparse.ArgumentParser(prog="python -m training.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model directory (default: the default)")
    parser.add_argument("--data", type=Path, help="TSV file, or TweetEval texts (default: the "
                                                  "held-out sets)")
    parser.add_argument("--labels", type=Path, help="TweetEval labels file for --data")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"),
                        help="the shared data the held-out sets come from")
    parser.add_argument("--held-out", nargs="+", metavar="SET",
                        help="held-out sets to score: tweeteval, semeval, sst2_sentences, "
                             "airline (default: all)")
    parser.add_argument("--json", type=Path, help="also write the reports to this file")
    args = parser.parse_args(argv)

    if args.data is not None:
        examples = read_labelled(args.data, args.labels)
        sets = {args.data.name: examples}
    else:
        if not args.data_dir.is_dir():
            parser.error(f"--data-dir {args.data_dir} is not a directory")
        sets = held_out_sets(args.data_dir)
        unknown = set(args.held_out or []) - set(sets)
        if unknown:
            parser.error(f"no held-out set {', '.join(sorted(unknown))}; there are "
                         f"{', '.join(sets)}")
        sets = {name: ex for name, ex in sets.items() if name in (args.held_out or sets)}
    classifier = SentimentClassifier.load(args.model)
    print(f"model            {classifier.model_version}")
    reports = {}
    for name, examples in sets.items():
        reports[name] = evaluate(classifier, examples.texts, examples.labels)
        print(f"\n{name}")
        for key, value in reports[name].items():
            print(f"  {key:<16} {value:.4f}" if isinstance(value, float) else f"  {key:<16} {value}")
    if args.json:
        args.json.write_text(json.dumps({"model_version": classifier.model_version,
                                         "held_out": reports}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
