"""The drift watch and roll-forward end to end: the real apiserver and controller-manager, a
real registry (deletes enabled), and TWO ``kitpin run`` replicas behind a real HAProxy, as two
pods behind a Service.

The stack (module-scoped, :class:`DriftStack`): its own CNCF registry; two replicas (the
production path, ``--tls-cert``/``--tls-key`` from :mod:`harness.pki`; ``POD_NAME`` ``drift-a``
/ ``drift-b``, so the Lease's holder names the replica) with the e2e settings plus records on
and a short drift interval (:data:`INTERVAL`); kitpin's namespace (the Lease's) of its own;
HAProxy in front; a Mutating and a Validating webhook configuration of this module (Pods and
Deployments, CREATE and UPDATE, ``failurePolicy: Fail``) selecting the namespaces that carry
this module's label. Every test uses its own namespace and repository.

- a move of ``production`` in the registry: Event ``TagMoved`` on the Deployment within
  2 x :data:`INTERVAL`, and the record (``kubectl get mkt``) shows the move;
- a digest deleted from the registry: condition ``DigestMissing`` and a Warning Event
  ``PinnedDigestMissing`` on the workload pinned to it;
- roll-forward: a Deployment annotated ``kitpin.dev/follow: "true"`` is re-pinned to the new
  digest through kitpin's webhooks (Event ``RolledForward``, the pin record says so) and the
  controller-manager makes a new ReplicaSet with it; one that does not follow keeps its
  digest; a new digest a webhook refuses (not a ModelKit) is not rolled
  (``RollForwardDenied``);
- the Lease holder SIGKILLed: the other replica holds the Lease and checks tags within
  :data:`TAKEOVER` seconds, and reports the next move.

A failing test's report carries both replicas' and HAProxy's log tails (an exception note)
besides the control plane's (tests/e2e/conftest.py).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import secrets
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from controller.tags import model as tag_model
from harness import haproxy, modelkit, pki, procs
from harness.controlplane import Clients, ControlPlane
from harness.registry import RegistryServer
from tests.e2e.conftest import SETTINGS, TIMEOUT, deployment, pins, ref_to

pytestmark = pytest.mark.e2e

INTERVAL = 5
"""``drift.intervalSeconds`` of the replicas: a move is reported within 2 x this."""
BUDGET = 600
"""``drift.budgetPerMinute``: never the limit here (a few tags)."""
TAKEOVER = 30.0
"""Seconds for the other replica to hold the Lease and check tags after the holder dies
(client-go's timings: 15 s duration, 2 s retry, so about 17-19 s)."""
START_TIMEOUT = 90.0
LABEL = "e2e.kitpin.dev/drift"
POINTER = "/spec/template/spec/initContainers/0/env/0/value"


def _kitpin_command() -> list[str]:
    console_script = Path(sys.executable).parent / "kitpin"
    if console_script.exists():
        return [str(console_script)]
    return [sys.executable, "-m", "controller.cli"]


# --------------------------------------------------------------------------- the stack


@dataclass(kw_only=True)
class Replica:
    """One ``kitpin run`` on a fixed loopback port."""

    name: str
    port: int
    argv: list[str]
    env: dict[str, str]
    log_dir: Path
    ca_file: Path
    process: procs.Process | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = procs.Process(
            f"kitpin-{self.name}", self.argv, log_dir=self.log_dir, env=self.env
        ).start()
        context = pki.ssl_context(self.ca_file)
        procs.wait_until(
            lambda: self.exited() or procs.http_ok(f"{self.url}/readyz", ssl_context=context),
            timeout=START_TIMEOUT,
            what=f"kitpin replica {self.name} /readyz",
            interval=0.2,
        )
        assert self.process is not None
        self.process.check_alive()

    def exited(self) -> bool:
        return self.process is not None and not self.process.alive()

    def kill(self) -> None:
        """SIGKILL, as a node failure would: the Lease is not released."""
        assert self.process is not None and self.process.popen is not None
        os.killpg(self.process.popen.pid, signal.SIGKILL)
        self.process.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def metric(self, name: str) -> float:
        """The sum of every sample of ``name`` on the replica's ``/metrics``."""
        context = pki.ssl_context(self.ca_file)
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5, context=context) as r:
            text = r.read().decode()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name
        )

    def log_tail(self, lines: int = 80) -> str:
        if self.process is None:
            return f"--- kitpin-{self.name}: not started ---"
        return self.process.log_tail(lines)


@dataclass(kw_only=True)
class DriftStack:
    control_plane: ControlPlane
    api: Clients
    registry: RegistryServer
    replicas: dict[str, Replica]
    lb: haproxy.HAProxy
    token: str
    own_namespace: str
    config_name: str
    lease: str = "kitpin-drift-watch"
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def kubectl(self, *args: str, input: str | None = None) -> Any:  # noqa: A002
        return self.control_plane.kubectl(*args, input=input, check=False)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        where = ["-n", namespace] if namespace else []
        done = self.kubectl("get", kind, name, *where, "-o", "json")
        return dict(json.loads(done.stdout)) if done.returncode == 0 else None

    def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        done = self.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest))
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def holder(self) -> str:
        lease = self.get("lease", self.lease, self.own_namespace) or {}
        return str((lease.get("spec") or {}).get("holderIdentity") or "")

    def events(self, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
        done = self.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"involvedObject.name={name},reason={reason}",
            "-o",
            "json",
        )
        return list(json.loads(done.stdout)["items"]) if done.returncode == 0 else []

    def diagnostics(self) -> str:
        parts = [r.log_tail() for r in self.replicas.values()]
        parts.append(self.lb.diagnostics())
        parts.append(self.registry.log_tail(30))
        return "\n".join(parts)

    @contextlib.contextmanager
    def reporting(self) -> Iterator[None]:
        try:
            yield
        except BaseException as e:
            e.add_note(self.diagnostics())
            raise


def webhook_configurations(
    name: str, url: str, ca_bundle: str, selector: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(mutating, validating) for Pods and Deployments at ``url``, as the chart writes them."""

    def hook(kind: str, resource: str, group: str, path: str) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": f"{kind}-{path}.drift.kitpin.dev",
            "clientConfig": {"url": f"{url}/{kind}-{path}", "caBundle": ca_bundle},
            "rules": [
                {
                    "apiGroups": [group],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": [resource],
                    "scope": "Namespaced",
                }
            ],
            "namespaceSelector": {"matchLabels": selector},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }
        if kind == "pin":
            entry["reinvocationPolicy"] = "IfNeeded"
        return entry

    targets = [("pods", "", "pods"), ("deployments", "apps", "deployments")]
    meta = {"name": name}
    return (
        {"metadata": meta, "webhooks": [hook("pin", r, g, p) for r, g, p in targets]},
        {"metadata": meta, "webhooks": [hook("check", r, g, p) for r, g, p in targets]},
    )


@pytest.fixture(scope="module")
def drift(
    tmp_path_factory: pytest.TempPathFactory,
    control_plane: ControlPlane,
    api: Clients,
    crds: list[str],
    registry_binary: Path,
) -> Iterator[DriftStack]:
    workdir = tmp_path_factory.mktemp("drift")
    token = secrets.token_hex(4)
    own = f"kitpin-drift-{token}"
    control_plane.kubectl("create", "namespace", own)
    ca = pki.CA("kitpin-drift-ca")
    ca_file = ca.write(workdir / "pki", "ca").cert
    with RegistryServer(
        workdir=workdir / "registry", name="registry-drift", binary=registry_binary
    ) as registry:
        settings = copy.deepcopy(SETTINGS)
        settings["tags"] = {"records": True, "flushIntervalSeconds": 0.5}
        settings["drift"] = {
            "enabled": True,
            "intervalSeconds": INTERVAL,
            "budgetPerMinute": BUDGET,
        }
        settings_file = workdir / "settings.yaml"
        settings_file.write_text(yaml.safe_dump(settings, sort_keys=False))
        replicas: dict[str, Replica] = {}
        for name in ("a", "b"):
            port = procs.free_port()
            files = ca.server_cert(dns_names=(haproxy.SERVER_NAME,), ips=("127.0.0.1",)).write(
                workdir / "pki", f"replica-{name}"
            )
            env = dict(os.environ)
            env.update(
                KUBECONFIG=str(control_plane.kubeconfig),
                PYTHONUNBUFFERED="1",
                POD_NAME=f"drift-{name}",
            )
            env.pop("POD_NAMESPACE", None)
            env.pop("KITPIN_DEV_DIR", None)
            replicas[name] = Replica(
                name=name,
                port=port,
                argv=[
                    *_kitpin_command(),
                    "run",
                    "--listen=127.0.0.1",
                    f"--port={port}",
                    f"--tls-cert={files.cert}",
                    f"--tls-key={files.key}",
                    f"--settings={settings_file}",
                    f"--namespace={own}",
                    f"--plain-http-registry={registry.host}",
                ],
                env=env,
                log_dir=workdir,
                ca_file=ca_file,
            )
        lb = haproxy.HAProxy(
            workdir / "haproxy",
            frontend=ca.server_cert(dns_names=("localhost",), ips=("127.0.0.1",)).write(
                workdir / "pki", "haproxy"
            ),
            ca_file=ca_file,
            backends=[haproxy.Backend(name=n, port=r.port) for n, r in replicas.items()],
        )
        stack = DriftStack(
            control_plane=control_plane,
            api=api,
            registry=registry,
            replicas=replicas,
            lb=lb,
            token=token,
            own_namespace=own,
            config_name=f"kitpin-drift-{token}",
        )
        try:
            with stack.reporting():
                for replica in replicas.values():
                    replica.start()
                lb.start()
                lb.wait_for(up=list(replicas), timeout=30)
                mutating, validating = webhook_configurations(
                    stack.config_name,
                    lb.url,
                    base64.b64encode(ca.cert_pem).decode(),
                    {LABEL: token},
                )
                # the client serialises dicts as they are
                api.admission.create_mutating_webhook_configuration(mutating)  # type: ignore[arg-type]
                api.admission.create_validating_webhook_configuration(validating)  # type: ignore[arg-type]
            yield stack
        finally:
            for delete in (
                api.admission.delete_mutating_webhook_configuration,
                api.admission.delete_validating_webhook_configuration,
            ):
                with contextlib.suppress(ApiException):
                    delete(stack.config_name)
            for replica in replicas.values():
                replica.stop()
            lb.stop()
            control_plane.kubectl("delete", "namespace", own, "--wait=false", check=False)


# --------------------------------------------------------------------------- helpers


def _until(stack: DriftStack, predicate: Callable[[], Any], what: str, timeout: float) -> Any:
    return procs.wait_until(
        predicate, timeout=timeout, what=what, interval=0.25, on_timeout=stack.diagnostics
    )


def _namespace(stack: DriftStack, new_namespace: Callable[..., str]) -> str:
    return new_namespace(labels={LABEL: stack.token})


def _admitted(stack: DriftStack, manifest: dict[str, Any], digest: str) -> dict[str, Any]:
    """Create ``manifest`` (a Deployment) through the replicas; it comes back pinned."""
    created = stack.create(manifest)
    value = created["spec"]["template"]["spec"]["initContainers"][0]["env"][0]["value"]
    assert value.endswith(f"@{digest}"), value
    return created


def _record(stack: DriftStack, key: tag_model.TagKey) -> dict[str, Any]:
    return stack.get("mkt", key.name) or {}


def _listed(stack: DriftStack, key: tag_model.TagKey, digest: str, *names: str) -> None:
    """Until the record lists every Deployment of ``names`` at ``digest`` (the drift watch
    works from the records)."""

    def listed() -> bool:
        status = _record(stack, key).get("status") or {}
        for use in status.get("digests") or []:
            if use.get("digest") == digest:
                have = {w.get("name") for w in use.get("workloads") or []}
                return set(names) <= have
        return False

    _until(stack, listed, f"{key.name} listing {names} at {digest}", TIMEOUT)


def _event(
    stack: DriftStack, namespace: str, name: str, reason: str, timeout: float
) -> dict[str, Any]:
    found = _until(
        stack,
        lambda: stack.events(namespace, name, reason),
        f"Event {reason} on {namespace}/{name}",
        timeout,
    )
    assert isinstance(found, list)
    return dict(found[0])


def _delete_manifest(registry: RegistryServer, repository: str, digest: str) -> None:
    answer = httpx.delete(f"{registry.url}/v2/{repository}/manifests/{digest}", timeout=10)
    assert answer.status_code == 202, answer.text


def _template_value(obj: Mapping[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["initContainers"][0]["env"][0]["value"])


# --------------------------------------------------------------------------- tests


def test_a_moved_tag_gets_tag_moved_on_the_deployment_and_the_record_shows_it(
    drift: DriftStack, new_namespace: Callable[..., str], repo: str
) -> None:
    with drift.reporting():
        namespace = _namespace(drift, new_namespace)
        registry = drift.registry
        first = modelkit.push_modelkit(registry, repo, "production", seed=1)
        ref = ref_to(registry, repo, "production")
        _admitted(drift, deployment("llm", namespace, ref), first)
        key = tag_model.TagKey(registry=registry.host, repository=repo, tag="production")
        _listed(drift, key, first, "llm")

        second = modelkit.push_modelkit(registry, repo, "production", seed=2)
        pushed = time.monotonic()
        event = _event(drift, namespace, "llm", "TagMoved", timeout=4 * INTERVAL)
        elapsed = time.monotonic() - pushed
        print(f"TagMoved seen {elapsed:.1f}s after the push (interval {INTERVAL}s)")
        assert elapsed <= 2 * INTERVAL, f"TagMoved after {elapsed:.1f}s, not within 2 x {INTERVAL}s"
        assert event["type"] == "Normal" and event["involvedObject"]["kind"] == "Deployment"
        assert first in event["message"] and second in event["message"]

        def moved() -> dict[str, Any] | None:
            status = _record(drift, key).get("status") or {}
            return status if status.get("currentDigest") == second else None

        status = _until(drift, moved, f"{key.name} at {second}", TIMEOUT)
        assert status["moves"] == 1 and status["firstSeen"]["digest"] == first
        assert status["history"][0]["from"] == first and status["history"][0]["to"] == second
        assert status["history"][0]["seenBy"] == "watch"
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Moved"]["status"] == "True"
        table = drift.kubectl("get", "mkt", key.name)
        assert table.returncode == 0, table.stderr
        header, row = table.stdout.splitlines()[:2]
        columns = dict(zip(header.split(), row.split(), strict=False))
        assert columns["MOVES"] == "1"
        assert columns["DIGEST"] == tag_model.short_digest(second)
        # the workload keeps its digest: only a follower is re-pinned
        live = drift.get("deployment", "llm", namespace)
        assert live is not None and _template_value(live).endswith(first)


def test_a_digest_deleted_from_the_registry_is_reported_on_its_workloads(
    drift: DriftStack, new_namespace: Callable[..., str], repo: str
) -> None:
    with drift.reporting():
        namespace = _namespace(drift, new_namespace)
        registry = drift.registry
        first = modelkit.push_modelkit(registry, repo, "stable", seed=11)
        _admitted(drift, deployment("svc", namespace, ref_to(registry, repo, "stable")), first)
        key = tag_model.TagKey(registry=registry.host, repository=repo, tag="stable")
        _listed(drift, key, first, "svc")

        modelkit.push_modelkit(registry, repo, "stable", seed=12)  # the tag moves on
        _delete_manifest(registry, repo, first)  # and the old digest is deleted
        event = _event(drift, namespace, "svc", "PinnedDigestMissing", timeout=4 * INTERVAL)
        assert event["type"] == "Warning" and first in event["message"]

        def missing() -> dict[str, Any] | None:
            status = _record(drift, key).get("status") or {}
            conditions = {c["type"]: c for c in status.get("conditions") or []}
            gone = conditions.get("DigestMissing", {})
            return gone if gone.get("status") == "True" else None

        condition = _until(drift, missing, f"{key.name} DigestMissing", TIMEOUT)
        assert condition["reason"] == "PinnedDigestMissing" and first in condition["message"]
        status = _record(drift, key)["status"]
        use = next(u for u in status["digests"] if u["digest"] == first)
        assert use["missingSince"]


def test_roll_forward_repins_a_following_deployment_and_a_new_replicaset_rolls_out(
    drift: DriftStack, new_namespace: Callable[..., str], repo: str
) -> None:
    with drift.reporting():
        namespace = _namespace(drift, new_namespace)
        registry = drift.registry
        first = modelkit.push_modelkit(registry, repo, "canary", seed=21)
        ref = ref_to(registry, repo, "canary")
        follower = deployment("follower", namespace, ref)
        follower["metadata"]["annotations"] = {"kitpin.dev/follow": "true"}
        made = _admitted(drift, follower, first)
        _admitted(drift, deployment("stays", namespace, ref), first)
        key = tag_model.TagKey(registry=registry.host, repository=repo, tag="canary")
        _listed(drift, key, first, "follower", "stays")

        def replicasets(digest: str) -> list[dict[str, Any]]:
            sets = drift.api.apps.list_namespaced_replica_set(namespace).to_dict()["items"]
            return [
                rs
                for rs in sets
                if any(
                    o["uid"] == made["metadata"]["uid"]
                    for o in rs["metadata"].get("owner_references") or []
                )
                and rs["spec"]["template"]["spec"]["init_containers"][0]["env"][0][
                    "value"
                ].endswith(f"@{digest}")
            ]

        _until(drift, lambda: replicasets(first), "the follower's first ReplicaSet", TIMEOUT)

        second = modelkit.push_modelkit(registry, repo, "canary", seed=22)
        event = _event(drift, namespace, "follower", "RolledForward", timeout=4 * INTERVAL)
        assert first in event["message"] and second in event["message"]

        live = drift.get("deployment", "follower", namespace)
        assert live is not None
        assert _template_value(live) == f"{ref}@{second}"
        record = (pins(live) or {})[POINTER]
        assert record["digest"] == second and record["from"] == ref
        assert record["rolledForwardFrom"] == first and record["rolledForwardAt"]
        assert live["metadata"]["generation"] == made["metadata"]["generation"] + 1  # once
        new_sets = _until(
            drift, lambda: replicasets(second), "a ReplicaSet with the new digest", TIMEOUT
        )
        print(f"new ReplicaSet {new_sets[0]['metadata']['name']} pins {second}")

        stays = drift.get("deployment", "stays", namespace)
        assert stays is not None and _template_value(stays).endswith(first)
        assert drift.events(namespace, "stays", "TagMoved")
        assert not drift.events(namespace, "stays", "RolledForward")
        _listed(drift, key, second, "follower")  # the record follows the workload

        # a new digest that a webhook refuses (not a ModelKit) is not rolled forward
        third = modelkit.push_image(registry, repo, "canary", seed=23)
        denied = _event(drift, namespace, "follower", "RollForwardDenied", timeout=4 * INTERVAL)
        assert denied["type"] == "Warning" and third in denied["message"]
        assert "not a ModelKit" in denied["message"] or "NotAModelKit" in denied["message"]
        live = drift.get("deployment", "follower", namespace)
        assert live is not None and _template_value(live) == f"{ref}@{second}"


def test_killing_the_lease_holder_hands_the_drift_watch_to_the_other_replica(
    drift: DriftStack, new_namespace: Callable[..., str], repo: str
) -> None:
    with drift.reporting():
        namespace = _namespace(drift, new_namespace)
        registry = drift.registry
        first = modelkit.push_modelkit(registry, repo, "handover", seed=31)
        ref = ref_to(registry, repo, "handover")
        _admitted(drift, deployment("after", namespace, ref), first)
        key = tag_model.TagKey(registry=registry.host, repository=repo, tag="handover")
        _listed(drift, key, first, "after")

        holder = _until(drift, drift.holder, "the Lease held", TIMEOUT)
        assert isinstance(holder, str)
        leader = holder.split("_", 1)[0].removeprefix("drift-")
        assert leader in drift.replicas, holder
        survivor = next(n for n in drift.replicas if n != leader)
        checks = drift.replicas[survivor].metric("kitpin_drift_checks_total")
        assert checks == 0, f"the follower {survivor} checked tags while {leader} led"

        drift.replicas[leader].kill()
        killed = time.monotonic()
        try:
            _until(
                drift,
                lambda: drift.holder().startswith(f"drift-{survivor}_"),
                f"replica {survivor} holding the Lease",
                TAKEOVER,
            )
            took = time.monotonic() - killed
            _until(
                drift,
                lambda: drift.replicas[survivor].metric("kitpin_drift_checks_total") > checks,
                f"replica {survivor} checking tags",
                max(1.0, TAKEOVER - took),
            )
            checking = time.monotonic() - killed
            print(f"Lease taken over {took:.1f}s, first checks {checking:.1f}s after the kill")
            assert checking <= TAKEOVER

            second = modelkit.push_modelkit(registry, repo, "handover", seed=32)
            event = _event(drift, namespace, "after", "TagMoved", timeout=4 * INTERVAL)
            assert second in event["message"]
        finally:
            drift.replicas[leader].start()  # the module's stack is whole again
            drift.lb.wait_for(up=list(drift.replicas), timeout=30)
