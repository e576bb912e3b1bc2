"""The HTTP API in process, with the real classifier, on SQLite and on MariaDB."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import select

from serve_app.models import Prediction as PredictionRow


async def logged_row(client, row_id: int) -> PredictionRow | None:
    """Read a row through a fresh session: it is there only if it was committed."""
    async with client.app.state.services.sessions() as session:
        return await session.scalar(select(PredictionRow).where(PredictionRow.id == row_id))


async def test_predict_answers_with_a_label_of_the_model_and_commits_the_row(client, user, classifier):
    response = await client.post("/predict", headers=user.headers, json={"text": "I love this!"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "text", "label", "score", "scores", "model_version", "created_at",
                         "windows"}
    assert body["windows"] == 1
    assert body["label"] in classifier.labels
    assert set(body["scores"]) == set(classifier.labels)
    assert math.isclose(sum(body["scores"].values()), 1.0, abs_tol=1e-4)
    assert body["score"] == pytest.approx(body["scores"][body["label"]])
    assert body["label"] == max(body["scores"], key=body["scores"].get)
    assert body["model_version"] == classifier.model_version
    row = await logged_row(client, body["id"])
    assert row is not None and row.user_id == user.id
    assert (row.text, row.label, row.model_version) == ("I love this!", body["label"],
                                                        body["model_version"])
    assert row.score == pytest.approx(body["score"])
    assert row.latency_ms > 0


async def test_predict_accepts_prompt_as_an_alias_of_text(client, user):
    response = await client.post("/predict", headers=user.headers, json={"prompt": "so-so day"})
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "so-so day"


async def test_clear_sentiments_get_the_expected_labels(client, user):
    response = await client.post("/predict/batch", headers=user.headers, json={"texts": [
        "This is wonderful, I absolutely love it!",
        "This is terrible, the worst experience of my life.",
    ]})
    assert response.status_code == 200, response.text
    assert [r["label"] for r in response.json()["results"]] == ["positive", "negative"]


async def test_batch_answers_in_input_order_and_logs_every_text(client, user):
    texts = [f"text number {i}: {'great' if i % 2 else 'awful'}" for i in range(10)]
    response = await client.post("/predict/batch", headers=user.headers, json={"texts": texts})

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["text"] for r in results] == texts
    assert len({r["id"] for r in results}) == len(texts)
    for result in results:
        row = await logged_row(client, result["id"])
        assert row is not None and row.text == result["text"] and row.user_id == user.id


@pytest.mark.parametrize("body, message", [
    ({"text": ""}, "at least 1 character"),
    ({"text": "   \n\t "}, "empty or whitespace"),
    ({"text": "x" * 20_001}, "at most 20000 characters"),
    ({"text": 42}, "valid string"),
    ({}, "Field required"),
])
async def test_invalid_text_is_a_422_with_a_message(client, user, body, message):
    response = await client.post("/predict", headers=user.headers, json=body)
    assert response.status_code == 422, response.text
    assert message in str(response.json()["detail"])


async def test_text_of_exactly_the_maximum_length_is_accepted_and_logged_whole(client, user):
    text = ("ok " * 6667)[:20_000]
    response = await client.post("/predict", headers=user.headers, json={"text": text})
    assert response.status_code == 200, response.text
    assert response.json()["windows"] > 1
    assert (await logged_row(client, response.json()["id"])).text == text


@pytest.mark.parametrize("texts", [[], [f"t{i}" for i in range(65)], ["fine", " "]])
async def test_invalid_batches_are_422(client, user, texts):
    response = await client.post("/predict/batch", headers=user.headers, json={"texts": texts})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


async def test_malformed_json_is_a_422_with_a_message(client, user):
    response = await client.post("/predict", content=b'{"text": "unterminated',
                                 headers={**user.headers, "Content-Type": "application/json"})
    assert response.status_code == 422
    assert "JSON decode error" in str(response.json()["detail"])


async def test_data_lists_own_predictions_newest_first_with_limit_and_offset(client, user):
    for text in ["first", "second", "third"]:
        assert (await client.post("/predict", headers=user.headers, json={"text": text})).status_code == 200

    everything = (await client.get("/data", headers=user.headers)).json()
    assert [row["text"] for row in everything] == ["third", "second", "first"]
    page = await client.get("/data", headers=user.headers, params={"limit": 1, "offset": 1})
    assert [row["text"] for row in page.json()] == ["second"]
    assert set(everything[0]) == {"id", "text", "label", "score", "model_version", "latency_ms",
                                  "created_at"}


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "x"}])
async def test_data_rejects_out_of_range_paging(client, user, params):
    response = await client.get("/data", headers=user.headers, params=params)
    assert response.status_code == 422


async def test_data_never_shows_another_users_rows(client, new_user):
    alice, bob = await new_user(), await new_user()
    await client.post("/predict", headers=alice.headers, json={"text": "alice's secret"})
    await client.post("/predict/batch", headers=bob.headers, json={"texts": ["bob 1", "bob 2"]})

    alice_rows = (await client.get("/data", headers=alice.headers)).json()
    bob_rows = (await client.get("/data", headers=bob.headers)).json()
    assert [r["text"] for r in alice_rows] == ["alice's secret"]
    assert sorted(r["text"] for r in bob_rows) == ["bob 1", "bob 2"]


@pytest.mark.parametrize("method, path", [
    ("GET", "/"), ("POST", "/predict"), ("POST", "/predict/batch"), ("GET", "/data"),
])
async def test_protected_routes_need_a_bearer_token(client, method, path):
    response = await client.request(method, path, json={"text": "x", "texts": ["x"]})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["detail"]


async def test_health_reports_database_model_and_version(client, classifier):
    response = await client.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "healthy", "database": "ok", "model": "ok",
                               "model_version": classifier.model_version, "detail": None}


async def test_model_failure_is_503_with_retry_after_on_health_and_predict(client_with, register):
    async def no_replica(texts):  # what a model deployment without a live replica amounts to
        raise ConnectionError("no replica of the model deployment is alive")

    async with client_with(classify_fn=no_replica) as failing:
        health = await failing.get("/health")
        assert health.status_code == 503
        assert int(health.headers["Retry-After"]) > 0
        assert health.json()["status"] == "unhealthy"
        assert health.json()["database"] == "ok"
        assert "ConnectionError" in health.json()["detail"]

        someone = await register(failing)
        predict = await failing.post("/predict", headers=someone.headers, json={"text": "hi"})
        assert predict.status_code == 503
        assert int(predict.headers["Retry-After"]) > 0
        assert "model" in predict.json()["detail"].lower()
        assert (await failing.get("/data", headers=someone.headers)).json() == []


async def test_info_names_model_labels_and_limits(client, classifier):
    response = await client.get("/info")
    assert response.status_code == 200
    assert response.json() == {
        "model_version": classifier.model_version,
        "labels": classifier.labels,
        "limits": {"max_text_chars": 20000, "max_batch_texts": 64, "max_body_bytes": 1048576},
    }


async def test_unknown_route_and_wrong_method_are_json(client):
    missing = await client.get("/no-such-route")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    wrong = await client.get("/predict")
    assert wrong.status_code == 405 and wrong.json()["detail"]


async def test_openapi_documents_every_route_and_its_auth(client):
    schema = (await client.get("/openapi.json")).json()
    for path, method in [("/", "get"), ("/predict", "post"), ("/predict/batch", "post"),
                         ("/data", "get")]:
        assert schema["paths"][path][method]["security"] == [{"OAuth2PasswordBearer": []},
                                                             {"APIKeyHeader": []}]
    for path in ["/auth/", "/auth/token", "/health", "/info"]:
        assert path in schema["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_with_prediction_logging_off_nothing_is_written(client_with, register):
    async with client_with(prediction_logging=False) as unlogged:
        someone = await register(unlogged)
        response = await unlogged.post("/predict", headers=someone.headers, json={"text": "fast"})
        assert response.status_code == 200
        assert response.json()["id"] is None
        assert (await unlogged.get("/data", headers=someone.headers)).json() == []
