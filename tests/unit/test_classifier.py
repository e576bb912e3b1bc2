"""The classifier: default model quality on clear sentences, integrity checks, HF directories,
batching that changes nothing."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from serve_app import encoder_layers
from serve_app.classifier import (
    DEFAULT_MODEL_DIR,
    ModelIntegrityError,
    Prediction,
    SentimentClassifier,
)

CLEAR_SENTENCES = [
    ("I absolutely love this phone, it is fantastic!", "positive"),
    ("What a wonderful day, thank you so much for the great service.", "positive"),
    ("This movie was a delight from start to finish.", "positive"),
    ("This is the worst experience I have ever had, totally awful.", "negative"),
    ("I hate waiting two hours for a delayed flight with no explanation.", "negative"),
    ("The food was cold, bland and disgusting.", "negative"),
    ("The meeting is scheduled for 3pm on Tuesday.", "neutral"),
    ("The report has twelve pages and two appendices.", "neutral"),
    ("Flight 221 departs from gate B4.", "neutral"),
]

VARIED_TEXTS = [
    "ok",
    "",
    "Not bad at all, though the ending dragged a little.",
    "The service was slow. " * 60,  # far beyond max_length: several windows
    "Great!!!",
    "I can't say I enjoyed it, but I can't say I hated it either, honestly.",
]


def test_default_model_labels_clear_sentences_correctly(classifier):
    texts = [text for text, _ in CLEAR_SENTENCES]
    predicted = [p.label for p in classifier.predict(texts)]
    assert predicted == [label for _, label in CLEAR_SENTENCES]


def test_default_model_results_are_probabilities_with_a_versioned_name(classifier):
    assert classifier.labels == ["negative", "neutral", "positive"]
    assert re.fullmatch(r"minilm-sentiment-3c@[0-9a-f]{8}(\+int8)?", classifier.model_version)
    for prediction in classifier.predict(VARIED_TEXTS):
        assert isinstance(prediction, Prediction)
        assert set(prediction.scores) == set(classifier.labels)
        assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert all(0.0 <= p <= 1.0 for p in prediction.scores.values())
        assert prediction.score == max(prediction.scores.values())
        assert prediction.scores[prediction.label] == prediction.score
        assert prediction.model_version == classifier.model_version


def test_batch_results_equal_one_at_a_time_results_despite_padding(classifier):
    batched = classifier.predict(VARIED_TEXTS)
    for text, together in zip(VARIED_TEXTS, batched):
        alone = classifier.predict([text])[0]
        assert alone.label == together.label
        for label in classifier.labels:
            assert alone.scores[label] == pytest.approx(together.scores[label], abs=1e-5)


def test_predict_keeps_input_order_across_internal_chunks(classifier):
    # More texts than one internal chunk, of very different lengths, so sorting matters.
    texts = [f"review {i}: " + "really " * (i % 13) + ("loved it" if i % 3 else "hated it")
             for i in range(70)] + ["The service was slow. " * 40]
    together = classifier.predict(texts)
    assert len(together) == len(texts)
    for text, prediction in zip(texts, together):
        alone = classifier.predict([text])[0]
        assert alone.label == prediction.label
        assert alone.score == pytest.approx(prediction.score, abs=1e-5)


def test_concurrent_predict_calls_from_threads_all_succeed(classifier):
    from concurrent.futures import ThreadPoolExecutor

    expected = [p.label for p in classifier.predict(VARIED_TEXTS)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: classifier.predict(VARIED_TEXTS), range(12)))
    assert all([p.label for p in r] == expected for r in results)


def test_predict_handles_empty_input_and_rejects_a_bare_string(classifier):
    assert classifier.predict([]) == []
    with pytest.raises(TypeError):
        classifier.predict("a string, not a list")


def _layers_copy_with_encoder(tmp_path: Path, encoder_dir: Path) -> Path:
    layers_dir = tmp_path / "layers"
    shutil.copytree(DEFAULT_MODEL_DIR, layers_dir)
    config_file = layers_dir / encoder_layers.LAYERS_CONFIG
    config = json.loads(config_file.read_text())
    config["encoder_path"] = str(encoder_dir)
    config_file.write_text(json.dumps(config))
    return layers_dir


def _encoder_copy(tmp_path: Path, tampered: str | None) -> Path:
    """The packaged encoder via symlinks, with ``tampered`` really copied and one byte flipped."""
    source = encoder_layers.packaged_encoder_dir()
    copy = tmp_path / "encoder"
    copy.mkdir()
    for item in source.iterdir():
        (copy / item.name).symlink_to(item)
    if tampered:
        (copy / tampered).unlink()
        data = bytearray((source / tampered).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / tampered).write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize("tampered", ["model.safetensors", "tokenizer.json"])
def test_tampered_encoder_file_is_refused_naming_the_file(tmp_path, tampered):
    layers_dir = _layers_copy_with_encoder(tmp_path, _encoder_copy(tmp_path, tampered))
    with pytest.raises(ModelIntegrityError, match=re.escape(tampered)):
        SentimentClassifier.load(layers_dir)


def test_untampered_encoder_copy_loads_with_the_same_version(tmp_path, classifier):
    layers_dir = _layers_copy_with_encoder(tmp_path, _encoder_copy(tmp_path, None))
    loaded = SentimentClassifier.load(layers_dir)
    assert loaded.model_version == classifier.model_version


def test_missing_encoder_file_is_refused_naming_the_file(tmp_path):
    encoder = _encoder_copy(tmp_path, None)
    (encoder / "vocab.txt").unlink()
    with pytest.raises(ModelIntegrityError, match="vocab.txt"):
        SentimentClassifier.load(_layers_copy_with_encoder(tmp_path, encoder))


def test_hugging_face_directory_loads_and_returns_its_own_labels(tiny_hf_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    loaded = SentimentClassifier.load(tiny_hf_dir, device="cpu", long_text="truncate")
    assert loaded.labels == ["sad", "meh", "glad"]
    assert re.fullmatch(r"tiny-bert-sentiment@[0-9a-f]{8}", loaded.model_version)
    predictions = loaded.predict(VARIED_TEXTS)

    # The same numbers as running the saved model directly.
    model = AutoModelForSequenceClassification.from_pretrained(tiny_hf_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_hf_dir)
    with torch.inference_mode():
        batch = tokenizer(VARIED_TEXTS, padding=True, truncation=True, max_length=128,
                          return_tensors="pt")
        expected = torch.softmax(model(**batch).logits, dim=-1)
    for prediction, row in zip(predictions, expected.tolist()):
        assert prediction.label in {"sad", "meh", "glad"}
        assert [prediction.scores[x] for x in loaded.labels] == pytest.approx(row, abs=1e-5)


def test_hugging_face_model_version_changes_with_its_weights(tiny_hf_dir, tmp_path):
    from transformers import BertForSequenceClassification

    before = SentimentClassifier.load(tiny_hf_dir, device="cpu").model_version
    model = BertForSequenceClassification.from_pretrained(tiny_hf_dir)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    model.save_pretrained(tiny_hf_dir)
    assert SentimentClassifier.load(tiny_hf_dir, device="cpu").model_version != before


def test_a_directory_that_is_no_model_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        SentimentClassifier.load(tmp_path)


def test_the_shipped_layers_stay_within_five_megabytes():
    size = sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.iterdir() if f.is_file())
    assert 0 < size <= 5_000_000, f"models/default holds {size:,} bytes"


@pytest.mark.parametrize("side", ["right", "left"])
def test_windows_are_padded_exactly_as_the_tokenizer_pads_them(tmp_path, side):
    from tiny_models import tiny_hf_model_dir

    loaded = SentimentClassifier.load(tiny_hf_model_dir(tmp_path), device="cpu")
    loaded.tokenizer.padding_side = side
    windows = [w for ws in loaded.encode(["Fine.", "A much longer text, with more tokens in it.",
                                          "Short one", "word " * 200]) for w in ws]
    assert len({len(w["input_ids"]) for w in windows}) > 2  # unlike lengths: padding matters
    ours = loaded.pad(windows)
    theirs = loaded.tokenizer.pad(windows, padding="longest", return_tensors="pt")
    assert set(ours) == set(theirs)
    for key, tensor in theirs.items():
        assert torch.equal(ours[key], tensor), key
