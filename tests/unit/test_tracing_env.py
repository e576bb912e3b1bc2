"""Ray Serve's tracing switches derived from OpenTelemetry's standard variables."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deployments.tracing_env import (
    EXPORTER_IMPORT_PATH,
    TracingConfigError,
    ray_tracing_env,
)

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}


def ratio(**otel: str) -> float:
    return float(ray_tracing_env({**ENDPOINT, **otel})["RAY_SERVE_TRACING_SAMPLING_RATIO"])


def test_no_endpoint_means_no_tracing():
    assert ray_tracing_env({}) == {}
    assert ray_tracing_env({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}) == {}


@pytest.mark.parametrize("endpoint", ["OTEL_EXPORTER_OTLP_ENDPOINT",
                                      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
def test_an_endpoint_turns_on_serve_tracing_with_every_request_sampled(endpoint):
    assert ray_tracing_env({endpoint: "http://collector:4318"}) == {
        "RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH": EXPORTER_IMPORT_PATH,
        "RAY_SERVE_TRACING_SAMPLING_RATIO": "1.0",  # OpenTelemetry's default sampler
    }


def test_samplers_map_to_serves_ratio():
    assert ratio(OTEL_TRACES_SAMPLER="always_on") == 1.0
    assert ratio(OTEL_TRACES_SAMPLER="parentbased_always_off") == 0.0
    assert ratio(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0.25") == 0.25
    assert ratio(OTEL_TRACES_SAMPLER="parentbased_traceidratio",
                 OTEL_TRACES_SAMPLER_ARG="0.1") == 0.1


@pytest.mark.parametrize("off", [{"OTEL_TRACES_SAMPLER": "always_off"},
                                 {"OTEL_SDK_DISABLED": "true"},
                                 {"OTEL_TRACES_EXPORTER": "none"}])
def test_switched_off_by_the_standard_variables(off):
    assert ray_tracing_env({**ENDPOINT, **off}) == {}


@pytest.mark.parametrize("bad", [{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
                                 {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
                                 {"OTEL_TRACES_SAMPLER": "jaeger_remote"},
                                 {"OTEL_TRACES_SAMPLER": "traceidratio",
                                  "OTEL_TRACES_SAMPLER_ARG": "1.5"},
                                 {"OTEL_TRACES_SAMPLER": "traceidratio",
                                  "OTEL_TRACES_SAMPLER_ARG": "half"}])
def test_what_cannot_be_honoured_is_refused(bad):
    with pytest.raises(TracingConfigError):
        ray_tracing_env({**ENDPOINT, **bad})


def test_command_prints_variables_for_env_and_fails_loudly():
    def run(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "deployments.tracing_env"],
                              env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                              text=True, timeout=60, check=False)

    on = run(**ENDPOINT)
    assert on.returncode == 0
    assert on.stdout.split() == [f"RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH={EXPORTER_IMPORT_PATH}",
                                 "RAY_SERVE_TRACING_SAMPLING_RATIO=1.0"]
    assert run().stdout == ""
    refused = run(**ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    assert refused.returncode == 2 and "OTEL_EXPORTER_OTLP_PROTOCOL" in refused.stderr
