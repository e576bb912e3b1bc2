"""Run bench/locustfile.py headless: 500 users by default, against a running service or one
started here (a private Ray cluster with serve_config.yaml on free ports).

    .venv/bin/python -m bench.run_load --host http://127.0.0.1:8000       # = make load
    flock /tmp/sentiment-heavy.lock .venv/bin/python -m bench.run_load --start-service
    .venv/bin/python -m bench.run_load --start-service --service-cpus 0   # the service on core 0

Prints requests/s, the shares served and shed, p99 of served answers and of refusals, and
failures; writes bench/load.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.ray_auth import ray_process_env
from bench.services import BIN, REPO, RayServe, scratch_dir


def run_locust(host: str, args) -> dict:
    cmd = [str(BIN / "locust"), "-f", str(REPO / "bench" / "locustfile.py"), "--headless",
           "--host", host, "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
           "--run-time", args.run_time, "--stop-timeout", "30", "--only-summary",
           "--loglevel", "WARNING"]  # fmt: skip
    env = ray_process_env(LOAD_JSON=str(args.out))
    subprocess.run(cmd, cwd=REPO, env=env, check=False)  # locust exits 1 when a request failed
    return json.loads(args.out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--start-service", action="store_true",
                        help="start a private Ray cluster with serve_config.yaml and load it")
    parser.add_argument("--service-cpus", metavar="LIST",
                        help="with --start-service: hold every Ray process to these cores "
                             "(taskset -c LIST), e.g. 0 for half of a 2-core machine")
    parser.add_argument("--users", type=int, default=500)
    # Each new user costs two argon2 operations (sign-up, log-in): ~0.15 CPU-s each here, so
    # arrivals are paced to leave the two cores to the traffic being measured.
    parser.add_argument("--spawn-rate", type=float, default=3)
    parser.add_argument("--run-time", default="240s", help="whole run, ramp-up included")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "load.json")
    args = parser.parse_args()

    if args.start_service:
        with scratch_dir() as work, RayServe(work, cpu_list=args.service_cpus) as service:
            service.deploy(service.config())
            summary = run_locust(service.url, args)
    else:
        summary = run_locust(args.host, args)
    predict = summary["by_request"].get("/predict", {})
    print(f"{summary['users']} users: {summary['requests']} answers in {summary['duration_s']} s, "
          f"{summary['rps']} req/s; served {summary['served_share']:.1%}, shed "
          f"{summary['shed_share']:.1%}, {summary['failures']} failures; served p50 "
          f"{summary['p50_ms']} ms, p99 {summary['p99_ms']} ms (/predict p99 "
          f"{predict.get('p99_ms')} ms); refusals p99 {summary['p99_shed_ms']} ms")  # fmt: skip
    return 0 if summary["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
