"""`make run`: `serve run` a Serve config on a private Ray instance that only this machine can
reach, and stop all of it within seconds, whatever signal asks.

    python -m deployments.local_service [--address local|auto|HOST:PORT] [CONFIG]

With `--address local` (the default) `serve run` starts a single-machine Ray instance, and:
* Every port the service binds is checked first; one that is taken is named in one line with
  the process that holds it.
* Ray's servers bind loopback (LOCAL_RAY_ENV), HAProxy runs under deployments/haproxy_guard.py
  (stats and metrics on loopback, dies with its actor). The API listens where the Serve config's
  `http_options` say (127.0.0.1:8000); SERVE_HTTP_HOST / SERVE_HTTP_PORT replace them, so
  `SERVE_HTTP_HOST=0.0.0.0` is the one setting that opens the service to the network.
* `serve run` stays in the caller's process group (a Ctrl-C or a supervisor's signal to the
  group reaches it and Ray's node processes directly), is tied to this process (it gets
  SIGKILL when this process ends), and this process adopts every orphan of the tree (a child
  subreaper). A SIGINT is `serve run`'s own to handle (Serve's shutdown); a SIGTERM to this
  process is passed on as SIGINT. After STOP_GRACE_S, at a second signal, or when `serve run`
  exits, whatever is left of the tree (Ray's workers and HAProxy, in process groups of their
  own) is ended.
With another address (an existing cluster) only the stop applies: `serve run` deploys there.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import yaml

from deployments.port_holders import taken_ports_message
from deployments.process_tree import become_subreaper, end_descendants, wait_for_exit

BIN = Path(sys.executable).parent
HAPROXY_GUARD = BIN / "sentiment-haproxy"  # [project.scripts] in pyproject.toml
# serve.shutdown() drains the replicas in about 5 s here; what is still running then is killed.
STOP_GRACE_S = 6.0
LOCAL_RAY_ENV = {
    # Ray's single-machine switch (named for the platforms where it is the default): the node
    # takes 127.0.0.1 as its address, so the GCS, raylet, workers, dashboard agent and Ray's
    # Prometheus exporters bind loopback, and no node of another machine can join.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # A stopping ingress replica stays reachable until HAProxy, on this machine, has dropped it:
    # a second is plenty. Ray's default (30 s) waits for cloud load balancers, and made every
    # Ctrl-C take 32 s ("Controller failed to shut down within 30.0s").
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    "RAY_SERVE_HAPROXY_BINARY_PATH": str(HAPROXY_GUARD),
}


def serve_config(source: Path, environ: Mapping[str, str]) -> dict:
    """The config with the HTTP host and port SERVE_HTTP_HOST / SERVE_HTTP_PORT name."""
    config = yaml.safe_load(source.read_text())
    http_options = config.setdefault("http_options", {})
    if environ.get("SERVE_HTTP_HOST"):
        http_options["host"] = environ["SERVE_HTTP_HOST"]
    if environ.get("SERVE_HTTP_PORT"):
        http_options["port"] = int(environ["SERVE_HTTP_PORT"])
    return config


def service_ports(config: dict, environ: Mapping[str, str]) -> dict[str, tuple[str, int]]:
    """Every fixed port a single-machine service binds, as {what: (host, port)}."""
    http = config.get("http_options") or {}
    host = http.get("host") or "127.0.0.1"
    ports = {
        "Serve HTTP": (host, int(http.get("port") or 8000)),
        "Serve fallback proxy": (host, int(environ.get("RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", 8500))),
    }
    if environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        ports["HAProxy stats"] = ("127.0.0.1", int(environ.get("RAY_SERVE_HAPROXY_STATS_PORT", 8404)))
        ports["HAProxy metrics"] = (
            "127.0.0.1", int(environ.get("RAY_SERVE_HAPROXY_METRICS_PORT", 9101)))
    return ports


class Stop:
    """What the signals asked: nothing yet, a graceful stop (with a deadline), or an end now."""

    def __init__(self, child: subprocess.Popen) -> None:
        self.child = child
        self.requested_at: float | None = None
        self.now = False

    def handle(self, signum: int, _frame) -> None:
        if self.requested_at is not None:
            self.now = True
            return
        self.requested_at = time.monotonic()
        if signum == signal.SIGTERM:  # a SIGINT reached `serve run` with this process's own
            _send(self.child.pid, signal.SIGINT)  # serve run's Ctrl-C path: serve.shutdown()

    def due(self) -> bool:
        return self.now or (
            self.requested_at is not None and time.monotonic() - self.requested_at >= STOP_GRACE_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.local_service")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or "local")
    parser.add_argument("config", nargs="?", default="serve_config.yaml")
    args = parser.parse_args(argv)
    local = args.address == "local"
    env = {**LOCAL_RAY_ENV, **os.environ} if local else dict(os.environ)
    config = serve_config(Path(args.config), env)
    if local:
        if not HAPROXY_GUARD.exists():
            print(f"sentiment-serve: {HAPROXY_GUARD} is missing: run `make setup`", file=sys.stderr)
            return 1
        taken = taken_ports_message(service_ports(config, env))
        if taken:
            print(f"sentiment-serve: cannot start: {taken}", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="sentiment-serve-") as scratch:
        rendered = Path(scratch) / Path(args.config).name
        rendered.write_text(yaml.safe_dump(config, sort_keys=False))
        return run(["serve", "run", "--address", args.address, str(rendered)], env)


def run(command: list[str], env: dict[str, str]) -> int:
    become_subreaper()
    child = subprocess.Popen([str(BIN / command[0]), *command[1:]], env=env,
                             preexec_fn=_die_with_parent)
    stop = Stop(child)
    signal.signal(signal.SIGINT, stop.handle)
    signal.signal(signal.SIGTERM, stop.handle)
    code = None
    while code is None and not stop.due():
        code = wait_for_exit(child.pid, timeout_s=0.2)
    ended = end_descendants()
    code = 128 - code if code is not None and code < 0 else code  # killed by a signal
    if stop.requested_at is not None:
        took = time.monotonic() - stop.requested_at
        print(f"sentiment-serve: stopped in {took:.1f} s ({ended} processes left to end)",
              file=sys.stderr, flush=True)
        return code or 0
    print(f"sentiment-serve: `serve run` exited ({code}); {ended} processes left to end",
          file=sys.stderr, flush=True)
    return code if code is not None else 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when this launcher ends, even by SIGKILL."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    sys.exit(main())
