"""API keys in process, on SQLite and on MariaDB: the lifecycle, where a key works and where it
does not, how it is stored, the key limit, the OpenAPI schemes and the migration."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import create_engine, delete, inspect, select

from api_key_helpers import INVALID, as_bearer, as_header, assert_refused, create_key, stored_key
from serve_app.api_keys import derive_hash_key, hash_api_key
from serve_app.models import ApiKey, User


async def test_a_created_key_is_shown_once_with_its_prefix(client, user):
    body = await create_key(client, user, name="nightly job")
    assert set(body) == {"id", "name", "prefix", "key", "created_at"}
    assert body["name"] == "nightly job"
    assert body["key"].startswith(body["prefix"] + "_")
    assert body["prefix"].startswith("ssk_") and len(body["prefix"]) == 16
    assert len(body["key"]) == 16 + 1 + 43  # 32 random bytes, url-safe base64
    again = await create_key(client, user)
    assert again["key"] != body["key"] and again["prefix"] != body["prefix"]


async def test_only_a_keyed_hash_of_the_key_is_stored(client, user, secret_key):
    body = await create_key(client, user)
    row = await stored_key(client, body["id"])
    assert row.prefix == body["prefix"] and row.user_id == user.id
    assert row.secret_hash == hash_api_key(body["key"], derive_hash_key(secret_key))
    assert row.secret_hash != hash_api_key(body["key"], derive_hash_key(secret_key + "x"))
    assert body["key"][16:] not in str(vars(row))


@pytest.mark.parametrize("headers", [as_bearer, as_header], ids=["bearer", "x-api-key"])
async def test_a_key_works_wherever_a_login_token_does(client, user, headers):
    key = (await create_key(client, user))["key"]
    me = await client.get("/", headers=headers(key))
    assert me.status_code == 200, me.text
    assert me.json() == {"id": user.id, "username": user.username}
    one = await client.post("/predict", headers=headers(key), json={"text": "lovely"})
    assert one.status_code == 200, one.text
    batch = await client.post("/predict/batch", headers=headers(key), json={"texts": ["a", "b"]})
    assert batch.status_code == 200, batch.text
    data = await client.get("/data", headers=headers(key))
    assert data.status_code == 200
    ids = {one.json()["id"], *(r["id"] for r in batch.json()["results"])}
    assert ids <= {row["id"] for row in data.json()}
    # The same history as through the login token: the rows are the user's.
    assert data.json() == (await client.get("/data", headers=user.headers)).json()


async def test_the_list_shows_every_key_of_the_user_and_never_a_secret(client, new_user):
    owner, other = await new_user(), await new_user()
    created = [await create_key(client, owner, name=f"key {i}") for i in range(3)]
    await create_key(client, other)
    response = await client.get("/auth/keys", headers=owner.headers)
    assert response.status_code == 200
    listed = response.json()
    assert [k["id"] for k in listed] == [k["id"] for k in created]
    assert [k["name"] for k in listed] == ["key 0", "key 1", "key 2"]
    for item, made in zip(listed, created, strict=True):
        assert set(item) == {"id", "name", "prefix", "created_at", "last_used_at"}
        assert item["prefix"] == made["prefix"] and item["last_used_at"] is None
        assert made["key"][16:] not in response.text


async def test_a_revoked_key_is_refused_at_once_with_the_bad_token_error(client, user):
    body = await create_key(client, user)
    assert (await client.get("/", headers=as_header(body["key"]))).status_code == 200
    revoked = await client.delete(f"/auth/keys/{body['id']}", headers=user.headers)
    assert revoked.status_code == 204 and revoked.content == b""
    await assert_refused(client, as_header(body["key"]))
    await assert_refused(client, as_bearer(body["key"]))
    assert await stored_key(client, body["id"]) is None
    again = await client.delete(f"/auth/keys/{body['id']}", headers=user.headers)
    assert again.status_code == 404


@pytest.mark.parametrize("credential", [
    "ssk_0123456789ab_" + "A" * 43,  # well formed, unknown prefix
    "ssk_0123456789ab_short",
    "ssk_",
    "sk-not-ours",
])
async def test_wrong_or_malformed_keys_get_the_bad_token_error(client, credential):
    await assert_refused(client, as_header(credential))
    await assert_refused(client, as_bearer(credential))


async def test_a_key_with_the_right_prefix_and_a_wrong_secret_is_refused(client, user):
    key = (await create_key(client, user))["key"]
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    await assert_refused(client, as_header(forged))
    assert (await client.get("/", headers=as_header(key))).status_code == 200


async def test_two_credentials_at_once_are_refused_even_if_both_are_valid(client, user):
    key = (await create_key(client, user))["key"]
    for bearer in (user.headers["Authorization"], f"Bearer {key}", "Bearer not-a-jwt"):
        response = await client.get("/", headers={"Authorization": bearer, "X-API-Key": key})
        assert response.status_code == 401
        assert response.json() == {
            "detail": "Send one credential: Authorization or X-API-Key, not both."}
    for extra in (key[:-2] + "AA", ""):
        response = await client.get("/", headers={**user.headers, "X-API-Key": extra})
        assert response.status_code == 401, extra
    empty = await client.get("/", headers={"X-API-Key": ""})
    assert empty.status_code == 401 and empty.json() == INVALID


async def test_a_login_token_is_not_accepted_as_x_api_key(client, user):
    token = user.headers["Authorization"].removeprefix("Bearer ")
    await assert_refused(client, as_header(token))


async def test_another_users_key_is_404_like_an_unknown_one(client, new_user):
    owner, intruder = await new_user(), await new_user()
    body = await create_key(client, owner)
    theirs = await client.delete(f"/auth/keys/{body['id']}", headers=intruder.headers)
    unknown = await client.delete("/auth/keys/2147483647", headers=intruder.headers)
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json() == {"detail": "No such API key."}
    assert (await client.get("/", headers=as_header(body["key"]))).status_code == 200


@pytest.mark.parametrize("key_id", ["0", "-1", "2147483648", "abc"])
async def test_key_ids_out_of_range_are_422(client, user, key_id):
    response = await client.delete(f"/auth/keys/{key_id}", headers=user.headers)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("headers", [as_bearer, as_header], ids=["bearer", "x-api-key"])
async def test_a_key_cannot_manage_keys(client, user, headers):
    body = await create_key(client, user)
    forbidden = {"detail": "API keys are managed with a login token, not with an API key."}
    attempts = [
        client.post("/auth/keys", headers=headers(body["key"]), json={"name": "more"}),
        client.get("/auth/keys", headers=headers(body["key"])),
        client.delete(f"/auth/keys/{body['id']}", headers=headers(body["key"])),
    ]
    for response in await asyncio.gather(*attempts):
        assert response.status_code == 403, response.text
        assert response.json() == forbidden
    assert len((await client.get("/auth/keys", headers=user.headers)).json()) == 1


async def test_managing_keys_needs_a_credential(client):
    for response in [await client.post("/auth/keys", json={"name": "x"}),
                     await client.get("/auth/keys"),
                     await client.delete("/auth/keys/1")]:
        assert response.status_code == 401
        assert response.json() == {"detail": "Not authenticated."}


@pytest.mark.parametrize("name", ["", " ", "\t\n", "n" * 65, "\ud800"])
async def test_invalid_key_names_are_422(client, user, name):
    # Written by hand: a lone surrogate cannot be encoded by httpx's json=.
    body = f'{{"name": "{name.encode("unicode_escape").decode()}"}}'
    response = await client.post("/auth/keys", content=body,
                                 headers={**user.headers, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "name"]


async def test_key_names_of_1_and_64_characters_and_any_script_are_accepted(client, user):
    for name in ["x", "n" * 64, "clé de test 🔑"]:
        assert (await create_key(client, user, name=name))["name"] == name


async def test_at_most_20_live_keys_per_user_even_when_created_at_once(client, new_user):
    user = await new_user()
    responses = await asyncio.gather(*(
        client.post("/auth/keys", headers=user.headers, json={"name": f"k{i}"}) for i in range(24)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 20 + [409] * 4, codes
    conflict = next(r for r in responses if r.status_code == 409)
    assert conflict.json() == {"detail": "Too many API keys: revoke one before creating another."}
    listed = (await client.get("/auth/keys", headers=user.headers)).json()
    assert len(listed) == 20
    assert (await client.delete(f"/auth/keys/{listed[0]['id']}",
                                headers=user.headers)).status_code == 204
    assert (await client.post("/auth/keys", headers=user.headers,
                              json={"name": "again"})).status_code == 201


async def test_a_deleted_users_token_cannot_create_keys(client, new_user):
    gone = await new_user()
    async with client.app.state.services.sessions() as session:
        await session.execute(delete(User).where(User.id == gone.id))
        await session.commit()
    response = await client.post("/auth/keys", headers=gone.headers, json={"name": "x"})
    assert response.status_code == 401 and response.json() == INVALID


async def test_openapi_offers_both_schemes_on_every_protected_route(client):
    schema = (await client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["OAuth2PasswordBearer"]["type"] == "oauth2"
    assert schemes["APIKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                       "description": schemes["APIKeyHeader"]["description"]}
    for path, method in [("/", "get"), ("/predict", "post"), ("/predict/batch", "post"),
                         ("/data", "get"), ("/auth/keys", "post"), ("/auth/keys", "get"),
                         ("/auth/keys/{key_id}", "delete")]:
        security = schema["paths"][path][method]["security"]
        assert {"OAuth2PasswordBearer": []} in security and {"APIKeyHeader": []} in security


async def test_revoking_removes_only_that_key(client, user):
    keep, drop = await create_key(client, user), await create_key(client, user)
    revoked = await client.delete(f"/auth/keys/{drop['id']}", headers=user.headers)
    assert revoked.status_code == 204
    listed = (await client.get("/auth/keys", headers=user.headers)).json()
    assert [k["id"] for k in listed] == [keep["id"]]
    assert (await client.get("/", headers=as_header(keep["key"]))).status_code == 200
    async with client.app.state.services.sessions() as session:
        assert await session.scalar(select(ApiKey.id).where(ApiKey.id == drop["id"])) is None


def test_the_migration_adds_and_removes_the_key_table(tmp_path):
    from alembic import command

    from serve_app.db import alembic_config, upgrade_to_head

    url = f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}"
    upgrade_to_head(url)
    engine = create_engine(f"sqlite:///{tmp_path / 'migrate.db'}")
    try:
        assert "api_keys" in inspect(engine).get_table_names()
        assert {"prefix"} in [set(u["column_names"])
                              for u in inspect(engine).get_unique_constraints("api_keys")]
        command.downgrade(alembic_config(url), "0001")
        assert "api_keys" not in inspect(engine).get_table_names()
        assert "users" in inspect(engine).get_table_names()
        upgrade_to_head(url)
        assert "api_keys" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
