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
