"""Training the default model's layers on top of the packaged MiniLM encoder.

    python -m training --data ../shared/data --out models/default

The bottom ``--frozen-layers`` encoder layers stay frozen: their outputs are computed once
and cached, so each epoch only runs the top layers. Those get LoRA adapters on every linear
layer (plus trainable LayerNorms), and a classification head reads the mean-pooled output.
``--frozen-layers 6`` trains the head alone on frozen sentence embeddings. With
``--full-rank-export R`` the top layers are fine-tuned in full instead (LoRA off), and each
linear layer's weight change is stored as its best rank-R approximation (truncated SVD) in
the same LoRA format (fp16, or int8 with ``--int8-factors``: twice the rank in the same
bytes), with the changed biases and LayerNorms stored outright. Runs saved with
``--save-state`` can be averaged (``--average-states``) instead of training, and
``--recovery-steps`` trains on with every weight change held at rank R, so that the rank-R
export is the trained network rather than a truncation of it. A temperature is
then fitted on the validation split, and the result is written in the format
``serve_app.encoder_layers`` defines. Seeded: the same command gives the same weights.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

from serve_app import encoder_layers as layers
from serve_app.classifier import SentimentClassifier
from training.data import BINARY_SOURCES, LABELS, split_shared_data
from training.evaluate import evaluate, expected_calibration_error
from training.loop import (
    example_weights,
    fit,
    fit_temperature,
    frozen_states,
    load_encoder,
    log,
    logits_for,
    mean_state,
    recover,
)
from training.model import TopModel


def train(args) -> None:
    # The split always follows --seed; --train-seed varies only the initialisation and batch
    # order, so runs with different training seeds share their held-out rows and can be averaged.
    train_seed = args.seed if args.train_seed is None else args.train_seed
    random.seed(train_seed)
    torch.manual_seed(train_seed)
    rng = random.Random(train_seed)
    started = time.monotonic()
    split = split_shared_data(args.data, seed=args.seed, sst_phrases=args.sst_phrases,
                              airline_train=args.airline_train, tweet_repeats=args.tweet_repeats,
                              sst_sentences=args.sst_sentences, sst_min_words=args.sst_min_words,
                              sst_sentence_repeats=args.sst_sentence_repeats)
    encoder, tokenizer = load_encoder()

    def tokenize(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]

    label_ids = lambda labels: torch.tensor([LABELS.index(x) for x in labels])  # noqa: E731
    needs_training_data = not args.average_states or args.recovery_steps
    train_states = (frozen_states(encoder, tokenize(split.train.texts), args.frozen_layers)
                    if needs_training_data else [])
    val_states = frozen_states(encoder, tokenize(split.validation.texts), args.frozen_layers)
    y_train, y_val = label_ids(split.train.labels), label_ids(split.validation.labels)
    log(started, f"cached frozen states: {len(train_states)} train, {len(val_states)} validation")

    model = TopModel(encoder, args.frozen_layers, args.rank, args.alpha, args.head_hidden,
                     full_rank_export=args.full_rank_export).to_device(args.device)
    binary_sources = BINARY_SOURCES if args.binary_sst else set()
    # Calibrate where all three labels exist; binary data says nothing about P(neutral).
    three_way = torch.tensor([s not in binary_sources for s in split.validation_sources])
    weights = example_weights(split.train_sources, split.train.labels, args.class_weight_power)
    binary = torch.tensor([s in binary_sources for s in split.train_sources])
    if args.average_states:
        model.load_state_dict(mean_state(args.average_states))
        log(started, f"loaded the mean of {len(args.average_states)} saved weights")
    else:
        fit(model, args, train_states, y_train, weights, binary,
            lambda: (logits_for(model, val_states).argmax(-1) == y_val).float().mean(), rng,
            started)
    if args.save_state:  # full precision, for averaging runs (--average-states)
        torch.save(model.state_dict(), args.save_state)
    if args.recovery_steps:
        recover(model, args, train_states, y_train, weights, binary, rng, started)
    val_logits = logits_for(model, val_states)
    if args.ema_decay or args.average_states or args.recovery_steps:
        accuracy = (val_logits.argmax(-1) == y_val).float().mean()
        log(started, f"final weights: validation accuracy {accuracy:.4f}")
    val_logits, y_val = val_logits[three_way], y_val[three_way]
    temperature = fit_temperature(val_logits, y_val)
    ece = {f"validation_ece_t{t}":
           expected_calibration_error(torch.softmax(val_logits / temp, -1), y_val)
           for t, temp in (("1", 1.0), ("fitted", temperature))}
    log(started, f"temperature {temperature:.3f}; {ece}")
    # The runs' own commands, with --save-state, made the averaged files.
    averaged = {"averaged_states": [p.name for p in args.average_states or []]}
    config = layers.LayersConfig(
        name=args.name, labels=list(LABELS), pooling="mean", lora_alpha=args.alpha,
        temperature=temperature,
        training={"command": " ".join(["python -m training"] + sys.argv[1:]),
                  "seed": args.seed, "train_seed": train_seed, "frozen_layers": args.frozen_layers,
                  "rank": args.full_rank_export or args.rank,
                  "factor_dtype": "int8" if args.int8_factors else "fp16",
                  "method": "full fine-tuning, SVD export" if model.full else "LoRA",
                  "epochs": None if args.average_states else args.epochs,
                  "train_examples": len(split.train),
                  "seconds": round(time.monotonic() - started), **averaged, **ece},
    )
    layers.write_tensors(args.out, model.export(), int8_factors=args.int8_factors)
    config.write(args.out)
    log(started, f"wrote {args.out}")
    # Held-out figures come from the written files through the serving code path.
    classifier = SentimentClassifier.load(args.out)
    # Validation figures per data set are what runs are compared and chosen by.
    for kind, sets in (("validation", split.validation_by_source()), ("heldout", split.tests)):
        config.training[kind] = {name: evaluate(classifier, ex.texts, ex.labels)
                                 for name, ex in sets.items()}
        for name, report in config.training[kind].items():
            log(started, f"{kind} {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in report.items()))
    config.write(args.out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("models/default"))
    parser.add_argument("--name", default="minilm-sentiment-3c")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--train-seed", type=int, default=None,
                        help="seed of initialisation and batch order (default: --seed)")
    parser.add_argument("--device", default="cpu", help="where to train: cpu, cuda, cuda:1, ...")
    parser.add_argument("--frozen-layers", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--full-rank-export", type=int, default=0, metavar="R",
                        help="fine-tune the top layers in full; store rank-R weight changes")
    parser.add_argument("--head-hidden", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--sst-phrases", type=int, default=6000)
    parser.add_argument("--airline-train", type=int, default=6000)
    parser.add_argument("--tweet-repeats", type=int, default=1)
    parser.add_argument("--sst-sentences", type=int, default=None, help="default: all")
    parser.add_argument("--sst-min-words", type=int, default=3,
                        help="shortest SST-2 phrase trained on, in words")
    parser.add_argument("--sst-sentence-repeats", type=int, default=1,
                        help="times each SST-2 training sentence is seen per epoch")
    parser.add_argument("--ema-decay", type=float, default=0.0,
                        help="export an exponential moving average of the weights (0: off)")
    parser.add_argument("--save-state", type=Path, default=None, metavar="FILE",
                        help="also save the trained weights in full precision (torch.save)")
    parser.add_argument("--average-states", type=Path, nargs="+", default=None, metavar="FILE",
                        help="instead of training, calibrate and export the mean of weights "
                             "saved by --save-state (runs of the same model)")
    parser.add_argument("--recovery-steps", type=int, default=0, metavar="N",
                        help="with --full-rank-export: N more steps with every weight change "
                             "kept at rank R, so the export loses nothing")
    parser.add_argument("--recovery-lr", type=float, default=1e-5)
    parser.add_argument("--int8-factors", action="store_true",
                        help="store the rank-R factors in int8 (half the size of fp16)")
    parser.add_argument("--binary-sst", action=argparse.BooleanOptionalAction, default=True,
                        help="SST-2 trained negative-vs-positive only (no neutral in its labels)")
    parser.add_argument("--class-weight-power", type=float, default=0.5,
                        help="per data set class weights (1/frequency)**power; 1 balances them")
    args = parser.parse_args(argv)
    if args.recovery_steps and not args.full_rank_export:
        parser.error("--recovery-steps needs --full-rank-export (LoRA factors are exact)")
    if args.epochs < 1 and not args.average_states:
        parser.error("--epochs must be at least 1")
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
