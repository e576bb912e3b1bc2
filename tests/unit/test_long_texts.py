"""Texts longer than the model's window through the API, on SQLite and MariaDB: classified whole
over windows, answered with their window count, logged whole, charged per window."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from serve_app.models import Prediction as PredictionRow

REVIEW = ("The room was small and the street was loud at night. Breakfast, though, was "
          "excellent and the staff went out of their way to help us. ")
LONG = (REVIEW * 200)[:20_000]
MEDIUM = REVIEW * 5  # 152 tokens: past one window of 128, within two


async def logged_text(client, row_id: int) -> str:
    async with client.app.state.services.sessions() as session:
        return await session.scalar(select(PredictionRow.text).where(PredictionRow.id == row_id))


async def test_a_long_text_is_classified_whole_and_logged_whole(client, user, classifier):
    response = await client.post("/predict", headers=user.headers, json={"text": LONG})
    assert response.status_code == 200, response.text
    body = response.json()
    [expected] = classifier.predict([LONG])
    assert body["windows"] == expected.windows > 30
    assert body["label"] == expected.label
    assert body["scores"] == pytest.approx(expected.scores, abs=1e-5)
    assert body["text"] == LONG
    assert await logged_text(client, body["id"]) == LONG


async def test_batch_of_mixed_lengths_answers_in_input_order_with_each_texts_windows(
        client, user, classifier):
    texts = ["Lovely staff!", LONG, "The street was loud.", MEDIUM, "ok"]
    response = await client.post("/predict/batch", headers=user.headers, json={"texts": texts})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["text"] for r in results] == texts
    windows = [r["windows"] for r in results]
    assert windows[0] == windows[2] == windows[4] == 1
    assert windows[3] == 2 and windows[1] > 30
    for text, result in zip(texts, results):
        [alone] = classifier.predict([text])
        assert (result["windows"], result["label"]) == (alone.windows, alone.label)
        assert result["scores"] == pytest.approx(alone.scores, abs=1e-5)
        assert await logged_text(client, result["id"]) == text


async def test_a_text_past_twenty_thousand_characters_is_a_422_in_either_route(client, user):
    single = await client.post("/predict", headers=user.headers, json={"text": LONG + "!"})
    assert single.status_code == 422
    assert "at most 20000 characters" in str(single.json()["detail"])
    batch = await client.post("/predict/batch", headers=user.headers,
                              json={"texts": ["fine", LONG + "!"]})
    assert batch.status_code == 422
    assert "at most 20000 characters" in str(batch.json()["detail"])
    assert (await client.get("/data", headers=user.headers)).json() == []


async def test_the_rate_limit_counts_windows_not_requests(client_with, register, classifier):
    [expected] = classifier.predict([LONG])
    # 10 windows a second, a burst of 20: twenty one-window texts pass in a row, but after one
    # long text (40+ windows) the next short text waits for the debt to refill.
    async with client_with(predict_rate_per_second=10, predict_burst=20) as limited:
        someone = await register(limited)
        short = {"text": "fine"}
        for _ in range(5):
            assert (await limited.post("/predict", headers=someone.headers,
                                       json=short)).status_code == 200
        long = await limited.post("/predict", headers=someone.headers, json={"text": LONG})
        assert long.status_code == 200 and long.json()["windows"] == expected.windows
        refused = await limited.post("/predict", headers=someone.headers, json=short)
        assert refused.status_code == 429
        # 15 tokens were left, the long text took `windows`: about (windows - 14) / 10 s to go.
        assert int(refused.headers["Retry-After"]) >= (expected.windows - 15) // 10
