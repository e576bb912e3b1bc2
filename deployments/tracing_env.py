"""Ray Serve's tracing switches, derived from OpenTelemetry's standard environment variables.

Operators set only OpenTelemetry's variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`,
`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`). Ray Serve reads its
own two (`RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH`, `RAY_SERVE_TRACING_SAMPLING_RATIO`) when each
proxy and replica process starts, so they must be in the environment of the Ray processes:

    env $(python -m deployments.tracing_env) serve run serve_config.yaml    # what `make run` does

prints them (nothing when no OTLP endpoint is set: tracing stays off). Free of Ray, fast to run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

EXPORTER_IMPORT_PATH = "deployments.tracing:otlp_span_processors"
SUPPORTED_PROTOCOL = "http/protobuf"

# Ray Serve always samples with ParentBasedTraceIdRatio(ratio): a caller's sampled flag is
# followed, and the ratio decides for requests that arrive without one.
_FIXED_RATIOS = {"always_on": 1.0, "parentbased_always_on": 1.0, "parentbased_always_off": 0.0}
_RATIO_SAMPLERS = {"traceidratio", "parentbased_traceidratio"}


class TracingConfigError(ValueError):
    """The OpenTelemetry variables ask for something this service cannot do."""


def tracing_requested(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    if environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() == "always_off":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
                or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())


def sampling_ratio(environ: Mapping[str, str]) -> float:
    """The ratio for Ray's sampler from OTEL_TRACES_SAMPLER(_ARG); OpenTelemetry's default
    sampler (parentbased_always_on) is 1.0."""
    sampler = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if sampler in _FIXED_RATIOS:
        return _FIXED_RATIOS[sampler]
    if sampler not in _RATIO_SAMPLERS:
        raise TracingConfigError(
            f"OTEL_TRACES_SAMPLER={sampler!r} is not supported; use one of "
            f"{sorted([*_FIXED_RATIOS, *_RATIO_SAMPLERS, 'always_off'])}")
    arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0").strip() or "1.0"
    try:
        ratio = float(arg)
    except ValueError:
        raise TracingConfigError(f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a number") from None
    if not 0.0 <= ratio <= 1.0:
        raise TracingConfigError(f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not between 0 and 1")
    return ratio


def ray_tracing_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Ray Serve's tracing variables for these OpenTelemetry variables; {} when tracing is off."""
    if not tracing_requested(environ):
        return {}
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(name, "").strip()
        if protocol:
            if protocol != SUPPORTED_PROTOCOL:
                raise TracingConfigError(f"{name}={protocol!r}: only {SUPPORTED_PROTOCOL!r} "
                                         "(OTLP over HTTP) is built in")
            break
    return {
        "RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH": EXPORTER_IMPORT_PATH,
        "RAY_SERVE_TRACING_SAMPLING_RATIO": repr(sampling_ratio(environ)),
    }


def main() -> int:
    try:
        variables = ray_tracing_env(os.environ)
    except TracingConfigError as err:
        print(f"tracing: {err}", file=sys.stderr)
        return 2
    for name, value in variables.items():
        print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
