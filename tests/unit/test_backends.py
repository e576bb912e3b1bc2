"""The inference backends: ONNX Runtime (fp32, int8) against torch fp32 on the same models, the
exported graph's cache, threads, and the accuracy gate of the default CPU backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from serve_app import onnx_backend
from serve_app.classifier import SentimentClassifier
from tiny_models import tiny_hf_model_dir

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FIXED_TEXTS = [
    "I absolutely love this phone, it is fantastic!",
    "This is the worst experience I have ever had, totally awful.",
    "The meeting is scheduled for 3pm on Tuesday.",
    "ok",
    "",
    "Not bad at all, though the ending dragged a little.",
    "The service was slow. " * 60,  # several windows
    "@united flight 1123 delayed again... thanks for nothing",
]
# The small fixed gate set: this many texts from the start of each held-out set.
GATE_TEXTS_PER_SET = 100


@pytest.fixture(scope="module")
def torch_classifier():
    return SentimentClassifier.load(backend="torch", device="cpu")


@pytest.fixture(scope="module")
def int8_classifier():
    return SentimentClassifier.load(int8=True)


def _assert_same_answers(a: SentimentClassifier, b: SentimentClassifier, texts: list[str]):
    for x, y in zip(a.predict(texts), b.predict(texts), strict=True):
        assert x.label == y.label
        for label in a.labels:
            assert x.scores[label] == pytest.approx(y.scores[label], abs=1e-4)


def test_onnx_runtime_is_the_default_on_cpu_and_answers_like_torch(classifier, torch_classifier):
    assert (classifier.backend, torch_classifier.backend) == ("onnx", "torch")
    # Same numeric model, same version: the answers are equal within float rounding.
    assert classifier.model_version == torch_classifier.model_version
    _assert_same_answers(classifier, torch_classifier, FIXED_TEXTS)


def test_a_hugging_face_directory_gets_the_same_answers_on_both_backends(tmp_path):
    model_dir = tiny_hf_model_dir(tmp_path, initializer_range=0.3)  # text-dependent answers
    on_torch = SentimentClassifier.load(model_dir, device="cpu", backend="torch")
    on_onnx = SentimentClassifier.load(model_dir, device="cpu", backend="onnx")
    assert on_onnx.backend == "onnx" and on_onnx.labels == ["sad", "meh", "glad"]
    scores = [p.scores["glad"] for p in on_torch.predict(FIXED_TEXTS)]
    assert max(scores) - min(scores) > 1e-3  # answers that depend on the text: the check can fail
    _assert_same_answers(on_onnx, on_torch, FIXED_TEXTS)


def test_int8_is_a_different_model_version_and_keeps_clear_labels(classifier, int8_classifier):
    assert int8_classifier.backend == "onnx-int8"
    assert int8_classifier.model_version == classifier.model_version + "+int8"
    clear = FIXED_TEXTS[:3]
    assert [p.label for p in int8_classifier.predict(clear)] == ["positive", "negative",
                                                                "neutral"]
    for prediction in int8_classifier.predict(FIXED_TEXTS):
        assert prediction.model_version.endswith("+int8")
        assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-5)


def test_int8_and_cuda_combinations_that_cannot_run_are_refused():
    with pytest.raises(ValueError, match="int8"):
        SentimentClassifier.load(backend="torch", int8=True, device="cpu")
    with pytest.raises(ValueError, match="CPU"):
        SentimentClassifier.load(backend="onnx", device="cuda")
    with pytest.raises(ValueError, match="backend"):
        SentimentClassifier.load(backend="tensorrt", device="cpu")  # type: ignore[arg-type]


def test_a_restart_loads_the_cached_graph_without_exporting_again(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNX_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = tiny_hf_model_dir(tmp_path, initializer_range=0.3)
    first = SentimentClassifier.load(model_dir, device="cpu", backend="onnx")
    [cached] = (tmp_path / "cache").glob("*.onnx")
    assert "fp32" in cached.name

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the graph was cached")

    monkeypatch.setattr(onnx_backend, "export", no_export)
    again = SentimentClassifier.load(model_dir, device="cpu", backend="onnx")
    assert list((tmp_path / "cache").glob("*.onnx")) == [cached]
    _assert_same_answers(again, first, FIXED_TEXTS)


def test_a_graph_that_answers_unlike_torch_is_refused_and_never_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_backend, "FP32_TOLERANCE", -1.0)  # no graph can pass
    with pytest.raises(RuntimeError, match="differ from torch"):
        SentimentClassifier.load(tiny_hf_model_dir(tmp_path), device="cpu", backend="onnx")
    assert not list((tmp_path / "cache").glob("*.onnx"))


def test_onnx_runtime_threads_follow_the_torch_thread_count(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # what a one-CPU replica sets
        loaded = SentimentClassifier.load(tiny_hf_model_dir(tmp_path), device="cpu")
        options = loaded._logits.session.get_session_options()
        assert options.intra_op_num_threads == 1
    finally:
        torch.set_num_threads(before)


def _gate_sets() -> dict[str, tuple[list[str], list[str]]]:
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"held-out data {SHARED_DATA} is missing (CI is set: it is required)")
        pytest.skip(f"held-out data {SHARED_DATA} is absent")
    from training.data import split_shared_data

    return {name: (ex.texts[:GATE_TEXTS_PER_SET], ex.labels[:GATE_TEXTS_PER_SET])
            for name, ex in split_shared_data(SHARED_DATA).tests.items()}


def _agreement(a, b) -> float:
    return sum(x.label == y.label for x, y in zip(a, b)) / len(a)


def test_the_default_cpu_backend_keeps_torch_fp32_answers_on_held_out_texts(
        classifier, torch_classifier, int8_classifier):
    """The accuracy gate on a small fixed set (bench/backends.py runs the full sets)."""
    from training.evaluate import macro_scores

    for name, (texts, gold) in _gate_sets().items():
        reference = torch_classifier.predict(texts)
        shipped = classifier.predict(texts)
        assert _agreement(shipped, reference) >= 0.97, name
        recall = {k: macro_scores(gold, [p.label for p in v])["macro_recall"]
                  for k, v in (("torch", reference), ("shipped", shipped))}
        assert recall["shipped"] >= recall["torch"] - 0.005, (name, recall)
        # int8 is opt-in; it must keep the agreement the documentation states.
        assert _agreement(int8_classifier.predict(texts), reference) >= 0.93, name
