"""Model updates through `serve deploy` under load: in place, without a failed request.

Changing the SentimentModel's `user_config` (model directory and batch knobs) makes Serve call
`reconfigure` on the running replicas, one at a time; each loads the new model beside the old
and swaps. A model directory that fails to load must leave the old model serving and show the
failure in `serve status`.
"""

from __future__ import annotations

import time

import pytest

from reliability_stack import (
    APP,
    MODEL,
    broken_model_dir,
    default_model_dir,
    hf_classifier_dir,
    reliability_stack,
    rows_by_id,
)
from steady_load import SteadyLoad

pytestmark = [pytest.mark.ray, pytest.mark.mysql, pytest.mark.timeout(600)]

FIRST = {"model_dir": default_model_dir(), "max_batch_size": 16, "batch_wait_timeout_s": 0.01}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with reliability_stack(tmp_path_factory.mktemp("zero-downtime"), prefix="zdt",
                           user_config=FIRST) as stack:
        yield stack


@pytest.fixture(scope="module")
def second_model(tmp_path_factory):
    return hf_classifier_dir(tmp_path_factory.mktemp("models"))


def _versions_in_order(outcomes) -> list[str]:
    seen: list[str] = []
    for o in sorted(outcomes, key=lambda o: o.finished):
        if o.ok and (not seen or seen[-1] != o.body["model_version"]):
            seen.append(o.body["model_version"])
    return seen


def test_user_config_update_switches_model_in_place_without_failed_requests(stack, second_model):
    pids_before = stack.wait_for_model_replicas(2)
    old_version = stack.health().json()["model_version"]
    second = {"model_dir": str(second_model), "max_batch_size": 8, "batch_wait_timeout_s": 0.02}

    with SteadyLoad(stack.url, stack.token, concurrency=6, label="update") as load:
        load.wait_for(60)
        deployed_at = time.monotonic()
        stack.deploy(second, wait=False)
        new_version = f"{second_model.name}@"
        switched_at = _wait_until_all_answers_are_prefix(load, new_version)
        stack.cluster.wait_until_running(APP)
        load.wait_for(60)
    report = load.report

    versions = _versions_in_order(report.outcomes)
    answered = [o.body for o in report.outcomes if o.ok]
    rows = rows_by_id(stack.database, [b["id"] for b in answered])
    mismatched = [b["id"] for b in answered if rows[b["id"]]["model_version"] != b["model_version"]]
    counts = {v: sum(b["model_version"] == v for b in answered) for v in set(versions)}
    print(f"\nupdate: {report.summary()}; versions by count {counts}; switch took "
          f"{switched_at - deployed_at:.1f}s; rows checked {len(rows)}")

    assert not report.failures, report.summary()
    assert versions[0] == old_version and versions[-1].startswith(new_version), versions
    assert set(versions) == {old_version, versions[-1]}
    assert all(o.body["model_version"] == versions[-1] for o in report.after(switched_at))
    assert len(rows) == len(answered) and not mismatched, mismatched[:10]
    # In place: the same replica processes serve the new model (reconfigure, not restart),
    # and every replica took the new batch settings too.
    assert stack.model_pids() == pids_before
    replicas = stack.model_stats()
    assert len(replicas) == 2, replicas.keys()
    for stats in replicas.values():
        assert stats["model_version"] == versions[-1]
        assert (stats["max_batch_size"], stats["batch_wait_timeout_s"]) == (8, 0.02), stats
    status = stack.cluster.deployment_status(APP, MODEL)
    assert status["status"] == "HEALTHY", status


def _wait_until_all_answers_are_prefix(load: SteadyLoad, prefix: str, streak: int = 40,
                                       timeout_s: float = 180) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = sorted(load.snapshot().outcomes, key=lambda o: o.finished)
        tail = done[-streak:]
        if len(tail) == streak and all(o.ok and o.body["model_version"].startswith(prefix)
                                       for o in tail):
            return tail[0].started
        time.sleep(0.2)
    raise TimeoutError(f"answers never settled on {prefix}*")


def test_model_that_fails_to_load_leaves_old_model_serving_and_shows_in_serve_status(
        stack, second_model, tmp_path):
    stack.deploy(FIRST)
    serving = stack.health().json()["model_version"]
    broken = broken_model_dir(second_model, tmp_path)
    bad = {**FIRST, "model_dir": str(broken)}

    with SteadyLoad(stack.url, stack.token, concurrency=4, label="bad update") as load:
        load.wait_for(30)
        failed_at = time.monotonic()
        stack.deploy(bad, wait=False)
        status = _wait_for_failed_update(stack)
        reported_at = time.monotonic()
        load.wait_for(60)
    report = load.report

    after = report.after(reported_at)
    print(f"\nbad update: {report.summary()}; failure reported after {reported_at - failed_at:.1f}s "
          f"as {status['status']}: {status['message'][:300]!r}")
    assert broken.name in status["message"], status
    assert after and all(o.ok and o.body["model_version"] == serving for o in after), report.summary()
    assert stack.health().status_code == 200
    assert len(report.failures) <= 0.01 * len(report.outcomes), report.summary()

    # A good config deployed afterwards brings the deployment back to HEALTHY.
    stack.deploy(FIRST)
    assert stack.cluster.deployment_status(APP, MODEL)["status"] == "HEALTHY"


def _wait_for_failed_update(stack, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    status: dict = {}
    while time.monotonic() < deadline:
        status = stack.cluster.deployment_status(APP, MODEL)
        if status.get("status") in {"DEPLOY_FAILED", "UNHEALTHY"}:
            return status
        time.sleep(1)
    raise TimeoutError(f"serve status never reported the failed update: {status}")
