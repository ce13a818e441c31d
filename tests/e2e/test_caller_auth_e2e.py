"""Caller authentication end to end: the real apiserver, configured as docs/security.md tells an
administrator (an AdmissionConfiguration whose kubeConfigFile gives it a client certificate
for webhooks), and ``kitpin run --client-ca`` trusting that certificate's CA.

- Through the apiserver, a Pod with a private ModelKit and its namespace's pull secret is
  admitted and pinned (kitpin read the secret: the audit log shows it).
- The same review sent straight to kitpin, without a client certificate or with one from
  another CA, is refused in the TLS handshake, and kitpin read no pull secret for it (the
  apiserver's audit log of Secret reads, and the registry's access log, are the proof; the
  same review with the apiserver's certificate is then served, so the audit would have seen it).
- Probes and ``/metrics`` answer on the plain probe port; the chart's ``helm test`` script
  passes against this kitpin.
- SIGTERM to a real ``kitpin run`` with a review in flight: ``/readyz`` answers 503 first, a
  new connection is still served during the drain, the review in flight is answered, and the
  process exits 0 within its bound.

This module runs its own control plane (the session's has no webhook client certificate); a
failing test gets the kitpin and control plane logs (conftest's report hook), the SIGTERM
test its kitpin's log in the assertion.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import chart as render
from harness import modelkit, pki, procs, tools
from harness.controlplane import ADMIN_USER, Clients, ControlPlane
from tests.e2e.conftest import (
    CRD_DIR,
    KITPIN_CRD_DIR,
    POD_ENV,
    PRIVATE_USER,
    Kitpin,
    Registries,
    at,
    pinned_ref,
    pod,
    pull_secret,
    ref_to,
)

pytestmark = pytest.mark.e2e

AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "resources": [{"group": "", "resources": ["secrets"]}]},
        {"level": "None"},
    ],
}
"""Every Secret request, without its data: who read which pull secret."""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The apiserver presents its webhook client certificate; Secret reads are audited."""
    tools.ensure("etcd", "kube-apiserver", "kube-controller-manager")
    cp = ControlPlane(
        tmp_path_factory.mktemp("controlplane-callers"),
        webhook_client_cert=True,
        audit_policy=AUDIT_POLICY,
    )
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[Clients]:
    clients = control_plane.clients()
    try:
        yield clients
    finally:
        clients.close()


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> list[str]:
    """kitpin's CRDs and the test CRDs, Established before kitpin starts (as conftest's)."""
    names = []
    for directory in (KITPIN_CRD_DIR, CRD_DIR):
        for path in sorted(directory.glob("*.yaml")):
            names.append(yaml.safe_load(path.read_text())["metadata"]["name"])
        control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(directory))
    control_plane.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{n}" for n in names),
        timeout=90,
    )
    return names


@dataclass(kw_only=True)
class CallerAuthKitpin(Kitpin):
    """``kitpin run --dev`` (kopf manages the ``kitpin.dev`` webhook configurations) that
    requires the apiserver's webhook client certificate and serves probes on a plain port."""

    client_ca: Path
    probe_port: int = 0

    def argv(self, settings_file: Path) -> list[str]:
        self.probe_port = procs.free_port()
        return [
            *super().argv(settings_file),
            f"--client-ca={self.client_ca}",
            f"--probe-port={self.probe_port}",
        ]

    @property
    def probes(self) -> str:
        return f"http://127.0.0.1:{self.probe_port}"

    def _serving(self) -> bool:
        return procs.http_ok(f"{self.probes}/readyz")

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"{self.probes}/metrics", timeout=5) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def client_context(self, cert: pki.CertFiles | None) -> ssl.SSLContext:
        """Trusting kitpin's serving CA (the webhook configurations' caBundle), presenting
        ``cert`` (None: none)."""
        context = ssl.create_default_context(cadata=base64.b64decode(self.ca_bundle).decode())
        if cert is not None:
            context.load_cert_chain(str(cert.cert), str(cert.key))
        return context


@pytest.fixture(scope="module")
def kitpin_server(
    tmp_path_factory: pytest.TempPathFactory,
    control_plane: ControlPlane,
    api: Clients,
    registries: Registries,
    crds: list[str],
) -> Iterator[CallerAuthKitpin]:
    assert control_plane.webhook_client_ca is not None
    server = CallerAuthKitpin(
        control_plane=control_plane,
        api=api,
        registries=registries,
        workdir=tmp_path_factory.mktemp("kitpin-callers"),
        client_ca=control_plane.webhook_client_ca.cert,
    )
    try:
        server.start()  # returns once a dry-run Pod through the apiserver comes back pinned
    except BaseException as e:
        report = server.diagnostics()
        server.stop()
        raise procs.HarnessError(f"kitpin did not start: {e}\n{report}") from e
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kitpin(kitpin_server: CallerAuthKitpin) -> CallerAuthKitpin:
    kitpin_server.check_alive()
    return kitpin_server


@pytest.fixture
def stranger(tmp_path: Path) -> pki.CertFiles:
    """A client certificate with the apiserver's very name, from a CA kitpin does not trust."""
    from harness.controlplane import WEBHOOK_CLIENT_NAME

    return pki.CA("kitpin-e2e-other-ca").client_cert(WEBHOOK_CLIENT_NAME).write(tmp_path, "other")


# --------------------------------------------------------------------------- helpers


def _secret_reads(cp: ControlPlane, namespace: str) -> list[str]:
    """The Secrets kitpin (the admin user, in --dev) read in ``namespace``, per the audit log."""
    return [
        e["objectRef"].get("name", "")
        for e in cp.audit_events()
        if e.get("verb") == "get"
        and e.get("user", {}).get("username") == ADMIN_USER
        and e.get("objectRef", {}).get("resource") == "secrets"
        and e.get("objectRef", {}).get("namespace") == namespace
    ]


def _review(obj: dict[str, Any], uid: str) -> dict[str, Any]:
    """The AdmissionReview the apiserver would send to ``/pin-pods`` for creating ``obj``."""
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "mallory", "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
        },
    }


def _post(url: str, review: dict[str, Any], context: ssl.SSLContext) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(review).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, context=context, timeout=30) as r:
        return dict(json.load(r))


REFUSED = (ssl.SSLError, ConnectionError, urllib.error.URLError, OSError)


def _refused(url: str, review: dict[str, Any], context: ssl.SSLContext) -> str:
    """Send; return how it was refused (an answer of any kind fails the test)."""
    try:
        answer = _post(url, review, context)
    except urllib.error.HTTPError as e:
        e.close()
        raise AssertionError(f"kitpin answered HTTP {e.code}: it read the request") from e
    except REFUSED as e:
        return repr(e)
    raise AssertionError(f"kitpin answered a caller without the apiserver's certificate: {answer}")


# --------------------------------------------------------------------------- tests


def test_the_apiserver_with_its_certificate_gets_a_pod_pinned(
    kitpin: CallerAuthKitpin, control_plane: ControlPlane, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.private
    digest = modelkit.push_modelkit(registry, repo, "production", auth=PRIVATE_USER)
    assert kitpin.create(pull_secret("regcred", namespace, registry.host)).ok
    created = kitpin.create(
        pod(
            "private",
            namespace,
            ref_to(registry, repo, "production"),
            imagePullSecrets=[{"name": "regcred"}],
        )
    )
    assert created.ok, created.stderr
    stored = kitpin.get("pod", "private", namespace)
    assert at(stored, POD_ENV) == pinned_ref(registry, repo, "production", digest)
    assert "regcred" in _secret_reads(control_plane, namespace)  # the audit sees kitpin's reads


def test_a_direct_review_without_the_apiservers_certificate_is_refused_and_reads_no_secret(
    kitpin: CallerAuthKitpin,
    control_plane: ControlPlane,
    new_namespace: Callable[..., str],
    repo: str,
    stranger: pki.CertFiles,
) -> None:
    team_b = new_namespace("team-b")
    registry = kitpin.registries.private
    modelkit.push_modelkit(registry, repo, "production", auth=PRIVATE_USER)
    assert kitpin.create(pull_secret("team-b-regcred", team_b, registry.host)).ok
    target = pod(
        "forged",
        team_b,
        ref_to(registry, repo, "production"),
        imagePullSecrets=[{"name": "team-b-regcred"}],
    )
    url = f"{kitpin.url}/pin-pods"

    decided = kitpin.metric("kitpin_admission_reviews_total")
    no_certificate = _refused(url, _review(target, "forged-1"), kitpin.client_context(None))
    other_ca = _refused(url, _review(target, "forged-2"), kitpin.client_context(stranger))
    print(f"without a certificate: {no_certificate}\nwith another CA's: {other_ca}")

    assert _secret_reads(control_plane, team_b) == []
    assert registry.count_requests("GET", rf"/v2/{repo}/manifests/.*") == 0
    assert kitpin.metric("kitpin_admission_reviews_total") == decided  # nothing was decided

    # The same review with the apiserver's certificate is served (and read the secret): the
    # refusals above were the missing certificate, and the audit log would have shown a read.
    assert control_plane.webhook_client is not None
    answer = _post(
        url, _review(target, "genuine"), kitpin.client_context(control_plane.webhook_client)
    )
    assert answer["response"]["uid"] == "genuine" and answer["response"]["allowed"] is True
    assert "patch" in answer["response"]
    assert "team-b-regcred" in _secret_reads(control_plane, team_b)


def test_probes_and_metrics_answer_on_the_plain_port_only(kitpin: CallerAuthKitpin) -> None:
    assert procs.http_ok(f"{kitpin.probes}/healthz")
    assert procs.http_ok(f"{kitpin.probes}/readyz")
    assert kitpin.metric("kitpin_admission_reviews_total") > 0  # the start-up dry run
    request = urllib.request.Request(f"{kitpin.probes}/pin-pods", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=5)
    e.value.close()
    assert e.value.code in (404, 405)
    # The webhook port wants the certificate for its probes too.
    assert not procs.http_ok(f"{kitpin.url}/readyz", ssl_context=kitpin.client_context(None))
    assert procs.http_ok(
        f"{kitpin.url}/readyz",
        ssl_context=kitpin.client_context(kitpin.control_plane.webhook_client),
    )


def test_the_charts_helm_test_checks_caller_authentication(kitpin: CallerAuthKitpin) -> None:
    """The chart's test hook, rendered with clientAuth, run against this kitpin: it sees
    /readyz on the probe port and its own review refused."""
    docs = render.render({"clientAuth": {"enabled": True, "existingSecret": "ca"}})
    (check,) = render.one(docs, "Pod")["spec"]["containers"]
    result = subprocess.run(
        [sys.executable, "-c", check["args"][0]],
        env={
            **os.environ,
            "KITPIN_URL": kitpin.url,
            "KITPIN_PROBES_URL": kitpin.probes,
            "KITPIN_CA": base64.b64decode(kitpin.ca_bundle).decode(),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "refused a review without a client certificate" in result.stdout


# --------------------------------------------------------------------------- SIGTERM


@contextlib.contextmanager
def black_hole() -> Generator[str, None, None]:
    """A registry that accepts connections and never answers: ``host:port``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()


DRAIN = 2.0
SHUTDOWN = 12.0
DEADLINE = 5


def test_sigterm_goes_unready_drains_and_answers_the_review_in_flight(
    control_plane: ControlPlane, crds: list[str], namespace: str, tmp_path: Path
) -> None:
    """A production-style ``kitpin run`` (its own serving certificate, no --dev, so no webhook
    configurations of its own) resolving a reference on a registry that never answers."""
    assert control_plane.webhook_client is not None and control_plane.webhook_client_ca
    ca = pki.CA("kitpin-e2e-serving-ca")
    serving = ca.server_cert(ips=("127.0.0.1",)).write(tmp_path, "serving")
    ca_file = ca.write(tmp_path, "serving-ca").cert
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(
        yaml.safe_dump(
            {
                "deadlineSeconds": DEADLINE,
                "server": {"drainSeconds": DRAIN, "shutdownSeconds": SHUTDOWN},
            }
        )
    )
    port, probe_port = procs.free_port(), procs.free_port()
    url, probes = f"https://127.0.0.1:{port}", f"http://127.0.0.1:{probe_port}"
    apiserver = pki.ssl_context(
        ca_file,
        client_cert=control_plane.webhook_client.cert,
        client_key=control_plane.webhook_client.key,
    )
    with black_hole() as hole:
        process = procs.Process(
            "kitpin-sigterm",
            [
                str(Path(sys.executable).with_name("kitpin")),
                "run",
                f"--settings={settings_file}",
                "--listen=127.0.0.1",
                f"--port={port}",
                f"--tls-cert={serving.cert}",
                f"--tls-key={serving.key}",
                f"--client-ca={control_plane.webhook_client_ca.cert}",
                f"--probe-port={probe_port}",
                f"--plain-http-registry={hole}",
                "--namespace=kitpin-system",
            ],
            log_dir=tmp_path,
            env={
                **os.environ,
                "KUBECONFIG": str(control_plane.kubeconfig),
                "PYTHONUNBUFFERED": "1",
            },
        ).start()
        try:
            procs.wait_until(
                lambda: (process.check_alive(), procs.http_ok(f"{probes}/readyz"))[1],
                timeout=90,
                what="kitpin /readyz",
                on_timeout=process.log_tail,
            )
            answers: dict[str, Any] = {}

            def send(name: str, ref: str | None) -> None:
                try:
                    answers[name] = _post(
                        f"{url}/pin-pods", _review(pod(name, namespace, ref), name), apiserver
                    )
                except Exception as e:  # recorded, asserted below
                    answers[name] = e

            in_flight = threading.Thread(target=send, args=("slow", f"{hole}/model:1"))
            in_flight.start()
            time.sleep(0.5)  # the review is waiting for the black hole (its deadline is 5 s)
            assert in_flight.is_alive()
            process.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            stopped = time.monotonic()

            procs.wait_until(
                lambda: procs.http_ok(f"{probes}/readyz", ok=(503,)),
                timeout=DRAIN,
                what="/readyz answering 503 right after SIGTERM",
                on_timeout=process.log_tail,
            )
            send("during-drain", None)  # a new connection, still served
            assert time.monotonic() - stopped < DRAIN, "too slow to prove the drain"

            in_flight.join(timeout=DEADLINE + 5)
            assert not in_flight.is_alive()
            assert process.popen is not None
            code = process.popen.wait(timeout=SHUTDOWN + 10)
            took = time.monotonic() - stopped
        finally:
            process.stop()
    log = process.log_tail(200)
    assert code == 0, log
    assert took < SHUTDOWN + 6, (took, log)  # kitpin's bound, plus kopf's own cleanup
    assert answers["during-drain"]["response"]["allowed"] is True, answers
    slow = answers["slow"]
    assert isinstance(slow, dict), f"{slow!r}\n{log}"
    assert slow["response"]["uid"] == "slow"  # answered (denied: the registry never did)
    assert slow["response"]["allowed"] is False and "Timeout" in json.dumps(slow), slow
    assert "stopping: /readyz answers 503" in log
    print(f"SIGTERM → exit in {took:.1f} s; drained {DRAIN} s; in-flight review answered")
