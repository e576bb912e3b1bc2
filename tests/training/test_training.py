"""Training pieces: the exported layers reproduce the trained network once merged, the metrics,
the data readers, and the held-out split of the shared data."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from serve_app import encoder_layers
from training.cli import main
from training.data import normalised, read_tsv, read_tweeteval, split_shared_data
from training.evaluate import binary_accuracy, expected_calibration_error, macro_scores
from training.loop import example_weights, frozen_states, mean_state, mixed_loss, pad
from training.model import TopModel

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _tiny_encoder(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=24, num_hidden_layers=3,
                        num_attention_heads=2, intermediate_size=40)
    return BertModel(config, add_pooling_layer=False).eval()


def _merged_logits(tensors: dict[str, torch.Tensor], ids: list[list[int]]) -> torch.Tensor:
    """Logits of a fresh tiny encoder (same base weights, nothing trained) with ``tensors``
    merged in, as the classifier loads them."""
    encoder = _tiny_encoder()
    encoder_layers.merge_into_encoder(encoder, tensors, alpha=8.0)
    head = encoder_layers.ClassificationHead.from_tensors(tensors).eval()
    input_ids, mask = pad([torch.tensor(x) for x in ids])
    with torch.inference_mode():
        hidden = encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return head(encoder_layers.pool(hidden, mask, "mean"))


@pytest.mark.parametrize(("full_rank_export", "project"), [(0, False), (24, False), (3, True)],
                         ids=["lora", "full-fine-tuning-svd", "rank-3-after-projection"])
def test_exported_layers_merged_into_a_fresh_encoder_give_the_trained_logits(full_rank_export,
                                                                            project):
    """LoRA factors merge exactly; so do full fine-tuning's weight changes exported by SVD at
    full rank (24 = the tiny encoder's width), or at rank 3 once the changes were projected to
    rank 3, with biases and LayerNorms stored as they are."""
    trained_encoder = _tiny_encoder()
    model = TopModel(trained_encoder, first=1, rank=4, alpha=8.0, hidden=0,
                     full_rank_export=full_rank_export).eval()
    with torch.no_grad():  # B starts at zero; make every update count
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    if project:
        model.project_to_export_rank()
    ids = [[2, 5, 7, 9, 3], [2, 11, 3], [2, 40, 41, 42, 43, 44, 3]]
    states = frozen_states(trained_encoder, ids, frozen=1)
    hidden, mask = pad(states)
    with torch.inference_mode():
        expected = model(hidden.float(), mask)

    tensors = model.export()
    assert any(k.startswith("lora.") for k in tensors)
    merged = _merged_logits(tensors, ids)
    # Projection re-runs the SVD on its own result: float error of ~1e-4 (a cut is ~5e-2).
    tolerance = {"atol": 5e-4, "rtol": 1e-3} if project else {"atol": 1e-4, "rtol": 1e-4}
    torch.testing.assert_close(merged, expected, **tolerance)


def test_a_low_rank_export_of_full_fine_tuning_keeps_only_that_many_factors():
    model = TopModel(_tiny_encoder(), first=1, rank=4, alpha=8.0, hidden=0, full_rank_export=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tensors = model.export()
    factors = [v for k, v in tensors.items() if k.endswith(".A")]
    assert factors and all(a.shape[0] == 3 for a in factors)


def test_projection_keeps_weight_changes_at_the_export_rank_and_leaves_biases_alone():
    model = TopModel(_tiny_encoder(), first=1, rank=4, alpha=8.0, hidden=0, full_rank_export=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = {k: v.clone() for k, v in model.layers.state_dict().items()}
    model.project_to_export_rank()
    for key, value in model.layers.state_dict().items():
        delta = value - model.original[key]
        if value.dim() == 2:
            assert torch.linalg.matrix_rank(delta, atol=1e-5) == 3
            assert not torch.allclose(value, before[key])  # a rank-24 change was cut
        else:
            torch.testing.assert_close(value, before[key])


def test_averaged_runs_load_as_the_element_wise_mean_of_their_weights(tmp_path):
    runs = []
    for seed in (1, 2):
        model = TopModel(_tiny_encoder(), first=1, rank=4, alpha=8.0, hidden=0,
                         full_rank_export=24)
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        torch.save(model.state_dict(), tmp_path / f"run{seed}.pt")
        runs.append(model.state_dict())
    soup = TopModel(_tiny_encoder(), first=1, rank=4, alpha=8.0, hidden=0, full_rank_export=24)
    soup.load_state_dict(mean_state([tmp_path / "run1.pt", tmp_path / "run2.pt"]))
    for key, value in soup.state_dict().items():
        torch.testing.assert_close(value, (runs[0][key] + runs[1][key]) / 2)
    # Averaging is only defined for runs of the same model.
    other = TopModel(_tiny_encoder(), first=2, rank=4, alpha=8.0, hidden=0, full_rank_export=24)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="not of the same model"):
        mean_state([tmp_path / "run1.pt", tmp_path / "other.pt"])


def test_example_weights_balance_classes_within_each_data_set_and_keep_set_sizes():
    sources = ["tweets"] * 4 + ["reviews"] * 2
    labels = ["neutral", "neutral", "neutral", "negative", "positive", "negative"]
    weights = example_weights(sources, labels, power=1.0)
    assert weights[:3].sum() == pytest.approx(float(weights[3]))  # 3 neutral = 1 negative
    assert weights[:4].sum() / weights[4:].sum() == pytest.approx(4 / 2)
    assert torch.allclose(example_weights(sources, labels, power=0.0), torch.ones(6))


def test_binary_examples_ignore_the_neutral_logit_and_three_way_examples_use_it():
    logits = torch.tensor([[1.0, 5.0, 2.0], [1.0, 5.0, 2.0]])
    targets = torch.tensor([2, 2])  # positive
    losses = mixed_loss(logits, targets, binary=torch.tensor([True, False]))
    expected_binary = torch.nn.functional.cross_entropy(
        torch.tensor([[1.0, 2.0]]), torch.tensor([1]), label_smoothing=0.05)
    assert losses[0] == pytest.approx(float(expected_binary))
    assert losses[1] > losses[0]  # the large neutral logit only costs the three-way example
    more_neutral = logits + torch.tensor([0.0, 3.0, 0.0])
    raised = mixed_loss(more_neutral, targets, torch.tensor([True, False]))
    assert raised[0] == pytest.approx(float(losses[0]))


def test_layers_round_trip_through_fp16_files(tmp_path):
    tensors = {"head.out.weight": torch.randn(3, 8), "head.out.bias": torch.randn(3)}
    encoder_layers.write_tensors(tmp_path, tensors)
    loaded = encoder_layers.read_tensors(tmp_path)
    assert loaded["head.out.weight"].dtype == torch.float16
    torch.testing.assert_close(loaded["head.out.weight"].float(), tensors["head.out.weight"],
                               atol=2e-3, rtol=1e-3)


def test_int8_factors_keep_every_rank_component_to_within_one_percent(tmp_path):
    """B's columns carry singular values over orders of magnitude; each keeps its own scale."""
    lora_a = torch.randn(4, 16)
    lora_b = torch.randn(12, 4) * torch.tensor([1.0, 1e-1, 1e-2, 1e-4])
    tensors = {"lora.m.A": lora_a, "lora.m.B": lora_b, "head.out.weight": torch.randn(3, 16)}
    encoder_layers.write_tensors(tmp_path, tensors, int8_factors=True)
    loaded = encoder_layers.read_tensors(tmp_path)
    assert set(loaded) == set(tensors)  # the scales are folded back in, not handed on
    for key in ("lora.m.A", "lora.m.B"):
        original, restored = tensors[key], loaded[key]
        rank_dim = 0 if key.endswith(".A") else 1
        error = (restored - original).abs().amax(dim=1 - rank_dim)
        assert (error <= 0.01 * original.abs().amax(dim=1 - rank_dim)).all(), key
    stored = encoder_layers.load_file(str(tmp_path / encoder_layers.LAYERS_WEIGHTS))
    assert stored["lora.m.A"].dtype == stored["lora.m.B"].dtype == torch.int8
    assert stored["head.out.weight"].dtype == torch.float16


def test_an_int8_export_merges_to_nearly_the_logits_of_the_fp16_export(tmp_path):
    model = TopModel(_tiny_encoder(), first=1, rank=4, alpha=8.0, hidden=0, full_rank_export=6)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ids = [[2, 5, 7, 9, 3], [2, 11, 3], [2, 40, 41, 42, 43, 44, 3]]
    logits = {}
    for dtype in ("fp16", "int8"):
        out_dir = tmp_path / dtype
        encoder_layers.write_tensors(out_dir, model.export(), int8_factors=dtype == "int8")
        logits[dtype] = _merged_logits(encoder_layers.read_tensors(out_dir), ids)
    size = {d: (tmp_path / d / encoder_layers.LAYERS_WEIGHTS).stat().st_size for d in logits}
    assert size["int8"] < size["fp16"]
    torch.testing.assert_close(logits["int8"], logits["fp16"], atol=5e-3, rtol=1e-2)
    assert not torch.equal(logits["int8"], logits["fp16"])  # it was quantized


def test_recovery_steps_without_a_rank_to_keep_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--recovery-steps", "10"])
    assert "--recovery-steps needs --full-rank-export" in capsys.readouterr().err


def test_macro_scores_on_a_worked_example():
    gold = ["negative", "negative", "neutral", "positive"]
    predicted = ["negative", "neutral", "neutral", "negative"]
    scores = macro_scores(gold, predicted)
    assert scores["accuracy"] == pytest.approx(0.5)
    assert scores["macro_recall"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    # negative: P 1/2 R 1/2 -> F1 1/2; neutral: P 1/2 R 1 -> 2/3; positive: 0
    assert scores["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)


def test_binary_accuracy_ignores_the_neutral_probability():
    scores = [{"negative": 0.2, "neutral": 0.7, "positive": 0.1},
              {"negative": 0.1, "neutral": 0.6, "positive": 0.3}]
    assert binary_accuracy(["negative", "positive"], scores) == 1.0


def test_calibration_error_is_zero_when_confidence_matches_accuracy_and_large_when_not():
    probs = torch.tensor([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0)
    assert expected_calibration_error(probs, torch.tensor([1, 1, 1, 1])) == pytest.approx(0.75)


def test_readers_accept_tweeteval_files_and_tsv_with_names_or_binary_codes(tmp_path):
    (tmp_path / "t.txt").write_text("good day\nbad day\nsome day\n")
    (tmp_path / "l.txt").write_text("2\n0\n1\n")
    tweets = read_tweeteval(tmp_path / "t.txt", tmp_path / "l.txt")
    assert tweets.labels == ["positive", "negative", "neutral"]
    (tmp_path / "b.tsv").write_text("sentence\tlabel\nfine film\t1\ndull film\t0\n")
    assert read_tsv(tmp_path / "b.tsv").labels == ["positive", "negative"]
    (tmp_path / "n.tsv").write_text("text\tlabel\nok\tneutral\nyay\tpositive\n")
    assert read_tsv(tmp_path / "n.tsv").labels == ["neutral", "positive"]


@pytest.fixture(scope="module")
def shared_split():
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"training data {SHARED_DATA} is missing (CI is set: it is required)")
        pytest.skip(f"training data {SHARED_DATA} is absent")
    return split_shared_data(SHARED_DATA)


def test_held_out_data_never_appears_in_training_or_validation(shared_split):
    seen = set(shared_split.train.texts) | set(shared_split.validation.texts)
    for name, held_out in shared_split.tests.items():
        assert not seen & set(held_out.texts), name
    sentences = shared_split.tests["sst2_sentences"].texts
    # No training phrase is a piece of a held-out sentence.
    assert not any(f" {t} " in f" {s} " for t in shared_split.train.texts[-8000:]
                   for s in sentences[:50] if len(t.split()) >= 4)
    assert all(s.split()[-1] in {".", "!", "?"} for s in sentences)


def test_no_held_out_text_is_in_the_training_rows_even_written_another_way(shared_split):
    """Every held-out row, normalised as TweetEval and SemEval copies of a tweet agree, is
    absent from training: TweetEval's 2,000 tweets are nearly all SemEval tweets too."""
    trained = {normalised(t) for t in shared_split.train.texts}
    for name, held_out in shared_split.tests.items():
        leaked = [t for t in held_out.texts if normalised(t) in trained]
        assert not leaked, f"{name}: {len(leaked)} held-out rows trained on, e.g. {leaked[:2]}"
    assert len(shared_split.tests["tweeteval"]) == 2000
    assert len(shared_split.tests["semeval"]) >= 3000


def test_tweeteval_and_semeval_copies_of_a_tweet_normalise_alike():
    semeval = "Watching Underworld with Jace, having a pretty nice Sunday. http://t.co/abc"
    tweeteval = "Watching Underworld with Jace\\u002c having a pretty nice Sunday. "
    assert normalised(semeval) == normalised(tweeteval)
    assert normalised("@jack I &amp; you") == normalised("@user I & you")
    assert normalised("good day") != normalised("bad day")


def test_semeval_tweets_that_are_tweeteval_tweets_never_train_or_validate(shared_split):
    tweeteval = {normalised(t) for t in shared_split.tests["tweeteval"].texts}
    semeval_rows = [t for t, s in zip(shared_split.train.texts + shared_split.validation.texts,
                                      shared_split.train_sources + shared_split.validation_sources)
                    if s == "semeval"]
    assert len(semeval_rows) > 40_000
    assert not tweeteval & {normalised(t) for t in semeval_rows}


def test_validation_by_source_splits_the_validation_rows_into_their_data_sets(shared_split):
    sets = shared_split.validation_by_source()
    assert set(sets) == {"semeval", "sst2", "airline"}
    assert sum(len(x) for x in sets.values()) == len(shared_split.validation)
    assert set(sets["sst2"].labels) == {"negative", "positive"}  # binary, as SST-2 is


def test_the_split_is_the_same_every_time(shared_split):
    again = split_shared_data(SHARED_DATA)
    assert again.tests["tweeteval"].texts == shared_split.tests["tweeteval"].texts
    assert again.train.texts == shared_split.train.texts


def test_short_phrases_and_repeated_sentences_keep_held_out_text_out_of_training(shared_split):
    split = split_shared_data(SHARED_DATA, sst_phrases=100_000, sst_min_words=1,
                              sst_sentence_repeats=2)
    sst = Counter(t for t, source in zip(split.train.texts, split.train_sources)
                  if source == "sst2")
    short = [t for t in sst if len(t.split()) <= 2]
    default_sst = [t for t, source in zip(shared_split.train.texts, shared_split.train_sources)
                   if source == "sst2"]
    assert short and min(len(t.split()) for t in default_sst) == 3
    held_out = [f" {s} " for s in split.tests["sst2_sentences"].texts]
    assert not any(f" {t} " in s for t in short for s in held_out)
    repeated = [t for t, seen in sst.items() if seen == 2]
    assert len(repeated) > 4000 and all(t.split()[-1] in {".", "!", "?"} for t in repeated)
