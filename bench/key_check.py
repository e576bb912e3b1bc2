"""What one credential check costs in an ingress replica: a login token (JWT) against an API key.

No HTTP, no Ray: the same objects the auth dependency calls, on a temporary SQLite database.
The API key is measured at steady state (its check cached in the replica: one HMAC-SHA256 and
a constant-time compare) and on a cache miss (one indexed read by prefix), the cost a key pays
once per replica every API_KEY_CACHE_SECONDS.

    .venv/bin/python -m bench.key_check --checks 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from serve_app.api_keys import ApiKeyVerifier, derive_hash_key, new_api_key
from serve_app.db import create_engine, create_session_factory, upgrade_to_head
from serve_app.models import ApiKey, User
from serve_app.security import TokenCodec, TokenUser
from serve_app.settings import Settings

SECRET_KEY = "bench-secret-key-" + "b" * 40


async def per_check_us(check, count: int, rounds: int = 5) -> float:
    """Median over rounds of the mean microseconds per awaited check."""
    results = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(count):
            await check()
        results.append((time.perf_counter() - start) / count * 1e6)
    return statistics.median(results)


async def measure(database_url: str, checks: int) -> dict:
    engine = create_engine(Settings(database_url=database_url))
    sessions = create_session_factory(engine)
    try:
        hash_key = derive_hash_key(SECRET_KEY)
        async with sessions() as session:
            user = User(username="bench", hashed_password="x")
            session.add(user)
            await session.flush()
            key, prefix = new_api_key()
            session.add(ApiKey(user_id=user.id, name="bench", prefix=prefix,
                               secret_hash=ApiKeyVerifier(sessions, hash_key=hash_key,
                                                          cache_ttl_s=1).hash(key)))
            await session.commit()
            user_id = user.id

        codec = TokenCodec(secret_key=SECRET_KEY, algorithm="HS256", expire_minutes=30)
        token = codec.encode(TokenUser(id=user_id, username="bench"))

        async def jwt_check():
            codec.decode(token)

        steady = ApiKeyVerifier(sessions, hash_key=hash_key, cache_ttl_s=3600)
        await steady.verify(key)  # fills the cache
        missing = ApiKeyVerifier(sessions, hash_key=hash_key, cache_ttl_s=1e-9)
        lookups_before = steady.lookups
        figures = {
            "jwt_decode_us": await per_check_us(jwt_check, checks),
            "api_key_cached_us": await per_check_us(lambda: steady.verify(key), checks),
            "api_key_cache_miss_sqlite_us": await per_check_us(lambda: missing.verify(key),
                                                               max(50, checks // 100)),
        }
        assert steady.lookups == lookups_before, "the steady-state checks read the database"
        await steady.close()
        await missing.close()
        return {name: round(value, 1) for name, value in figures.items()}
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=20000, help="checks per round (5 rounds)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        upgrade_to_head(url)
        figures = asyncio.run(measure(url, args.checks))
    figures["api_key_cached_vs_jwt"] = round(figures["api_key_cached_us"]
                                             / figures["jwt_decode_us"], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
