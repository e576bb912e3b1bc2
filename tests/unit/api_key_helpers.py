"""Helpers shared by the API-key tests: create a key, send it, read what the app stored."""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import event

from serve_app.models import ApiKey

INVALID = {"detail": "Invalid or expired token."}


async def create_key(client, user, name: str = "a key") -> dict:
    response = await client.post("/auth/keys", headers=user.headers, json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


def as_bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def as_header(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def assert_refused(client, headers) -> None:
    response = await client.get("/", headers=headers)
    assert response.status_code == 401, response.text
    assert response.json() == INVALID
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def stored_key(client, key_id: int) -> ApiKey | None:
    async with client.app.state.services.sessions() as session:
        return await session.get(ApiKey, key_id)


@contextmanager
def counted_statements(client, verb: str):
    """SQL statements of ``verb`` (e.g. "UPDATE api_keys") the app sends while inside."""
    seen: list[str] = []
    engine = client.app.state.services.engine.sync_engine

    def note(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith(verb.upper()):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)
