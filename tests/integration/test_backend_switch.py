"""A backend switch through `serve deploy` (user_config `backend`) applies in place, under load,
without a failed request: ONNX Runtime (the CPU default, int8 where it ships so) to torch and
back."""

from __future__ import annotations

import copy

import httpx
import pytest

from serve_app import onnx_int8
from serve_stack import APP_NAME, MODEL
from steady_load import SteadyLoad

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def _with_backend(config: dict, backend: str) -> dict:
    changed = copy.deepcopy(config)
    for app in changed["applications"]:
        for deployment in app["deployments"]:
            if deployment["name"] == MODEL:
                deployment["user_config"] = {**deployment.get("user_config", {}),
                                             "backend": backend}
    return changed


def _token(url: str) -> str:
    with httpx.Client(base_url=url, timeout=60) as client:
        user = {"username": "backend_switch_user", "password": "backend-switch-password"}
        assert client.post("/auth/", json=user).status_code == 201
        return client.post("/auth/token", data=user).json()["access_token"]


def _backends(instance) -> dict[str, str]:
    with instance.driver():
        return {rid: stats["backend"] for rid, stats in instance.model_stats().items()}


def test_serve_deploy_switches_the_backend_in_place_without_a_failed_request(serve_instance):
    shipped = copy.deepcopy(serve_instance.config)
    before = _backends(serve_instance)
    default = "onnx-int8" if onnx_int8.ships_by_default() else "onnx"
    assert set(before.values()) == {default}, before

    with SteadyLoad(serve_instance.url, _token(serve_instance.url), concurrency=4,
                    label="backend switch") as load:
        load.wait_for(20)
        try:
            serve_instance.deploy(_with_backend(shipped, "torch"))
            load.wait_for(20)
            after = _backends(serve_instance)
        finally:
            serve_instance.deploy(shipped)  # the shared instance goes back as it was
        load.wait_for(20)
        restored = _backends(serve_instance)
    report = load.report

    assert not report.failures, report.summary()
    assert set(after.values()) == {"torch"}, after
    # In place: replicas that served ONNX Runtime before serve torch now (reconfigure, no
    # restart), and back again.
    assert set(before) & set(after), (before, after)
    assert set(restored.values()) == {default}, restored
    versions = {o.body["model_version"] for o in report.outcomes if o.ok}
    # One model throughout: fp32 on torch, and the same model's int8 where that is the default.
    assert len({v.removesuffix("+int8") for v in versions}) == 1, versions
