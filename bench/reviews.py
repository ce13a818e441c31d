"""Realistic AdmissionReview v1 requests, as kube-apiserver sends them to a webhook.

The object is a Pod in the shape the KitOps docs recommend: one ``kitops-init`` init container
per ModelKit (``MODELKIT_REF`` + ``UNPACK_PATH`` into a shared ``emptyDir``) and the model
server. The apiserver has already defaulted it (``terminationMessagePath``,
``imagePullPolicy``, ``dnsPolicy``, ...) by the time a webhook sees it, so it is defaulted
here too: the size and shape of what kopf parses, copies and diffs are real.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

KITOPS_INIT_IMAGE = "ghcr.io/kitops-ml/kitops-init:v1.7.0"
SERVER_IMAGE = "docker.io/vllm/vllm-openai:v0.8.5"


def _container_defaults(c: dict[str, Any]) -> dict[str, Any]:
    c.setdefault("imagePullPolicy", "IfNotPresent")
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    return c


def pod(name: str, namespace: str, references: Sequence[str]) -> dict[str, Any]:
    """A defaulted Pod with one ``kitops-init`` init container per reference."""
    init = [
        _container_defaults(
            {
                "name": f"kitops-init-{i}",
                "image": KITOPS_INIT_IMAGE,
                "env": [
                    {"name": "MODELKIT_REF", "value": ref},
                    {"name": "UNPACK_PATH", "value": f"/models/m{i}"},
                    {"name": "UNPACK_FILTER", "value": "model"},
                ],
                "volumeMounts": [
                    {"name": "models", "mountPath": "/models"},
                    {
                        "name": "kube-api-access",
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        "readOnly": True,
                    },
                ],
            }
        )
        for i, ref in enumerate(references)
    ]
    server = _container_defaults(
        {
            "name": "server",
            "image": SERVER_IMAGE,
            "args": ["--model", "/models/m0", "--port", "8000"],
            "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
            "resources": {"limits": {"cpu": "4", "memory": "16Gi"}},
            "readinessProbe": {
                "httpGet": {"path": "/health", "port": "http", "scheme": "HTTP"},
                "periodSeconds": 10,
                "timeoutSeconds": 1,
                "successThreshold": 1,
                "failureThreshold": 3,
            },
            "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
        }
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "llm", "app.kubernetes.io/part-of": "bench"},
            "annotations": {"bench.kitpin.dev/run": "1"},
        },
        "spec": {
            "initContainers": init,
            "containers": [server],
            "volumes": [
                {"name": "models", "emptyDir": {}},
                {
                    "name": "kube-api-access",
                    "projected": {
                        "defaultMode": 420,
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
                        ],
                    },
                },
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    }


def review(
    obj: dict[str, Any], *, operation: str = "CREATE", uid: str | None = None
) -> dict[str, Any]:
    """An ``admission.k8s.io/v1`` AdmissionReview of ``obj`` (a Pod) by a cluster admin."""
    meta = obj.get("metadata") or {}
    gvk = {"group": "", "version": "v1", "kind": obj.get("kind", "Pod")}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "operation": operation,
            "userInfo": {
                "username": "kitpin-admin",
                "groups": ["system:masters", "system:authenticated"],
                "extra": {},
            },
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def pod_review(name: str, namespace: str, references: Sequence[str]) -> dict[str, Any]:
    return review(pod(name, namespace, references))


def write_jsonl(path: Path, documents: Sequence[dict[str, Any]]) -> Path:
    """One compact JSON document per line (what ``bench.loadgen --review`` reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for doc in documents:
            f.write(json.dumps(doc, separators=(",", ":")) + "\n")
    return path


def with_references(
    template: dict[str, Any], references: Sequence[str], *, name: str | None = None
) -> dict[str, Any]:
    """``template`` (a captured Pod review) with its ``MODELKIT_REF`` values replaced, in
    order, by ``references`` (as many as the template has), a new uid and optionally a new
    Pod name."""
    doc = copy.deepcopy(template)
    request = doc["request"]
    request["uid"] = str(uuid.uuid4())
    obj = request["object"]
    if name is not None:
        obj["metadata"]["name"] = name
        request["name"] = name
    values = iter(references)
    replaced = 0
    for container in obj["spec"].get("initContainers", []):
        for env in container.get("env", []):
            if env.get("name") == "MODELKIT_REF":
                env["value"] = next(values)
                replaced += 1
    if replaced != len(references):
        raise ValueError(f"the template has {replaced} MODELKIT_REF values, not {len(references)}")
    return doc
