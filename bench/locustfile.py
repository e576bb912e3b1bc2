"""500 users against a running sentiment-serve: sign up, log in, then predict and read /data.

    make load                                    # against http://127.0.0.1:8000
    make load LOAD_HOST=http://host:port LOAD_ARGS="--users 500 --run-time 240s"

Each simulated user signs up with a unique name, logs in through the OAuth2 password flow,
then classifies texts and reads its history with 1-3 s of think time between requests. At the
end the run's totals go to bench/load.json (LOAD_JSON overrides the path).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import uuid
from pathlib import Path

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


class ServiceUser(FastHttpUser):
    wait_time = between(1, 3)
    # A slow answer is a result to report, not a failure to hide: allow for queueing.
    network_timeout = 60.0
    connection_timeout = 60.0

    def on_start(self) -> None:
        self.username = f"load_{RUN_ID}_{next(_user_numbers)}"
        self.headers: dict[str, str] = {}
        self.sent = 0
        with self.client.post("/auth/", json={"username": self.username, "password": PASSWORD},
                              name="/auth/ (sign up)", catch_response=True) as resp:  # fmt: skip
            if resp.status_code not in (201, 409):  # 409: an earlier attempt got through
                resp.failure(_why(resp))
        self.log_in()

    def log_in(self) -> None:
        with self.client.post("/auth/token", data={"username": self.username, "password": PASSWORD},
                              name="/auth/token (log in)", catch_response=True) as resp:  # fmt: skip
            if resp.status_code != 200:
                resp.failure(_why(resp))
                return
            self.headers = {"Authorization": f"Bearer {resp.json()['access_token']}"}

    @task(4)
    def predict(self) -> None:
        if not self.headers:  # the log-in failed: try again rather than send anonymous requests
            return self.log_in()
        self.sent += 1
        text = f"{random.choice(TEXTS)} #{self.username}-{self.sent}"
        with self.client.post("/predict", json={"text": text}, headers=self.headers,
                              catch_response=True) as resp:  # fmt: skip
            if resp.status_code != 200:
                resp.failure(_why(resp))

    @task(1)
    def read_data(self) -> None:
        if not self.headers:
            return self.log_in()
        with self.client.get("/data?limit=20", headers=self.headers, name="/data",
                             catch_response=True) as resp:  # fmt: skip
            if resp.status_code != 200:
                resp.failure(_why(resp))


def _why(resp) -> str:
    """Status and the service's own detail, so a failure says which limit or fault it met."""
    try:
        detail = str(resp.json().get("detail"))[:80]
    except Exception:  # not JSON: a time-out or a proxy's plain-text answer
        detail = (resp.text or str(resp.error or ""))[:80]
    return f"{resp.status_code}: {detail}"


@events.quitting.add_listener
def write_summary(environment, **_kwargs) -> None:
    """Totals for the whole run, printed and written as JSON."""
    total = environment.stats.total
    runner = environment.runner
    summary = {
        "users": runner.target_user_count if runner else None,
        "requests": total.num_requests,
        "failures": total.num_failures,
        "rps": round(total.total_rps, 2),
        "p50_ms": total.get_response_time_percentile(0.50),
        "p99_ms": total.get_response_time_percentile(0.99),
        "max_ms": round(total.max_response_time or 0, 1),
        "duration_s": round(total.last_request_timestamp - total.start_time, 1)
        if total.last_request_timestamp else None,
        "by_request": {
            name: {"requests": entry.num_requests, "failures": entry.num_failures,
                   "p50_ms": entry.get_response_time_percentile(0.50),
                   "p99_ms": entry.get_response_time_percentile(0.99)}
            for (name, _method), entry in environment.stats.entries.items()
        },
        "errors": {f"{e.method} {e.name}: {e.error}": e.occurrences
                   for e in environment.stats.errors.values()},
        "host": environment.host,
    }  # fmt: skip
    path = Path(os.environ.get("LOAD_JSON", Path(__file__).with_name("load.json")))
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nload: {summary['users']} users, {summary['requests']} requests, "
          f"{summary['failures']} failures, {summary['rps']} req/s, "
          f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms -> {path}")  # fmt: skip
