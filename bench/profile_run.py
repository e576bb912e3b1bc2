"""Where a request's time goes: py-spy on the proxy, ingress and model replicas under load.

    flock /tmp/sentiment-heavy.lock .venv/bin/python -m bench.profile_run [--route /predict]

Starts the service (serve_config.yaml, private cluster; `--fast`: serving the bench's tiny
random classifier, so the path around the model shows), drives the route at `--concurrency`,
samples each Serve process with py-spy for the middle of the run, and prints per process the
functions holding the most samples (inclusive), leaving out the event-loop frames every
sample shares. Raw collapsed stacks are kept under bench/profile/ for flame graphs.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
from collections import Counter
from pathlib import Path

import httpx

from bench.loadgen import obtain_token, run_closed_loop
from bench.services import BIN, REPO, RayServe, ray_auth_headers, scratch_dir
from bench.tiny_model import build_tiny_model

PROCESSES = {"ProxyActor": "proxy", "ServeReplica:sentiment:APIIngress": "ingress",
             "ServeReplica:sentiment:SentimentModel": "model"}  # fmt: skip


def serve_pids(service: RayServe) -> dict[str, int]:
    resp = httpx.get(f"{service.dashboard}/api/v0/actors", timeout=30, headers=ray_auth_headers(),
                     params={"filter_keys": "state", "filter_predicates": "=",
                             "filter_values": "ALIVE", "limit": 1000})  # fmt: skip
    resp.raise_for_status()
    pids = {}
    for actor in resp.json()["data"]["result"]["result"]:
        name = PROCESSES.get(actor.get("class_name"))
        if name and actor.get("pid") and name not in pids:
            pids[name] = actor["pid"]
    return pids


def top_frames(raw: Path, limit: int) -> list[tuple[str, float]]:
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        for frame in set(stack.split(";")):
            inclusive[frame] += n
    if not total:
        return []
    shared = {f for f, n in inclusive.items() if n > 0.9 * total}  # event loop, thread roots
    return [(f, n / total) for f, n in inclusive.most_common() if f not in shared][:limit]


async def drive(url: str, route: str, seconds: float, concurrency: int) -> dict:
    token = await obtain_token(url, "profile_user", "profile-password-1")
    texts = 32 if route == "/predict/batch" else 1
    result = await run_closed_loop(url, token, route=route, concurrency=concurrency,
                                   duration_s=seconds, texts_per_request=texts,
                                   warmup_s=2)  # fmt: skip
    return result.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--route", default="/predict")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--fast", action="store_true", help="serve the tiny random classifier")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    out = REPO / "bench" / "profile"
    out.mkdir(exist_ok=True)
    with scratch_dir() as work, RayServe(work) as service:
        user_config = {"model_dir": str(build_tiny_model(work / "tiny-model"))} if args.fast else {}
        service.deploy(service.config(user_config=user_config))
        pids = serve_pids(service)
        spies = {
            name: subprocess.Popen(
                [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration",
                 str(int(args.seconds - 6)), "--rate", "200", "--nonblocking", "--threads",
                 "--format", "raw", "--output", str(out / f"{name}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            for name, pid in pids.items()
        }
        load = asyncio.run(drive(service.url, args.route, args.seconds, args.concurrency))
        for proc in spies.values():
            proc.wait(60)
    print(f"load during the profile: {load}")
    for name in spies:
        print(f"\n== {name} (pid {pids[name]}): share of samples, inclusive")
        for frame, share in top_frames(out / f"{name}.txt", args.top):
            print(f"  {share:6.1%}  {frame}")


if __name__ == "__main__":
    main()
