"""The settings and registry ConfigMap: what the chart renders is read by kitpin's own loaders,
and the chart's defaults are kitpin's defaults."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller import settings
from controller.registry import hosts
from harness import chart as render

pytestmark = pytest.mark.integration

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _config(docs: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = render.one(docs, "ConfigMap", "kitpin-config")["data"]
    return data


def _loaded(docs: list[dict[str, Any]]) -> settings.Settings:
    return settings.parse_settings_document(
        yaml.safe_load(_config(docs)["settings.yaml"]), source="chart"
    )


def _policy(
    docs: list[dict[str, Any]], tmp_path: Path, *, mounted: dict[str, str] | None = None
) -> hosts.HostPolicy:
    """Load the rendered registry config as the pod would: the files under /etc/kitpin/ca/
    (``mounted``: name → PEM) are materialised in ``tmp_path`` and the paths rewritten."""
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    for name, pem in (mounted or {}).items():
        (ca_dir / name).write_text(pem)
    path = tmp_path / "registry.yaml"
    path.write_text(_config(docs)["registry.yaml"].replace("/etc/kitpin/ca/", f"{ca_dir}/"))
    return hosts.load_registry_config(path)


def test_default_settings_are_kitpins_defaults(default_docs: list[dict[str, Any]]) -> None:
    assert _loaded(default_docs) == settings.Settings()


def test_default_registry_config_is_kitpins_default(
    default_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    assert _policy(default_docs, tmp_path) == hosts.HostPolicy()


def test_every_setting_reaches_kitpin() -> None:
    values = {
        "webhook": {"timeoutSeconds": 20},
        "settings": {
            "mode": "pods-only",
            "failure": "warn",
            "deadlineSeconds": 12.5,
            "ignoredNamespaces": ["argocd"],
            "cache": {
                "ttlSeconds": 86400,
                "negativeTtlSeconds": 0.5,
                "staleIfErrorSeconds": 1000000,
                "refreshAhead": 0.9,
                "maxEntries": 2000000,
                "enabled": False,
            },
            "sites": {
                "envNames": ["MODELKIT_REF", "MODEL_REF"],
                "kitCliImages": ["registry.example.com/kit"],
                "extra": [
                    {
                        "group": "ml.example.com",
                        "kind": "ModelDeployment",
                        "plural": "modeldeployments",
                        "versions": ["v1"],
                        "paths": ["spec.models[*].source"],
                        "grammar": "kit",
                        "prefix": "kit://",
                        "expectsModelKit": False,
                        "scope": "Namespaced",
                    }
                ],
            },
            "server": {"drainSeconds": 10, "shutdownSeconds": 25.5},
        },
    }
    loaded = _loaded(render.render(values))
    assert (loaded.server.drain_seconds, loaded.server.shutdown_seconds) == (10, 25.5)
    admission, resolver = loaded.admission, loaded.resolver
    assert admission.mode == "pods-only"
    assert admission.failure == "warn"
    assert admission.deadline == 12.5
    assert "argocd" in admission.ignored_namespaces
    assert (resolver.ttl, resolver.negative_ttl, resolver.stale_if_error) == (86400, 0.5, 1000000)
    assert (resolver.max_entries, resolver.enabled, resolver.deadline) == (2000000, False, 12.5)
    assert resolver.refresh_ahead == 0.9
    assert admission.sites.env_names == ("MODELKIT_REF", "MODEL_REF")
    assert admission.sites.kit_cli_images == ("registry.example.com/kit",)
    (site,) = admission.sites.extra_sites
    assert (
        site.group,
        site.kind,
        site.versions,
        site.paths,
        site.prefix,
        site.expects_modelkit,
    ) == (
        "ml.example.com",
        "ModelDeployment",
        ("v1",),
        ("spec.models[*].source",),
        "kit://",
        False,
    )


def test_registry_settings_ca_bundles_and_central_credentials(tmp_path: Path) -> None:
    docs = render.render(
        {
            "registry": {
                "hosts": {
                    "registry.local:5000": {"plainHTTP": True},
                    "reg.internal": {"caFile": "/etc/kitpin/ca/reg.pem"},
                    "other.internal": {"caFile": "/etc/kitpin/ca/from-existing.pem"},
                },
                "allowedRegistries": ["*.internal", "registry.local:*"],
                "deniedNetworks": ["169.254.0.0/16", "10.99.0.0/16"],
                "deniedHostnames": ["metadata"],
                "caBundles": {"reg.pem": PEM},
                "existingCABundlesConfigMap": "corp-cas",
                "credentials": {"existingSecret": "central-creds"},
            }
        }
    )
    bundles = render.one(docs, "ConfigMap", "kitpin-ca-bundles")
    assert bundles["data"] == {"reg.pem": PEM}
    policy = _policy(docs, tmp_path, mounted={**bundles["data"], "from-existing.pem": PEM})
    assert policy.registries["registry.local:5000"].plain_http is True
    assert policy.registries["reg.internal"].ca_file == f"{tmp_path}/ca/reg.pem"
    assert policy.allowed_registries == ("*.internal", "registry.local:*")
    assert ipaddress.ip_network("10.99.0.0/16") in policy.denied_networks
    assert policy.denied_hostnames == frozenset({"metadata"})

    pod = render.one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["ca-bundles"]["projected"]["sources"] == [
        {"configMap": {"name": "kitpin-ca-bundles"}},
        {"configMap": {"name": "corp-cas"}},
    ]
    assert volumes["docker-config"]["secret"] == {
        "secretName": "central-creds",
        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
    }
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["ca-bundles"] == "/etc/kitpin/ca"
    assert mounts["docker-config"] == "/etc/kitpin/docker"
    assert "--docker-config=/etc/kitpin/docker" in pod["containers"][0]["args"]


def test_a_settings_change_rolls_the_pods(default_docs: list[dict[str, Any]]) -> None:
    def checksum(docs: list[dict[str, Any]]) -> str:
        annotations = render.one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    changed = render.render({"settings": {"cache": {"ttlSeconds": 30}}})
    assert checksum(changed) != checksum(default_docs)
    assert checksum(render.render()) == checksum(default_docs)
