"""The NetworkPolicy of the Ray pods: what the cluster network keeps reaching (the ports the pods
name: Serve, the metrics the PodMonitors scrape, the token-guarded dashboard, GCS and client),
and what only the service's own Ray pods may reach (the replica port ranges, Ray's node-to-node
ports). Checked on `kubectl kustomize` of every overlay, against Kubernetes' schema."""

from __future__ import annotations

import kubernetes_validate
import pytest

from kuberay_manifests import (
    KUBERNETES_VERSION,
    OVERLAYS,
    built_overlay,
    containers,
    only,
    pod_templates,
)

# Ray Serve 2.60's ranges for each ingress replica's own HTTP and gRPC servers.
REPLICA_RANGES = (range(30000, 31001), range(40000, 41001))


def policy_and_pods(overlay: str):
    objects = built_overlay(overlay)
    policy = only(objects, "NetworkPolicy")
    pods = [template for _, template in pod_templates(only(objects, "RayService"))]
    return policy, pods


def selects(selector: dict, template: dict) -> bool:
    labels = (template.get("metadata") or {}).get("labels") or {}
    return selector["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_policy_is_valid_kubernetes_and_covers_every_ray_pod(overlay):
    policy, pods = policy_and_pods(overlay)
    kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert pods and all(selects(policy["spec"]["podSelector"], pod) for pod in pods)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_ray_pods_reach_every_port(overlay):
    policy, pods = policy_and_pods(overlay)
    unrestricted = [rule for rule in policy["spec"]["ingress"] if "ports" not in rule]
    assert len(unrestricted) == 1
    (peer,) = unrestricted[0]["from"]
    assert set(peer) == {"podSelector"}  # this namespace's Ray pods, no namespace or IP block
    assert all(selects(peer["podSelector"], pod) for pod in pods)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_open_ports_are_named_ports_of_the_pods_and_not_the_replica_ranges(overlay):
    policy, pods = policy_and_pods(overlay)
    named = {port["name"]: port["containerPort"] for pod in pods
             for container in containers(pod["spec"]) for port in container.get("ports", [])}
    opened = [port["port"] for rule in policy["spec"]["ingress"] if "from" not in rule
              for port in rule["ports"]]
    # A renamed container port would silently close its door: every name must exist.
    assert set(opened) <= set(named), set(opened) - set(named)
    # Today's reachability: the Serve port and every port Prometheus scrapes stay open.
    assert {"serve", "metrics"} <= set(opened)
    for name in opened:
        assert not any(named[name] in ports for ports in REPLICA_RANGES), name
