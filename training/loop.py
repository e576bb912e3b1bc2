"""The training loop and its pieces: the loss, class weights, length-bucketed batches over
cached frozen-layer outputs, the temperature fit, rank-R recovery and averaging saved runs.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer
from transformers.masking_utils import create_bidirectional_mask

from serve_app import encoder_layers as layers
from training.data import LABELS
from training.model import TopModel


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
    device = model.device
    out = torch.zeros(len(states), len(LABELS))
    with torch.inference_mode():
        for batch in length_batches([s.shape[0] for s in states], batch_size, None):
            hidden, mask = pad([states[i] for i in batch])
            out[batch] = model(hidden.to(device).float(), mask.to(device)).cpu()
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
    device = model.device
    hidden, mask = pad(states)
    logits = model(hidden.to(device).float(), mask.to(device))
    losses = mixed_loss(logits, targets.to(device), binary.to(device))
    weights = weights.to(device)
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


def log(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:7.1f}s] {message}", flush=True)
