"""Sign-up, log-in, tokens, the signing key at start-up, and failed-login limits."""

from __future__ import annotations

import logging
import threading

import pytest
from jose import jwt

from serve_app import security
from serve_app.app import create_app
from serve_app.settings import Settings


async def test_register_then_login_then_whoami(client, register):
    someone = await register(client)
    response = await client.get("/", headers=someone.headers)
    assert response.status_code == 200
    assert response.json() == {"id": someone.id, "username": someone.username}


async def test_token_is_bearer_with_the_configured_expiry(client, user, secret_key):
    response = await client.post("/auth/token",
                                 data={"username": user.username, "password": user.password})
    body = response.json()
    assert body["token_type"] == "bearer"
    claims = jwt.decode(body["access_token"], secret_key, algorithms=["HS256"])
    assert claims["sub"] == str(user.id)
    assert claims["exp"] - claims["iat"] == 30 * 60


@pytest.mark.parametrize("username", ["ab", "x" * 65, "has space", "semi;colon", "ünïcode", ""])
async def test_invalid_usernames_are_422(client, username):
    response = await client.post("/auth/", json={"username": username, "password": "long enough"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "username"]


@pytest.mark.parametrize("password", ["short", "p" * 129])
async def test_invalid_passwords_are_422(client, password):
    response = await client.post("/auth/", json={"username": "valid_name", "password": password})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "password"]


async def test_username_limits_are_inclusive(client):
    import uuid

    for name in [uuid.uuid4().hex[:3], "a.b-" + uuid.uuid4().hex + "_" * 28]:
        assert len(name) in (3, 64)
        response = await client.post("/auth/", json={"username": name, "password": "p" * 128})
        assert response.status_code == 201, response.text


async def test_existing_username_is_409(client, user):
    response = await client.post("/auth/", json={"username": user.username, "password": "other pass"})
    assert response.status_code == 409
    assert response.json() == {"detail": "This username is already taken."}


async def test_usernames_are_case_sensitive_on_every_database(client, user):
    response = await client.post("/auth/", json={"username": user.username.upper(),
                                                 "password": "other pass"})
    assert response.status_code == 201


@pytest.mark.parametrize("who", ["wrong password", "unknown user"])
async def test_bad_credentials_are_401_with_the_same_message(client, user, who):
    username = user.username if who == "wrong password" else user.username + "_nobody"
    response = await client.post("/auth/token", data={"username": username, "password": "nope nope"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"detail": "Incorrect username or password."}


@pytest.mark.parametrize("who", ["wrong password", "unknown user"])
async def test_login_does_one_argon2_verification_for_known_and_unknown_users(
        client, user, monkeypatch, who):
    verifications = []
    real_verify = security._hasher.verify
    monkeypatch.setattr(security._hasher, "verify",
                        lambda *a, **k: verifications.append(1) or real_verify(*a, **k))
    username = user.username if who == "wrong password" else "ghost_" + user.username
    await client.post("/auth/token", data={"username": username, "password": "nope nope"})
    assert len(verifications) == 1


async def test_password_hashing_runs_off_the_event_loop(monkeypatch):
    threads = []
    real_hash = security._hasher.hash
    monkeypatch.setattr(security._hasher, "hash",
                        lambda *a, **k: threads.append(threading.current_thread()) or real_hash(*a))
    hashed = await security.hash_password("a password")
    assert threads and threads[0] is not threading.main_thread()
    assert await security.verify_password("a password", hashed)
    assert not await security.verify_password("another one", hashed)


async def test_missing_or_garbage_token_is_401(client):
    for headers in [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic abc"}]:
        response = await client.get("/", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("key", [None, "too-short-key"])
async def test_production_refuses_to_start_without_a_strong_secret_key(database_url, classify, key):
    app = create_app(classify, Settings(env="production", database_url=database_url, secret_key=key))
    with pytest.raises(RuntimeError, match="SECRET_KEY of at least 32 characters"):
        async with app.router.lifespan_context(app):
            pass


async def test_production_starts_with_a_strong_secret_key(database_url, classify):
    app = create_app(classify, Settings(env="production", database_url=database_url,
                                        secret_key="s" * 32))
    async with app.router.lifespan_context(app):
        assert app.state.services.settings.is_production


async def test_development_generates_one_key_shared_by_local_replicas(
        database_url, classify, caplog, tmp_path):
    settings = Settings(env="development", database_url=database_url, secret_key=None,
                        dev_secret_key_file=str(tmp_path / "dev-key"))
    first, second = create_app(classify, settings), create_app(classify, settings)
    with caplog.at_level(logging.WARNING, logger="serve_app.security"):
        async with first.router.lifespan_context(first), second.router.lifespan_context(second):
            token = first.state.services.tokens.encode(security.TokenUser(1, "someone"))
            assert second.state.services.tokens.decode(token).username == "someone"
    key = (tmp_path / "dev-key").read_text()
    assert len(key) >= 32
    assert f"generated {tmp_path / 'dev-key'}" in caplog.text and key in caplog.text
    assert (tmp_path / "dev-key").stat().st_mode & 0o077 == 0  # private to its owner


async def test_development_without_a_writable_key_file_still_starts(database_url, classify, caplog):
    settings = Settings(env="development", database_url=database_url, secret_key=None,
                        dev_secret_key_file="/proc/no-such-dir/dev-key")
    app = create_app(classify, settings)
    with caplog.at_level(logging.WARNING, logger="serve_app.security"):
        async with app.router.lifespan_context(app):
            token = app.state.services.tokens.encode(security.TokenUser(1, "someone"))
            assert app.state.services.tokens.decode(token).id == 1
    assert "this process only" in caplog.text


async def test_failed_logins_are_limited_per_username(client_with, register):
    async with client_with(login_max_failures_per_username=3) as limited:
        victim, bystander = await register(limited), await register(limited)
        for _ in range(3):
            failed = await limited.post("/auth/token",
                                        data={"username": victim.username, "password": "guess 123"})
            assert failed.status_code == 401
        blocked = await limited.post("/auth/token",
                                     data={"username": victim.username, "password": victim.password})
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) >= 1
        assert blocked.json()["detail"]
        ok = await limited.post("/auth/token",
                                data={"username": bystander.username, "password": bystander.password})
        assert ok.status_code == 200


async def test_failed_logins_are_limited_per_client_address(client_with, register):
    async with client_with(login_max_failures_per_client=3) as limited:
        someone = await register(limited)
        for i in range(3):
            failed = await limited.post("/auth/token",
                                        data={"username": f"nobody_{i}", "password": "guess 123"})
            assert failed.status_code == 401
        blocked = await limited.post("/auth/token",
                                     data={"username": someone.username, "password": someone.password})
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) >= 1


async def test_successful_logins_do_not_count_against_the_limit(client_with, register):
    async with client_with(login_max_failures_per_username=2) as limited:
        someone = await register(limited)
        for _ in range(5):
            response = await limited.post("/auth/token", data={"username": someone.username,
                                                               "password": someone.password})
            assert response.status_code == 200
