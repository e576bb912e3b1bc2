"""The whole flow over HTTP against a real Ray Serve instance, on SQLite and on MariaDB.

A new user signs up, logs in, classifies one text and a batch, reads the history back, and
every prediction answered is a committed row in the instance's own database.
"""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa

from serve_stack import PASSWORD, ServeInstance, signup_and_login, sync_url

from serve_app.settings import Settings

pytestmark = pytest.mark.ray

POSITIVE = "I absolutely love this, it is wonderful and works perfectly!"
NEGATIVE = "This is terrible. I hate it, the worst purchase I have ever made."


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def instance(request) -> ServeInstance:
    name = "serve_instance" if request.param == "sqlite" else "mysql_serve_instance"
    return request.getfixturevalue(name)


def logged_rows(instance: ServeInstance, user_id: int) -> list[dict]:
    engine = sa.create_engine(sync_url(instance.database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT id, text, label, model_version FROM predictions "
                        "WHERE user_id = :uid ORDER BY id"), {"uid": user_id})
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


def assert_prediction(body: dict, text: str) -> None:
    assert body["text"] == text
    labels = set(body["scores"])
    assert labels == {"negative", "neutral", "positive"}
    assert body["label"] in labels
    assert 0.0 <= body["score"] <= 1.0
    assert body["score"] == pytest.approx(body["scores"][body["label"]], abs=1e-6)
    assert math.isclose(sum(body["scores"].values()), 1.0, abs_tol=1e-4)
    assert body["model_version"]
    assert isinstance(body["id"], int)


async def test_a_new_user_signs_up_predicts_and_reads_the_history_back(instance):
    async with instance.client() as client:
        health = await client.get("/health")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "healthy"
        model_version = health.json()["model_version"]

        user = await signup_and_login(client, prefix="flow")
        again = await client.post("/auth/", json={"username": user.username, "password": PASSWORD})
        assert again.status_code == 409
        wrong = await client.post("/auth/token",
                                  data={"username": user.username, "password": "not the password"})
        assert wrong.status_code == 401

        me = await client.get("/", headers=user.headers)
        assert me.status_code == 200
        assert me.json() == {"id": user.id, "username": user.username}
        anonymous = await client.get("/")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].lower().startswith("bearer")

        one = await client.post("/predict", json={"text": POSITIVE}, headers=user.headers)
        assert one.status_code == 200, one.text
        assert_prediction(one.json(), POSITIVE)
        assert one.json()["label"] == "positive"
        assert one.json()["model_version"] == model_version

        alias = await client.post("/predict", json={"prompt": NEGATIVE}, headers=user.headers)
        assert alias.status_code == 200, alias.text
        assert alias.json()["label"] == "negative"

        texts = [NEGATIVE, "The meeting is at 3pm in room 204.", POSITIVE]
        batch = await client.post("/predict/batch", json={"texts": texts}, headers=user.headers)
        assert batch.status_code == 200, batch.text
        results = batch.json()["results"]
        assert [r["text"] for r in results] == texts
        for result, text in zip(results, texts):
            assert_prediction(result, text)
        assert results[0]["label"] == "negative" and results[2]["label"] == "positive"

        history = await client.get("/data", headers=user.headers)
        assert history.status_code == 200
        rows = history.json()
        answered_ids = [one.json()["id"], alias.json()["id"]] + [r["id"] for r in results]
        assert sorted(r["id"] for r in rows) == sorted(answered_ids)
        created = [r["created_at"] for r in rows]
        assert created == sorted(created, reverse=True), "newest first"
        page = await client.get("/data", params={"limit": 2, "offset": 1}, headers=user.headers)
        assert [r["id"] for r in page.json()] == [r["id"] for r in rows[1:3]]

    # Every answered prediction is a committed row in this instance's own database.
    stored = logged_rows(instance, user.id)
    assert sorted(r["id"] for r in stored) == sorted(answered_ids)
    assert {r["model_version"] for r in stored} == {model_version}


async def test_bad_input_is_a_4xx_with_a_message_never_a_500(instance):
    async with instance.client() as client:
        user = await signup_and_login(client, prefix="bad")
        cases = [
            ("/predict", {"json": {"text": "   "}}),
            ("/predict", {"json": {"text": "x" * (Settings().max_text_chars + 1)}}),
            ("/predict", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
            ("/predict/batch", {"json": {"texts": []}}),
            ("/predict/batch", {"json": {"texts": ["ok"] * 65}}),
            # Past MAX_BODY_BYTES: answered by the app (our JSON 413) behind HAProxy, not by it.
            ("/predict/batch", {"json": {"texts": ["y" * 4000] * 300}}),
        ]
        for path, kwargs in cases:
            headers = {**user.headers, **kwargs.pop("headers", {})}
            response = await client.post(path, headers=headers, **kwargs)
            assert response.status_code in (413, 422), (path, response.status_code, response.text)
            assert response.json()["detail"], response.text
