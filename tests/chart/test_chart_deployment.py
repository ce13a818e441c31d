"""The Deployment and its companions: replicas, spread, PDB, hardening, probes on the webhook
port, the `kitpin run` command line (parsed by kitpin's own parser), optional objects."""

from __future__ import annotations

from typing import Any

import pytest

from controller import cli
from harness import chart as render

pytestmark = pytest.mark.integration


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = render.one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def test_two_replicas_spread_and_a_pdb(default_docs: list[dict[str, Any]]) -> None:
    deployment = render.one(default_docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    selector = deployment["spec"]["selector"]["matchLabels"]
    term = _pod(default_docs)["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == selector
    pdb = render.one(default_docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    service = render.one(default_docs, "Service")
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [
        {
            "name": "https",
            "port": 443,
            "targetPort": "https",
            "protocol": "TCP",
            "appProtocol": "https",
        }
    ]


def test_hard_anti_affinity_or_none() -> None:
    hard = _pod(render.render({"podAntiAffinity": "hard"}))["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in hard
    assert "affinity" not in _pod(render.render({"podAntiAffinity": "none"}))
    custom: dict[str, Any] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}
        }
    }
    assert _pod(render.render({"affinity": custom}))["affinity"] == custom


def test_pod_is_hardened(default_docs: list[dict[str, Any]]) -> None:
    pod = _pod(default_docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {
        "/etc/kitpin/config",
        "/etc/kitpin/tls",
        "/tmp",
    }
    assert all(m.get("readOnly") for m in container["volumeMounts"] if m["mountPath"] != "/tmp")


def test_probes_hit_the_webhook_port_over_https(default_docs: list[dict[str, Any]]) -> None:
    (container,) = _pod(default_docs)["containers"]
    assert container["ports"] == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]
    probes = {
        k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["readinessProbe"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert probes["livenessProbe"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    assert probes["startupProbe"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}


def test_command_line_is_one_kitpin_accepts(default_docs: list[dict[str, Any]]) -> None:
    (container,) = _pod(default_docs)["containers"]
    assert "command" not in container  # the image's ENTRYPOINT is `kitpin`
    args = cli.build_parser().parse_args(container["args"])
    assert args.command == "run"
    assert args.settings == "/etc/kitpin/config/settings.yaml"
    assert args.registry_config == "/etc/kitpin/config/registry.yaml"
    assert args.docker_config is None
    assert (args.listen, args.port) == ("0.0.0.0", 8443)
    assert (args.tls_cert, args.tls_key) == ("/etc/kitpin/tls/tls.crt", "/etc/kitpin/tls/tls.key")
    assert args.dev is False and args.verbose is False
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_verbose_port_and_extra_args() -> None:
    docs = render.render(
        {
            "verbose": True,
            "containerPort": 9443,
            "extraArgs": ["--plain-http-registry=registry.local:5000"],
        }
    )
    (container,) = _pod(docs)["containers"]
    args = cli.build_parser().parse_args(container["args"])
    assert args.verbose is True
    assert args.port == 9443
    assert args.plain_http_registry == ["registry.local:5000"]


def test_image_reference() -> None:
    (default,) = _pod(render.render())["containers"]
    assert default["image"] == "ghcr.io/kitpin/kitpin:0.1.0"
    digest = "sha256:" + "a" * 64
    (pinned,) = _pod(render.render({"image": {"tag": "v1", "digest": digest}}))["containers"]
    assert pinned["image"] == f"ghcr.io/kitpin/kitpin:v1@{digest}"


def test_helm_test_pod_is_a_hook(default_docs: list[dict[str, Any]]) -> None:
    pod = render.one(default_docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e for e in container["env"]}
    assert env["KITPIN_URL"]["value"] == "https://kitpin.kitpin.svc:443"
    assert env["KITPIN_CA"]["valueFrom"]["secretKeyRef"] == {"name": "kitpin-tls", "key": "ca.crt"}
    script = container["args"][0]
    compile(script, "helm-test", "exec")
    assert "/check-pods" in script and "/readyz" in script


def test_network_policy_is_on_by_default_and_narrow(default_docs: list[dict[str, Any]]) -> None:
    policy = render.one(default_docs, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    # Only the webhook port, from any source: the apiserver (whose address is
    # cluster-specific) always reaches it.
    assert policy["ingress"] == [{"ports": [{"port": "https", "protocol": "TCP"}]}]
    registry_rule = policy["egress"][1]
    assert [p["port"] for p in registry_rule["ports"]] == [443, 6443]
    assert registry_rule["to"][0]["ipBlock"] == {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}
    docs = render.render(
        {
            "networkPolicy": {
                "egressPorts": [443, 5000],
                "ingressFrom": [{"ipBlock": {"cidr": "172.16.0.0/28"}}],
            }
        }
    )
    policy = render.one(docs, "NetworkPolicy")["spec"]
    assert policy["ingress"] == [
        {
            "ports": [{"port": "https", "protocol": "TCP"}],
            "from": [{"ipBlock": {"cidr": "172.16.0.0/28"}}],
        }
    ]
    assert [p["port"] for p in policy["egress"][1]["ports"]] == [443, 5000]
    assert not render.find(render.render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_service_monitor_is_optional_and_verifies_tls(default_docs: list[dict[str, Any]]) -> None:
    assert not render.find(default_docs, "ServiceMonitor")
    docs = render.render(
        {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
    )
    monitor = render.one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["scheme"], endpoint["path"]) == (
        "https",
        "https",
        "/metrics",
    )
    assert endpoint["tlsConfig"] == {
        "serverName": "kitpin.kitpin.svc",
        "ca": {"secret": {"name": "kitpin-tls", "key": "ca.crt"}},
    }


def test_names_follow_the_release(default_docs: list[dict[str, Any]]) -> None:
    docs = render.render(release="prod")
    assert render.one(docs, "Deployment")["metadata"]["name"] == "prod-kitpin"
    for w in render.one(docs, "ValidatingWebhookConfiguration")["webhooks"]:
        assert w["clientConfig"]["service"]["name"] == "prod-kitpin"
    assert (
        render.one(render.render({"fullnameOverride": "pinner"}), "Service")["metadata"]["name"]
        == "pinner"
    )
    namespaced = [
        d
        for d in default_docs
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding") and "Webhook" not in d["kind"]
    ]
    assert all(d["metadata"]["namespace"] == "kitpin" for d in namespaced)


def test_host_network_is_opt_in() -> None:
    assert "hostNetwork" not in _pod(render.render())
    pod = _pod(render.render({"hostNetwork": True}))
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"  # Services still resolve
