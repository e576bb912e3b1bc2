"""SentimentModel's own logic without a Ray cluster: the deployment class in-process with the
real default classifier. (`@serve.batch` needs a replica context: batching itself is proven
on a real Serve instance in tests/integration/test_batching.py.)"""

from __future__ import annotations

import pytest

from deployments.model_config import ModelConfig
from deployments.prediction_cache import PredictionCache, normalize_text
from deployments.sentiment import SentimentModel
from deployments.text_groups import count_texts, flatten, regroup


@pytest.fixture
async def model():
    replica = SentimentModel.func_or_class()
    await replica.reconfigure({"max_batch_size": 16, "batch_wait_timeout_s": 0.05,
                               "cache_size": 8})
    return replica


async def test_cache_size_and_batch_knobs_change_in_place(model):
    await model.reconfigure({"max_batch_size": 3, "batch_wait_timeout_s": 0.2, "cache_size": 0})
    assert model._classify_batch._get_max_batch_size() == 3
    assert model._classify_batch._get_batch_wait_timeout_s() == 0.2
    assert model._cache.stats()["max_size"] == 0


async def test_a_cached_answer_needs_no_forward_pass(model):
    [cached] = model._classifier.predict(["The service was excellent"])
    model._cache.put(normalize_text("The  service was excellent "), cached)
    assert await model.classify(["The service   was excellent"]) == [cached]
    assert not model._batch_sizes


async def test_a_model_that_fails_to_load_leaves_the_old_one_serving(model, tmp_path):
    serving = model._classifier
    with pytest.raises(Exception):
        await model.reconfigure({"model_dir": str(tmp_path / "missing")})
    assert "missing" in model._load_error
    assert model._classifier is serving
    model.check_health()  # still healthy: the old model answers


def test_unknown_or_out_of_range_user_config_keys_are_refused():
    with pytest.raises(ValueError):
        ModelConfig.from_user_config({"max_batch_sise": 8})
    with pytest.raises(ValueError):
        ModelConfig.from_user_config({"max_batch_size": 0})


def test_lru_cache_evicts_the_least_recently_used_entry():
    cache: PredictionCache[int] = PredictionCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    cache.resize(1)
    assert len(cache) == 1


def test_normalization_collapses_whitespace_and_keeps_case():
    assert normalize_text("  Good \n\t movie ") == "Good movie"
    assert normalize_text("GOOD") != normalize_text("good")


def test_answers_go_back_to_their_own_request_in_order():
    groups = [["a", "b"], ["c"], [], ["d", "e", "f"]]
    assert flatten(groups) == ["a", "b", "c", "d", "e", "f"]
    assert count_texts(groups) == 6
    assert regroup([1, 2, 3, 4, 5, 6], groups) == [[1, 2], [3], [], [4, 5, 6]]
    with pytest.raises(RuntimeError):
        regroup([1, 2], groups)


async def test_the_long_text_setting_reaches_the_model_replica(monkeypatch):
    from serve_app.settings import get_settings

    monkeypatch.setenv("LONG_TEXT", "truncate")
    get_settings.cache_clear()
    try:
        replica = SentimentModel.func_or_class()
        await replica.reconfigure({"max_length": 32})
        assert replica._classifier.long_text == "truncate"
        assert [p.windows for p in replica._classifier.predict(["long " * 200])] == [1]
    finally:
        get_settings.cache_clear()
