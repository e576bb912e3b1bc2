"""The service's metrics reach a real Prometheus, and the Grafana dashboard asks for real series.

Debian's `prometheus` runs with configs/prometheus.yml, its discovery file pointed at the shared
Serve instance's metrics export, and scrapes it while the test sends traffic; the assertions
go through Prometheus's HTTP API, as a dashboard would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from bench.local_ports import free_port
from serve_stack import signup_and_login

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = REPO / "configs" / "prometheus.yml"
DASHBOARD = REPO / "configs" / "grafana" / "sentiment.json"
APP = "sentiment"
DASHBOARD_VARIABLES = {"$__rate_interval": "1m", "$application": APP}
# Ray exports a metric registered as `name` as `ray_name` (counters: `ray_name_total`).
CUSTOM_SERIES = {
    "ray_sentiment_predictions_total": {"label"},
    "ray_sentiment_batch_size_bucket": {"le"},
    "ray_sentiment_model_latency_seconds_bucket": {"le"},
    "ray_sentiment_stage_seconds_bucket": {"le", "stage"},
    "ray_sentiment_db_write_seconds_bucket": {"le"},
    "ray_sentiment_db_write_rows_bucket": {"le"},
    "ray_sentiment_cache_hits_total": set(),
    "ray_sentiment_cache_misses_total": set(),
    "ray_sentiment_cache_hit_ratio": set(),
    "ray_sentiment_rejected_requests_total": {"reason", "route"},
}
STAGES = {"queue", "tokenize", "inference", "model_call", "db_write"}


@pytest.fixture(scope="module")
def prometheus(serve_instance, tmp_path_factory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        message = "Debian's prometheus is not installed (apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("prometheus")
    # The project's config, with its discovery file replaced by one naming this cluster's
    # export (Ray's own file is shared by every cluster on the machine) and a faster scrape.
    targets = workdir / "ray_targets.json"
    targets.write_text(json.dumps([{
        "labels": {"job": "ray"},
        "targets": [f"127.0.0.1:{serve_instance.cluster.metrics_export_port}"],
    }]))  # fmt: skip
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "ray"]
    job["file_sd_configs"][0]["files"] = [str(targets)]
    job["file_sd_configs"][0]["refresh_interval"] = "1s"
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (workdir / "prometheus.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
async def traffic(serve_instance) -> dict:
    """Predictions (single, batch, repeated for cache hits) and requests the app turns away."""
    run = uuid.uuid4().hex[:8]
    async with serve_instance.client() as client:
        user = await signup_and_login(client, prefix="metrics")
        texts = [f"metrics run {run}: the service was {w}" for w in ("great", "awful", "fine")]
        for _ in range(2):  # the second round is answered from the cache
            batch = await client.post("/predict/batch", headers=user.headers,
                                      json={"texts": texts})  # fmt: skip
            assert batch.status_code == 200, batch.text
        single = await client.post("/predict", headers=user.headers, json={"text": texts[0]})
        assert single.status_code == 200, single.text
        invalid = await client.post("/predict", headers=user.headers, json={"text": "   "})
        assert invalid.status_code == 422
        anonymous = await client.post("/predict", json={"text": "who am I"})
        assert anonymous.status_code == 401
    return {"labels": {r["label"] for r in batch.json()["results"]}}


def query(prometheus: str, promql: str) -> list[dict]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10)
    body = response.json()
    assert body.get("status") == "success", f"{promql}: {body}"
    return body["data"]["result"]


def wait_for_series(prometheus: str, promql: str, timeout_s: float = 90) -> list[dict]:
    """Replicas push metrics every few seconds and Prometheus scrapes each second: poll."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = query(prometheus, promql)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(1)


def test_every_custom_metric_is_scraped_by_prometheus(prometheus, traffic):
    for series, labels in CUSTOM_SERIES.items():
        result = wait_for_series(prometheus, f'{series}{{application="{APP}"}}')
        assert result, f"{series} never reached Prometheus"
        for sample in result:
            assert labels <= set(sample["metric"]), (series, sample["metric"])
            assert sample["metric"]["deployment"] in {"SentimentModel", "APIIngress"}

    predicted = {s["metric"]["label"] for s in query(prometheus, "ray_sentiment_predictions_total")}
    assert traffic["labels"] <= predicted

    hits = wait_for_series(prometheus, "sum(ray_sentiment_cache_hits_total) > 0")
    assert hits, "the repeated batch was not counted as cache hits"

    stages = {s["metric"]["stage"] for s in query(prometheus, "ray_sentiment_stage_seconds_count")}
    assert stages >= STAGES

    reasons = {"invalid", "unauthenticated"}
    deadline = time.monotonic() + 60
    while True:
        seen = {s["metric"]["reason"]
                for s in query(prometheus, "ray_sentiment_rejected_requests_total")}  # fmt: skip
        if reasons <= seen or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert reasons <= seen


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"]
                   for target in panel.get("targets", [])]  # fmt: skip
    assert expressions, "the dashboard has no queries"
    return expressions


def substitute(expr: str) -> str:
    for variable, value in DASHBOARD_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown dashboard variable in {expr}"
    return expr


def test_every_dashboard_query_names_scraped_metrics(prometheus, traffic):
    # Wait until the traffic's series (errors included) have been scraped at least once.
    assert wait_for_series(prometheus, 'ray_sentiment_rejected_requests_total{reason="invalid"}')
    assert wait_for_series(prometheus, "ray_serve_num_http_error_requests_total")
    names = set(httpx.get(f"{prometheus}/api/v1/label/__name__/values", timeout=10)
                .json()["data"])  # fmt: skip
    for expr in dashboard_expressions():
        promql = substitute(expr)
        metrics = set(re.findall(r"\bray_[a-z0-9_]+", promql))
        assert metrics, f"no metric named in {expr}"
        for metric in metrics:
            assert metric in names, f"{metric} (in {expr}) is not in the scrape"
            # The selector the dashboard uses must match series, not just the name.
            selector = f'{metric}{{application="{APP}"}}'
            assert query(prometheus, f"count({selector})"), f"{selector} matches nothing"
        query(prometheus, promql)  # the expression itself is valid PromQL
