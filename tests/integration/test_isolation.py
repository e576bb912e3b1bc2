"""One user never sees another user's predictions, through any route or page."""

from __future__ import annotations

import asyncio

import pytest

from serve_stack import signup_and_login

pytestmark = pytest.mark.ray


async def test_a_user_reads_only_their_own_predictions(serve_instance):
    async with serve_instance.client() as client:
        alice, bob = await asyncio.gather(signup_and_login(client, "alice"),
                                          signup_and_login(client, "bob"))

        async def predict(user, text):
            response = await client.post("/predict", json={"text": text}, headers=user.headers)
            assert response.status_code == 200, response.text
            return response.json()["id"]

        # Interleaved and concurrent, so the two users' rows share group-commit batches.
        alice_texts = [f"alice private note {i}: the service was great" for i in range(6)]
        bob_texts = [f"bob private note {i}: the service was awful" for i in range(6)]
        ids = await asyncio.gather(*(predict(alice, t) for t in alice_texts),
                                   *(predict(bob, t) for t in bob_texts))
        alice_ids, bob_ids = set(ids[:6]), set(ids[6:])
        batch = await client.post("/predict/batch", json={"texts": ["bob batch secret"]},
                                  headers=bob.headers)
        bob_ids.add(batch.json()["results"][0]["id"])

        for user, own_ids, other_ids in ((alice, alice_ids, bob_ids), (bob, bob_ids, alice_ids)):
            seen: list[dict] = []
            for offset in range(0, 20, 3):  # every page, not just the first
                page = await client.get("/data", params={"limit": 3, "offset": offset},
                                        headers=user.headers)
                assert page.status_code == 200
                seen += page.json()
            seen_ids = {row["id"] for row in seen}
            assert seen_ids == own_ids
            assert not seen_ids & other_ids
            other = "bob" if user is alice else "alice"
            assert not [row for row in seen if other in row["text"]]

        # Without a token there is no history at all.
        assert (await client.get("/data")).status_code == 401
