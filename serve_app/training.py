"""Training the default model's layers on top of the packaged MiniLM encoder.

    python -m serve_app.training --data ../shared/data --out models/default

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
import math
import random
import sys
import time
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer
from transformers.masking_utils import create_bidirectional_mask

from serve_app import encoder_layers as layers
from serve_app.classifier import SentimentClassifier
from serve_app.evaluate import evaluate, expected_calibration_error
from serve_app.training_data import BINARY_SOURCES, LABELS, split_shared_data

LINEAR_NAMES = ("attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense", "intermediate.dense", "output.dense")


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update B @ A (B starts at zero)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * ((x @ self.A.T) @ self.B.T)


def low_rank_factors(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``left @ right``: the best rank-``rank`` approximation of ``delta`` (truncated SVD)."""
    u, sv, vh = torch.linalg.svd(delta, full_matrices=False)
    return u[:, :rank] * sv[:rank], vh[:rank]


class TopModel(nn.Module):
    """Encoder layers ``first..`` with LoRA (or all trainable, with ``full_rank_export``),
    mean pooling and the classification head."""

    def __init__(self, encoder, first: int, rank: int, alpha: float, hidden: int,
                 full_rank_export: int = 0):
        super().__init__()
        self.config = encoder.config
        self.first = first
        self.alpha = alpha
        self.layers = nn.ModuleList(encoder.encoder.layer[first:])
        self.full_rank_export = full_rank_export
        # Full fine-tuning: every parameter of the top layers trains; the export compares
        # them with these originals.
        self.original = ({k: v.detach().clone() for k, v in self.layers.state_dict().items()}
                         if self.full else {})
        for p in self.layers.parameters():
            p.requires_grad_(self.full)
        self.lora: dict[str, LoRALinear] = {}
        for offset, layer in enumerate([] if self.full else self.layers):
            for name in LINEAR_NAMES:
                parent_name, _, attr = name.rpartition(".")
                parent = layer.get_submodule(parent_name)
                wrapped = LoRALinear(getattr(parent, attr), rank, alpha)
                setattr(parent, attr, wrapped)
                self.lora[f"encoder.layer.{first + offset}.{name}"] = wrapped
            for module in layer.modules():
                if isinstance(module, nn.LayerNorm):
                    module.requires_grad_(True)
        self.head = layers.ClassificationHead(self.config.hidden_size, len(LABELS), hidden)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attention = create_bidirectional_mask(config=self.config, inputs_embeds=hidden,
                                              attention_mask=mask)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=attention)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return self.head(layers.pool(hidden, mask, "mean"))

    @property
    def full(self) -> bool:
        return self.full_rank_export > 0

    def export(self) -> dict[str, torch.Tensor]:
        return self._export_full() if self.full else self._export_lora()

    @torch.no_grad()
    def project_to_export_rank(self) -> None:
        """Replace each linear weight change by its rank-R truncation: what the export keeps
        (a full fine-tuning change is far from low rank; truncated, it shifts logits by ~3)."""
        for key, value in self.layers.state_dict(keep_vars=True).items():
            delta = value - self.original[key]
            if value.dim() == 2 and delta.abs().max() > 0:
                left, right = low_rank_factors(delta, self.full_rank_export)
                value.copy_(self.original[key] + left @ right)

    def _export_full(self) -> dict[str, torch.Tensor]:
        """Weight changes as rank-R factors (alpha / R * B @ A), the rest outright."""
        tensors = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        rank = self.full_rank_export
        scale = self.alpha / rank
        for key, value in self.layers.state_dict().items():
            offset, _, param = key.partition(".")
            name = f"encoder.layer.{self.first + int(offset)}.{param}"
            delta = value - self.original[key]
            if not delta.abs().max() > 0:
                continue
            module, _, kind = name.rpartition(".")
            if kind == "weight" and delta.dim() == 2:
                left, right = low_rank_factors(delta, rank)
                tensors[f"lora.{module}.A"] = right
                tensors[f"lora.{module}.B"] = left / scale
            else:  # biases and LayerNorms: small, stored as they are
                tensors[f"encoder.{name}"] = value
        return {k: v.detach().clone().contiguous() for k, v in tensors.items()}

    def _export_lora(self) -> dict[str, torch.Tensor]:
        tensors = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        for name, module in self.lora.items():
            tensors[f"lora.{name}.A"] = module.A
            tensors[f"lora.{name}.B"] = module.B
        for offset, layer in enumerate(self.layers):
            for name, module in layer.named_modules():
                if isinstance(module, nn.LayerNorm):
                    prefix = f"encoder.encoder.layer.{self.first + offset}.{name}"
                    tensors[f"{prefix}.weight"] = module.weight
                    tensors[f"{prefix}.bias"] = module.bias
        return {k: v.detach().clone() for k, v in tensors.items()}


def mixed_loss(logits: torch.Tensor, targets: torch.Tensor, binary: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy: over all labels for three-way data, and over negative vs
    positive only for binary data, so SST-2 never teaches that review prose is not neutral."""
    three = nn.functional.cross_entropy(logits, targets, label_smoothing=0.05, reduction="none")
    pos_neg = logits[:, [LABELS.index("negative"), LABELS.index("positive")]]
    two = nn.functional.cross_entropy(pos_neg, (targets == LABELS.index("positive")).long(),
                                      label_smoothing=0.05, reduction="none")
    return torch.where(binary, two, three)


def example_weights(sources: list[str], labels: list[str], power: float) -> torch.Tensor:
    """Balance the classes within each data set: each has its own label prior (airline tweets
    are mostly complaints, TweetEval mostly neutral or positive), which the model should not
    learn as a property of the writing style. ``power`` 0 leaves the data as it is."""
    counts: dict[tuple[str, str], int] = {}
    for key in zip(sources, labels):
        counts[key] = counts.get(key, 0) + 1
    per_source = {s: sum(n for (src, _), n in counts.items() if src == s) for s in set(sources)}
    classes = {s: sum(1 for src, _ in counts if src == s) for s in set(sources)}
    weights = torch.tensor([(per_source[s] / (classes[s] * counts[(s, y)])) ** power
                            for s, y in zip(sources, labels)])
    return weights / weights.mean()


def load_encoder():
    encoder_dir = layers.packaged_encoder_dir()
    bad = layers.mismatched_files(encoder_dir, layers.ENCODER_SHA256)
    if bad:
        raise SystemExit(f"encoder files do not match their sha256: {', '.join(bad)}")
    encoder = AutoModel.from_pretrained(encoder_dir, dtype=torch.float32)
    return encoder.eval(), AutoTokenizer.from_pretrained(encoder_dir)


def length_batches(lengths: list[int], batch_size: int,
                   rng: random.Random | None) -> list[list[int]]:
    """Batches of similar length (little padding); shuffled order when ``rng`` is given."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    if rng is not None:  # shuffle within coarse length buckets, then the batches themselves
        bucket = batch_size * 50
        order = [i for s in range(0, len(order), bucket)
                 for i in rng.sample(order[s : s + bucket], len(order[s : s + bucket]))]
        order.sort(key=lambda i: lengths[i] // 8)
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


@torch.inference_mode()
def frozen_states(encoder, ids: list[list[int]], frozen: int, batch_size: int = 64):
    """Per example, the (length, width) output of the first ``frozen`` layers, in fp16."""
    states: list[torch.Tensor | None] = [None] * len(ids)
    for batch in length_batches([len(x) for x in ids], batch_size, None):
        input_ids, mask = pad([torch.tensor(ids[i]) for i in batch])
        hidden = encoder.embeddings(input_ids=input_ids)
        attention = create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden,
                                              attention_mask=mask)
        for layer in encoder.encoder.layer[:frozen]:
            hidden = layer(hidden, attention_mask=attention)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        for row, i in enumerate(batch):
            states[i] = hidden[row, : len(ids[i])].to(torch.float16).clone()
    return states


def pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(r.shape[0] for r in rows)
    out = torch.zeros((len(rows), longest) + tuple(rows[0].shape[1:]), dtype=rows[0].dtype)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = 1
    return out, mask


def logits_for(model: TopModel, states, batch_size: int = 128) -> torch.Tensor:
    model.eval()
    out = torch.zeros(len(states), len(LABELS))
    with torch.inference_mode():
        for batch in length_batches([s.shape[0] for s in states], batch_size, None):
            hidden, mask = pad([states[i] for i in batch])
            out[batch] = model(hidden.float(), mask)
    return out


def fit_temperature(logits: torch.Tensor, gold: torch.Tensor) -> float:
    """The temperature minimising validation NLL (Guo et al., 2017)."""
    log_t = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), gold)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(log_t.detach().exp())


def train_step(model: TopModel, optimiser, states: list[torch.Tensor], targets: torch.Tensor,
               weights: torch.Tensor, binary: torch.Tensor) -> float:
    """One optimiser step on one batch; returns the batch's weighted loss."""
    hidden, mask = pad(states)
    losses = mixed_loss(model(hidden.float(), mask), targets, binary)
    loss = (losses * weights).sum() / weights.sum()
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return loss.item()


def fit(model: TopModel, args, train_states, y_train: torch.Tensor, weights: torch.Tensor,
        binary: torch.Tensor, validation_accuracy, rng: random.Random, started: float) -> None:
    """The training loop: AdamW with a one-cycle schedule over length-bucketed batches; with
    ``--ema-decay``, the model ends holding the moving average of its weights."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.01)
    log(started, f"{sum(p.numel() for p in trainable):,} trainable parameters")
    batches_per_epoch = math.ceil(len(train_states) / args.batch_size)
    total = batches_per_epoch * args.epochs
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=total,
                                                   pct_start=0.1, anneal_strategy="linear")
    lengths = [s.shape[0] for s in train_states]
    ema = [p.detach().clone() for p in trainable] if args.ema_decay else None
    for epoch in range(args.epochs):
        model.train()
        running = 0.0
        for step, batch in enumerate(length_batches(lengths, args.batch_size, rng), 1):
            loss = train_step(model, optimiser, [train_states[i] for i in batch],
                              y_train[batch], weights[batch], binary[batch])
            schedule.step()
            if ema is not None:
                with torch.no_grad():
                    for average, param in zip(ema, trainable):
                        average.lerp_(param, 1 - args.ema_decay)
            running += loss
            if step % 100 == 0:
                log(started, f"epoch {epoch + 1} step {step}/{batches_per_epoch} "
                             f"loss {running / 100:.4f}")
                running = 0.0
        log(started, f"epoch {epoch + 1} done: validation accuracy {validation_accuracy():.4f}")

    if ema is not None:  # the average, not the last step, is what gets calibrated and shipped
        with torch.no_grad():
            for param, average in zip(trainable, ema):
                param.copy_(average)


def recover(model: TopModel, args, train_states, y_train: torch.Tensor, weights: torch.Tensor,
            binary: torch.Tensor, rng: random.Random, started: float) -> None:
    """Train on in the space the export can store: after every step, each weight change is
    projected back to rank R (projected gradient descent), so the written layers are the
    network that was trained, not a truncation of it."""
    model.project_to_export_rank()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=args.recovery_lr, weight_decay=0.01)
    lengths = [s.shape[0] for s in train_states]
    batches = length_batches(lengths, args.batch_size, rng)[: args.recovery_steps]
    model.train()
    running = 0.0
    for step, batch in enumerate(batches, 1):
        loss = train_step(model, optimiser, [train_states[i] for i in batch],
                          y_train[batch], weights[batch], binary[batch])
        model.project_to_export_rank()
        running += loss
        if step % 100 == 0:
            log(started, f"rank-{model.full_rank_export} recovery step {step}/{len(batches)} "
                         f"loss {running / 100:.4f}")
            running = 0.0


def mean_state(paths: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of saved weights ("model soup", Wortsman et al., 2022): runs that
    start from the same weights and differ in their schedule average into one model."""
    states = [torch.load(path, map_location="cpu", weights_only=True) for path in paths]
    if any(state.keys() != states[0].keys() for state in states):
        raise SystemExit("--average-states: the saved weights are not of the same model")
    return {key: sum(state[key] for state in states) / len(states) for key in states[0]}


def train(args) -> None:
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
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
                     full_rank_export=args.full_rank_export)
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
        training={"command": " ".join(["python -m serve_app.training"] + sys.argv[1:]),
                  "seed": args.seed, "frozen_layers": args.frozen_layers,
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


def log(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:7.1f}s] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("models/default"))
    parser.add_argument("--name", default="minilm-sentiment-3c")
    parser.add_argument("--seed", type=int, default=13)
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
