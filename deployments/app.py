"""The Serve application: `deployments.app:build_app`, the import path in serve configs."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from deployments.ingress import APIIngress
from deployments.sentiment import SentimentModel


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Bind APIIngress to SentimentModel.

    `args` (the config's `args:`) may carry `model_options` and `ingress_options`: dicts of
    deployment options (as `Deployment.options` takes them) for callers that build the
    app in Python. Serve configs normally tune deployments in their `deployments:` list.
    """
    args = dict(args or {})
    model_options = args.pop("model_options", None) or {}
    ingress_options = args.pop("ingress_options", None) or {}
    if args:
        raise ValueError(f"unknown build_app args: {sorted(args)}")
    model = SentimentModel.options(**model_options).bind()
    return APIIngress.options(**ingress_options).bind(model)
