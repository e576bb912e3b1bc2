"""APIIngress's admission check without a Ray cluster: past the admission gate's backlog
bound, a new request is refused at once (503 + Retry-After) and never reaches the model. (Shared calls themselves are proven on a real Serve instance in
tests/integration/test_batching.py; shedding under load by `bench.overload`.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from deployments.ingress import APIIngress
from serve_app.admission import AdmissionGate, ServiceBusyError


class UnreachableModel:
    """A handle whose every use fails the test: a refused request must not call the model."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was called ({name}) for a request that was refused")


async def test_a_request_past_the_waiting_bound_is_refused_without_calling_the_model():
    # The method on a bare state object: a real instance needs Serve's __init__ (it builds the
    # ASGI app), and one built without it warns from Serve's async __del__.
    gate = AdmissionGate("model", target_wait_s=1.0, max_waiting=8)
    gate.waiting = 8
    ingress = SimpleNamespace(_model=UnreachableModel(), _admission=gate)
    with pytest.raises(ServiceBusyError) as refused:
        await APIIngress.func_or_class.classify(ingress, ["a text"])
    assert refused.value.retry_after >= 1
    assert gate.waiting == 8  # nothing leaked into the count
