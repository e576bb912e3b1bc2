"""The image builds from the checkout and serves from its own filesystem.

Built with podman on a local Debian base (image_build.py), then run the way a container would
run it, without a container runtime (`podman run` cannot set rlimits on this kind of machine):
the image's own command, environment, user and working directory, chrooted into
`podman image mount`, in a mount namespace of its own. The root file system stays read-only,
as with Kubernetes' readOnlyRootFilesystem: /tmp and the data directory are the only writable
places, and the Ray token comes from the environment, as KubeRay gives it. The host's network
is shared; the service listens on a free loopback port.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import image_build  # noqa: E402

from bench.local_ports import free_port  # noqa: E402

pytestmark = pytest.mark.image

DATA_DIR = "/home/ray/data"
PASSWORD = "correct horse battery staple"
POSITIVE = "I love this phone, the battery lasts for days."

# In a private mount namespace: the image read-only, the kernel's file systems, a writable
# /tmp and data directory; then the image's command as uid 1000.
RUN_IN_IMAGE = r"""
set -eu
root=$1 scratch=$2 uid=$3 gid=$4; shift 4
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
mount --bind "$scratch/tmp" "$root/tmp"
mount --bind "$scratch/data" "$root/home/ray/data"
exec chroot --userspec="$uid:$gid" "$root" "$@"
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: in CI the image must be built (.ci/run installs the tools)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def podman(tmp_path_factory) -> image_build.Podman:
    missing = image_build.missing_tools()
    if missing:
        _unavailable(f"{' and '.join(missing)} not installed")
    if os.geteuid() != 0:
        _unavailable("building and mounting the image needs root")
    podman = image_build.Podman()
    log = tmp_path_factory.mktemp("image") / "build.log"
    started = time.monotonic()
    podman.build(log)
    print(f"\nimage built in {time.monotonic() - started:.0f} s ({podman.driver} storage), "
          f"{podman.size_bytes() / 1e9:.2f} GB")
    return podman


def image_config(podman: image_build.Podman) -> dict:
    return json.loads(podman.run("image", "inspect", image_build.IMAGE))[0]["Config"]


def uid_gid_of(root: Path, user: str) -> tuple[int, int]:
    """The image's own /etc/passwd entry for its USER."""
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if user in (fields[0], fields[2]):
            return int(fields[2]), int(fields[3])
    raise AssertionError(f"user {user!r} is not in the image's /etc/passwd")


def wait_for_health(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the image's command exited {process.returncode}:\n{tail(log)}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"{url}/health never answered 200 in {timeout_s:.0f} s:\n{tail(log)}")


def stop(process: subprocess.Popen) -> None:
    """Ctrl-C for `serve run` (it shuts Serve and its Ray down), then its process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def test_the_image_serves_health_predict_and_data_from_its_own_filesystem_as_uid_1000(
        podman, tmp_path):
    config = image_config(podman)
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["DATABASE_URL"].startswith(f"sqlite+aiosqlite:///{DATA_DIR}/")
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    command = (config.get("Entrypoint") or []) + config["Cmd"]

    root = Path(podman.run("image", "mount", image_build.IMAGE))
    process = None
    try:
        uid, gid = uid_gid_of(root, config["User"])
        assert uid == 1000
        for name in ("tmp", "data"):
            (tmp_path / name).mkdir()
        os.chmod(tmp_path / "tmp", 0o1777)
        os.chown(tmp_path / "data", uid, gid)
        port = free_port()
        env |= {
            "HOME": "/home/ray",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "SERVE_HTTP_HOST": "127.0.0.1",  # the host's network: open to this machine only
            "SERVE_HTTP_PORT": str(port),
            **{name: str(free_port()) for name in (
                "RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")},
        }
        log = tmp_path / "serve.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", RUN_IN_IMAGE,
                 "run-in-image", str(root), str(tmp_path), str(uid), str(gid),
                 "/usr/bin/env", "-i", "-C", config["WorkingDir"],
                 *[f"{k}={v}" for k, v in env.items()], *command],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, process, log, timeout_s=300)

        with httpx.Client(base_url=url, timeout=60) as client:
            username = f"image_{uuid.uuid4().hex[:10]}"
            created = client.post("/auth/", json={"username": username, "password": PASSWORD})
            assert created.status_code == 201, created.text
            token = client.post("/auth/token", data={"username": username, "password": PASSWORD})
            assert token.status_code == 200, token.text
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            predicted = client.post("/predict", json={"text": POSITIVE}, headers=headers)
            assert predicted.status_code == 200, predicted.text
            assert predicted.json()["label"] == "positive"
            history = client.get("/data", headers=headers)
            assert history.status_code == 200, history.text
        rows = history.json()
        assert [(row["id"], row["text"], row["label"]) for row in rows] == [
            (predicted.json()["id"], POSITIVE, "positive")]
        # The prediction log is the data directory's SQLite file, written by uid 1000.
        database = tmp_path / "data" / env["DATABASE_URL"].rsplit("/", 1)[1]
        assert database.stat().st_uid == 1000
    finally:
        if process is not None:
            stop(process)
        podman.run("image", "unmount", image_build.IMAGE)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=5)
    shutil.rmtree(tmp_path / "tmp", ignore_errors=True)
