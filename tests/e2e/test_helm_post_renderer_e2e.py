"""``helm install --post-renderer kitpin --post-renderer-args pin`` into the real control
plane: the objects Helm stores are pinned before they reach the apiserver.

kitpin's webhook plays no part here: the namespace is labelled ``kitpin.dev/ignore=true``
(in case another test of the session left the webhook running), and the proof is what Helm
itself recorded and sent (``helm get manifest``), not only what the apiserver stored.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from controller.admission import pinning
from harness import modelkit, tools
from harness.controlplane import Clients, ControlPlane
from harness.registry import RegistryServer

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTCHART = REPO_ROOT / "tests" / "pin" / "testchart"
HELM_TIMEOUT = 120.0
"""Seconds one helm command may take (install without --wait returns once objects exist)."""


@pytest.fixture(scope="module")
def chart_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with RegistryServer(
        workdir=tmp_path_factory.mktemp("helm-e2e-registry"),
        name="helm-e2e-registry",
        binary=tools.ensure("registry")["registry"],
    ) as server:
        yield server


def kitpin_binary() -> Path:
    import sys

    path = Path(sys.executable).parent / "kitpin"
    assert path.is_file(), f"{path} missing: `pip install -e .` installs the console script"
    return path


class Helm:
    """The pinned helm binary, talking to the test control plane, with its own homes."""

    def __init__(self, control_plane: ControlPlane, home: Path, namespace: str) -> None:
        self.binary = tools.ensure("helm")["helm"]
        self.kubeconfig = control_plane.kubeconfig
        self.namespace = namespace
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str | os.PathLike[str]) -> str:
        argv: Sequence[str] = [
            str(self.binary),
            *(str(a) for a in args),
            "--kubeconfig",
            str(self.kubeconfig),
            "--namespace",
            self.namespace,
        ]
        result = subprocess.run(
            argv, capture_output=True, text=True, env=self.env, timeout=HELM_TIMEOUT, check=False
        )
        assert result.returncode == 0, f"helm {' '.join(argv[1:])}: {result.stderr}"
        return result.stdout


def post_renderer() -> list[str]:
    """The flags of docs/helm-post-renderer.md (``--plain-http``: the local test registry)."""
    return [
        "--post-renderer",
        str(kitpin_binary()),
        "--post-renderer-args",
        "pin",
        "--post-renderer-args",
        "--plain-http",
    ]


def init_env(deployment: client.V1Deployment) -> str:
    assert deployment.spec is not None and deployment.spec.template.spec is not None
    [init, _adapter] = deployment.spec.template.spec.init_containers or []
    assert init.env is not None and init.env[0].name == "MODELKIT_REF"
    return str(init.env[0].value)


def adapter_args(deployment: client.V1Deployment) -> list[str]:
    assert deployment.spec is not None and deployment.spec.template.spec is not None
    [_init, adapter] = deployment.spec.template.spec.init_containers or []
    return list(adapter.args or [])


def kitpin_webhook_installed(api: Clients) -> bool:
    configurations = api.admission.list_mutating_webhook_configuration().items
    return any(
        c.metadata is not None and (c.metadata.name or "").startswith("kitpin")
        for c in configurations
    )


def test_helm_install_and_upgrade_store_pinned_objects(
    api: Clients,
    control_plane: ControlPlane,
    namespace: str,
    chart_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    api.core.patch_namespace(namespace, {"metadata": {"labels": {pinning.IGNORE_LABEL: "true"}}})
    repo = f"helm-e2e/{namespace}"
    llama = modelkit.push_modelkit(chart_registry, f"{repo}/llama", "production")
    lora = modelkit.push_modelkit(chart_registry, f"{repo}/lora", "v1", seed=1)
    model_ref = f"{chart_registry.host}/{repo}/llama:production"
    adapter_ref = f"{chart_registry.host}/{repo}/lora:v1"
    values = ["--set", f"model.reference={model_ref}", "--set", f"adapter.reference={adapter_ref}"]
    helm = Helm(control_plane, tmp_path, namespace)

    helm("install", "demo", TESTCHART, *values, *post_renderer())

    # What Helm recorded and sent is pinned: only the post-renderer can have done that.
    recorded: dict[str, Any] = {
        d["kind"]: d for d in yaml.safe_load_all(helm("get", "manifest", "demo")) if d
    }
    spec = recorded["Deployment"]["spec"]["template"]["spec"]
    assert spec["initContainers"][0]["env"][0]["value"] == f"{model_ref}@{llama}"
    assert spec["initContainers"][1]["args"][1] == f"{adapter_ref}@{lora}"

    # ... and so is what the apiserver stored.
    stored = api.apps.read_namespaced_deployment("demo-serve", namespace)
    assert init_env(stored) == f"{model_ref}@{llama}"
    assert adapter_args(stored) == ["unpack", f"{adapter_ref}@{lora}", "-d", "/models/adapter"]
    assert stored.metadata is not None
    if not kitpin_webhook_installed(api):
        # the webhook records what it pins; the post-renderer leaves no such trace
        assert pinning.PINNED_ANNOTATION not in (stored.metadata.annotations or {})
    config_map = api.core.read_namespaced_config_map("demo-settings", namespace)
    assert (config_map.data or {})["model"] == model_ref  # not a site: untouched
    generation = stored.metadata.generation
    assert generation is not None

    # Re-applying the same chart while the tag has not moved changes nothing.
    helm("upgrade", "demo", TESTCHART, *values, *post_renderer())
    unchanged = api.apps.read_namespaced_deployment("demo-serve", namespace)
    assert unchanged.metadata is not None and unchanged.metadata.generation == generation
    assert init_env(unchanged) == f"{model_ref}@{llama}"

    # Moving the tag and upgrading rolls out the new digest, tag kept.
    moved = modelkit.push_modelkit(chart_registry, f"{repo}/llama", "production", seed=7)
    assert moved != llama
    helm("upgrade", "demo", TESTCHART, *values, *post_renderer())
    upgraded = api.apps.read_namespaced_deployment("demo-serve", namespace)
    assert init_env(upgraded) == f"{model_ref}@{moved}"
    assert upgraded.metadata is not None and upgraded.metadata.generation == generation + 1
