"""The admission gate on a clock the test moves: decisions follow the measured rate, not a count.

The gate's arithmetic is checked here step by step; the same gate in front of a deliberately
slow model on a real Serve instance is in tests/integration/test_admission.py.
"""

from __future__ import annotations

import pytest

from serve_app.admission import (
    BACKLOG_FULL,
    RESERVED_WAIT_FACTOR,
    WAIT_OVER_TARGET,
    AdmissionGate,
    ServiceBusyError,
    admission_client,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hold(gate: AdmissionGate, held: list, cost: int = 1, client: str | None = None) -> None:
    """Admit and keep holding (the context stays referenced, so it is not closed)."""
    ctx = gate.admit(cost, client)
    ctx.__enter__()
    held.append(ctx)


def run_at_rate(gate: AdmissionGate, clock: Clock, *, units_per_s: float, seconds: float,
                concurrency: int) -> None:
    """Keep `concurrency` units in flight, each finishing 1/units_per_s after the previous."""
    held = [gate.admit() for _ in range(concurrency)]
    for ctx in held:
        ctx.__enter__()
    for _ in range(int(units_per_s * seconds)):
        clock.now += 1.0 / units_per_s
        held.pop(0).__exit__(None, None, None)
        nxt = gate.admit()
        nxt.__enter__()
        held.append(nxt)
    for ctx in held:  # the last ones drain at the same rate
        clock.now += 1.0 / units_per_s
        ctx.__exit__(None, None, None)


def saturate(gate: AdmissionGate, clock: Clock, *, units_per_s: float,
             concurrency: int) -> tuple[list, ServiceBusyError]:
    """Run at a rate with one unit stuck throughout (a queue), then admit without completing
    anything until refused: returns what was held and the refusal."""
    held: list = []
    hold(gate, held)
    run_at_rate(gate, clock, units_per_s=units_per_s, seconds=5, concurrency=concurrency)
    with pytest.raises(ServiceBusyError) as refused:
        while True:
            hold(gate, held)
    return held, refused.value


def test_the_rate_is_learnt_from_busy_time_and_idle_time_does_not_dilute_it():
    clock = Clock()
    gate = AdmissionGate("model", target_wait_s=1.0, max_waiting=1000, clock=clock)
    run_at_rate(gate, clock, units_per_s=50, seconds=5, concurrency=10)
    assert gate.rate == pytest.approx(50, rel=0.1)
    clock.now += 600  # ten idle minutes
    assert gate.rate == pytest.approx(50, rel=0.1)


def test_requests_past_the_target_wait_are_refused_at_once_with_a_reason_and_retry_after():
    clock = Clock()
    gate = AdmissionGate("model", target_wait_s=1.0, max_waiting=1000, clock=clock)
    admitted, refusal = saturate(gate, clock, units_per_s=20, concurrency=5)
    # 20 units/s and a 1 s target: about 20 units may wait, not the 1000 of the count bound.
    assert 15 <= len(admitted) <= 26
    assert refusal.reason == WAIT_OVER_TARGET
    assert refusal.retry_after >= 1
    for ctx in admitted:
        ctx.__exit__(None, None, None)
    with gate.admit():  # the backlog is gone: admitted again
        pass


def test_refused_clients_are_told_to_come_back_spread_at_the_service_rate():
    clock = Clock()
    gate = AdmissionGate("model", target_wait_s=1.0, max_waiting=1000, clock=clock)
    # The backlog, one target of work, stays held (a dropped context would release its units
    # whenever the garbage collector gets to it).
    held, _ = saturate(gate, clock, units_per_s=10, concurrency=5)
    answers = []
    for _ in range(40):
        with pytest.raises(ServiceBusyError) as refused:
            with gate.admit():
                pass
        answers.append(refused.value.retry_after)
    assert gate.waiting == len(held)
    # 40 refusals at 10 units/s: spread over about 4 s, in order, never all told "1".
    assert answers == sorted(answers)
    assert answers[0] <= 2 and 4 <= answers[-1] <= 7


def test_a_slower_service_admits_less_work_for_the_same_target():
    admitted = {}
    for rate in (100, 10):
        clock = Clock()
        gate = AdmissionGate("model", target_wait_s=1.0, max_waiting=10_000, clock=clock)
        held, _ = saturate(gate, clock, units_per_s=rate, concurrency=8)
        admitted[rate] = len(held)
    assert admitted[100] > 5 * admitted[10]


def test_service_longer_than_the_target_is_not_mistaken_for_waiting():
    # A service with room for everyone that takes 2 s per unit: nothing ever queues, so the
    # gate must come to admit all 10 clients although each unit takes twice the 1 s target.
    clock = Clock()
    gate = AdmissionGate("model", target_wait_s=1.0, max_waiting=1000, clock=clock)
    in_flight: list[tuple[float, object]] = []  # (finish time, held context)
    refused_late = 0
    for step in range(400):  # 40 s in steps of 0.1 s
        clock.now += 0.1
        for finish, ctx in [f for f in in_flight if f[0] <= clock.now]:
            in_flight.remove((finish, ctx))
            ctx.__exit__(None, None, None)
        while len(in_flight) < 10:
            ctx = gate.admit()
            try:
                ctx.__enter__()
            except ServiceBusyError:
                refused_late += step >= 200
                break
            in_flight.append((clock.now + 2.0, ctx))
    assert gate.service_s == pytest.approx(2.0, rel=0.1)
    assert refused_late == 0  # the second half: every client admitted


def test_a_low_rate_learnt_earlier_refuses_nothing_until_work_has_waited_past_the_target():
    # One slow first call teaches a rate of 0.5 units/s; then a burst of large requests
    # arrives at once. Nothing has waited yet, so all of it is admitted; once the oldest has
    # been in the gate past the target, the estimate decides again.
    clock = Clock()
    gate = AdmissionGate("model", target_wait_s=1.0, max_waiting=1000, clock=clock)
    with gate.admit():
        clock.now += 2.0
    held: list = []
    for _ in range(4):
        hold(gate, held, cost=64)
    clock.now += 1.5
    with pytest.raises(ServiceBusyError):
        hold(gate, held)


def test_the_count_backstop_holds_before_any_rate_is_measured():
    gate = AdmissionGate("model", target_wait_s=1.0, max_waiting=8, clock=Clock())
    held: list = []
    for _ in range(8):
        hold(gate, held)
    with pytest.raises(ServiceBusyError) as refused:
        hold(gate, held)
    assert refused.value.reason == BACKLOG_FULL


def test_one_large_request_is_admitted_into_an_empty_gate_whatever_its_size():
    gate = AdmissionGate("model", target_wait_s=1.0, max_waiting=8, clock=Clock())
    with gate.admit(64):
        assert gate.waiting == 64
    assert gate.waiting == 0


def test_every_decision_reaches_the_metrics_hook():
    seen = []
    gate = AdmissionGate("password_hash", target_wait_s=1.0, max_waiting=1, clock=Clock(),
                         on_decision=lambda work, wait, reason: seen.append((work, reason)))
    with gate.admit():
        with pytest.raises(ServiceBusyError):
            hold(gate, [])
    assert seen == [("password_hash", None), ("password_hash", BACKLOG_FULL)]


def overloaded(gate: AdmissionGate, clock: Clock, held: list, *, units_per_s: float,
               seconds: float) -> None:
    """The service keeps completing units at its rate while newcomers keep the queue full
    (the first unit, stuck, keeps the oldest age past the target)."""
    for _ in range(int(units_per_s * seconds)):
        clock.now += 1.0 / units_per_s
        held.pop(1).__exit__(None, None, None)
        for _ in range(3):
            try:
                hold(gate, held)
            except ServiceBusyError:
                pass


def saturated_gate() -> tuple[AdmissionGate, Clock, list]:
    """A gate (1 s target) whose service of 10 units/s is saturated, and what it holds."""
    clock = Clock()
    gate = AdmissionGate("model", target_wait_s=1.0, max_waiting=1000, clock=clock)
    held, _ = saturate(gate, clock, units_per_s=10, concurrency=5)
    return gate, clock, held


def test_a_client_back_at_its_retry_after_is_admitted_while_newcomers_are_refused():
    gate, clock, held = saturated_gate()
    with pytest.raises(ServiceBusyError) as refused:
        hold(gate, held, client="alice")
    # The backlog stays as long as before.
    overloaded(gate, clock, held, units_per_s=10, seconds=refused.value.retry_after)
    with pytest.raises(ServiceBusyError):
        hold(gate, held, client="bob")  # a newcomer is refused ...
    hold(gate, held, client="alice")  # ... the client with the reservation is admitted
    with pytest.raises(ServiceBusyError):  # once: the reservation is used up
        hold(gate, held, client="alice")


def test_a_reservation_admits_up_to_a_bounded_wait_only():
    gate, clock, held = saturated_gate()
    with pytest.raises(ServiceBusyError) as refused:
        hold(gate, held, client="alice")
    for _ in range(10):  # another second of work joins the queue (not through the gate's check)
        gate.waiting += 1
    clock.now += refused.value.retry_after
    assert gate.expected_wait() > RESERVED_WAIT_FACTOR * gate.target_wait_s
    with pytest.raises(ServiceBusyError):
        hold(gate, held, client="alice")


def test_each_refusal_of_one_user_books_a_slot_of_its_own():
    # One user, several clients (a script's workers sharing a key): each refused request gets
    # its own slot, and each slot admits one request of that user when it comes.
    gate, clock, held = saturated_gate()
    answers = []
    for _ in range(3):
        with pytest.raises(ServiceBusyError) as refused:
            hold(gate, held, client="alice")
        answers.append(refused.value.retry_after)
    overloaded(gate, clock, held, units_per_s=10, seconds=max(answers))
    for _ in range(3):
        hold(gate, held, client="alice")
    with pytest.raises(ServiceBusyError):  # three slots, three admissions
        hold(gate, held, client="alice")


def test_the_client_of_the_context_is_the_default():
    gate, clock, held = saturated_gate()
    token = admission_client.set(42)
    try:
        with pytest.raises(ServiceBusyError) as refused:
            hold(gate, held)
        admission_client.set(None)
        overloaded(gate, clock, held, units_per_s=10, seconds=refused.value.retry_after)
        admission_client.set(42)
        hold(gate, held)  # 42's reservation
    finally:
        admission_client.reset(token)


async def test_through_the_api_a_retried_request_gets_its_slot_and_the_users_next_one_does_not(
        database_url, classify, app_client):
    # One user, two workers (a script sharing a key) against a saturated model: the request
    # that was refused, sent again at its Retry-After, is served; the other worker's new
    # request arriving then is refused, not served in its place.
    from serve_stack import signup_and_login

    gate, clock, held = saturated_gate()

    async def gated_classify(texts):
        with gate.admit(len(texts)):
            return await classify(texts)

    async with app_client(gated_classify, database_url, predict_rate_per_second=0) as client:
        user = await signup_and_login(client, prefix="retry")
        first = await client.post("/predict", headers=user.headers, json={"text": "the same words"})
        assert first.status_code == 503, first.text
        overloaded(gate, clock, held, units_per_s=10, seconds=int(first.headers["Retry-After"]))
        other = await client.post("/predict", headers=user.headers, json={"text": "new words"})
        assert other.status_code == 503, other.text
        again = await client.post("/predict", headers=user.headers, json={"text": "the same words"})
        assert again.status_code == 200, again.text
