"""500 users against a running sentiment-serve: sign up, log in, then predict and read /data.

    make load                                    # against http://127.0.0.1:8000
    make load LOAD_HOST=http://host:port LOAD_ARGS="--users 500 --run-time 240s"

Each simulated user signs up with a unique name, logs in through the OAuth2 password flow,
then classifies texts and reads its history with 1-3 s of think time between requests. Users
behave like real clients of a service that sheds load: a 503 or 429 with Retry-After is waited
out and the same step sent again (at most MAX_RETRIES times), and nobody logs in before their
sign-up succeeded. Refused answers that were retried are counted as shed (their own rows,
"... (shed)"), not as failures. At the end the run's totals go to bench/load.json (LOAD_JSON
overrides the path).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import uuid
from collections import defaultdict
from pathlib import Path

import gevent
from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser

PASSWORD = "load-test-password-1"
RUN_ID = uuid.uuid4().hex[:8]
_user_numbers = itertools.count()
TEXTS = [
    "The update made the app so much faster, great job",
    "Support never answered my ticket, really disappointed",
    "The package arrived on Tuesday.",
    "I can't stop listening to this album, it's wonderful",
    "Meh. It works, I guess.",
    "Terrible battery life, would not recommend",
    "The hotel was clean and the staff were friendly",
    "Prices went up again this month",
]


MAX_RETRIES = 5
SHED = " (shed)"
# Response times in ms by request name and outcome ("ok", "shed"; failures are only counted).
_times: defaultdict[str, defaultdict[str, list[float]]] = defaultdict(lambda: defaultdict(list))


class ServiceUser(FastHttpUser):
    wait_time = between(1, 3)
    # A slow answer is a result to report, not a failure to hide: allow for queueing.
    network_timeout = 60.0
    connection_timeout = 60.0

    def on_start(self) -> None:
        self.username = f"load_{RUN_ID}_{next(_user_numbers)}"
        self.headers: dict[str, str] = {}
        self.signed_up = False
        self.sent = 0
        self.sign_up()
        if self.signed_up:
            self.log_in()

    def sign_up(self) -> None:
        # 409: an earlier attempt got through (its answer was lost); the account exists.
        status, _ = self.step("POST", "/auth/", "/auth/ (sign up)", (201, 409),
                              json={"username": self.username, "password": PASSWORD})
        self.signed_up = status in (201, 409)

    def log_in(self) -> None:
        status, body = self.step("POST", "/auth/token", "/auth/token (log in)", (200,),
                                 data={"username": self.username, "password": PASSWORD})
        if status == 200:
            self.headers = {"Authorization": f"Bearer {body['access_token']}"}

    def ready(self) -> bool:
        """Signed up and logged in; a step that failed earlier is tried again first."""
        if not self.signed_up:
            self.sign_up()
        if self.signed_up and not self.headers:
            self.log_in()
        return bool(self.headers)

    @task(4)
    def predict(self) -> None:
        if not self.ready():
            return
        self.sent += 1
        text = f"{random.choice(TEXTS)} #{self.username}-{self.sent}"
        self.step("POST", "/predict", "/predict", (200,), json={"text": text},
                  headers=self.headers)

    @task(1)
    def read_data(self) -> None:
        if self.ready():
            self.step("GET", "/data?limit=20", "/data", (200,), headers=self.headers)

    def step(self, method: str, path: str, name: str, ok: tuple[int, ...], **kwargs):
        """Send one step; wait out 503/429 + Retry-After and resend, at most MAX_RETRIES
        times. Returns (status, JSON body or None) of the last answer."""
        for attempt in range(MAX_RETRIES + 1):
            with self.client.request(method, path, name=name, catch_response=True,
                                     **kwargs) as resp:  # fmt: skip
                status = resp.status_code
                retry_after = _retry_after(resp) if status in (503, 429) else None
                if status in ok:
                    resp.success()
                    body = _json(resp)
                elif retry_after is not None and attempt < MAX_RETRIES:
                    resp.request_meta["name"] = name + SHED  # a refusal honoured, not a failure
                    resp.success()
                else:
                    resp.failure(_why(resp))
                    return status, None
            if retry_after is None:
                return status, body
            # At least Retry-After, spread over the next second so refused users do not all
            # come back in the same instant.
            gevent.sleep(retry_after + random.random())
        return status, None


def _retry_after(resp) -> float | None:
    try:
        return max(0.0, float(resp.headers.get("Retry-After")))
    except (TypeError, ValueError):
        return None


def _json(resp):
    try:
        return resp.json()
    except Exception:
        return None


def _why(resp) -> str:
    """Status and the service's own detail, so a failure says which limit or fault it met."""
    try:
        detail = str(resp.json().get("detail"))[:80]
    except Exception:  # not JSON: a time-out or a proxy's plain-text answer
        detail = (resp.text or str(resp.error or ""))[:80]
    return f"{resp.status_code}: {detail}"


@events.request.add_listener
def record_time(name, response_time, exception, **_kwargs) -> None:
    if exception is None:
        shed = name.endswith(SHED)
        _times[name.removesuffix(SHED)]["shed" if shed else "ok"].append(response_time)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


@events.quitting.add_listener
def write_summary(environment, **_kwargs) -> None:
    """Totals for the whole run, printed and written as JSON.

    failures: answers neither 2xx nor a retried 503/429, and steps still refused after the
    retries; shed: 503/429 answers that were retried; p99_ms over successful answers only,
    p99_shed_ms over the refusals (how fast load is shed)."""
    stats = environment.stats
    total = stats.total
    runner = environment.runner
    ok = [t for times in _times.values() for t in times["ok"]]
    shed = [t for times in _times.values() for t in times["shed"]]
    failures_by_name: defaultdict[str, int] = defaultdict(int)
    for (name, _method), entry in stats.entries.items():
        failures_by_name[name.removesuffix(SHED)] += entry.num_failures
    answers = total.num_requests
    summary = {
        "users": runner.target_user_count if runner else None,
        "requests": answers,
        "served": len(ok),
        "failures": total.num_failures,
        "shed": len(shed),
        "served_share": round(len(ok) / answers, 4) if answers else None,
        "shed_share": round(len(shed) / answers, 4) if answers else None,
        "rps": round(total.total_rps, 2),
        "p50_ms": _percentile(ok, 0.50),
        "p99_ms": _percentile(ok, 0.99),
        "p99_shed_ms": _percentile(shed, 0.99),
        "max_ms": round(max(ok, default=0), 1),
        "duration_s": round(total.last_request_timestamp - total.start_time, 1)
        if total.last_request_timestamp else None,
        "by_request": {
            name: {"requests": len(times["ok"]) + len(times["shed"]) + failures_by_name[name],
                   "failures": failures_by_name[name], "shed": len(times["shed"]),
                   "p50_ms": _percentile(times["ok"], 0.50),
                   "p99_ms": _percentile(times["ok"], 0.99),
                   "p99_shed_ms": _percentile(times["shed"], 0.99)}
            for name, times in sorted(_times.items())
        },
        "errors": {f"{e.method} {e.name}: {e.error}": e.occurrences
                   for e in stats.errors.values()},
        "host": environment.host,
    }  # fmt: skip
    for name, count in failures_by_name.items():  # a step that never once succeeded
        summary["by_request"].setdefault(name, {"requests": count, "failures": count})
    path = Path(os.environ.get("LOAD_JSON", Path(__file__).with_name("load.json")))
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nload: {summary['users']} users, {summary['requests']} requests, "
          f"{summary['failures']} failures, {summary['shed']} shed, {summary['rps']} req/s, "
          f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms, "
          f"shed p99 {summary['p99_shed_ms']} ms -> {path}")  # fmt: skip
