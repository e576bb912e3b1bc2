"""The image's command: what `make run` does, for a container.

    python -m deployments.serve_command [CONFIG]      # CONFIG: serve_config.yaml

Brings the database in DATABASE_URL to the current schema, then runs the launcher of
`make run` (deployments.local_service) with the tracing switches derived from the OTEL_*
variables: Serve listens on SERVE_HTTP_HOST:SERVE_HTTP_PORT (the image sets 0.0.0.0), and a
stop by any signal ends every process of the service.
"""

from __future__ import annotations

import os
import sys

from deployments.tracing_env import TracingConfigError, ray_tracing_env


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        tracing = ray_tracing_env(os.environ)
    except TracingConfigError as err:
        print(f"tracing: {err}", file=sys.stderr)
        return 2

    from serve_app.db import upgrade_to_head
    from serve_app.settings import get_settings

    upgrade_to_head(get_settings().database_url)
    command = [sys.executable, "-m", "deployments.local_service", *argv]
    os.execve(sys.executable, command, {**os.environ, **tracing})
    return 0  # not reached: the launcher replaces this process


if __name__ == "__main__":
    sys.exit(main())
