"""The chart and deploy/ against the real apiserver, and kitpin run with the chart's own
configuration.

No kubelet or scheduler: kitpin's pods stay Pending, so these tests check what the apiserver
accepts and stores, not a running webhook. Installing webhook configurations whose Service has
no endpoints would reject objects of every other test in this session once armed, so each
install here uses an ``objectSelector`` on a label only this test uses (the chart renders
``failurePolicy: Ignore`` anyway: kitpin arms it, see test_helm_install_never_locks_the_cluster),
and is always uninstalled (and, should that fail, its webhook configurations deleted).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.admission import webhook
from hack import manifests
from harness import chart as render
from harness import modelkit, procs
from harness.controlplane import Clients, ControlPlane
from tests.e2e import conftest

pytestmark = pytest.mark.e2e

TIMEOUT = 60.0


class Helm:
    """helm against the test control plane, with its own config/cache/data directories."""

    def __init__(self, control_plane: ControlPlane, home: Path) -> None:
        self.kubeconfig = str(control_plane.kubeconfig)
        self.env = {
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str, values: Mapping[str, Any] | None = None) -> render.Result:
        return render.run_helm(
            [*args, "--kubeconfig", self.kubeconfig], values=values, env=self.env, timeout=180
        )

    def ok(self, *args: str, values: Mapping[str, Any] | None = None) -> render.Result:
        result = self(*args, values=values)
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
        return result


def _isolating_values(token: str) -> dict[str, Any]:
    """Webhooks that can never affect another test: Ignore, and only objects labelled
    ``kitpin.dev/e2e-chart=<token>``."""
    return {
        "webhook": {
            "failurePolicy": "Ignore",
            "objectSelector": {"matchLabels": {"kitpin.dev/e2e-chart": token}},
        }
    }


@contextlib.contextmanager
def installed(
    helm: Helm, api: Clients, release: str, namespace: str, values: Mapping[str, Any]
) -> Iterator[render.Result]:
    # --skip-crds: the CRDs are cluster-wide and Helm never deletes them; the policy tests own
    # them in this session. The CRDs themselves are validated by the deploy/ dry-run below.
    result = helm.ok(
        "install",
        release,
        str(render.CHART_DIR),
        "--namespace",
        namespace,
        "--skip-crds",
        values=values,
    )
    try:
        yield result
    finally:
        helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "60s")
        for delete in (
            api.admission.delete_mutating_webhook_configuration,
            api.admission.delete_validating_webhook_configuration,
        ):
            with contextlib.suppress(ApiException):
                delete(release)


def _stored(api: Clients, obj: object) -> dict[str, Any]:
    """An object the client read, as the apiserver's JSON (camelCase keys, base64 bytes)."""
    data: dict[str, Any] = api.api_client.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    return data


def _webhook_configs(api: Clients, name: str) -> list[dict[str, Any]]:
    return [
        _stored(api, api.admission.read_mutating_webhook_configuration(name)),
        _stored(api, api.admission.read_validating_webhook_configuration(name)),
    ]


def _gone(read: Any, name: str) -> bool:
    try:
        read(name)
    except ApiException as e:
        return bool(e.status == 404)
    return False


def test_helm_install_is_accepted_and_webhooks_point_at_the_service(
    control_plane: ControlPlane, api: Clients, namespace: str, tmp_path: Path
) -> None:
    helm = Helm(control_plane, tmp_path / "helm")
    token = secrets.token_hex(4)
    release = f"kitpin-e2e-{token}"
    ca = trustme.CA()
    values: dict[str, Any] = {
        **_isolating_values(token),
        "networkPolicy": {"enabled": True},
        "registry": {
            "caBundles": {"corp.pem": ca.cert_pem.bytes().decode()},
            "hosts": {"registry.corp.example": {"caFile": "/etc/kitpin/ca/corp.pem"}},
            "credentials": {"existingSecret": "central-registry-creds"},
        },
        "settings": {
            "sites": {
                "extra": [
                    {
                        "group": "ml.example.com",
                        "kind": "ModelDeployment",
                        "plural": "modeldeployments",
                        "paths": ["spec.models[*].source"],
                        "prefix": "kit://",
                    }
                ]
            }
        },
    }
    with installed(helm, api, release, namespace, values):
        deployment = _stored(api, api.apps.read_namespaced_deployment(release, namespace))
        assert deployment["spec"]["replicas"] == 2
        pod_spec = deployment["spec"]["template"]["spec"]
        assert pod_spec["securityContext"]["runAsNonRoot"] is True
        (container,) = pod_spec["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
        service = _stored(api, api.core.read_namespaced_service(release, namespace))
        assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("https", 443)]
        api.core.read_namespaced_service_account(release, namespace)
        api.core.read_namespaced_config_map(f"{release}-config", namespace)
        api.core.read_namespaced_config_map(f"{release}-ca-bundles", namespace)
        client.PolicyV1Api(api.api_client).read_namespaced_pod_disruption_budget(release, namespace)
        client.NetworkingV1Api(api.api_client).read_namespaced_network_policy(release, namespace)
        rbac = client.RbacAuthorizationV1Api(api.api_client)
        role = _stored(api, rbac.read_cluster_role(release))
        assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]} in role["rules"]
        binding = _stored(api, rbac.read_cluster_role_binding(release))
        assert [(s["name"], s["namespace"]) for s in binding["subjects"]] == [(release, namespace)]

        secret = _stored(api, api.core.read_namespaced_secret(f"{release}-tls", namespace))
        ca_bundle = secret["data"]["ca.crt"]
        assert base64.b64decode(ca_bundle).startswith(b"-----BEGIN CERTIFICATE-----")
        mutating, validating = _webhook_configs(api, release)
        paths = {
            config["kind"]: sorted(w["clientConfig"]["service"]["path"] for w in config["webhooks"])
            for config in (mutating, validating)
        }
        resources = [
            *webhook.BUILTIN_RESOURCES,
            webhook.WebhookResource(group="ml.example.com", kind="ModelDeployment"),
        ]
        ids = [webhook.handler_ids(r) for r in resources]
        policy_checks = [f"/check-{plural}" for plural in webhook.POLICY_PLURALS.values()]
        assert paths["MutatingWebhookConfiguration"] == sorted(f"/{pin}" for pin, _ in ids)
        assert paths["ValidatingWebhookConfiguration"] == sorted(
            [f"/{check}" for _, check in ids] + policy_checks
        )
        for config in (mutating, validating):
            for w in config["webhooks"]:
                assert w["clientConfig"]["service"] == {
                    "name": release,
                    "namespace": namespace,
                    "path": w["clientConfig"]["service"]["path"],
                    "port": 443,
                }
                assert w["clientConfig"]["caBundle"] == ca_bundle
                assert (w["sideEffects"], w["timeoutSeconds"]) == ("None", 10)
                assert w["failurePolicy"] == "Ignore"
                assert w["objectSelector"] == {"matchLabels": {"kitpin.dev/e2e-chart": token}}
                excluded = w["namespaceSelector"]["matchExpressions"][0]
                assert excluded["key"] == "kubernetes.io/metadata.name"
                assert namespace in excluded["values"] and "kube-system" in excluded["values"]
        assert all(w["reinvocationPolicy"] == "IfNeeded" for w in mutating["webhooks"])

        # An upgrade keeps the generated certificate (the chart looks the Secret up).
        helm.ok("upgrade", release, str(render.CHART_DIR), "--namespace", namespace, values=values)
        again = _stored(api, api.core.read_namespaced_secret(f"{release}-tls", namespace))
        assert again["data"] == secret["data"]
        for config in _webhook_configs(api, release):
            assert {w["clientConfig"]["caBundle"] for w in config["webhooks"]} == {ca_bundle}

    for read in (
        api.admission.read_mutating_webhook_configuration,
        api.admission.read_validating_webhook_configuration,
    ):
        assert _gone(read, release)


def test_helm_install_with_an_existing_secret(
    control_plane: ControlPlane, api: Clients, namespace: str, tmp_path: Path
) -> None:
    helm = Helm(control_plane, tmp_path / "helm")
    token = secrets.token_hex(4)
    release = f"kitpin-e2e-{token}"
    ca = trustme.CA()
    leaf = ca.issue_cert(f"{release}.{namespace}.svc")
    api.core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="corp-tls"),
            type="kubernetes.io/tls",
            string_data={
                "tls.crt": leaf.cert_chain_pems[0].bytes().decode(),
                "tls.key": leaf.private_key_pem.bytes().decode(),
            },
        ),
    )
    values = {
        **_isolating_values(token),
        "tls": {"existingSecret": "corp-tls", "caBundle": ca.cert_pem.bytes().decode()},
        "settings": {"mode": "validate-only"},
    }
    with installed(helm, api, release, namespace, values):
        assert _gone(api.admission.read_mutating_webhook_configuration, release)
        validating = _stored(api, api.admission.read_validating_webhook_configuration(release))
        for w in validating["webhooks"]:
            pem = base64.b64decode(w["clientConfig"]["caBundle"])
            assert pem.strip() == ca.cert_pem.bytes().strip()
        deployment = _stored(api, api.apps.read_namespaced_deployment(release, namespace))
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert next(v for v in volumes if v["name"] == "tls")["secret"]["secretName"] == "corp-tls"
        with pytest.raises(ApiException) as absent:
            api.core.read_namespaced_secret(f"{release}-tls", namespace)
        assert absent.value.status == 404


def test_deploy_manifests_are_accepted_by_the_apiserver(
    control_plane: ControlPlane, api: Clients, tmp_path: Path
) -> None:
    base = tmp_path / "deploy"
    shutil.copytree(manifests.DEPLOY_DIR, base, ignore=shutil.ignore_patterns("*.crt", "*.key"))
    subprocess.run(
        ["bash", str(base / "gen-certs.sh"), "--out", str(base / "certs")],
        check=True,
        capture_output=True,
    )
    # A server-side dry run persists nothing, so the namespaced objects need their namespace
    # to exist already; create it for the test unless it is there.
    created = False
    try:
        api.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="kitpin")))
        created = True
    except ApiException as e:
        if e.status != 409:
            raise
    try:
        procs.wait_until(
            lambda: api.core.read_namespaced_service_account("default", "kitpin"),
            timeout=TIMEOUT,
            what="ServiceAccount default in namespace kitpin",
        )
        result = control_plane.kubectl(
            "apply", "--dry-run=server", "-k", str(base), "-o", "name", check=False, timeout=120
        )
        assert result.returncode == 0, result.stderr
        applied = set(result.stdout.split())
        for expected in (
            "namespace/kitpin",
            "deployment.apps/kitpin",
            "service/kitpin",
            "secret/kitpin-tls",
            "configmap/kitpin-config",
            "poddisruptionbudget.policy/kitpin",
            "clusterrole.rbac.authorization.k8s.io/kitpin",
            "mutatingwebhookconfiguration.admissionregistration.k8s.io/kitpin",
            "validatingwebhookconfiguration.admissionregistration.k8s.io/kitpin",
            *(
                f"customresourcedefinition.apiextensions.k8s.io/{crd}"
                for crd in _crd_names(manifests.DEPLOY_CRDS)
            ),
        ):
            assert expected in applied, f"{expected} not in {sorted(applied)}"
        assert _gone(api.admission.read_mutating_webhook_configuration, "kitpin")
    finally:
        if created:
            with contextlib.suppress(ApiException):
                api.core.delete_namespace("kitpin")


def _crd_names(directory: Path) -> list[str]:
    return [
        doc["metadata"]["name"]
        for path in manifests.crd_files(directory)
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition"
    ]


def test_kitpin_runs_with_the_charts_configuration_and_passes_the_helm_test(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """The rendered command line, settings, registry config, CA bundles and generated
    certificate, served by the real `kitpin run` (the image's entrypoint) on this machine,
    and the chart's `helm test` script run against it."""
    registry_ca = trustme.CA()
    docs = render.render(
        {
            # The generated certificate is valid for the Service's names: call the Service
            # "localhost" so this machine can verify it.
            "fullnameOverride": "localhost",
            "registry": {
                "caBundles": {"corp.pem": registry_ca.cert_pem.bytes().decode()},
                "hosts": {"registry.corp.example": {"caFile": "/etc/kitpin/ca/corp.pem"}},
                "credentials": {"existingSecret": "central-registry-creds"},
            },
            "settings": {
                "sites": {
                    "extra": [
                        {
                            "group": "ml.example.com",
                            "kind": "ModelDeployment",
                            "plural": "modeldeployments",
                            "paths": ["spec.models[*].source"],
                        }
                    ]
                }
            },
        },
        namespace=namespace,
    )
    root = tmp_path / "etc-kitpin"
    files: dict[str, str | bytes] = {}
    for key, text in render.one(docs, "ConfigMap", "localhost-config")["data"].items():
        files[f"config/{key}"] = text.replace("/etc/kitpin/", f"{root}/")
    for key, text in render.one(docs, "ConfigMap", "localhost-ca-bundles")["data"].items():
        files[f"ca/{key}"] = text
    tls = render.one(docs, "Secret", "localhost-tls")["data"]
    for key in ("tls.crt", "tls.key"):
        files[f"tls/{key}"] = base64.b64decode(tls[key])
    files["docker/config.json"] = '{"auths": {}}'
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    (container,) = render.one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    port = procs.free_port()
    args = [
        a.replace("/etc/kitpin/", f"{root}/")
        .replace("--listen=0.0.0.0", "--listen=127.0.0.1")
        .replace("--port=8443", f"--port={port}")
        for a in container["args"]
    ]
    kitpin = Path(sys.executable).with_name("kitpin")
    process = procs.Process(
        "kitpin-chart",
        [str(kitpin), *args],
        log_dir=tmp_path,
        env={**os.environ, "KUBECONFIG": str(control_plane.kubeconfig), "POD_NAMESPACE": namespace},
    )
    ca_pem = base64.b64decode(tls["ca.crt"]).decode()
    context = ssl.create_default_context(cadata=ca_pem)
    process.start()
    try:

        def ready() -> bool:
            process.check_alive()
            return procs.http_ok(f"https://localhost:{port}/readyz", ssl_context=context)

        procs.wait_until(ready, timeout=TIMEOUT, what="kitpin /readyz", on_timeout=process.log_tail)
        test_pod = render.one(docs, "Pod")
        (check,) = test_pod["spec"]["containers"]
        assert check["command"] == ["python", "-c"]
        result = subprocess.run(
            [sys.executable, "-c", check["args"][0]],
            env={**os.environ, "KITPIN_URL": f"https://localhost:{port}", "KITPIN_CA": ca_pem},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{result.stderr}\n{process.log_tail()}"
        assert "allowed a plain Pod on /check-pods" in result.stdout
    finally:
        process.stop()


# --------------------------------------------------------------------------- arming

ARM_INTERVAL = 2.0
"""``--arm-interval`` of the out-of-cluster kitpin: how soon it re-arms after helm upgrade."""


def _policies(api: Clients, name: str) -> set[str]:
    """Every failurePolicy of both configurations called ``name``."""
    return {w["failurePolicy"] for c in _webhook_configs(api, name) for w in c["webhooks"]}


class _Creator(threading.Thread):
    """Creates labelled Deployments (a ModelKit reference each), a few per second, until
    stopped; records when each create was answered and how (None: admitted). An error that
    names no webhook (the apiserver or etcd overloaded on this 2-core machine) is recorded in
    ``transient`` and the create is tried again: only webhook refusals count."""

    def __init__(
        self, control_plane: ControlPlane, namespace: str, ref: str, labels: dict[str, str]
    ) -> None:
        super().__init__(name="e2e-creator", daemon=True)
        self.control_plane, self.namespace, self.ref, self.labels = (
            control_plane,
            namespace,
            ref,
            labels,
        )
        self.results: list[tuple[float, str, str | None]] = []
        self.transient: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        clients = self.control_plane.clients()
        try:
            i = 0
            while not self.stop_event.is_set():
                name = f"early-{i}"
                body = conftest.deployment(name, self.namespace, self.ref, replicas=0)
                body["metadata"]["labels"] = dict(self.labels)
                error: str | None = None
                try:
                    clients.apps.create_namespaced_deployment(self.namespace, body)
                except ApiException as e:
                    error = f"{e.status} {e.reason}: {e.body}"
                    if "webhook" not in error:
                        self.transient.append(error)
                        self.stop_event.wait(0.2)
                        continue
                self.results.append((time.monotonic(), name, error))
                i += 1
                self.stop_event.wait(0.2)  # pace: a few creates per second, not a flood
        finally:
            clients.close()

    def after(self, moment: float) -> list[tuple[float, str, str | None]]:
        return [r for r in list(self.results) if r[0] > moment]


def _token_kubeconfig(control_plane: ControlPlane, path: Path, token: str) -> Path:
    """A kubeconfig for a ServiceAccount token: kitpin out of cluster with the chart's RBAC."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {
                    "server": control_plane.url,
                    "certificate-authority-data": base64.b64encode(
                        control_plane.ca.cert.read_bytes()
                    ).decode(),
                },
            }
        ],
        "users": [{"name": "kitpin", "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "kitpin"}}],
        "current-context": "e2e",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def test_helm_install_never_locks_the_cluster_and_kitpin_arms_the_webhooks(
    control_plane: ControlPlane,
    api: Clients,
    registries: conftest.Registries,
    new_namespace: Any,
    namespace: str,
    repo: str,
    tmp_path: Path,
) -> None:
    """Issue 16: `helm install` with the chart's defaults (only an isolating objectSelector
    added) while Deployments are created all along: every create is admitted, because the
    chart renders its webhooks fail-open. Then kitpin, with the chart's own arming flags and
    the chart's RBAC (its ServiceAccount's token), arms them once it serves and the Service
    has a ready endpoint; a helm upgrade and kitpin's re-arming; a Deployment pinned through
    the armed webhooks; helm uninstall removes the configurations."""
    helm = Helm(control_plane, tmp_path / "helm")
    token = secrets.token_hex(4)
    release = f"kitpin-e2e-{token}"
    release_ns = new_namespace("release")  # the chart never admits its own namespace
    label = {"kitpin.dev/e2e-chart": token}
    values: dict[str, Any] = {"webhook": {"objectSelector": {"matchLabels": label}}}
    plain = registries.plain
    digest = modelkit.push_modelkit(plain, repo, "prod", seed=16)
    ref = conftest.ref_to(plain, repo, "prod")

    creator = _Creator(control_plane, namespace, ref, label)
    process: procs.Process | None = None
    try:
        creator.start()
        procs.wait_until(lambda: creator.results, timeout=TIMEOUT, what="a first create")
        with installed(helm, api, release, release_ns, values):
            installed_at = time.monotonic()
            # The configurations exist now, fail-open, recording the policy they want.
            for config in _webhook_configs(api, release):
                assert config["metadata"]["annotations"]["kitpin.dev/failure-policy"] == "Fail"
                assert {w["failurePolicy"] for w in config["webhooks"]} == {"Ignore"}
            procs.wait_until(
                lambda: len(creator.after(installed_at)) >= 3,
                timeout=TIMEOUT,
                what="three creates while the webhooks exist and no kitpin serves",
            )
            creator.stop_event.set()
            creator.join(timeout=TIMEOUT)
            refused = [r for r in creator.results if r[2] is not None]
            assert not refused, (
                f"{len(refused)} of {len(creator.results)} creates refused, first: {refused[0]}"
            )
            if creator.transient:
                print(f"retried {len(creator.transient)} creates: {creator.transient[:3]}")
            late = creator.after(installed_at)[-1][1]
            stored = _stored(api, api.apps.read_namespaced_deployment(late, namespace))
            assert conftest.at(stored, conftest.TEMPLATE_ENV) == ref  # admitted as written

            # kitpin out of cluster, with the Deployment's own arming flags and the chart's
            # RBAC: a kubeconfig with its ServiceAccount's token.
            sa_token = control_plane.kubectl(
                "create", "token", release, "-n", release_ns, "--duration=1h"
            ).stdout.strip()
            kubeconfig = _token_kubeconfig(control_plane, tmp_path / "kitpin.kubeconfig", sa_token)
            docs = render.render(values, release=release, namespace=release_ns)
            (container,) = render.one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
            arm_flags = [a for a in container["args"] if a.startswith("--arm-")]
            assert arm_flags == [
                f"--arm-webhooks={release}",
                "--arm-failure-policy=Fail",
                f"--arm-service={release}",
            ]
            ca = trustme.CA()
            leaf = ca.issue_cert("127.0.0.1")
            cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
            leaf.cert_chain_pems[0].write_to_path(str(cert))
            leaf.private_key_pem.write_to_path(str(key))
            port = procs.free_port()
            kitpin = Path(sys.executable).with_name("kitpin")
            process = procs.Process(
                "kitpin-armed",
                [
                    str(kitpin),
                    "run",
                    "--listen=127.0.0.1",
                    f"--port={port}",
                    f"--tls-cert={cert}",
                    f"--tls-key={key}",
                    f"--plain-http-registry={plain.host}",
                    f"--arm-interval={ARM_INTERVAL}",
                    *arm_flags,
                ],
                log_dir=tmp_path,
                env={
                    **os.environ,
                    "KUBECONFIG": str(kubeconfig),
                    "POD_NAMESPACE": release_ns,
                    "PYTHONUNBUFFERED": "1",
                },
            ).start()
            context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
            url = f"https://127.0.0.1:{port}"
            running = process

            def serving() -> bool:
                running.check_alive()
                return procs.http_ok(f"{url}/readyz", ssl_context=context)

            procs.wait_until(serving, timeout=TIMEOUT, what="kitpin /readyz")
            procs.wait_until(
                lambda: "arming waits for a ready endpoint of Service" in running.log_tail(200),
                timeout=TIMEOUT,
                what="kitpin to wait for the Service's endpoints",
            )
            # Serving, but no replica is behind the Service yet (no kubelet here): still open.
            assert _policies(api, release) == {"Ignore"}

            # A ready endpoint, as the endpointslice controller writes one once a Pod is
            # Ready (no kubelet here, so by hand; its address is never called).
            slice_ = {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{release}-e2e",
                    "namespace": release_ns,
                    "labels": {
                        "kubernetes.io/service-name": release,
                        "endpointslice.kubernetes.io/managed-by": "e2e.kitpin.dev",
                    },
                },
                "addressType": "IPv4",
                "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.1.2.3"], "conditions": {"ready": True}}],
            }
            control_plane.kubectl("create", "-f", "-", input=json.dumps(slice_))
            procs.wait_until(
                lambda: _policies(api, release) == {"Fail"},
                timeout=TIMEOUT,
                what="kitpin to arm every webhook (failurePolicy Fail)",
            )
            for config in _webhook_configs(api, release):  # only failurePolicy changed
                for w in config["webhooks"]:
                    assert w["clientConfig"]["service"]["name"] == release

            # helm upgrade with the same values. Seen with helm v3.19: its three-way merge
            # puts the rendered Ignore back (the live Fail differs from the rendered value,
            # unchanged between releases), so kitpin checks every --arm-interval and arms
            # again; it logs when it does.
            helm.ok("upgrade", release, str(render.CHART_DIR), "-n", release_ns, values=values)
            print(f"failurePolicy right after helm upgrade: {sorted(_policies(api, release))}")
            procs.wait_until(
                lambda: "armed again" in running.log_tail(400),
                timeout=TIMEOUT,
                what="kitpin to arm the webhooks again after helm upgrade reverted them",
            )
            procs.wait_until(
                lambda: _policies(api, release) == {"Fail"},
                timeout=TIMEOUT,
                what="every webhook armed again",
            )

            # The apiserver cannot reach the Service (no Pods, no kube-proxy): point every
            # webhook at the out-of-cluster kitpin instead, with the CA of its certificate.
            ca_bundle = base64.b64encode(ca.cert_pem.bytes()).decode()
            for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
                hooks = _stored(
                    api,
                    api.admission.read_mutating_webhook_configuration(release)
                    if kind.startswith("mutating")
                    else api.admission.read_validating_webhook_configuration(release),
                )["webhooks"]
                ops = [
                    {
                        "op": "replace",
                        "path": f"/webhooks/{i}/clientConfig",
                        "value": {
                            "url": f"{url}{w['clientConfig']['service']['path']}",
                            "caBundle": ca_bundle,
                        },
                    }
                    for i, w in enumerate(hooks)
                ]
                control_plane.kubectl("patch", kind, release, "--type=json", "-p", json.dumps(ops))
            assert _policies(api, release) == {"Fail"}

            body = conftest.deployment("pinned", namespace, ref, replicas=0)
            body["metadata"]["labels"] = dict(label)
            api.apps.create_namespaced_deployment(namespace, body)
            stored = _stored(api, api.apps.read_namespaced_deployment("pinned", namespace))
            assert conftest.at(stored, conftest.TEMPLATE_ENV) == conftest.pinned_ref(
                plain, repo, "prod", digest
            )

            # `helm test` with test.modelKit: its hook ServiceAccount and Role as rendered,
            # its script run here (no kubelet) with that ServiceAccount's token: a dry-run
            # Deployment through the apiserver and the armed webhooks comes back pinned.
            test_values = {**values, "test": {"modelKit": ref, "namespace": namespace}}
            hook_docs = render.render(test_values, release=release, namespace=release_ns)
            for kind in ("ServiceAccount", "Role", "RoleBinding"):
                (doc,) = render.find(hook_docs, kind, f"{release}-test")
                control_plane.kubectl("apply", "-f", "-", input=json.dumps(doc))
            sa_dir = tmp_path / "helm-test-sa"
            sa_dir.mkdir()
            (sa_dir / "token").write_text(
                control_plane.kubectl(
                    "create", "token", f"{release}-test", "-n", release_ns
                ).stdout.strip()
            )
            (sa_dir / "ca.crt").write_bytes(control_plane.ca.cert.read_bytes())
            (check,) = render.one(hook_docs, "Pod")["spec"]["containers"]
            pod_env = {e["name"]: e["value"] for e in check["env"] if "value" in e}
            result = subprocess.run(
                [sys.executable, "-c", check["args"][0]],
                env={
                    **os.environ,
                    **pod_env,
                    "KITPIN_URL": url,
                    "KITPIN_CA": ca.cert_pem.bytes().decode(),
                    "KUBE_API": control_plane.url,
                    "KUBE_SA_DIR": str(sa_dir),
                },
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
            assert f"came back pinned: {ref}@{digest}" in result.stdout
    except BaseException:
        if process is not None:
            print(process.log_tail(150))
        print(control_plane.logs(40))
        raise
    finally:
        creator.stop_event.set()
        if process is not None:
            process.stop()
    for read in (
        api.admission.read_mutating_webhook_configuration,
        api.admission.read_validating_webhook_configuration,
    ):
        assert _gone(read, release)
