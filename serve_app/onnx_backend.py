"""ONNX Runtime as the classifier's CPU backend: export, fusion, int8, a cache, the session.

The graph is exported from the loaded torch network, so the project's default model and any
Hugging Face classifier directory take the same road. Exporting costs seconds, so the
finished graph is cached on disk under a key of the model version and every tool version
that shapes it; a restart loads it directly. Before a graph is cached it must answer a probe
batch like torch does (fp32: probabilities within ``FP32_TOLERANCE``), or it is refused.

int8 (serve_app.onnx_int8) turns the matrix products into integer ones: weights with one
scale per output channel, activations with one scale per token, so that a text's answer does
not depend on the batch it joins (docs/backends.md has the measurements).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from serve_app import onnx_int8

logger = logging.getLogger(__name__)

# Probabilities of the exported fp32 graph and of torch may differ by float rounding only.
FP32_TOLERANCE = 1e-4
# Bump when the export recipe changes: cached graphs of the old recipe are then ignored.
RECIPE = "3"
OPSET = 17
# Model types whose exported graph ONNX Runtime's BERT fusions understand.
FUSABLE_MODEL_TYPES = {"bert", "roberta", "xlm-roberta", "distilbert"}


def cache_dir() -> Path:
    """``ONNX_CACHE_DIR``, else the user's cache directory (``XDG_CACHE_HOME``); where that
    cannot be written (a read-only home in a container), the temporary directory."""
    explicit = os.environ.get("ONNX_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    preferred = Path(base) / "sentiment-serve" / "onnx"
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / "sentiment-serve-onnx"


def session_threads() -> int:
    """As many intra-op threads as torch may use: the replica's CPUs (see classifier)."""
    return max(1, torch.get_num_threads())


class OnnxLogits:
    """A batch of token tensors -> logits, through an ONNX Runtime session on the CPU."""

    def __init__(self, path: Path, input_names: Sequence[str]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = session_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads that spin take CPU from the replica's neighbours on a small machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        missing = set(self.input_names) - set(input_names)
        if missing:
            raise ValueError(f"{path}: graph needs inputs {sorted(missing)} the tokenizer lacks")
        self.path = path

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feeds = {name: batch[name].numpy().astype(np.int64, copy=False)
                 for name in self.input_names}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def load_logits(network: torch.nn.Module, *, input_names: Sequence[str], probe: dict,
                model_version: str, model_type: str | None, int8: bool) -> OnnxLogits:
    """An ONNX Runtime session for ``network``: from the cache, or exported now and cached.

    ``probe`` is a padded batch (torch tensors) that checks the exported graph against torch.
    """
    import onnxruntime as ort

    weight_bits = (7 if onnx_int8.reduce_range() else 8) if int8 else None
    key = _short_hash(model_version, RECIPE, torch.__version__, ort.__version__,
                      ",".join(input_names),
                      f"int8:{onnx_int8.KEEP_FP32}:{weight_bits}" if int8 else "fp32")
    name = model_version.replace("/", "_").replace("@", "-")
    target = cache_dir() / f"{name}-{'int8' if int8 else 'fp32'}-{key}.onnx"
    if target.is_file():
        return OnnxLogits(target, input_names)
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as scratch:
        work = Path(scratch)
        graph = export(network, input_names, probe, work / "model.onnx")
        if int8:  # from the plain graph, whose MatMul nodes it rewrites
            graph = onnx_int8.quantize(graph, work / "int8.onnx", weight_bits=weight_bits)
        elif model_type in FUSABLE_MODEL_TYPES:
            graph = _fused_if_equal(graph, network, probe, list(input_names), work)
        _publish(graph, target)
    logger.info("Exported %s to %s", model_version, target)
    return OnnxLogits(target, input_names)


def export(network: torch.nn.Module, input_names: Sequence[str], probe: dict,
           path: Path) -> Path:
    """The network as one self-contained ONNX file, batch and sequence axes dynamic, checked
    against torch on ``probe``."""
    _eager_attention(network)  # the plain attention graph, which ONNX Runtime fuses
    names = list(input_names)
    args = tuple(probe[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns of branches on shapes; _check_fp32 below proves the graph instead.
        warnings.simplefilter("ignore")
        # In evaluation mode: the exporter leaves the modules in the mode of the one it gets.
        torch.onnx.export(_Positional(network, names).eval(), args, str(path), input_names=names,
                          output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    _check_fp32(path, network, probe, names)
    return path


def probabilities_differ(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Largest difference between the two sets of softmax probabilities."""
    diff = torch.softmax(logits_a.float(), -1) - torch.softmax(logits_b.float(), -1)
    return float(diff.abs().max())


class _Positional(torch.nn.Module):
    """The legacy exporter passes inputs by position; the network takes them by name."""

    def __init__(self, network: torch.nn.Module, names: list[str]):
        super().__init__()
        self.network, self.names = network, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.network(**dict(zip(self.names, tensors)))


def _eager_attention(network: torch.nn.Module) -> None:
    for module in network.modules():
        if hasattr(module, "set_attn_implementation"):
            try:
                module.set_attn_implementation("eager")
            except (ValueError, ImportError):  # a model without it keeps its own
                pass
            return


def _check_fp32(path: Path, network: torch.nn.Module, probe: dict, names: list[str]) -> None:
    with torch.inference_mode():
        expected = network(**{n: probe[n] for n in names})
    got = OnnxLogits(path, names)(probe)
    differ = probabilities_differ(expected, got)
    if differ > FP32_TOLERANCE:
        raise RuntimeError(
            f"the exported graph's probabilities differ from torch's by {differ:.2g}")


def _fused_if_equal(path: Path, network: torch.nn.Module, probe: dict, names: list[str],
                    work: Path) -> Path:
    """ONNX Runtime's transformer fusions (attention, layer norm, GELU), kept only if the
    fused graph still answers like torch."""
    from onnxruntime.transformers.optimizer import optimize_model

    fused = work / "fused.onnx"
    try:
        config = next(m.config for m in network.modules() if hasattr(m, "config"))
        optimize_model(str(path), model_type="bert", opt_level=0,
                       num_heads=config.num_attention_heads, hidden_size=config.hidden_size,
                       ).save_model_to_file(str(fused))
        _check_fp32(fused, network, probe, names)
    except Exception as exc:  # fusion is an optimization: the plain graph still serves
        logger.warning("Keeping the unfused graph: %s", exc)
        return path
    return fused


def _publish(graph: Path, target: Path) -> None:
    """Atomically, so replicas starting together never read a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".partial")
    os.close(fd)
    try:
        shutil.copyfile(graph, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _short_hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:10]
