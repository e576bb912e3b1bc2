"""Generate each overlay's ``serveConfigV2`` from the project's Serve config files.

One Serve config is the truth: ``serve_config.yaml`` (cpu overlay) and ``configs/gpu.yaml``
(gpu overlay) are what ``serve run`` / ``serve deploy`` take locally, and this command embeds
them in the RayService. The only changes are the ones a Kubernetes cluster needs:

* ``http_options.host`` / ``http_options.port`` -> ``0.0.0.0:80``: the proxies must be
  reachable from the ``sentiment-service`` LoadBalancer, and KubeRay keeps only the port
  number of that Service's ``serve`` port, so the proxies listen on the Service port itself.
* ``proxy_location`` -> ``EveryNode``: the Service sends traffic to the worker pods
  (``excludeHeadPodFromServeSvc``), so every node runs a proxy, whatever the local default.
* ``DATABASE_URL`` / ``SECRET_KEY`` set literally in a ``runtime_env`` are dropped: on the
  cluster they come from the ``sentiment-secrets`` Secret through the pod environment, and a
  literal value would override it (``${VAR}`` references to the environment are kept).

Usage::

    python -m kuberay.render          # rewrite kuberay/overlays/*/serve-config.yaml
    python -m kuberay.render --check  # exit 1 if a committed overlay is out of date
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
OVERLAYS_DIR = REPO_ROOT / "kuberay" / "overlays"

#: overlay name -> Serve config it embeds (relative to the repository root)
SOURCES: dict[str, str] = {
    "cpu": "serve_config.yaml",
    "gpu": "configs/gpu.yaml",
}

RAYSERVICE_NAME = "sentiment"
CLUSTER_HTTP_OPTIONS = {"host": "0.0.0.0", "port": 80}
CLUSTER_PROXY_LOCATION = "EveryNode"
SECRET_ENV_NAMES = ("DATABASE_URL", "SECRET_KEY")
PATCH_FILE = "serve-config.yaml"


class _Literal(str):
    """A string PyYAML writes as a ``|`` block, so the embedded config stays readable."""


def _literal_representer(dumper: yaml.SafeDumper, data: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal_representer)


def cluster_serve_config(source: dict[str, Any]) -> dict[str, Any]:
    """The Serve config as the cluster runs it (see the module docstring for the changes)."""
    config = copy.deepcopy(source)
    config["proxy_location"] = CLUSTER_PROXY_LOCATION
    http_options = dict(config.get("http_options") or {})
    http_options.update(CLUSTER_HTTP_OPTIONS)
    config["http_options"] = http_options
    for app in config.get("applications") or []:
        runtime_env = app.get("runtime_env") or {}
        env_vars = runtime_env.get("env_vars") or {}
        for name in SECRET_ENV_NAMES:
            if name in env_vars and env_vars[name] != f"${{{name}}}":
                del env_vars[name]
        if "env_vars" in runtime_env and not env_vars:
            del runtime_env["env_vars"]
        if "runtime_env" in app and not runtime_env:
            del app["runtime_env"]
    return config


def serve_config_v2(overlay: str, repo_root: Path = REPO_ROOT) -> str:
    """The ``serveConfigV2`` string for ``overlay``."""
    source_path = repo_root / SOURCES[overlay]
    if not source_path.is_file():
        raise FileNotFoundError(f"{source_path}: the Serve config of the {overlay} overlay is missing")
    source = yaml.safe_load(source_path.read_text())
    if not isinstance(source, dict) or not source.get("applications"):
        raise ValueError(f"{source_path} is not a Serve config with applications")
    return yaml.safe_dump(cluster_serve_config(source), sort_keys=False)


def render_patch(overlay: str, repo_root: Path = REPO_ROOT) -> str:
    """The overlay's ``serve-config.yaml`` patch file, header comment included."""
    patch = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": RAYSERVICE_NAME},
        "spec": {"serveConfigV2": _Literal(serve_config_v2(overlay, repo_root))},
    }
    header = (
        f"# Generated from {SOURCES[overlay]} by `python -m kuberay.render`. Do not edit:\n"
        f"# change {SOURCES[overlay]} and run the command again.\n"
    )
    return header + yaml.dump(patch, Dumper=_Dumper, sort_keys=False, width=1000)


def patch_path(overlay: str, overlays_dir: Path = OVERLAYS_DIR) -> Path:
    return overlays_dir / overlay / PATCH_FILE


def stale_overlays(repo_root: Path = REPO_ROOT) -> list[str]:
    """Overlays whose committed patch differs from what the Serve configs generate."""
    overlays_dir = repo_root / "kuberay" / "overlays"
    stale = []
    for overlay in SOURCES:
        path = patch_path(overlay, overlays_dir)
        if not path.exists() or path.read_text() != render_patch(overlay, repo_root):
            stale.append(overlay)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if an overlay is stale")
    args = parser.parse_args(argv)
    try:
        return _run(check=args.check)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(*, check: bool) -> int:
    if check:
        stale = stale_overlays()
        for overlay in stale:
            print(f"stale: {patch_path(overlay)} (run python -m kuberay.render)", file=sys.stderr)
        return 1 if stale else 0
    for overlay in SOURCES:
        path = patch_path(overlay)
        path.write_text(render_patch(overlay))
        print(f"wrote {path.relative_to(REPO_ROOT)} from {SOURCES[overlay]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
