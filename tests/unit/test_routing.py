"""The model handle's router: a call goes to the less busy of two replicas, busy counted from
the moment a call is sent to its end (Serve routes through it on every Ray test)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
from ray.serve._private.common import DeploymentHandleSource, DeploymentID, ReplicaID

from deployments.routing import FewestInFlightRouter

MODEL = DeploymentID(name="SentimentModel", app_name="sentiment")
DRAWS = 200


@pytest.fixture
async def router() -> FewestInFlightRouter:
    # Constructed inside the test's event loop, as Serve does on the caller's loop.
    router = FewestInFlightRouter(MODEL, DeploymentHandleSource.REPLICA)
    router.initialize_state()
    return router


def replicas(*names: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(replica_id=ReplicaID(unique_id=name, deployment_id=MODEL))
            for name in names]


async def first_choices(router: FewestInFlightRouter, candidates) -> Counter[str]:
    chosen: Counter[str] = Counter()
    for _ in range(DRAWS):
        ranks = await router.choose_replicas(candidates)
        chosen[ranks[0][0].replica_id.unique_id] += 1
    return chosen


async def test_a_replica_with_calls_in_flight_comes_after_an_idle_one(router):
    a, b = replicas("a", "b")
    router.on_send_request(a.replica_id)
    ranks = [await router.choose_replicas([a, b]) for _ in range(DRAWS)]
    assert all(rank == [[b], [a]] for rank in ranks)


async def test_a_finished_call_no_longer_counts(router):
    a, b = replicas("a", "b")
    router.on_send_request(a.replica_id)
    router.on_send_request(a.replica_id)
    router.on_send_request(b.replica_id)
    assert (await first_choices(router, [a, b])) == {"b": DRAWS}

    router.on_request_completed(a.replica_id, "r1")
    router.on_request_completed(a.replica_id, "r2")
    assert router.in_flight(a.replica_id) == 0
    # Now a is the idle one.
    assert (await first_choices(router, [a, b])) == {"a": DRAWS}


async def test_equally_busy_replicas_share_calls_at_random(router):
    a, b = replicas("a", "b")
    chosen = await first_choices(router, [a, b])
    assert chosen["a"] > DRAWS / 4 and chosen["b"] > DRAWS / 4


async def test_a_completion_without_a_counted_send_never_goes_below_zero(router):
    (a,) = replicas("a")
    router.on_request_completed(a.replica_id, "never-sent")
    router.on_send_request(a.replica_id)
    assert router.in_flight(a.replica_id) == 1


async def test_of_many_replicas_two_at_random_are_offered(router):
    candidates = replicas("a", "b", "c", "d")
    busy = candidates[0]
    for _ in range(3):
        router.on_send_request(busy.replica_id)
    offered: Counter[str] = Counter()
    for _ in range(DRAWS):
        ranks = await router.choose_replicas(candidates)
        assert len(ranks) == 2
        offered.update(rank[0].replica_id.unique_id for rank in ranks)
        # The busy one is only ever the fallback.
        assert ranks[0][0] is not busy
    assert set(offered) == {"a", "b", "c", "d"}
