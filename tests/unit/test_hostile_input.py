"""Hostile clients: forged tokens, odd texts, oversized bodies, floods of requests."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from jose import jwt
from sqlalchemy import delete

from serve_app.models import User
from serve_app.ratelimit import MemoryRateLimiter, RedisRateLimiter


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims_for(user, **changes) -> dict:
    now = int(time.time())
    claims = {"sub": str(user.id), "name": user.username, "iat": now, "exp": now + 600}
    claims.update(changes)
    return claims


def forged_tokens(user, secret_key: str) -> dict[str, str]:
    valid = user.headers["Authorization"].removeprefix("Bearer ")
    header, payload, signature = valid.split(".")
    other_user = claims_for(user, sub=str(user.id + 1))
    return {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims_for(user))}.",
        "alg none, empty signature kept": f"{b64({'alg': 'none'})}.{payload}.",
        "signed with another key": jwt.encode(claims_for(user), "another-key-" + "z" * 40, "HS256"),
        "algorithm switched to HS512": jwt.encode(claims_for(user), secret_key, "HS512"),
        "algorithm switched to HS384": jwt.encode(claims_for(user), secret_key, "HS384"),
        "tampered payload": f"{header}.{b64(other_user)}.{signature}",
        "expired": jwt.encode(claims_for(user, exp=int(time.time()) - 5), secret_key, "HS256"),
        "no expiry": jwt.encode({"sub": str(user.id), "name": user.username}, secret_key, "HS256"),
        "no subject": jwt.encode(claims_for(user, sub=None), secret_key, "HS256"),
        "subject not a user id": jwt.encode(claims_for(user, sub="admin"), secret_key, "HS256"),
        "subject out of range": jwt.encode(claims_for(user, sub="9" * 25), secret_key, "HS256"),
        "truncated signature": valid[:-4],
    }


@pytest.mark.parametrize("attack", [
    "alg none", "alg none, empty signature kept", "signed with another key",
    "algorithm switched to HS512", "algorithm switched to HS384", "tampered payload", "expired",
    "no expiry", "no subject", "subject not a user id", "subject out of range",
    "truncated signature",
])
async def test_forged_tokens_are_401(client, user, secret_key, attack):
    token = forged_tokens(user, secret_key)[attack]
    headers = {"Authorization": f"Bearer {token}"}
    for method, path in [("GET", "/"), ("POST", "/predict"), ("GET", "/data")]:
        response = await client.request(method, path, headers=headers, json={"text": "hi"})
        assert response.status_code == 401, (attack, path, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_token_of_a_deleted_user_is_401(client, new_user):
    doomed = await new_user()
    async with client.app.state.services.sessions() as session:
        await session.execute(delete(User).where(User.id == doomed.id))
        await session.commit()
    for method, path, body in [("GET", "/", None), ("POST", "/predict", {"text": "hi"}),
                               ("POST", "/predict/batch", {"texts": ["hi"]}), ("GET", "/data", None)]:
        response = await client.request(method, path, headers=doomed.headers, json=body)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"


HOSTILE_TEXTS = [
    "'; DROP TABLE predictions; --",
    "\" OR 1=1 -- ",
    "Robert'); DELETE FROM users WHERE ('1'='1",
    "<script>alert('x')</script><img src=x onerror=alert(1)>",
    "&lt;b&gt; &amp; %s %d {0} ${jndi:ldap://x}",
    "nul\x00byte, bell\x07, escape\x1b[31mred\x1b[0m, del\x7f",
    "tabs\tand\r\nwindows\nnewlines",
    "emoji 👍🏽🔥 family 👨‍👩‍👧‍👦 flag 🇺🇳",
    "\u202eright-to-left override\u202c and zero\u200bwidth",
    "مرحبا بالعالم — שלום עולם",
    "e\u0301 combining, ﬁ ligature, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "\\u0000 literally, and a backslash \\",
]


async def test_hostile_texts_are_stored_and_returned_byte_for_byte(client, user):
    for text in HOSTILE_TEXTS:
        response = await client.post("/predict", headers=user.headers, json={"text": text})
        assert response.status_code == 200, (text, response.text)
        assert response.json()["text"].encode() == text.encode()
    batch = await client.post("/predict/batch", headers=user.headers, json={"texts": HOSTILE_TEXTS})
    assert [r["text"] for r in batch.json()["results"]] == HOSTILE_TEXTS

    rows = (await client.get("/data", headers=user.headers, params={"limit": 500})).json()
    stored = [r["text"].encode() for r in rows]
    assert stored == [t.encode() for t in list(reversed(HOSTILE_TEXTS)) * 2]


@pytest.mark.parametrize("raw", [b'{"text": "\\ud800"}', b'{"text": "a\\udfffb"}'])
async def test_lone_surrogates_are_422_not_500(client, user, raw):
    response = await client.post("/predict", content=raw,
                                 headers={**user.headers, "Content-Type": "application/json"})
    assert response.status_code == 422


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"[1, 2", b"null", b'"just a string"', b"{" * 10000])
async def test_garbage_bodies_are_4xx_json(client, user, raw):
    response = await client.post("/predict", content=raw,
                                 headers={**user.headers, "Content-Type": "application/json"})
    assert 400 <= response.status_code < 500
    assert response.json()["detail"]


async def test_body_over_the_limit_is_413_before_parsing(client_with, register):
    async with client_with(max_body_bytes=2048) as small:
        someone = await register(small)
        big = {"text": "x" * 3000}  # a valid text under MAX_TEXT_CHARS, in a body over the limit
        declared = await small.post("/predict", headers=someone.headers, json=big)
        assert declared.status_code == 413
        assert declared.json() == {"detail": "Request body exceeds the limit of 2048 bytes."}

        async def chunks():  # streamed: no Content-Length to trust
            for _ in range(10):
                yield b"y" * 1024

        streamed = await small.post("/predict", content=chunks(),
                                    headers={**someone.headers, "Content-Type": "application/json"})
        assert streamed.status_code == 413
        assert streamed.json()["detail"].startswith("Request body exceeds")

        form = await small.post("/auth/token", data={"username": "u" * 3000, "password": "p"})
        assert form.status_code == 413
        assert (await small.post("/predict", headers=someone.headers,
                                 json={"text": "fits"})).status_code == 200


async def test_default_body_limit_is_one_mebibyte(client, user):
    response = await client.post("/predict", headers=user.headers,
                                 json={"text": "x" * (1024 * 1024 + 1)})
    assert response.status_code == 413


# ---- rate limits on prediction -----------------------------------------------------------------


async def test_predictions_are_rate_limited_per_user_counted_in_texts(client_with, register):
    async with client_with(predict_rate_per_second=0.01, predict_burst=5) as limited:
        busy, other = await register(limited), await register(limited)
        batch = await limited.post("/predict/batch", headers=busy.headers,
                                   json={"texts": ["a", "b", "c", "d"]})
        assert batch.status_code == 200
        assert (await limited.post("/predict", headers=busy.headers, json={"text": "e"})).status_code == 200
        refused = await limited.post("/predict", headers=busy.headers, json={"text": "f"})
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 60  # 1 text at 0.01 texts/s
        assert refused.json()["detail"]
        assert (await limited.post("/predict", headers=other.headers, json={"text": "g"})).status_code == 200
        assert len((await limited.get("/data", headers=busy.headers)).json()) == 5


async def test_memory_bucket_refills_at_its_rate():
    limiter = MemoryRateLimiter()
    assert await limiter.acquire("k", cost=2, rate=50.0, burst=2) == 0
    wait = await limiter.acquire("k", cost=1, rate=50.0, burst=2)
    assert 0 < wait <= 0.02
    time.sleep(0.05)
    assert await limiter.acquire("k", cost=1, rate=50.0, burst=2) == 0


async def test_redis_bucket_is_shared_by_every_replica(client_with, register, redis_url):
    prefix = f"sentiment-test:{uuid.uuid4().hex}:"
    limits = dict(redis_url=redis_url, rate_limit_key_prefix=prefix,
                  predict_rate_per_second=0.01, predict_burst=4)
    async with client_with(**limits) as replica_a, client_with(**limits) as replica_b:
        someone = await register(replica_a)
        for replica in (replica_a, replica_b):
            response = await replica.post("/predict/batch", headers=someone.headers,
                                          json={"texts": ["one", "two"]})
            assert response.status_code == 200
        refused = await replica_a.post("/predict", headers=someone.headers, json={"text": "three"})
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
    await _drop_keys(redis_url, prefix)


async def test_redis_limits_failed_logins_across_replicas(client_with, register, redis_url):
    prefix = f"sentiment-test:{uuid.uuid4().hex}:"
    limits = dict(redis_url=redis_url, rate_limit_key_prefix=prefix,
                  login_max_failures_per_username=2)
    async with client_with(**limits) as replica_a, client_with(**limits) as replica_b:
        someone = await register(replica_a)
        for replica in (replica_a, replica_b):
            failed = await replica.post("/auth/token", data={"username": someone.username,
                                                             "password": "wrong guess"})
            assert failed.status_code == 401
        blocked = await replica_a.post("/auth/token", data={"username": someone.username,
                                                            "password": someone.password})
        assert blocked.status_code == 429
    await _drop_keys(redis_url, prefix)


async def test_redis_bucket_refills_on_redis_time(redis_url):
    prefix = f"sentiment-test:{uuid.uuid4().hex}:"
    limiter = RedisRateLimiter(redis_url, key_prefix=prefix)
    try:
        assert await limiter.acquire("k", cost=3, rate=20.0, burst=3) == 0
        wait = await limiter.acquire("k", cost=1, rate=20.0, burst=3)
        assert 0 < wait <= 0.05
        assert await limiter.acquire("k", cost=1, rate=20.0, burst=3, consume=False) > 0
        time.sleep(0.1)
        assert await limiter.acquire("k", cost=1, rate=20.0, burst=3) == 0
    finally:
        await limiter.close()
        await _drop_keys(redis_url, prefix)


async def test_unreachable_redis_lets_requests_through():
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", key_prefix="unused:")
    try:
        assert await limiter.acquire("k", cost=1, rate=1.0, burst=1) == 0
    finally:
        await limiter.close()


async def _drop_keys(redis_url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
