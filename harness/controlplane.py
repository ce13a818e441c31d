"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

No scheduler and no kubelet: pods stay Pending, which is all an admission controller needs.
With the controller-manager the Deployment -> ReplicaSet -> Pod chain, ``default``
ServiceAccounts, namespace deletion and garbage collection are real.

    with ControlPlane() as cp:
        cp.kubectl("get", "ns")
        core = kubernetes.client.CoreV1Api(cp.api_client())

Everything lives in one run directory::

    <run dir>/pki/          CA, serving cert, client certs, service-account key pair
    <run dir>/etcd/         etcd data
    <run dir>/kubeconfig    admin (CN=kitpin-admin, O=system:masters)
    <run dir>/kube-controller-manager.kubeconfig
    <log dir>/{etcd,kube-apiserver,kube-controller-manager}.log   (default <run dir>/logs)

Options for what a hardened cluster has:

- ``webhook_client_cert=True``: the apiserver presents a client certificate to every webhook
  that asks for one, as an administrator sets it up for kitpin's caller authentication
  (``docs/security.md``): ``--admission-control-config-file`` names an AdmissionConfiguration
  whose ``WebhookAdmissionConfiguration`` (for both webhook plugins) has a
  ``kubeConfigFile`` with one user, ``"*"`` (every webhook host; the ports here are random),
  holding a certificate (CN ``WEBHOOK_CLIENT_NAME``) from a CA of its own
  (:attr:`ControlPlane.webhook_client_ca`), not the cluster CA::

    <run dir>/pki/webhook-client-ca.{crt,key}, <run dir>/pki/webhook-client.{crt,key}
    <run dir>/admission/admission-config.yaml, <run dir>/admission/webhook-kubeconfig

- ``audit_policy=<Policy document>``: the apiserver writes audit events (JSON lines) to
  ``<log dir>/kube-apiserver-audit.log``, read with :meth:`ControlPlane.audit_events`.

``stop()`` stops kube-controller-manager, kube-apiserver and etcd in that order; a failed
``start()`` stops whatever it had started before raising.
"""

from __future__ import annotations

import base64
import functools
import json
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import yaml

from harness import pki, procs, tools

if TYPE_CHECKING:
    import kubernetes.client

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc"
ADMIN_USER = "kitpin-admin"
WEBHOOK_CLIENT_NAME = "kube-apiserver-webhook-client"
"""The CN of the certificate the apiserver presents to webhooks (``webhook_client_cert``)."""

# Mutating/ValidatingAdmissionWebhook and ServiceAccount are on by default; naming them keeps
# the dependency visible (--enable-admission-plugins adds to the default set).
ADMISSION_PLUGINS = (
    "NamespaceLifecycle",
    "ServiceAccount",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionWebhook",
)

# Feature gates kitpin's admission sites need. ImageVolume (pods' volumes[].image) is beta and
# on by default from v1.35, the pinned version: nothing to switch on. A 1.34 apiserver would
# need "ImageVolume=true", or it silently drops the field.
FEATURE_GATES: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Clients:
    """Official-client API handles sharing one ``ApiClient`` (close it with ``close()``)."""

    api_client: kubernetes.client.ApiClient
    core: kubernetes.client.CoreV1Api
    apps: kubernetes.client.AppsV1Api
    admission: kubernetes.client.AdmissionregistrationV1Api
    custom: kubernetes.client.CustomObjectsApi

    @classmethod
    def of(cls, api_client: kubernetes.client.ApiClient) -> Clients:
        from kubernetes import client

        return cls(
            api_client=api_client,
            core=client.CoreV1Api(api_client),
            apps=client.AppsV1Api(api_client),
            admission=client.AdmissionregistrationV1Api(api_client),
            custom=client.CustomObjectsApi(api_client),
        )

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]


class KubectlError(procs.HarnessError):
    """kubectl exited non-zero; carries its output."""

    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(
            f"kubectl {' '.join(args)} exited {result.returncode}\n"
            f"stderr: {result.stderr.strip()}\nstdout: {result.stdout.strip()}"
        )


@functools.cache
def _etcd_has_flag(etcd: Path, flag: str) -> bool:
    out = subprocess.run([str(etcd), "--help"], capture_output=True, text=True, check=False)
    return flag in out.stdout + out.stderr


@functools.cache
def kubectl_binary() -> str:
    """The pinned kubectl from the tools cache (same version as the apiserver), else the
    machine's ``kubectl``."""
    try:
        return str(tools.find("kubectl"))
    except procs.HarnessError:
        pass
    found = shutil.which("kubectl")
    if not found:
        raise procs.HarnessError("kubectl not found: run `make tools` (it builds the pinned one)")
    return found


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    user: str,
    cluster: str = "kitpin",
) -> Path:
    """A self-contained kubeconfig (certificates embedded) for one client-cert user."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(cert_pem),
                    "client-key-data": b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager as real local processes."""

    # Set by start() (PKI files on disk).
    ca: pki.CertFiles
    serving: pki.CertFiles
    admin: pki.CertFiles
    service_account_keys: pki.KeyPairFiles

    def __init__(
        self,
        run_dir: Path | str | None = None,
        *,
        log_dir: Path | str | None = None,
        binaries: Mapping[str, Path] | None = None,
        timeout: float = 90.0,
        extra_apiserver_flags: Sequence[str] = (),
        webhook_client_cert: bool = False,
        audit_policy: Mapping[str, Any] | None = None,
    ) -> None:
        """``run_dir``: where state goes (a fresh temp dir, removed by ``stop()``, if None).
        ``binaries``: paths by binary name (default :func:`tools.find`).
        ``timeout``: per-component start-up deadline in seconds.
        ``webhook_client_cert``, ``audit_policy``: see the module docstring."""
        self._own_run_dir = run_dir is None
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix="kitpin-controlplane-")).resolve()
        self.log_dir = Path(log_dir).resolve() if log_dir else self.run_dir / "logs"
        self._binaries = dict(binaries or {})
        self.timeout = timeout
        self.extra_apiserver_flags = list(extra_apiserver_flags)
        self.webhook_client_cert = webhook_client_cert
        self.audit_policy = dict(audit_policy) if audit_policy is not None else None
        self.webhook_client_ca: pki.CertFiles | None = None
        """The CA of the apiserver's webhook client certificate (``webhook_client_cert``):
        what ``kitpin run --client-ca`` trusts."""
        self.webhook_client: pki.CertFiles | None = None
        """The apiserver's webhook client certificate and key (``webhook_client_cert``)."""
        self.audit_log = self.log_dir / "kube-apiserver-audit.log"
        self.kubeconfig = self.run_dir / "kubeconfig"
        self.pki_dir = self.run_dir / "pki"
        self.etcd: procs.Process | None = None
        self.apiserver: procs.Process | None = None
        self.controller_manager: procs.Process | None = None
        self.etcd_url = ""
        self.url = ""
        self.startup_seconds: dict[str, float] = {}
        """Seconds each phase of ``start()`` took: etcd, kube-apiserver,
        kube-controller-manager, total."""
        self._ssl: ssl.SSLContext | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def processes(self) -> list[procs.Process]:
        """The started processes, in start order."""
        return [p for p in (self.etcd, self.apiserver, self.controller_manager) if p]

    def _binary(self, name: str) -> str:
        return str(self._binaries.get(name) or tools.find(name))

    def start(self) -> ControlPlane:
        """Start all three components; return once the ``default`` ServiceAccount exists.

        On failure everything started is stopped and the run dir is kept (the error names
        the log file) before the exception propagates."""
        t0 = time.monotonic()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._make_pki()
            t = time.monotonic()
            self._retry_port_clash(self._start_etcd, lambda: self.etcd)
            self.startup_seconds["etcd"] = time.monotonic() - t
            t = time.monotonic()
            self._retry_port_clash(self._start_apiserver, lambda: self.apiserver)
            self.startup_seconds["kube-apiserver"] = time.monotonic() - t
            t = time.monotonic()
            self._start_controller_manager()
            self.startup_seconds["kube-controller-manager"] = time.monotonic() - t
        except BaseException:
            self.stop(keep_run_dir=True)
            raise
        self.startup_seconds["total"] = time.monotonic() - t0
        return self

    def stop(self, *, keep_run_dir: bool = False) -> None:
        """Stop kube-controller-manager, kube-apiserver, etcd (in that order); idempotent.

        A run dir this object created itself is removed unless ``keep_run_dir``."""
        errors: list[BaseException] = []
        for proc in (self.controller_manager, self.apiserver, self.etcd):
            if proc is None:
                continue
            try:
                proc.stop()
            except BaseException as e:  # keep stopping the others
                errors.append(e)
        if self._own_run_dir and not keep_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if errors:
            raise errors[0]

    def logs(self, lines: int = 60) -> str:
        """The log tails of every component, for failure reports."""
        return "\n".join(p.log_tail(lines) for p in self.processes) or "(nothing started)"

    # -- clients -----------------------------------------------------------------------

    def api_client(self) -> kubernetes.client.ApiClient:
        """A new official-client ``ApiClient`` authenticated as the admin."""
        from kubernetes import config

        client: kubernetes.client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig)
        )
        return client

    def clients(self) -> Clients:
        """:class:`Clients` over a new :meth:`api_client`."""
        return Clients.of(self.api_client())

    def kubectl(
        self,
        *args: str,
        input: str | None = None,  # noqa: A002 -- the name subprocess.run uses
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane as the admin; raise :class:`KubectlError`
        on a non-zero exit when ``check``."""
        argv = [kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            raise KubectlError(args, result)
        return result

    # -- components --------------------------------------------------------------------

    def _make_pki(self) -> None:
        ca = pki.CA("kitpin-controlplane-ca")
        self.ca = ca.write(self.pki_dir, "ca")
        self.serving = ca.server_cert(
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", KUBERNETES_SERVICE_IP),
            common_name="kube-apiserver",
        ).write(self.pki_dir, "apiserver")
        self.service_account_keys = pki.write_rsa_key_pair(self.pki_dir, "service-account")
        self._admin = ca.client_cert(ADMIN_USER, ("system:masters",))
        self.admin = self._admin.write(self.pki_dir, "admin")
        # The controller-manager runs as its real identity, authorised by bootstrap RBAC.
        self._kcm = ca.client_cert("system:kube-controller-manager")
        self._ca_pem = ca.cert_pem
        self._ssl = pki.ssl_context(
            self.ca.cert, client_cert=self.admin.cert, client_key=self.admin.key
        )
        if self.webhook_client_cert:
            webhook_ca = pki.CA("kitpin-controlplane-webhook-client-ca")
            self.webhook_client_ca = webhook_ca.write(self.pki_dir, "webhook-client-ca")
            self.webhook_client = webhook_ca.client_cert(WEBHOOK_CLIENT_NAME).write(
                self.pki_dir, "webhook-client"
            )

    def _admission_flags(self) -> list[str]:
        """``--admission-control-config-file``: both webhook plugins present the webhook
        client certificate to every webhook host (``webhook_client_cert``)."""
        if self.webhook_client is None:
            return []
        directory = self.run_dir / "admission"
        directory.mkdir(parents=True, exist_ok=True)
        kubeconfig = directory / "webhook-kubeconfig"
        users = {
            "apiVersion": "v1",
            "kind": "Config",
            # The apiserver picks the user named like the webhook's host[:port], then
            # "*.<domain>" wildcards, then "*": here every webhook host.
            "users": [
                {
                    "name": "*",
                    "user": {
                        "client-certificate-data": base64.b64encode(
                            self.webhook_client.cert.read_bytes()
                        ).decode(),
                        "client-key-data": base64.b64encode(
                            self.webhook_client.key.read_bytes()
                        ).decode(),
                    },
                }
            ],
        }
        kubeconfig.touch(mode=0o600, exist_ok=True)
        kubeconfig.write_text(yaml.safe_dump(users, sort_keys=False))
        plugin_config = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": str(kubeconfig),
        }
        config = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "AdmissionConfiguration",
            "plugins": [
                {"name": name, "configuration": plugin_config}
                for name in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
            ],
        }
        path = directory / "admission-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return [f"--admission-control-config-file={path}"]

    def _audit_flags(self) -> list[str]:
        if self.audit_policy is None:
            return []
        policy = self.run_dir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(self.audit_policy, sort_keys=False))
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",  # written before the API call answers
        ]

    def audit_events(self) -> list[dict[str, Any]]:
        """Every audit event written so far (``audit_policy``), oldest first."""
        try:
            lines = self.audit_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for i, line in enumerate(lines):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                if i != len(lines) - 1:  # only the line being written may be cut
                    raise
        return events

    @staticmethod
    def _retry_port_clash(
        start: Callable[[], None], process: Callable[[], procs.Process | None], attempts: int = 3
    ) -> None:
        """Run ``start``; if its process died because another process took the free port
        it had picked (a race with parallel test runs), stop it and try new ports."""
        for attempt in range(attempts):
            try:
                start()
                return
            except procs.HarnessError:
                proc = process()
                if proc is None or attempt == attempts - 1:
                    raise
                proc.stop()
                if "address already in use" not in proc.log_tail(30):
                    raise

    def _wait(self, check: Callable[[], object], what: str) -> None:
        """Poll ``check`` until truthy; fail fast (with the log) if a component exits."""

        def ready() -> object:
            if any(not p.alive() for p in self.processes):
                return "exited"
            return check()

        procs.wait_until(ready, timeout=self.timeout, what=what, on_timeout=self.logs)
        for p in self.processes:
            p.check_alive()

    def _start_etcd(self) -> None:
        etcd = self._binary("etcd")
        client, peer = procs.free_port(), procs.free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        argv = [
            etcd,
            "--name=kitpin",
            f"--data-dir={self.run_dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=kitpin={peer_url}",
            "--initial-cluster-state=new",
            "--log-level=warn",
            # One member: nobody to lose heartbeats with; a short election timeout makes it
            # leader in ~0.2 s instead of ~1 s.
            "--heartbeat-interval=20",
            "--election-timeout=200",
        ]
        if _etcd_has_flag(Path(etcd), "--unsafe-no-fsync"):
            argv.append("--unsafe-no-fsync")
        self.etcd = procs.Process("etcd", argv, log_dir=self.log_dir).start()
        self._wait(lambda: procs.http_ok(f"{self.etcd_url}/health"), "etcd /health")

    def _start_apiserver(self) -> None:
        port = procs.free_port()
        self.url = f"https://127.0.0.1:{port}"
        sa = self.service_account_keys
        argv = [
            self._binary("kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={self.run_dir / 'apiserver'}",
            f"--tls-cert-file={self.serving.cert}",
            f"--tls-private-key-file={self.serving.key}",
            f"--client-ca-file={self.ca.cert}",
            f"--secure-port={port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={sa.public}",
            f"--service-account-signing-key-file={sa.private}",
            f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
            f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
            # Loopback endpoints are invalid in Endpoints objects; nothing in-cluster needs
            # to reach the apiserver through the `kubernetes` Service here.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ]
        if FEATURE_GATES:
            argv.append(f"--feature-gates={','.join(FEATURE_GATES)}")
        argv += self._admission_flags() + self._audit_flags()
        argv += self.extra_apiserver_flags
        self.apiserver = procs.Process("kube-apiserver", argv, log_dir=self.log_dir).start()
        write_kubeconfig(
            self.kubeconfig,
            server=self.url,
            ca_pem=self._ca_pem,
            cert_pem=self._admin.cert_pem,
            key_pem=self._admin.key_pem,
            user=ADMIN_USER,
        )
        self._wait(
            lambda: procs.http_ok(f"{self.url}/readyz", ssl_context=self._ssl),
            "kube-apiserver /readyz",
        )

    def _start_controller_manager(self) -> None:
        kubeconfig = write_kubeconfig(
            self.run_dir / "kube-controller-manager.kubeconfig",
            server=self.url,
            ca_pem=self._ca_pem,
            cert_pem=self._kcm.cert_pem,
            key_pem=self._kcm.key_pem,
            user="system:kube-controller-manager",
        )
        argv = [
            self._binary("kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            f"--service-account-private-key-file={self.service_account_keys.private}",
            f"--root-ca-file={self.ca.cert}",
            f"--cluster-signing-cert-file={self.ca.cert}",
            f"--cluster-signing-key-file={self.ca.key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            "--controllers=*",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
        ]
        self.controller_manager = procs.Process(
            "kube-controller-manager", argv, log_dir=self.log_dir
        ).start()
        self._wait(
            lambda: procs.http_ok(
                f"{self.url}/api/v1/namespaces/default/serviceaccounts/default",
                ssl_context=self._ssl,
            ),
            "the default ServiceAccount in namespace default (kube-controller-manager)",
        )
