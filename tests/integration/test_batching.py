"""Concurrent requests are served in shared model batches, not one text per forward pass,
and reach the model in shared handle calls, not one call per request."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from serve_stack import signup_and_login

pytestmark = pytest.mark.ray

CONCURRENT_REQUESTS = 64


def batch_histogram(stats_by_replica: dict[str, dict]) -> Counter:
    total: Counter = Counter()
    for stats in stats_by_replica.values():
        total.update({int(size): count for size, count in stats["batch_sizes"].items()})
    return total


async def test_concurrent_requests_share_model_batches(serve_instance):
    async with serve_instance.client() as client:
        user = await signup_and_login(client, prefix="batch")
        with serve_instance.driver():
            before = await asyncio.to_thread(serve_instance.model_stats)
            run = uuid.uuid4().hex[:8]  # unique texts: no answer may come from the cache
            responses = await asyncio.gather(*(
                client.post("/predict", headers=user.headers,
                            json={"text": f"request {i} of run {run}: the food was fine"})
                for i in range(CONCURRENT_REQUESTS)))
            after = await asyncio.to_thread(serve_instance.model_stats)

    assert [r.status_code for r in responses] == [200] * CONCURRENT_REQUESTS
    batches = batch_histogram(after) - batch_histogram(before)
    texts_run = sum(size * count for size, count in batches.items())
    print(f"\nbatch sizes during {CONCURRENT_REQUESTS} concurrent requests: "
          f"{dict(sorted(batches.items()))} ({sum(batches.values())} forward passes)")
    assert texts_run >= CONCURRENT_REQUESTS
    # How large the batches get depends on how fast the ingress hands requests on (the machine's
    # load); that texts of different requests share forward passes does not.
    assert max(batches) > 1, f"every text ran alone: {dict(batches)}"
    assert sum(batches.values()) < texts_run, "fewer forward passes than texts"
    calls = sum(s["calls"] for s in after.values()) - sum(s["calls"] for s in before.values())
    print(f"{calls} handle calls carried {CONCURRENT_REQUESTS} requests")
    assert 1 <= calls < CONCURRENT_REQUESTS, "each request made its own handle call"
    configured = serve_instance.config["applications"][0]["deployments"]
    max_batch = next(d for d in configured if d["name"] == "SentimentModel")[
        "user_config"]["max_batch_size"]
    assert max(batches) <= max_batch
    assert all(s["max_batch_size"] == max_batch for s in after.values())


async def test_a_long_texts_windows_fill_model_batches_counted_as_windows(serve_instance):
    run = uuid.uuid4().hex[:8]
    long_text = (f"Run {run}. The hotel was quiet, the staff kind and the food only fair. " * 300
                 )[:20_000]
    shorts = [f"short {i} of run {run}: lovely" for i in range(6)]
    async with serve_instance.client() as client:
        user = await signup_and_login(client, prefix="windows")
        with serve_instance.driver():
            before = await asyncio.to_thread(serve_instance.model_stats)
            long_response, *short_responses = await asyncio.gather(
                client.post("/predict", headers=user.headers, json={"text": long_text}),
                *(client.post("/predict", headers=user.headers, json={"text": t})
                  for t in shorts))
            after = await asyncio.to_thread(serve_instance.model_stats)

    assert long_response.status_code == 200, long_response.text
    windows = long_response.json()["windows"]
    assert windows > 40
    assert [r.json()["windows"] for r in short_responses] == [1] * len(shorts)
    batches = batch_histogram(after) - batch_histogram(before)
    max_batch = max(s["max_batch_size"] for s in after.values())
    print(f"\nbatch sizes for one text of {windows} windows and {len(shorts)} short texts: "
          f"{dict(sorted(batches.items()))}")
    # Every window ran once, in batches no larger than max_batch_size counted in windows.
    assert sum(size * count for size, count in batches.items()) == windows + len(shorts)
    assert max(batches) <= max_batch
    assert sum(batches.values()) >= -(-windows // max_batch)
