"""API keys over HTTP on a real Ray Serve instance with two ingress replicas, SQLite and MariaDB.

The shared instance runs one ingress replica; revocation has to reach every replica, so these
tests start an instance of their own with two. Which replica answered is read from Serve's
own per-replica request counter (`ray_serve_deployment_request_counter`, by route), scraped
from the cluster's metrics export: the tests prove that both replicas served the key before
it was revoked, and that both refused it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from serve_stack import INGRESS, BackendUnavailable, ServeInstance, check_mysql, signup_and_login
from serve_stack import sync_url

pytestmark = pytest.mark.ray

TWO_INGRESS_REPLICAS = {INGRESS: {"autoscaling_config": {"min_replicas": 2, "max_replicas": 2}}}
INVALID = {"detail": "Invalid or expired token."}
REVOCATION_BOUND_S = 5.0
PROBES = 40  # requests per check: each replica gets some (proved by the counters)


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def instance(request, start_serve) -> ServeInstance:
    if request.param == "mysql":
        try:
            check_mysql()
        except BackendUnavailable as exc:
            if os.environ.get("CI"):
                pytest.fail(f"{exc} (CI is set: this backend is required)")
            pytest.skip(str(exc))
    with start_serve(deployments=TWO_INGRESS_REPLICAS, database=request.param) as started:
        yield started


class ReplicaCounts:
    """Requests each ingress replica has served, per route, from Serve's own counter."""

    def __init__(self, instance: ServeInstance) -> None:
        self._url = f"http://127.0.0.1:{instance.cluster.metrics_export_port}/metrics"

    def read(self, route: str) -> Counter:
        counts: Counter = Counter()
        text = httpx.get(self._url, timeout=10).text
        for family in text_string_to_metric_families(text):
            if family.name != "ray_serve_deployment_request_counter":
                continue
            for sample in family.samples:
                labels = sample.labels
                if (sample.name.endswith("_total") and labels.get("deployment") == INGRESS
                        and labels.get("route") == route):
                    counts[labels["replica"]] += int(sample.value)
        return counts

    async def settled(self, route: str, total: int, timeout_s: float = 90) -> Counter:
        """The per-replica counts of `route` once all `total` requests sent are counted."""
        deadline = time.monotonic() + timeout_s
        while True:
            counts = await asyncio.to_thread(self.read, route)
            if sum(counts.values()) >= total:
                assert sum(counts.values()) == total, (route, counts)
                return counts
            assert time.monotonic() < deadline, f"{route}: {counts} never reached {total}"
            await asyncio.sleep(1)


async def probe(client: httpx.AsyncClient, method: str, path: str, headers: dict,
                count: int = PROBES, **kwargs) -> list[httpx.Response]:
    return await asyncio.gather(*(client.request(method, path, headers=headers, **kwargs)
                                  for _ in range(count)))


def both_served(before: Counter, after: Counter) -> dict[str, int]:
    served = {replica: after[replica] - before[replica] for replica in after}
    assert len(served) == 2 and all(n > 0 for n in served.values()), served
    return served


async def test_key_lifecycle_on_two_ingress_replicas(instance):
    counts = ReplicaCounts(instance)
    async with instance.client() as client:
        user = await signup_and_login(client, prefix="keys")
        created = await client.post("/auth/keys", json={"name": "ci job"}, headers=user.headers)
        assert created.status_code == 201, created.text
        body = created.json()
        assert set(body) == {"id", "name", "prefix", "key", "created_at"}
        key = body["key"]
        bearer, header = {"Authorization": f"Bearer {key}"}, {"X-API-Key": key}

        # Both headers work on every route a login token works on.
        for headers in (bearer, header):
            one = await client.post("/predict", json={"text": "great"}, headers=headers)
            assert one.status_code == 200, one.text
            batch = await client.post("/predict/batch", json={"texts": ["a", "b"]},
                                      headers=headers)
            assert batch.status_code == 200, batch.text
            data = await client.get("/data", headers=headers)
            assert data.status_code == 200
            assert {one.json()["id"]} <= {row["id"] for row in data.json()}
        # Every ingress replica accepts it, and so holds it in its cache.
        accepted = await probe(client, "GET", "/", bearer, PROBES // 2)
        accepted += await probe(client, "GET", "/", header, PROBES // 2)
        assert {r.status_code for r in accepted} == {200}
        assert {r.json()["id"] for r in accepted} == {user.id}
        both_served(Counter(), await counts.settled("/", PROBES))

        listed = await client.get("/auth/keys", headers=user.headers)
        assert listed.status_code == 200
        [item] = listed.json()
        assert set(item) == {"id", "name", "prefix", "created_at", "last_used_at"}
        assert item["prefix"] == body["prefix"] and key[16:] not in listed.text
        assert item["last_used_at"] is not None

        # A key cannot manage keys, with either header.
        for headers in (bearer, header):
            for method, path, kwargs in [("POST", "/auth/keys", {"json": {"name": "x"}}),
                                         ("GET", "/auth/keys", {}),
                                         ("DELETE", f"/auth/keys/{body['id']}", {})]:
                response = await client.request(method, path, headers=headers, **kwargs)
                assert response.status_code == 403, (method, path, response.text)

        # Revoked: refused on both replicas within 5 s, with the bad-token error.
        predict_before = await counts.settled("/predict", 2)
        revoked = await client.delete(f"/auth/keys/{body['id']}", headers=user.headers)
        assert revoked.status_code == 204
        revoked_at = time.monotonic()
        while True:
            codes = {r.status_code for r in await probe(client, "GET", "/data", header, 10)}
            if codes == {401}:
                break
            assert time.monotonic() - revoked_at < REVOCATION_BOUND_S, codes
            await asyncio.sleep(0.1)
        refused_after_s = time.monotonic() - revoked_at
        await asyncio.sleep(max(0.0, REVOCATION_BOUND_S - (time.monotonic() - revoked_at)))
        refused = await probe(client, "POST", "/predict", bearer, json={"text": "again"})
        assert {r.status_code for r in refused} == {401}
        assert all(r.json() == INVALID for r in refused)
        assert all(r.headers["www-authenticate"] == "Bearer" for r in refused)
        served = both_served(predict_before, await counts.settled("/predict", 2 + PROBES))
        assert (await client.get("/auth/keys", headers=user.headers)).json() == []
    print(f"\nrevoked key refused by every probe {refused_after_s:.2f} s after the DELETE; "
          f"{PROBES} refusals 5 s after, by replica: {served}")


async def test_a_deleted_users_key_is_refused_on_both_replicas(instance):
    async with instance.client() as client:
        user = await signup_and_login(client, prefix="gone")
        created = await client.post("/auth/keys", json={"name": "k"}, headers=user.headers)
        key = created.json()["key"]
        warm = await probe(client, "GET", "/data", {"X-API-Key": key})
        assert {r.status_code for r in warm} == {200}
        engine = sa.create_engine(sync_url(instance.database_url))
        try:
            with engine.begin() as conn:
                for table, column in (("predictions", "user_id"), ("users", "id")):
                    conn.execute(sa.text(f"DELETE FROM {table} WHERE {column} = :id"),
                                 {"id": user.id})
        finally:
            engine.dispose()
        await asyncio.sleep(REVOCATION_BOUND_S)
        refused = await probe(client, "GET", "/data", {"X-API-Key": key})
        assert {r.status_code for r in refused} == {401}
        assert all(r.json() == INVALID for r in refused)


async def test_another_users_key_is_404(instance):
    async with instance.client() as client:
        owner = await signup_and_login(client, "owner")
        other = await signup_and_login(client, "other")
        created = await client.post("/auth/keys", json={"name": "mine"}, headers=owner.headers)
        key_id = created.json()["id"]
        theirs = await client.delete(f"/auth/keys/{key_id}", headers=other.headers)
        assert theirs.status_code == 404 and theirs.json() == {"detail": "No such API key."}
        assert (await client.get("/auth/keys", headers=other.headers)).json() == []
        still = await client.get("/", headers={"X-API-Key": created.json()["key"]})
        assert still.status_code == 200 and still.json()["id"] == owner.id
