"""Under load the model deployment scales from 1 replica to 2, and back to 1 after it.

Runs its own instance: the shipped config, with autoscaling delays shortened so the test
takes seconds rather than minutes (and a low target, so modest load is "too much").
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from serve_stack import MODEL, signup_and_login

pytestmark = pytest.mark.ray

FAST_AUTOSCALING = {
    MODEL: {
        "autoscaling_config": {
            "min_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 2,
            "upscale_delay_s": 1,
            "downscale_delay_s": 5,
            "look_back_period_s": 2,
        },
        "user_config": {"cache_size": 0},
    }
}
CLIENTS = 16


async def wait_for_replicas(instance, want: int, timeout_s: float, timeline: list) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        count = await asyncio.to_thread(instance.model_replica_count)
        timeline.append((round(time.monotonic() - start, 1), count))
        if count == want:
            return
        await asyncio.sleep(1)
    raise AssertionError(f"no {want} RUNNING replicas after {timeout_s}s: {timeline}")


@pytest.fixture(scope="module")
def instance(start_serve):
    with start_serve(deployments=FAST_AUTOSCALING) as instance:
        yield instance


async def test_model_scales_out_under_load_and_back_in_after(instance):
    async with instance.client(timeout=120) as client:
        user = await signup_and_login(client, prefix="scale")
        stop = asyncio.Event()
        answered = 0

        async def closed_loop_client(n: int) -> None:
            nonlocal answered
            while not stop.is_set():
                texts = [f"{uuid.uuid4().hex}: client {n} found film {i} good"
                         for i in range(8)]
                response = await client.post("/predict/batch", json={"texts": texts},
                                             headers=user.headers)
                assert response.status_code == 200, response.text
                answered += 1

        with instance.driver():
            assert await asyncio.to_thread(instance.model_replica_count) == 1
            up: list = []
            down: list = []
            load = [asyncio.create_task(closed_loop_client(n)) for n in range(CLIENTS)]
            try:
                await wait_for_replicas(instance, 2, timeout_s=120, timeline=up)
            finally:
                stop.set()
                await asyncio.gather(*load)
            await wait_for_replicas(instance, 1, timeout_s=120, timeline=down)

    print(f"\nscale-out timeline (s, replicas): {up}\nscale-in timeline: {down}\n"
          f"requests answered under load: {answered}")
    assert answered > 0
