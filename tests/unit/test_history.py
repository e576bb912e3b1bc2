"""/data filters, search and keyset paging, /data/summary and /data/export, on SQLite and
MariaDB, always with two users: no row of one ever appears in the other's answers."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert

from serve_app.models import Prediction as PredictionRow

T0 = datetime(2026, 3, 1, 9, 15)  # naive UTC, as the log stores it


async def add_rows(client, user, rows: list[tuple]) -> list[int]:
    """Log rows (text, label[, created_at]) for ``user`` straight into the database, in order:
    the summary needs rows at chosen times. Returns their ids."""
    values = [dict(user_id=user.id, text=row[0], label=row[1], score=0.9,
                   model_version="test-model@00000000", latency_ms=1.0,
                   created_at=row[2] if len(row) > 2 else T0) for row in rows]
    ids = []
    async with client.app.state.services.sessions() as session:
        for value in values:  # one by one: ids in the order given
            ids.append((await session.execute(
                insert(PredictionRow).values(**value).returning(PredictionRow.id))).scalar_one())
        await session.commit()
    return ids


async def get_json(client, user, path, **params):
    response = await client.get(path, headers=user.headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
async def alice_and_bob(client, new_user):
    """Two users with the same texts and labels, so a leak would show."""
    alice, bob = await new_user(), await new_user()
    rows = [("Great food", "positive"), ("the WAIT was awful", "negative"),
            ("it is tuesday", "neutral"), ("great, GREAT service", "positive"),
            ("100% sure_thing", "neutral"), ("not great", "negative")]
    alice.ids = await add_rows(client, alice, rows)
    bob.ids = await add_rows(client, bob, rows)
    return alice, bob


async def test_label_filter_gives_only_that_label_newest_first(client, alice_and_bob):
    alice, bob = alice_and_bob
    rows = await get_json(client, alice, "/data", label="positive")
    assert [r["text"] for r in rows] == ["great, GREAT service", "Great food"]
    assert {r["id"] for r in rows} <= set(alice.ids)
    assert await get_json(client, alice, "/data", label="no-such-label") == []


async def test_search_is_case_insensitive_and_takes_like_wildcards_literally(client, alice_and_bob):
    alice, bob = alice_and_bob
    found = await get_json(client, alice, "/data", q="gReAt")
    assert [r["text"] for r in found] == ["not great", "great, GREAT service", "Great food"]
    assert {r["id"] for r in found} <= set(alice.ids)
    assert [r["text"] for r in await get_json(client, alice, "/data", q="wait")] == [
        "the WAIT was awful"]
    assert [r["text"] for r in await get_json(client, alice, "/data", q="% s")] == [
        "100% sure_thing"]
    assert [r["text"] for r in await get_json(client, alice, "/data", q="e_t")] == [
        "100% sure_thing"]
    both = await get_json(client, bob, "/data", q="great", label="negative")
    assert [r["text"] for r in both] == ["not great"] and both[0]["id"] in bob.ids


async def test_keyset_pages_walk_every_row_once_newest_first_like_offset(client, alice_and_bob):
    alice, bob = alice_and_bob
    walked, before = [], None
    while True:
        params = {"limit": 4} if before is None else {"limit": 4, "before_id": before}
        page = await get_json(client, alice, "/data", **params)
        if not page:
            break
        walked += [r["id"] for r in page]
        before = page[-1]["id"]
    assert walked == sorted(alice.ids, reverse=True)
    by_offset = [r["id"] for offset in (0, 4)
                 for r in await get_json(client, alice, "/data", limit=4, offset=offset)]
    assert by_offset == walked
    # An id of bob's as the cursor still yields only alice's rows.
    below_bob = await get_json(client, alice, "/data", before_id=max(bob.ids) + 1)
    assert {r["id"] for r in below_bob} == set(alice.ids)
    filtered = await get_json(client, alice, "/data", label="negative", before_id=alice.ids[-1])
    assert [r["text"] for r in filtered] == ["the WAIT was awful"]


@pytest.mark.parametrize("params", [
    {"before_id": 0}, {"before_id": "x"}, {"label": ""}, {"q": ""}, {"q": "x" * 201},
    {"label": "x" * 65},
])
async def test_data_rejects_malformed_filters_with_a_422_that_names_them(client, user, params):
    for path in ["/data", "/data/export"]:
        response = await client.get(path, headers=user.headers, params=params)
        assert response.status_code == 422, response.text
        [name] = params
        assert name in str(response.json()["detail"])


async def test_summary_counts_labels_per_day_and_hour_for_the_user_only(client, new_user):
    alice, bob = await new_user(), await new_user()
    day2 = T0 + timedelta(days=1)
    await add_rows(client, alice, [
        ("a", "positive", T0), ("b", "positive", T0 + timedelta(minutes=30)),
        ("c", "negative", T0 + timedelta(hours=1)), ("d", "neutral", day2),
        ("e", "positive", day2 + timedelta(hours=5, minutes=59, seconds=59)),
    ])
    await add_rows(client, bob, [("x", "negative", T0)] * 7 + [("y", "sad", day2)])

    days = await get_json(client, alice, "/data/summary", bucket="day")
    assert days == {"bucket": "day", "series": [
        {"start": "2026-03-01T00:00:00+00:00",
         "counts": {"negative": 1, "neutral": 0, "positive": 2}},
        {"start": "2026-03-02T00:00:00+00:00",
         "counts": {"negative": 0, "neutral": 1, "positive": 1}},
    ]}
    hours = await get_json(client, alice, "/data/summary", bucket="hour")
    assert [(b["start"], sum(b["counts"].values())) for b in hours["series"]] == [
        ("2026-03-01T09:00:00+00:00", 2), ("2026-03-01T10:00:00+00:00", 1),
        ("2026-03-02T09:00:00+00:00", 1), ("2026-03-02T15:00:00+00:00", 1)]
    bob_days = await get_json(client, bob, "/data/summary")
    assert [b["counts"] for b in bob_days["series"]] == [{"negative": 7, "sad": 0},
                                                         {"negative": 0, "sad": 1}]


async def test_summary_since_is_inclusive_until_exclusive_and_zones_are_honoured(client, user):
    await add_rows(client, user, [("a", "positive", T0),
                                  ("b", "negative", T0 + timedelta(hours=2))])
    only_first = await get_json(client, user, "/data/summary", bucket="hour",
                                since=T0.isoformat(), until=(T0 + timedelta(hours=2)).isoformat())
    assert [b["counts"] for b in only_first["series"]] == [{"positive": 1}]
    # 11:15 at +02:00 is 09:15 UTC: the first row, and the second is before 13:15 UTC.
    zoned = await get_json(client, user, "/data/summary", since="2026-03-01T11:15:00+02:00",
                           until="2026-03-01T13:15:01Z")
    assert [b["counts"] for b in zoned["series"]] == [{"negative": 1, "positive": 1}]
    assert (await get_json(client, user, "/data/summary", since="2027-01-01T00:00:00"))[
        "series"] == []


@pytest.mark.parametrize("params, message", [
    ({"bucket": "week"}, "'hour' or 'day'"),
    ({"since": "yesterday"}, "should match pattern"),
    ({"until": "0.0"}, "should match pattern"),
    ({"since": "2026-13-01T00:00:00"}, "not an ISO 8601 date-time"),
    ({"since": "2026-03-02T00:00:00", "until": "2026-03-01T00:00:00"}, "since must be earlier"),
    ({"since": "2026-03-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "since must be earlier"),
    ({"since": "0001-01-01T00:30:00+01:00"}, "between years 1 and 9999"),
])
async def test_summary_rejects_bad_parameters_with_a_clear_422(client, user, params, message):
    response = await client.get("/data/summary", headers=user.headers, params=params)
    assert response.status_code == 422, response.text
    assert message in str(response.json()["detail"])


HARD_TEXTS = ['commas, and more, commas', 'she said "hi" and left', 'line one\nline two\r\nthree',
              '=1+2 looks like a formula', 'ünïcödé, “quotes” and emoji 😀', ' spaced ']


async def test_export_is_csv_of_every_row_with_texts_quoted_and_filters_applied(client, new_user):
    alice, bob = await new_user(), await new_user()
    # More rows than one export page, so the keyset walk across pages is exercised.
    bulk = [(f"row {i}", "neutral", T0 + timedelta(seconds=i)) for i in range(1_100)]
    alice_ids = await add_rows(client, alice, bulk + [(t, "positive") for t in HARD_TEXTS])
    await add_rows(client, bob, [("bob's row, private", "positive")] * 3)

    response = await client.get("/data/export", headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(response.text, newline="")))
    assert table[0] == ["id", "created_at", "text", "label", "score", "model_version"]
    body = table[1:]
    assert len(body) == len(alice_ids)
    assert [int(row[0]) for row in body] == sorted(alice_ids, reverse=True)
    assert [row[2] for row in body[: len(HARD_TEXTS)]] == HARD_TEXTS[::-1]
    assert body[-1][1] == "2026-03-01T09:15:00+00:00"
    assert float(body[0][4]) == 0.9 and body[0][5] == "test-model@00000000"

    positive = await client.get("/data/export", headers=alice.headers,
                                params={"label": "positive", "q": "QUOTES"})
    rows = list(csv.reader(io.StringIO(positive.text, newline="")))[1:]
    assert [row[2] for row in rows] == ['ünïcödé, “quotes” and emoji 😀']
    bob_rows = list(csv.reader(io.StringIO(
        (await client.get("/data/export", headers=bob.headers)).text, newline="")))[1:]
    assert [row[2] for row in bob_rows] == ["bob's row, private"] * 3


async def test_export_of_an_empty_history_is_the_header_alone(client, user):
    response = await client.get("/data/export", headers=user.headers)
    assert response.status_code == 200
    assert response.text == "id,created_at,text,label,score,model_version\r\n"


@pytest.mark.parametrize("path", ["/data/summary", "/data/export"])
async def test_history_routes_need_a_bearer_token(client, path):
    response = await client.get(path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
