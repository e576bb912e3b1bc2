"""APIIngress's admission check without a Ray cluster: past MAX_WAITING_FOR_MODEL requests
waiting for the model, a new request is refused at once (503 + Retry-After) and never reaches
the model. (Shared calls themselves are proven on a real Serve instance in
tests/integration/test_batching.py; shedding under load by `bench.overload`.)"""

from __future__ import annotations

import pytest

from deployments.ingress import MAX_WAITING_FOR_MODEL, APIIngress
from serve_app.errors import ModelUnavailableError


class UnreachableModel:
    """A handle whose every use fails the test: a refused request must not call the model."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was called ({name}) for a request that was refused")


async def test_a_request_past_the_waiting_bound_is_refused_without_calling_the_model():
    # The replica's own __init__ is Serve's (it builds the ASGI app); set up what classify uses.
    ingress = object.__new__(APIIngress.func_or_class)
    ingress._model = UnreachableModel()
    ingress._waiting = MAX_WAITING_FOR_MODEL
    with pytest.raises(ModelUnavailableError) as refused:
        await ingress.classify(["a text"])
    assert refused.value.retry_after >= 1
    assert ingress._waiting == MAX_WAITING_FOR_MODEL  # nothing leaked into the count
