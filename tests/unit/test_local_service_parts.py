"""The pieces `make run` stands on, without Ray: HAProxy's config narrowed to loopback for its
stats and metrics, the line naming who holds a port, the process tree's end, the config
overrides. The whole of it runs for real in tests/integration/test_local_service.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.local_ports import free_port
from deployments.haproxy_guard import config_path, loopback_admin_binds
from deployments.local_service import serve_config, service_ports
from deployments.port_holders import holder, taken_ports_message

# The shape of Ray 2.60's rendered HAProxy config (serve/_private/haproxy_templates.py).
RAY_CONFIG = """global
    stats socket /tmp/haproxy-serve/n/admin.sock mode 666 level admin expose-fd listeners
defaults
    mode http
frontend prometheus
    bind :9101
    mode http
frontend http_frontend
    bind {api_host}:8000
backend http-sentiment
    server s1 127.0.0.1:30000 check
listen stats
  bind *:8404
  stats enable
"""


def test_stats_and_metrics_move_to_loopback_and_the_api_keeps_its_host():
    for api_host in ("127.0.0.1", "*"):
        narrowed = loopback_admin_binds(RAY_CONFIG.format(api_host=api_host))
        assert "    bind 127.0.0.1:9101\n" in narrowed
        assert "  bind 127.0.0.1:8404\n" in narrowed
        assert f"    bind {api_host}:8000\n" in narrowed  # the operator's choice stays
        assert "server s1 127.0.0.1:30000 check" in narrowed


def test_a_config_already_on_loopback_is_left_as_it_is():
    narrowed = loopback_admin_binds(RAY_CONFIG.format(api_host="127.0.0.1"))
    assert loopback_admin_binds(narrowed) == narrowed


def test_the_config_file_is_the_one_after_dash_f():
    assert config_path(["-db", "-f", "/x/haproxy.cfg", "-sf", "12"]) == Path("/x/haproxy.cfg")
    assert config_path(["-v"]) is None


def test_a_taken_port_is_named_with_the_process_that_holds_it():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        found = holder("127.0.0.1", port)
        assert found is not None and f"pid {os.getpid()}" in found
        assert f"127.0.0.1:{port}" in found
        message = taken_ports_message({"Serve HTTP": ("127.0.0.1", port)})
        assert message.startswith(f"Serve HTTP port {port} is taken: pid {os.getpid()}")
        assert "\n" not in message
        # Someone on the wildcard address holds the port for loopback too.
        assert holder("0.0.0.0", port) is not None
    assert holder("127.0.0.1", port) is None


def test_serve_http_host_and_port_replace_the_configs_and_the_ports_follow(tmp_path):
    source = tmp_path / "serve.yaml"
    source.write_text("http_options:\n  host: 127.0.0.1\n  port: 8000\napplications: []\n")
    assert serve_config(source, {})["http_options"] == {"host": "127.0.0.1", "port": 8000}
    opened = serve_config(source, {"SERVE_HTTP_HOST": "0.0.0.0", "SERVE_HTTP_PORT": "9000"})
    assert opened["http_options"] == {"host": "0.0.0.0", "port": 9000}
    ports = service_ports(opened, {"RAY_SERVE_ENABLE_HA_PROXY": "1",
                                   "RAY_SERVE_HAPROXY_STATS_PORT": "18404"})
    assert ports["Serve HTTP"] == ("0.0.0.0", 9000)
    assert ports["HAProxy stats"] == ("127.0.0.1", 18404)
    assert ports["HAProxy metrics"] == ("127.0.0.1", 9101)


def test_end_descendants_reaches_grandchildren_in_process_groups_of_their_own(tmp_path):
    """A child that starts a grandchild in a new process group and exits: as a subreaper,
    the starter still finds the orphan and ends it (as with Ray's workers and HAProxy)."""
    script = tmp_path / "tree.py"
    pid_file = tmp_path / "grandchild.pid"
    script.write_text(f"""
import subprocess, sys
from deployments.process_tree import become_subreaper, end_descendants
become_subreaper()
starter = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys; p = subprocess.Popen(['sleep', '300'], process_group=0);"
    "open({str(pid_file)!r}, 'w').write(str(p.pid))"])
starter.wait()
print(end_descendants(term_grace_s=1))
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, check=True, cwd=Path(__file__).resolve().parents[2])
    grandchild = int(pid_file.read_text())
    assert out.stdout.strip() == "1"
    deadline = time.monotonic() + 5
    while psutil.pid_exists(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(grandchild) or (
        psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE)


def test_haproxy_through_the_guard_keeps_admin_ports_on_loopback_and_dies_with_its_parent(
        tmp_path):
    """The real HAProxy binary, started the way Ray's HAProxyManager starts it, through the
    `sentiment-haproxy` command: its statistics and metrics listen on loopback only, and when
    the process that started it is SIGKILLed (no orderly stop), HAProxy goes too."""
    guard = Path(sys.executable).parent / "sentiment-haproxy"
    assert guard.exists(), "run `make setup`: it installs the project's commands"
    stats, metrics, api = free_port(), free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""global
    maxconn 64
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend prometheus
    bind :{metrics}
    http-request use-service prometheus-exporter if {{ path /metrics }}
frontend http_frontend
    bind 127.0.0.1:{api}
    http-request return status 200 content-type text/plain string ok
listen stats
  bind *:{stats}
  stats enable
  stats uri /stats
""")
    starter = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time;"
         f"p = subprocess.Popen([{str(guard)!r}, '-db', '-f', {str(config)!r}]);"
         "print(p.pid, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        haproxy = psutil.Process(int(starter.stdout.readline()))
        deadline = time.monotonic() + 20
        while len(_listening(haproxy)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert haproxy.name() == "haproxy"  # the guard became HAProxy: same pid
        assert sorted(_listening(haproxy)) == sorted(
            [("127.0.0.1", stats), ("127.0.0.1", metrics), ("127.0.0.1", api)])
    finally:
        starter.kill()
        starter.wait()
    deadline = time.monotonic() + 5
    while _alive(haproxy) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(haproxy)
    # The kernel releases a dead process's sockets a moment after it is reaped.
    while holder("127.0.0.1", api) is not None and time.monotonic() < deadline + 5:
        time.sleep(0.1)
    assert holder("127.0.0.1", api) is None


def _listening(process: psutil.Process) -> list[tuple[str, int]]:
    return [(c.laddr.ip, c.laddr.port) for c in process.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
