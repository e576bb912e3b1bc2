"""The backend as a SentimentModel setting: user_config keys, and an in-place switch (the
deployment class in-process; tests/integration proves the switch under `serve deploy`)."""

from __future__ import annotations

import pytest

from deployments.model_config import ModelConfig
from deployments.sentiment import SentimentModel


def test_backend_and_int8_are_user_config_keys_that_change_the_model_key():
    default = ModelConfig.from_user_config({})
    # onnx on a CPU, torch on CUDA; int8 where the classifier's default says so
    assert (default.backend, default.int8) == (None, None)
    assert ModelConfig.from_user_config({"backend": "torch"}).model_key != default.model_key
    assert ModelConfig.from_user_config({"int8": True}).model_key != default.model_key
    assert ModelConfig.from_user_config({"int8": False}).model_key != default.model_key
    assert ModelConfig.from_user_config({"cache_size": 1}).model_key == default.model_key


@pytest.mark.parametrize("user_config", [{"backend": "tensorrt"},
                                         {"backend": "torch", "int8": True},
                                         {"device": "cuda", "int8": True}])
def test_backend_settings_that_cannot_run_are_refused(user_config):
    with pytest.raises(ValueError):
        ModelConfig.from_user_config(user_config)


async def test_reconfigure_switches_the_backend_in_place_and_names_int8_a_new_version():
    replica = SentimentModel.func_or_class()
    await replica.reconfigure({"cache_size": 8, "int8": False})
    assert replica._classifier.backend == "onnx"
    fp32_version = replica._classifier.model_version
    # (@serve.batch needs a replica context: the classifier answers directly here.)
    [onnx_answer] = replica._classifier.predict(["What a lovely surprise"])
    replica._cache.put("What a lovely surprise", onnx_answer)

    await replica.reconfigure({"cache_size": 8, "int8": False, "backend": "torch"})
    assert replica._classifier.backend == "torch"
    assert len(replica._cache) == 0  # answers of the old backend are not served on
    [torch_answer] = replica._classifier.predict(["What a lovely surprise"])
    assert torch_answer.model_version == fp32_version
    assert torch_answer.label == onnx_answer.label
    assert torch_answer.score == pytest.approx(onnx_answer.score, abs=1e-4)

    await replica.reconfigure({"cache_size": 8, "int8": True})
    assert replica._classifier.backend == "onnx-int8"
    [int8_answer] = replica._classifier.predict(["What a lovely surprise"])
    assert int8_answer.model_version == fp32_version + "+int8"
