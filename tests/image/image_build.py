"""Build the image with podman on a local Debian base, with this machine's package indexes.

Docker Hub may be out of reach, so the base is made here: `mmdebstrap` (minbase, Python 3.11,
venv, CA certificates) from this machine's apt sources, imported into podman. The build takes
the same pip indexes as this machine's pip (`pip config list` and PIP_* variables), and local
ones (file:// indexes, find-links directories, the CA bundle) are bind-mounted into the build.

Everything lives in CACHE_DIR (default /var/cache/sentiment-serve), outside the clone, so CI
runs on one machine share it: the base rootfs, podman's storage (the dependency layer is
reused while requirements.txt is unchanged) and pip's cache (reused when it changes).

    python tests/image/image_build.py     # build once, print the time and the image size
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("SENTIMENT_IMAGE_CACHE", "/var/cache/sentiment-serve"))
BASE_IMAGE = "localhost/debian-base:bookworm"
IMAGE = "localhost/sentiment-serve:test"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
APT_SOURCES = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
PYPI = "https://pypi.org/simple"


def missing_tools() -> list[str]:
    return [tool for tool in ("podman", "mmdebstrap") if shutil.which(tool) is None]


def storage_driver() -> str:
    """overlay where the kernel mounts it (fast), else vfs (a full copy per layer)."""
    probe = subprocess.run(["podman", *_storage_args("overlay"), "info"],
                           capture_output=True, text=True)
    return "overlay" if probe.returncode == 0 else "vfs"


def _storage_args(driver: str) -> list[str]:
    return ["--root", str(CACHE_DIR / f"podman-{driver}"),
            "--runroot", f"/run/sentiment-serve-podman-{driver}", "--storage-driver", driver]


class Podman:
    """podman with this project's own storage, so nothing touches the machine's images."""

    def __init__(self, driver: str | None = None):
        self.driver = driver or storage_driver()
        self.tmp = CACHE_DIR / "tmp"  # buildah's temporary files and RUN cache mounts (pip)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def command(self, *args: str) -> list[str]:
        return ["podman", *_storage_args(self.driver), *args]

    def run(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(self.command(*args), capture_output=True, text=True,
                                timeout=timeout, env={**os.environ, "TMPDIR": str(self.tmp)})
        if result.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} failed:\n{result.stderr[-4000:]}")
        return result.stdout.strip()

    def has_image(self, name: str) -> bool:
        return subprocess.run(self.command("image", "exists", name)).returncode == 0

    def ensure_base(self, log: Path) -> None:
        """The Debian base image, made once (mmdebstrap takes minutes, import seconds)."""
        if self.has_image(BASE_IMAGE):
            return
        rootfs = CACHE_DIR / "debian-bookworm-rootfs.tar"
        if not rootfs.exists():
            partial = rootfs.with_suffix(".partial.tar")
            sources = [str(p) for p in APT_SOURCES if p.is_file() and p.suffix in (".list", ".sources")]
            with open(log, "a") as out:
                subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={BASE_PACKAGES}",
                                "bookworm", str(partial), *sources], check=True,
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                               timeout=1200)
            partial.rename(rootfs)
        self.run("import", str(rootfs), BASE_IMAGE, timeout=600)

    def build(self, log: Path, timeout: float = 2400) -> None:
        """Build IMAGE from the checkout; every step's output goes to `log`."""
        self.ensure_base(log)
        args, volumes = pip_build_args()
        command = self.command("build", "--isolation", "chroot", "--layers", "-t", IMAGE,
                               "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", *args,
                               *[f"--volume={path}:{path}:ro" for path in volumes],
                               str(REPO_ROOT))
        with open(log, "a") as out:
            out.write("$ " + shlex.join(command) + "\n")
            out.flush()
            result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, timeout=timeout,
                                    env={**os.environ, "TMPDIR": str(self.tmp)})
        if result.returncode != 0:
            raise RuntimeError(f"podman build failed; its output: {log}\n" + _tail(log))
        # The previous build's image and layers, now untagged: the cache keeps no more.
        self.run("image", "prune", "--force", timeout=600)

    def size_bytes(self, name: str = IMAGE) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", name))


def pip_config() -> dict[str, str]:
    """This machine's pip settings, as `pip config list` shows them (the environment wins)."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                            capture_output=True, text=True, check=True).stdout
    found: dict[str, tuple[int, str]] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        scope, _, name = key.rpartition(".")
        rank = {"global": 1, "user": 2, "site": 3, ":env:": 4}.get(scope, 0)
        if name in ("index-url", "extra-index-url", "find-links", "cert"):
            if rank >= found.get(name, (-1, ""))[0]:
                found[name] = (rank, value.strip().strip("'\""))
    return {name: value for name, (_, value) in found.items()}


def pip_build_args(config: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """Build arguments giving the image build this machine's indexes, and the local paths
    they name (to bind-mount into the build). torch comes from the same indexes."""
    config = pip_config() if config is None else config
    index = config.get("index-url", PYPI)
    values = {"TORCH_INDEX_URL": index, "PIP_INDEX_URL": index,
              "PIP_EXTRA_INDEX_URL": config.get("extra-index-url", ""),
              "PIP_FIND_LINKS": config.get("find-links", ""),
              "PIP_CERT": config.get("cert", "")}
    volumes = []
    for location in " ".join(values.values()).split():
        path = urlparse(location).path if location.startswith("file:") else location
        if path.startswith("/") and Path(path).exists():
            volumes.append(_mount_root(Path(path)))
    args = [item for name, value in values.items() for item in ("--build-arg", f"{name}={value}")]
    return args, sorted(set(volumes))


def _mount_root(path: Path) -> str:
    """A simple-index directory's parent holds the files its links point to (../../files)."""
    if path.name == "simple" and path.is_dir():
        return str(path.parent)
    return str(path)


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:]


if __name__ == "__main__":
    podman = Podman()
    build_log = CACHE_DIR / "build.log"
    started = time.monotonic()
    podman.build(build_log)
    print(f"built {IMAGE} ({podman.driver}) in {time.monotonic() - started:.0f} s, "
          f"{podman.size_bytes() / 1e9:.2f} GB; log: {build_log}")
