"""Admission by waiting time: refuse work at once when it could not start within a target wait.

A count of waiting requests means different waits on a slow machine, a fast one and a GPU;
a wait does not. The gate measures how fast its work completes (units per second of busy
time, where busy means something was in flight) and how long one unit takes when it does not
queue (its service time, learnt only from units admitted into an empty gate, so a standing
queue never passes for service). A newcomer's wait is then the time to clear the backlog
ahead of it, less its own service time (Little's law: backlog / rate is the time in the
gate). A refusal also needs evidence of a queue: some admitted work has already been in the
gate longer than the target (as CoDel looks at the sojourn of what is queued), so a rate
learnt from a slow first call or a burst of large requests never refuses work that would in
fact start at once. Past the target the newcomer is refused with a
``Retry-After`` that says when the backlog, and the clients already told to come back,
will have been served. A count bound stays as a backstop against a rate not yet measured.

The rate is learnt from the work admitted: as more is admitted, batches grow and so does the
measured rate. A burst into an idle gate is admitted (nothing has waited yet); what arrives
once the first of it has waited past the target is decided by the estimate.

A refusal's Retry-After is a reservation: a client (for the model, the user and the texts of
the request, so a retried request and not the user's next one) that comes back at the time it
was given is admitted up to RESERVED_WAIT_FACTOR times the target while newcomers are refused,
so under sustained overload a client that honours Retry-After is served on its next try
instead of competing again with every new arrival. The slots are spread at the service rate,
so what they admit is the work the gate could clear; a client back early books a slot of its
own. Each refusal books a slot of its own, and any due slot of the client admits. Reservations
are kept by the gate that gave them (one per ingress replica).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

SERVICE_BUSY = "The service is busy; retry after the number of seconds in Retry-After."

# Why a request was refused (the `reason` of the rejection counter).
WAIT_OVER_TARGET = "wait_over_target"
BACKLOG_FULL = "backlog_full"

# (work, estimated wait in seconds, refusal reason or None when admitted): a metrics hook.
AdmissionHook = Callable[[str, float, str | None], None]

# A client back at its slot may wait this much longer than a newcomer: it is served before
# newcomers, yet a rate estimated too high cannot let the booked slots grow the queue unbounded.
RESERVED_WAIT_FACTOR = 1.5
# A reservation holds from a little before its time (clients' clocks, rounding) until long
# after it (think time, jitter); the oldest are dropped past the bound.
RESERVATION_EARLY_S = 0.5
RESERVATION_HOLD_S = 30.0
MAX_RESERVATIONS = 10_000  # clients
MAX_SLOTS_PER_CLIENT = 64

# Who is asking, for the gate's reservations: set by the route around its model call (the
# user and the request's texts).
admission_client: ContextVar[Hashable | None] = ContextVar("admission_client", default=None)


class ServiceBusyError(RuntimeError):
    """The service is up but its work is queued past its bound: 503 with Retry-After."""

    def __init__(self, detail: str = SERVICE_BUSY, *, retry_after: int, reason: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        self.reason = reason


class AdmissionGate:
    """Admits or refuses units of one kind of work (texts for the model, password hashes).

    Not thread-safe: used from one event loop, where admit() runs without awaiting.
    """

    def __init__(self, work: str, *, target_wait_s: float, max_waiting: int,
                 min_admitted: int = 1, rate_half_life_s: float = 1.0,
                 max_retry_after_s: int = 60, on_decision: AdmissionHook | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.work = work
        self.target_wait_s = target_wait_s
        self.max_waiting = max_waiting
        # Always admitted while fewer units wait: the cold start, before any rate is known.
        self.min_admitted = min_admitted
        self._decay_per_s = math.log(2) / rate_half_life_s
        self.max_retry_after_s = max_retry_after_s
        self.on_decision = on_decision
        self._clock = clock
        self.waiting = 0  # units admitted and not finished
        self._done_units = 0.0  # exponentially weighted units completed ...
        self._busy_s = 0.0  # ... over exponentially weighted busy seconds
        self._last_event = clock()
        self._admitted_at: OrderedDict[object, float] = OrderedDict()  # in flight, oldest first
        self.service_s = 0.0  # time in the gate of a unit that did not queue, recently
        self._first_sample = True
        # When the clients already told to retry will have been served: each refusal books
        # its slot after the previous one, so retries come back spread at the service rate.
        self._booked_until = 0.0
        # client -> the times its refusals named (now + Retry-After), earliest first
        self._reservations: OrderedDict[Hashable, list[float]] = OrderedDict()

    @property
    def rate(self) -> float | None:
        """Units completed per busy second, recently; None before anything completed."""
        if self._done_units <= 0 or self._busy_s <= 0:
            return None
        return self._done_units / self._busy_s

    def expected_wait(self, cost: int = 1) -> float:
        """Seconds `cost` more units would queue before their service (0 while unmeasured)."""
        rate = self.rate
        return 0.0 if rate is None else max(0.0, (self.waiting + cost) / rate - self.service_s)

    @contextmanager
    def admit(self, cost: int = 1, client: Hashable | None = None) -> Iterator[None]:
        """Hold `cost` units of admitted work for the body of the with, or raise
        ServiceBusyError at once. `client` (default: the admission_client of the context)
        keeps the reservation a refusal gives it."""
        now = self._clock()
        self._advance(now)
        client = admission_client.get() if client is None else client
        slots = self._due_slots(client, now)
        reserved = bool(slots) and slots[0] - RESERVATION_EARLY_S <= now
        wait = self.expected_wait(cost)
        limit = self.target_wait_s * (RESERVED_WAIT_FACTOR if reserved else 1.0)
        reason = None
        if self.waiting > 0 and self.waiting + cost > self.max_waiting:
            reason = BACKLOG_FULL
        elif (self.waiting >= self.min_admitted and wait > limit
              and self.oldest_age(now) > limit):
            reason = WAIT_OVER_TARGET
        self._notify(wait, reason)
        if reason is not None:
            raise ServiceBusyError(retry_after=self._book(now, cost, client), reason=reason)
        if reserved:
            slots.pop(0)
        alone = self.waiting == 0
        self.waiting += cost
        token = object()
        self._admitted_at[token] = now
        try:
            yield
        finally:
            del self._admitted_at[token]
            done = self._clock()
            self._advance(done)
            self.waiting -= cost
            self._done_units += cost
            if alone:  # nothing ahead of it: its time was service alone
                sample = done - now
                self.service_s = sample if self._first_sample else (
                    self.service_s + 0.2 * (sample - self.service_s))
                self._first_sample = False

    def oldest_age(self, now: float) -> float:
        """Seconds the longest-held admitted work has been in the gate (0 when empty)."""
        if not self._admitted_at:
            return 0.0
        return now - next(iter(self._admitted_at.values()))

    def retry_after(self) -> int:
        """What a refusal now would answer, without booking a slot (health, tests)."""
        now = self._clock()
        return self._clamp(max(self._booked_until, now + self._drain_s()) - now)

    def _drain_s(self) -> float:
        """Seconds until the backlog is short enough to admit one more unit."""
        rate = self.rate
        if rate is None:
            return 1.0
        return max(0.0, self.waiting / rate - self.service_s - self.target_wait_s)

    def _book(self, now: float, cost: int, client: Hashable | None) -> int:
        """Retry-After for the next free slot (when the backlog and the slots booked before
        will be served); the time it names is reserved for `client`."""
        start = max(self._booked_until, now + self._drain_s())
        self._booked_until = start + cost / (self.rate or 1.0)
        retry_after = self._clamp(start - now)
        if client is not None:
            slots = self._reservations.pop(client, [])
            slots.append(now + retry_after)
            self._reservations[client] = slots[-MAX_SLOTS_PER_CLIENT:]  # most recently used last
            while len(self._reservations) > MAX_RESERVATIONS:
                self._reservations.popitem(last=False)
        return retry_after

    def _due_slots(self, client: Hashable | None, now: float) -> list[float]:
        """The client's slots that have not lapsed, earliest first (empty without a client)."""
        if client is None or client not in self._reservations:
            return []
        slots = self._reservations[client]
        while slots and slots[0] + RESERVATION_HOLD_S < now:
            slots.pop(0)
        if not slots:
            del self._reservations[client]
        return slots

    def _clamp(self, seconds: float) -> int:
        return min(self.max_retry_after_s, max(1, math.ceil(seconds)))

    def _advance(self, now: float) -> None:
        """Age the rate's weights by the busy time since the last event."""
        elapsed = max(0.0, now - self._last_event)
        self._last_event = now
        if self.waiting == 0 or elapsed == 0:
            return  # idle time teaches nothing about the service rate
        keep = math.exp(-self._decay_per_s * elapsed)
        self._done_units *= keep
        self._busy_s = self._busy_s * keep + (1.0 - keep) / self._decay_per_s

    def _notify(self, wait: float, reason: str | None) -> None:
        if self.on_decision is not None:
            self.on_decision(self.work, wait, reason)
