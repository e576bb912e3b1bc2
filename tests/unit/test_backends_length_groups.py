"""Windows run in groups of similar length: the cheapest split, and answers that do not change."""

from __future__ import annotations

import itertools
import random

import pytest

from serve_app.length_groups import length_groups, padded_tokens


def _cost(lengths, groups, call_cost):
    return sum(call_cost + len(g) * lengths[g[-1]] for g in groups)


def _all_splits(n: int):
    for cuts in itertools.product([False, True], repeat=n - 1):
        starts = [0] + [i + 1 for i, cut in enumerate(cuts) if cut]
        yield [range(a, b) for a, b in zip(starts, starts[1:] + [n])]


def test_the_split_is_the_cheapest_of_all_splits_into_consecutive_groups():
    rng = random.Random(7)
    for _ in range(60):
        n = rng.randint(1, 9)
        lengths = sorted(rng.randint(3, 128) for _ in range(n))
        call_cost, max_group = rng.choice([0, 8, 40, 200]), rng.randint(1, 9)
        groups = length_groups(lengths, call_cost_tokens=call_cost, max_group=max_group)
        assert [i for g in groups for i in g] == list(range(n))
        assert all(len(g) <= max_group for g in groups)
        best = min(_cost(lengths, split, call_cost) for split in _all_splits(n)
                   if all(len(g) <= max_group for g in split))
        assert _cost(lengths, groups, call_cost) == best


def test_texts_of_one_length_stay_one_batch_and_a_long_one_runs_apart():
    assert length_groups([20] * 32, call_cost_tokens=24, max_group=64) == [range(0, 32)]
    lengths = [12] * 31 + [128]
    groups = length_groups(lengths, call_cost_tokens=24, max_group=64)
    assert groups == [range(0, 31), range(31, 32)]
    assert padded_tokens(lengths, groups) == 31 * 12 + 128 < 32 * 128


def test_unsorted_lengths_are_refused():
    with pytest.raises(ValueError):
        length_groups([5, 3], call_cost_tokens=1, max_group=4)


def test_grouped_answers_equal_answers_padded_in_one_batch(classifier):
    texts = ["ok", "Great!!!", "The service was slow. " * 20, "fine " * 40,
             "Not bad at all, though the ending dragged a little.", "meh"] * 3
    calls = []
    run = classifier._logits

    def counting(batch):
        calls.append(tuple(batch["input_ids"].shape))
        return run(batch)

    classifier._logits = counting
    try:
        grouped = classifier.predict(texts)
        classifier.length_grouping = False
        padded = classifier.predict(texts)
    finally:
        classifier._logits, classifier.length_grouping = run, True
    assert len(calls) > 2 and calls[-1][0] == len(texts)  # grouped: several calls; then one
    assert sum(b * s for b, s in calls[:-1]) < calls[-1][0] * calls[-1][1]  # less padding
    for a, b in zip(grouped, padded):
        assert a.label == b.label
        assert a.score == pytest.approx(b.score, abs=1e-5)
