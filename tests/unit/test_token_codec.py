"""The token codec remembers verified tokens without ever stretching what a token allows."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from jose import jwt

from serve_app.security import InvalidTokenError, TokenCodec, TokenUser

KEY = "k" * 40


def codec() -> TokenCodec:
    return TokenCodec(secret_key=KEY, algorithm="HS256", expire_minutes=30)


def token_expiring_in(seconds: float) -> str:
    now = datetime.now(UTC)
    claims = {"sub": "7", "name": "someone", "iat": now, "exp": now + timedelta(seconds=seconds)}
    return jwt.encode(claims, KEY, algorithm="HS256")


def test_a_remembered_token_is_refused_once_it_expires():
    tokens = codec()
    token = token_expiring_in(1.5)
    assert tokens.decode(token) == TokenUser(id=7, username="someone")
    assert tokens.decode(token) == TokenUser(id=7, username="someone")  # from memory
    time.sleep(3.1)  # jose compares whole seconds and accepts the second of expiry
    with pytest.raises(InvalidTokenError):
        tokens.decode(token)


def test_a_token_signed_with_another_key_is_refused_after_a_valid_one():
    tokens = codec()
    valid = tokens.encode(TokenUser(id=7, username="someone"))
    tokens.decode(valid)
    forged = jwt.encode(jwt.get_unverified_claims(valid), "x" * 40, algorithm="HS256")
    with pytest.raises(InvalidTokenError):
        tokens.decode(forged)


def test_the_memory_of_verified_tokens_is_bounded():
    tokens = codec()
    tokens.VERIFIED_CACHE_SIZE = 3
    issued = [tokens.encode(TokenUser(id=i, username=f"user{i}")) for i in range(1, 6)]
    assert [tokens.decode(t).id for t in issued] == [1, 2, 3, 4, 5]
    assert len(tokens._verified) == 3
    assert tokens.decode(issued[0]).id == 1  # verified again, not lost
