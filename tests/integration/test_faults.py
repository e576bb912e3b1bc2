"""Faults under load on a real Ray Serve cluster and a real MariaDB.

A model replica's process is killed, the database disappears, the application is upgraded while
requests are in flight. Through all of it no answered prediction may be lost: every 200 carries
the id of a row that is in the database.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from serve_app.admission import SERVICE_BUSY

from reliability_stack import INGRESS, default_model_dir, reliability_stack, rows_by_id
from steady_load import LoadReport, SteadyLoad

pytestmark = [pytest.mark.ray, pytest.mark.mysql, pytest.mark.timeout(600)]

USER_CONFIG = {"model_dir": default_model_dir(), "max_batch_size": 16, "batch_wait_timeout_s": 0.01}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with reliability_stack(tmp_path_factory.mktemp("faults"), prefix="faults",
                           user_config=USER_CONFIG) as stack:
        yield stack


def assert_every_answer_logged(stack, report: LoadReport) -> int:
    answered = [o.body for o in report.outcomes if o.ok]
    ids = [body["id"] for body in answered]
    assert all(isinstance(i, int) for i in ids), "a 200 answer without a prediction id"
    rows = rows_by_id(stack.database, ids)
    missing = sorted(set(ids) - set(rows))
    assert not missing, f"{len(missing)} answered predictions are not in the database: {missing[:10]}"
    for body in answered:
        row = rows[body["id"]]
        assert (row["text"], row["label"], row["model_version"], row["user_id"]) == (
            body["text"], body["label"], body["model_version"], stack.user_id)
    return len(ids)


def test_killed_model_replica_is_replaced_and_no_answer_is_lost(stack):
    before = stack.wait_for_model_replicas(2)
    with SteadyLoad(stack.url, stack.token, concurrency=8, label="kill") as load:
        load.wait_for(60)
        victim = before[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        after = stack.wait_for_model_replicas(2, exclude={victim})
        recovered_at = time.monotonic()
        load.wait_for(120)
    report = load.report

    # Requests in flight when the process died count as "during the kill".
    during = [o for o in report.outcomes if o.finished >= killed_at and o.started < recovered_at]
    failed_during = [o for o in during if not o.ok]
    after_recovery = report.after(recovered_at)
    rows = assert_every_answer_logged(stack, report)
    print(f"\nkill: {report.summary()}; replaced pid {victim} -> {sorted(set(after) - set(before))} "
          f"in {recovered_at - killed_at:.1f}s; during the kill {len(failed_during)}/{len(during)} "
          f"failed {[(o.status, o.body) for o in failed_during]}; after recovery "
          f"{len(after_recovery)} sent; rows checked {rows}")
    assert victim not in after
    assert len(failed_during) <= 0.01 * len(during), [(o.status, o.body) for o in failed_during]
    assert after_recovery and all(o.ok for o in after_recovery), report.summary()
    assert all(o.ok for o in report.outcomes if o.finished < killed_at), "failures before the kill"


def test_database_outage_gives_503_then_recovers_without_restart(stack):
    ingress_before, model_before = stack.ingress_pids(), stack.model_pids()
    with SteadyLoad(stack.url, stack.token, concurrency=4, label="outage") as load:
        load.wait_for(40)
        stack.proxy.cut()
        cut_at = time.monotonic()
        load.wait_for(20)  # requests that meet the outage
        health_down = stack.health()
        load.wait_for(10)
        stack.proxy.restore()
        restored_at = time.monotonic()
        recovered_at = _first_success_after(load, restored_at, timeout_s=60)
        load.wait_for(60)
    report = load.report
    health_up = stack.health()

    rows = assert_every_answer_logged(stack, report)
    # Requests sent after the cut that finished before the restore met a missing database.
    outage = [o for o in report.between(cut_at, restored_at) if o.finished < restored_at]
    print(f"\noutage: {report.summary()}; during the outage {len(outage)} requests "
          f"({sum(o.ok for o in outage)} answered 200), recovered "
          f"{recovered_at - restored_at:.1f}s after the database returned; rows checked {rows}")
    assert outage and not any(o.ok for o in outage)
    for o in outage:
        assert o.status == 503, (o.status, o.body, o.error)
        assert "database" in str(o.body["detail"]).lower(), o.body
    assert health_down.status_code == 503 and health_down.json()["status"] == "unhealthy"
    assert "database" in health_down.json()["detail"].lower()
    assert health_down.headers.get("Retry-After")
    assert all(o.ok for o in report.after(recovered_at)), report.summary()
    assert health_up.status_code == 200 and health_up.json()["status"] == "healthy"
    # Recovered in place: the same processes serve before and after the outage.
    assert (stack.ingress_pids(), stack.model_pids()) == (ingress_before, model_before)


def _first_success_after(load: SteadyLoad, since: float, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ok = [o.started for o in load.snapshot().after(since) if o.ok]
        if ok:
            return min(ok)
        time.sleep(0.2)
    raise TimeoutError("no request succeeded after the database came back")


def test_upgrade_drains_requests_in_flight(stack):
    """A redeploy that replaces every replica: slow requests in flight when it starts finish."""
    ingress_before, model_before = stack.ingress_pids(), stack.model_pids()
    # One model window each (about 120 tokens): slow as a full batch, not a long text of many.
    slow_texts = [f"long review number {i}: " + "the staff were friendly and helpful. " * 14
                  for i in range(64)]

    with SteadyLoad(stack.url, stack.token, concurrency=4, label="upgrade") as load, \
            httpx.Client(base_url=stack.url, headers=stack.headers(), timeout=120) as client:
        load.wait_for(30)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            slow = [pool.submit(client.post, "/predict/batch", json={"texts": slow_texts})
                    for _ in range(4)]
            time.sleep(0.3)  # the slow batches are in flight
            # A code-level change (the actor options) makes Serve replace every replica.
            _redeploy_with_new_actor_options(stack)
            slow_results = [f.result() for f in slow]
        stack.wait_for_model_replicas(2, exclude=set(model_before))
        _wait_for_new_ingress(stack, ingress_before)
        load.wait_for(60)
    report = load.report

    rows = assert_every_answer_logged(stack, report)
    slow_ids = [r["id"] for res in slow_results if res.status_code == 200 for r in res.json()["results"]]
    slow_rows = rows_by_id(stack.database, slow_ids)
    print(f"\nupgrade: {report.summary()}; slow batches {[r.status_code for r in slow_results]}; "
          f"rows checked {rows + len(slow_rows)}")
    assert [r.status_code for r in slow_results] == [200] * len(slow_results)
    assert len(slow_rows) == len(slow_ids) == 64 * len(slow_results)
    # The slow batches put seconds of work ahead of the steady requests: admission may refuse
    # some of those at once (503 busy), which is shedding, not a failure of the upgrade.
    failed = [o for o in report.failures if o.body != {"detail": SERVICE_BUSY}]
    assert not failed, report.summary()


def _redeploy_with_new_actor_options(stack) -> None:
    from reliability_stack import serve_config

    stack._deploys += 1
    config = serve_config(serve_port=stack.cluster.serve_port, user_config=USER_CONFIG)
    # A changed runtime environment is a code-level change: Serve replaces every replica.
    env_vars = config["applications"][0].setdefault("runtime_env", {}).setdefault("env_vars", {})
    env_vars["DEPLOY_GENERATION"] = str(stack._deploys)
    stack.cluster.serve_deploy(config, stack.tmp / f"serve-config-{stack._deploys}.yaml")


def _wait_for_new_ingress(stack, old: list[int], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = stack.ingress_pids()
        status = stack.cluster.deployment_status("sentiment", INGRESS).get("status")
        if pids and not set(pids) & set(old) and status == "HEALTHY":
            return
        time.sleep(0.5)
    raise TimeoutError("the ingress was not replaced")
