"""`make run` as an operator meets it, run for real: what it listens on, Serve's CLI against it
from outside the checkout, a start on a taken port, and three ways to stop it (Ctrl-C, SIGTERM
to `serve run`, a supervisor's SIGINT/SIGTERM/SIGKILL to the process group), each followed by
a second start. One service at a time, restarted by the stop tests in file order."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
import yaml
from make_run import Listener, MakeRun

pytestmark = pytest.mark.ray

STOP_BOUND_S = 10
LOOPBACK = ("127.", "::1", "::ffff:127.")
WILDCARD = ("0.0.0.0", "::", "")
SERVE = str(Path(sys.executable).parent / "serve")
# A replica's inter-deployment gRPC method (Ray checks the cluster token before running it).
REPLICA_METHOD = "/ray.serve.ASGIService/HandleRequest"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    running = MakeRun(tmp_path_factory.mktemp("make-run")).start()
    yield running
    running.signal_group(signal.SIGINT)
    running.wait_gone(STOP_BOUND_S)
    running.kill_leftovers()


def machine_address() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family.name == "AF_INET" and not address.address.startswith("127."):
                return address.address
    return None


def answers_without_credentials(listener: Listener, host: str) -> str | None:
    """What the listener gave a caller without credentials: an HTTP 2xx/3xx, a gRPC OK, or (for
    a listener that speaks neither HTTP/1 nor asks for Ray's token over gRPC) what it did;
    None when it served nothing (HTTP 4xx/5xx, gRPC UNAUTHENTICATED)."""
    spoke_http = False
    for path in ("/", "/metrics", "/stats", "/-/healthz", "/api/version"):
        try:
            status = httpx.get(f"http://{host}:{listener.port}{path}", timeout=5).status_code
        except httpx.HTTPError:
            continue
        spoke_http = True
        if status < 400:
            return f"HTTP {status} on {path}"
    if spoke_http:
        return None
    with grpc.insecure_channel(f"{host}:{listener.port}") as channel:
        try:
            channel.unary_unary(REPLICA_METHOD)(b"", timeout=5)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return None
            return f"no HTTP/1; gRPC {exc.code().name} on {REPLICA_METHOD}, not a token check"
    return f"gRPC OK on {REPLICA_METHOD}"


def test_every_listener_beyond_loopback_asks_for_credentials(service):
    listeners = sorted(service.listeners(), key=lambda item: (item.name, item.port))
    print("\nlisteners of make run:", *(f"{l.ip}:{l.port} {l.name[:60]}" for l in listeners),
          sep="\n  ")
    api = [item for item in listeners if item.port == service.port]
    assert api and all(item.ip == "127.0.0.1" for item in api)
    address = machine_address()
    beyond_loopback = [item for item in listeners if not item.ip.startswith(LOOPBACK)]
    open_doors = {}
    for item in beyond_loopback:
        host = address if item.ip in WILDCARD else item.ip
        if host is None:  # no address but loopback on this machine: nothing to reach it by
            continue
        answer = answers_without_credentials(item, host)
        if answer:
            open_doors[f"{item.ip}:{item.port} {item.name}"] = answer
    assert not open_doors, f"answering without credentials beyond loopback: {open_doors}"


def serve_cli(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """The venv's `serve` as an operator runs it: from another directory, no PYTHONPATH."""
    assert "PYTHONPATH" not in env
    return subprocess.run([SERVE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180)


def test_serve_status_config_and_deploy_work_from_outside_the_checkout(service, tmp_path):
    address = ["--address", service.dashboard_url]
    status = serve_cli("status", *address, env=service.env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr[-2000:]
    assert yaml.safe_load(status.stdout)["applications"]["sentiment"]["status"] == "RUNNING"

    shown = serve_cli("config", *address, env=service.env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    (app,) = list(yaml.safe_load_all(shown.stdout))
    assert app["import_path"] == "deployments.app:build_app"

    # Deploy the same config with a batch knob changed: replicas reconfigure in place.
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "serve_config.yaml").read_text())
    config["http_options"]["port"] = service.port
    model = next(d for d in config["applications"][0]["deployments"]
                 if d["name"] == "SentimentModel")
    model["user_config"]["max_batch_size"] = 16
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    deployed = serve_cli("deploy", "serve.yaml", *address, env=service.env, cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        shown = yaml.safe_load(serve_cli("config", *address, env=service.env, cwd=tmp_path).stdout)
        users = [d.get("user_config", {}) for d in shown["deployments"]]
        if {"max_batch_size": 16}.items() <= next(u for u in users if u).items():
            break
        time.sleep(2)
    else:
        pytest.fail(f"serve config never showed the deployed max_batch_size: {shown}")
    assert httpx.get(service.url + "/health", timeout=30).status_code == 200


def test_a_start_on_a_taken_port_names_the_process_that_holds_it(service, tmp_path):
    second = MakeRun(tmp_path, port=service.port)
    second.starts = 1
    with open(second.log, "w") as log:
        finished = subprocess.run(["make", "run"], cwd=Path(__file__).resolve().parents[2],
                                  env=second.env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=300)
    assert finished.returncode != 0
    (line,) = [ln for ln in second.output().splitlines() if "cannot start" in ln]
    assert f"Serve HTTP port {service.port} is taken: pid " in line
    assert "haproxy" in line


def assert_gone_then_restart(service: MakeRun, how: str) -> None:
    took = service.wait_gone(STOP_BOUND_S)
    left = [" ".join(p.cmdline())[:80] for p in service.processes()]
    print(f"\n{how}: no process left and port {service.port} free after "
          f"{'%.1f s' % took if took is not None else 'more than %d s' % STOP_BOUND_S}")
    assert took is not None, f"after {how}: left {left}, port free: {service.port_is_free()}"
    service.start()


def test_ctrl_c_leaves_nothing_within_10_s_and_the_service_starts_again(service):
    service.signal_group(signal.SIGINT)  # what a terminal sends the foreground group
    assert_gone_then_restart(service, "Ctrl-C")


def test_sigterm_to_serve_run_leaves_nothing_within_10_s_and_the_service_starts_again(service):
    psutil.Process(service.serve_run_pid()).send_signal(signal.SIGTERM)
    assert_gone_then_restart(service, "SIGTERM to serve run")


def test_a_supervisors_stop_leaves_nothing_within_10_s_and_the_service_starts_again(service):
    service.signal_group(signal.SIGINT)
    time.sleep(3)
    service.signal_group(signal.SIGTERM)
    time.sleep(3)
    service.signal_group(signal.SIGKILL)
    assert_gone_then_restart(service, "SIGINT, SIGTERM, SIGKILL to the group")
