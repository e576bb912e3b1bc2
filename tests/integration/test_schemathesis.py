"""Property-based API testing of the live service with schemathesis.

The OpenAPI schema is loaded from the running Ray Serve instance (the suite's shared one), and
every operation is exercised with a bounded number of generated requests, valid and invalid,
carrying a real user's bearer token; the operations an API key may call are exercised once more
with a real key in `X-API-Key`, the schema's second security scheme. No response may be a 5xx, every response must match what
the schema documents for it (status code, content type, headers and body), invalid input must
be rejected, and a protected operation replayed without its token must not succeed.

schemathesis' pytest loader (`from_fixture`) does not run under pytest 9, so the cases come from
its Hypothesis strategies (`APIOperation.as_strategy`) and are checked with `call_and_validate`.
Every failure is collected rather than stopping at the first, and the figures are printed.
"""

from __future__ import annotations

import secrets
import uuid
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

# Every operation the service documents. A new route must be added here to be fuzzed; the
# first test fails until it is.
OPERATIONS = [
    ("POST", "/auth/"),
    ("POST", "/auth/token"),
    ("GET", "/"),
    ("POST", "/predict"),
    ("POST", "/predict/batch"),
    ("GET", "/data"),
    ("GET", "/data/summary"),
    ("GET", "/data/export"),
    ("GET", "/health"),
    ("GET", "/info"),
    ("POST", "/auth/keys"),
    ("GET", "/auth/keys"),
    ("DELETE", "/auth/keys/{key_id}"),
    ("POST", "/jobs"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{job_id}"),
    ("GET", "/jobs/{job_id}/result"),
    ("DELETE", "/jobs/{job_id}"),
]
# Operations that take no input but the credential: there is nothing to make invalid.
NO_INPUT = {("GET", "/"), ("GET", "/health"), ("GET", "/info"), ("GET", "/auth/keys"),
            ("GET", "/jobs")}
# Operations tried with an API key as well (the key-management ones must answer 403).
WITH_API_KEY = [("GET", "/"), ("POST", "/predict"), ("POST", "/predict/batch"), ("GET", "/data"),
                ("POST", "/auth/keys"), ("GET", "/auth/keys"), ("DELETE", "/auth/keys/{key_id}"),
                ("POST", "/jobs"), ("GET", "/jobs")]
CASES = [(method, path, mode, "token") for method, path in OPERATIONS
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode is GenerationMode.POSITIVE or (method, path) not in NO_INPUT]
CASES += [(method, path, GenerationMode.POSITIVE, "api key") for method, path in WITH_API_KEY]
# Examples per operation and mode. Failed logins count towards the per-client login limit of
# the shared instance (100 per window by default), so /auth/token stays well below it.
MAX_EXAMPLES = {"/auth/token": 20, "/predict/batch": 25, "/jobs": 25}
DEFAULT_MAX_EXAMPLES = 50

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,  # replays authenticated requests without the token: must not succeed
]

RESULTS: dict[str, Counter] = {}
FAILURES: list[str] = []


@pytest.fixture(scope="module")
def live_schema(serve_instance):
    return schemathesis.openapi.from_url(f"{serve_instance.url}/openapi.json")


def new_user_token(url: str) -> str:
    username, password = f"fuzz_{uuid.uuid4().hex[:12]}", secrets.token_urlsafe(16)
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/auth/", json={"username": username, "password": password}).status_code == 201
        token = client.post("/auth/token", data={"username": username, "password": password})
        assert token.status_code == 200, token.text
        return f"Bearer {token.json()['access_token']}"


@pytest.fixture(scope="module")
def bearer(serve_instance) -> str:
    return new_user_token(serve_instance.url)


@pytest.fixture(scope="module")
def api_key(serve_instance) -> str:
    """A key of another user: the fuzzed DELETE /auth/keys/{key_id} cannot revoke it."""
    owner = new_user_token(serve_instance.url)
    with httpx.Client(base_url=serve_instance.url, timeout=60) as client:
        created = client.post("/auth/keys", json={"name": "fuzz"}, headers={"Authorization": owner})
        assert created.status_code == 201, created.text
        return created.json()["key"]


@pytest.fixture(scope="module", autouse=True)
def report_figures():
    yield
    tried = sum(sum(c.values()) for c in RESULTS.values())
    print(f"\nschemathesis: {tried} examples tried over {len(RESULTS)} operation/mode pairs, "
          f"{len(FAILURES)} failures")
    for key, codes in sorted(RESULTS.items()):
        by_code = dict(sorted(codes.items(), key=lambda item: str(item[0])))  # codes and "failed"
        print(f"  {key}: {sum(codes.values())} examples, status codes {by_code}")
    for failure in FAILURES:
        print(f"  FAILURE {failure}")


def test_live_schema_lists_exactly_the_fuzzed_operations(live_schema):
    live = {(op.ok().method.upper(), op.ok().path) for op in live_schema.get_all_operations()}
    assert live == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode", "credential"), CASES,
                         ids=[f"{m} {p} {mode.value} {c}" for m, p, mode, c in CASES])
def test_operation_conforms_to_its_schema(live_schema, serve_instance, bearer, api_key,
                                          method, path, mode, credential):
    operation = live_schema[path][method]
    key = f"{method} {path} [{mode.value}, {credential}]"
    # Schemathesis knows the key scheme (a header) but not where OAuth2 puts its token: the key
    # goes in as the case's own header, the token as an explicit header of the call, and a key
    # value generated beside the token is dropped (two credentials at once are refused, 401).
    key_header = {"X-API-Key": api_key} if credential == "api key" else None
    call_headers = {"Authorization": bearer} if credential == "token" else None
    codes = RESULTS.setdefault(key, Counter())
    found: list[str] = []

    @settings(max_examples=MAX_EXAMPLES.get(path, DEFAULT_MAX_EXAMPLES), deadline=None,
              database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, headers=key_header))
    def exercise(case):
        if call_headers and case.headers:
            case.headers.pop("X-API-Key", None)
        try:
            response = case.call_and_validate(base_url=serve_instance.url, checks=CHECKS,
                                              headers=call_headers, timeout=120)
            codes[response.status_code] += 1
        except FailureGroup as group:
            codes["failed"] += 1
            for failure in group.exceptions:
                found.append(f"{key}: {failure.title}: {str(failure.message)[:200]} "
                             f"<- {case.as_curl_command()[:300]}")

    exercise()
    FAILURES.extend(found)
    assert not found, "\n".join(found)
