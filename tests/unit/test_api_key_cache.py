"""API-key checks per replica, on SQLite and on MariaDB: the cache (no database read per
request, revocation and user deletion seen within 5 s), last-use writes, per-user rate limits."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import delete, update

from api_key_helpers import (
    INVALID,
    as_bearer,
    as_header,
    assert_refused,
    counted_statements,
    create_key,
    stored_key,
)
from serve_app.models import ApiKey, User, utcnow


async def test_a_key_revoked_on_another_replica_is_refused_here_within_5_seconds(
        client, client_with, user):
    body = await create_key(client, user)
    async with client_with() as other_replica:
        assert (await other_replica.get("/", headers=as_header(body["key"]))).status_code == 200
        assert (await client.delete(f"/auth/keys/{body['id']}",
                                    headers=user.headers)).status_code == 204
        revoked_at = time.monotonic()
        while (await other_replica.get("/", headers=as_header(body["key"]))).status_code == 200:
            assert time.monotonic() - revoked_at < 5, "still accepted 5 s after revocation"
            await asyncio.sleep(0.05)
        await assert_refused(other_replica, as_header(body["key"]))


async def test_a_deleted_users_key_is_refused_within_5_seconds(client, new_user):
    doomed = await new_user()
    key = (await create_key(client, doomed))["key"]
    assert (await client.get("/data", headers=as_bearer(key))).status_code == 200
    async with client.app.state.services.sessions() as session:
        await session.execute(delete(User).where(User.id == doomed.id))
        await session.commit()
    deleted_at = time.monotonic()
    while (await client.get("/", headers=as_bearer(key))).status_code != 401:
        assert time.monotonic() - deleted_at < 5, "a deleted user's key still works after 5 s"
        await asyncio.sleep(0.05)
    await assert_refused(client, as_bearer(key))
    refused = await client.post("/predict", headers=as_bearer(key), json={"text": "hello"})
    assert refused.status_code == 401 and refused.json() == INVALID


async def test_at_steady_state_a_key_check_reads_nothing_from_the_database(client_with, register):
    async with client_with(api_key_cache_seconds=5) as replica:
        user = await register(replica)
        key = (await create_key(replica, user))["key"]
        verifier = replica.app.state.services.api_keys
        assert (await replica.get("/", headers=as_header(key))).status_code == 200
        before, started = verifier.lookups, time.monotonic()
        with counted_statements(replica, "SELECT") as selects:
            for _ in range(30):
                assert (await replica.post("/predict", headers=as_header(key),
                                           json={"text": "steady"})).status_code == 200
        # One read per cache period at most (a slow machine may cross one), never per request.
        periods = int((time.monotonic() - started) // 5) + 1
        reads = [s for s in selects if "api_keys" in s]
        assert verifier.lookups - before == len(reads) < periods + 1, (len(reads), periods)


async def test_a_burst_on_an_expired_entry_reads_the_key_once(client_with, register):
    async with client_with(api_key_cache_seconds=0.2) as replica:
        user = await register(replica)
        key = (await create_key(replica, user))["key"]
        verifier = replica.app.state.services.api_keys
        await asyncio.sleep(0.3)
        before = verifier.lookups
        responses = await asyncio.gather(*(replica.get("/data", headers=as_header(key))
                                           for _ in range(20)))
        assert [r.status_code for r in responses] == [200] * 20
        assert verifier.lookups == before + 1


async def test_last_used_is_written_once_a_minute_at_most(client, client_with, user):
    body = await create_key(client, user)
    async with client_with() as other_replica:
        with counted_statements(client, "UPDATE api_keys") as here, \
                counted_statements(other_replica, "UPDATE api_keys") as there:
            for _ in range(10):
                for replica in (client, other_replica):
                    response = await replica.get("/data", headers=as_bearer(body["key"]))
                    assert response.status_code == 200
            await asyncio.sleep(0.1)  # the writes run in the background
        assert len(here) <= 1 and len(there) <= 1  # not one write per request
    first = (await stored_key(client, body["id"])).last_used_at
    assert first is not None and abs((utcnow() - first).total_seconds()) < 10
    listed = (await client.get("/auth/keys", headers=user.headers)).json()
    assert listed[0]["last_used_at"].startswith(first.isoformat()[:19])
    # An older value is replaced by the next use once a replica sees it is over a minute old.
    async with client.app.state.services.sessions() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == body["id"])
                              .values(last_used_at=first.replace(year=first.year - 1)))
        await session.commit()
    async with client_with() as fresh_replica:
        assert (await fresh_replica.get("/", headers=as_bearer(body["key"]))).status_code == 200
        await asyncio.sleep(0.2)
    assert (await stored_key(client, body["id"])).last_used_at > first


async def test_the_rate_limit_is_per_user_whichever_credential(client_with, register):
    async with client_with(predict_rate_per_second=0.01, predict_burst=3) as limited:
        user = await register(limited)
        key = (await create_key(limited, user))["key"]
        for headers in (user.headers, as_bearer(key), as_header(key)):
            ok = await limited.post("/predict", headers=headers, json={"text": "fine"})
            assert ok.status_code == 200, ok.text
        for headers in (user.headers, as_header(key)):
            limited_response = await limited.post("/predict", headers=headers, json={"text": "no"})
            assert limited_response.status_code == 429
            assert int(limited_response.headers["Retry-After"]) >= 1
