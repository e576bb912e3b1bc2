"""Long texts in the classifier: overlapping token windows that cover the whole text, and one
answer per text, the token-weighted mean of its windows' probabilities."""

from __future__ import annotations

import pytest
import torch

from serve_app.classifier import SentimentClassifier
from tiny_models import tiny_hf_model_dir

LONG = ("The first chapter drags, and I nearly gave up on it. Then the story opens up: the "
        "characters grow, the city comes alive and the ending is earned. ") * 40


def test_windows_cover_every_token_in_order_with_the_configured_overlap(classifier):
    tokenizer = classifier.tokenizer
    [windows] = classifier.encode([LONG])
    ids = [w["input_ids"] for w in windows]
    assert len(ids) > 5
    assert all(len(w) <= classifier.max_length for w in ids)
    assert all(w[0] == tokenizer.cls_token_id and w[-1] == tokenizer.sep_token_id for w in ids)
    overlap = classifier.window_overlap
    assert overlap > 0
    for before, after in zip(ids, ids[1:]):
        assert before[-1 - overlap : -1] == after[1 : 1 + overlap]
    joined = ids[0][1:-1] + [t for w in ids[1:] for t in w[1 + overlap : -1]]
    assert joined == tokenizer(LONG, add_special_tokens=False)["input_ids"]


def test_texts_that_fit_are_one_window_and_answer_as_when_truncating(classifier):
    truncating = SentimentClassifier.load(long_text="truncate")
    texts = ["Brilliant.", "", "The parcel came on Tuesday, two days late, but intact."]
    for chunked, truncated in zip(classifier.predict(texts), truncating.predict(texts)):
        assert chunked.windows == truncated.windows == 1
        assert chunked.scores == pytest.approx(truncated.scores, abs=1e-6)


def _windows_by_hand(tokenizer, text: str, max_length: int, overlap: int) -> list[list[int]]:
    """The windows as the method describes them, without the tokenizer's overflow feature."""
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    size = max_length - 2  # [CLS] and [SEP]
    starts = range(0, max(1, len(tokens) - overlap), size - overlap)
    return [[tokenizer.cls_token_id, *tokens[s : s + size], tokenizer.sep_token_id]
            for s in starts]


@pytest.fixture
def opinionated_hf_dir(tmp_path):
    """A tiny random model whose windows of different words get clearly different answers."""
    return tiny_hf_model_dir(tmp_path, initializer_range=0.3)


def varied_text(words: int) -> str:
    """Different words throughout, so no two windows read the same."""
    from serve_app.encoder_layers import packaged_encoder_dir
    from transformers import AutoTokenizer

    vocab = sorted(w for w in AutoTokenizer.from_pretrained(packaged_encoder_dir()).get_vocab()
                   if w.isalpha() and len(w) > 3)
    return " ".join(vocab[(i * 7919) % len(vocab)] for i in range(words))


def test_a_long_text_scores_the_token_weighted_mean_of_its_windows(opinionated_hf_dir):
    from transformers import AutoModelForSequenceClassification

    loaded = SentimentClassifier.load(opinionated_hf_dir, device="cpu", max_length=16)
    model = AutoModelForSequenceClassification.from_pretrained(opinionated_hf_dir).eval()
    text = varied_text(95)
    windows = _windows_by_hand(loaded.tokenizer, text, 16, loaded.window_overlap)
    with torch.inference_mode():
        rows = torch.stack([torch.softmax(model(input_ids=torch.tensor([w])).logits[0], -1)
                            for w in windows])
    weights = torch.tensor([float(len(w)) for w in windows])
    expected = (rows * weights[:, None]).sum(0) / weights.sum()
    # The case proves something: windows disagree, and their lengths change the mean.
    assert float((rows.max(0).values - rows.min(0).values).max()) > 0.2
    assert float((expected - rows.mean(0)).abs().max()) > 1e-3

    [prediction] = loaded.predict([text])
    assert prediction.windows == len(windows) > 3
    assert [prediction.scores[label] for label in loaded.labels] == pytest.approx(
        expected.tolist(), abs=1e-5)
    assert prediction.label == loaded.labels[int(expected.argmax())]
    # Among other texts, in any position, the answer is the same.
    mixed = loaded.predict(["short", text, "another short one", text[:50]])
    assert mixed[1].windows == prediction.windows
    assert mixed[1].scores == pytest.approx(prediction.scores, abs=1e-5)
    assert [p.windows for p in mixed[::2]] == [1, 1]


def test_truncate_mode_classifies_the_first_window_only(opinionated_hf_dir):
    from transformers import AutoModelForSequenceClassification

    truncating = SentimentClassifier.load(opinionated_hf_dir, device="cpu", max_length=16,
                                          long_text="truncate")
    chunking = SentimentClassifier.load(opinionated_hf_dir, device="cpu", max_length=16)
    model = AutoModelForSequenceClassification.from_pretrained(opinionated_hf_dir).eval()
    first = _windows_by_hand(truncating.tokenizer, LONG, 16, truncating.window_overlap)[0]
    with torch.inference_mode():
        expected = torch.softmax(model(input_ids=torch.tensor([first])).logits[0], -1)

    [truncated] = truncating.predict([LONG])
    [chunked] = chunking.predict([LONG])
    assert truncated.windows == 1 and chunked.windows > 10
    assert [truncated.scores[x] for x in truncating.labels] == pytest.approx(expected.tolist(),
                                                                            abs=1e-5)
    assert truncated.scores != pytest.approx(chunked.scores, abs=1e-3)


def test_an_unknown_long_text_mode_is_refused(tiny_hf_dir):
    with pytest.raises(ValueError, match="long_text"):
        SentimentClassifier.load(tiny_hf_dir, device="cpu", long_text="split")  # type: ignore
