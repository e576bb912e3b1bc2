"""APIIngress's admission check without a Ray cluster: past MAX_WAITING_FOR_MODEL requests
waiting for the model, a new request is refused at once (503 + Retry-After) and never reaches
the model. (Shared calls themselves are proven on a real Serve instance in
tests/integration/test_batching.py; shedding under load by `bench.overload`.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from deployments.ingress import MAX_WAITING_FOR_MODEL, APIIngress
from serve_app.errors import ModelUnavailableError


class UnreachableModel:
    """A handle whose every use fails the test: a refused request must not call the model."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was called ({name}) for a request that was refused")


async def test_a_request_past_the_waiting_bound_is_refused_without_calling_the_model():
    # The method on a bare state object: a real instance needs Serve's __init__ (it builds the
    # ASGI app), and one built without it warns from Serve's async __del__.
    ingress = SimpleNamespace(_model=UnreachableModel(), _waiting=MAX_WAITING_FOR_MODEL)
    with pytest.raises(ModelUnavailableError) as refused:
        await APIIngress.func_or_class.classify(ingress, ["a text"])
    assert refused.value.retry_after >= 1
    assert ingress._waiting == MAX_WAITING_FOR_MODEL  # nothing leaked into the count
