"""The control plane itself: controllers run, admission sees what kitpin will see."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from harness import procs
from harness.controlplane import Clients, ControlPlane

pytestmark = pytest.mark.e2e

TIMEOUT = 60.0
IMAGE = "registry.example/x:1"


def _uid(obj: client.V1Deployment | client.V1ReplicaSet) -> str:
    assert obj.metadata is not None and obj.metadata.uid
    return str(obj.metadata.uid)


def _owned_by(items: list[client.V1ReplicaSet] | list[client.V1Pod], uid: str) -> list[object]:
    return [
        obj
        for obj in items
        if obj.metadata is not None
        and any(o.uid == uid for o in obj.metadata.owner_references or [])
    ]


def test_deployment_makes_replicaset_and_pending_pod(api: Clients, namespace: str) -> None:
    labels = {"app": "smoke"}
    deployment = api.apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="smoke"),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="main", image=IMAGE)]
                    ),
                ),
            ),
        ),
    )

    replica_sets = procs.wait_until(
        lambda: _owned_by(api.apps.list_namespaced_replica_set(namespace).items, _uid(deployment)),
        timeout=TIMEOUT,
        what="a ReplicaSet owned by the Deployment",
    )
    assert isinstance(replica_sets, list) and len(replica_sets) == 1
    replica_set = replica_sets[0]
    assert isinstance(replica_set, client.V1ReplicaSet)

    pods = procs.wait_until(
        lambda: _owned_by(api.core.list_namespaced_pod(namespace).items, _uid(replica_set)),
        timeout=TIMEOUT,
        what="a Pod owned by the ReplicaSet",
    )
    assert isinstance(pods, list) and len(pods) == 1
    pod = pods[0]
    assert isinstance(pod, client.V1Pod)
    assert pod.spec is not None and pod.status is not None
    assert pod.spec.containers[0].image == IMAGE
    assert pod.spec.service_account_name == "default"
    assert pod.status.phase == "Pending"  # no scheduler, no kubelet


def test_namespace_gets_default_service_account(api: Clients, namespace: str) -> None:
    sa = procs.wait_until(
        lambda: api.core.read_namespaced_service_account("default", namespace),
        timeout=TIMEOUT,
        what="ServiceAccount default",
    )
    assert isinstance(sa, client.V1ServiceAccount)
    root_ca = procs.wait_until(
        lambda: api.core.read_namespaced_config_map("kube-root-ca.crt", namespace),
        timeout=TIMEOUT,
        what="ConfigMap kube-root-ca.crt",
    )
    assert isinstance(root_ca, client.V1ConfigMap)


def test_image_volume_round_trips(control_plane: ControlPlane, namespace: str) -> None:
    """volumes[].image must survive the apiserver (ImageVolume on), or image-volume tests
    would prove nothing."""
    volume = {
        "name": "model",
        "image": {"reference": "registry.example/models/m:1", "pullPolicy": "IfNotPresent"},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "image-volume", "namespace": namespace},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "volumeMounts": [{"name": "model", "mountPath": "/model"}],
                }
            ],
            "volumes": [volume],
        },
    }
    control_plane.kubectl("create", "-f", "-", input=json.dumps(pod))
    stored = json.loads(
        control_plane.kubectl("get", "pod", "image-volume", "-n", namespace, "-o", "json").stdout
    )
    volumes = {v["name"]: v for v in stored["spec"]["volumes"]}
    assert volumes["model"] == volume
