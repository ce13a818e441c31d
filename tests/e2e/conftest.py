"""Fixtures for end-to-end tests against a real control plane (etcd, kube-apiserver,
kube-controller-manager; no scheduler or kubelet, so pods stay Pending).

- ``control_plane`` (session): started once; the tools are built first if missing (a test
  session without them fails, it never skips). Any failing test gets the log tails of all
  three components appended to its report.
- ``api`` (session): :class:`~harness.controlplane.Clients` (core, apps, admission,
  custom objects) authenticated as a cluster admin.
- ``namespace`` (function): a fresh ``e2e-<test>-<random>`` namespace whose ``default``
  ServiceAccount exists (pods are admitted), deleted afterwards without waiting.
  ``new_namespace`` (function) makes more of them (``new_namespace("other")``).

Admission (``kitpin``):

- ``registries`` (session): three real ``registry`` processes: ``plain`` (plain HTTP, no
  auth), ``private`` (plain HTTP, htpasswd Basic auth for :data:`PRIVATE_USER`) and ``flaky``
  (plain HTTP, no auth; only the registry-down tests stop and restart it, through
  :meth:`Registries.flaky_down`).
- ``crds`` (session): kitpin's policy CRDs (``deploy/crds/``, as a real install has them) and
  the CRDs in ``tests/e2e/crds/`` (subsets of KServe's ``InferenceService`` v1beta1 and of
  every kind kitpin ships a default site for, ``controller/sites/defaults.py``; and
  ``ModelDeployment``, kind of the extra site in the settings), installed
  and Established *before* kitpin starts: kopf discovers resources at start-up.
- ``kitpin`` (``kitpin_server`` is module-scoped, so its cluster-wide webhooks never outlive
  the module that uses them; checked alive per test): the real ``kitpin run --dev``
  subprocess with the settings of :data:`SETTINGS` (cache TTL :data:`CACHE_TTL` seconds, so
  stale-if-error is reachable in a test; an extra site for ``ModelDeployment``; one ignored
  namespace) and ``--plain-http-registry`` for each registry. kopf creates the webhook
  configurations named ``dev-<port>.kitpin.dev`` (:func:`controller.operator.dev_config_name`;
  its webhooks ``<handler id>.dev-<port>.kitpin.dev``, :meth:`Kitpin.webhook`) pointing at
  ``https://127.0.0.1:<port>``; the fixture
  returns once ``/readyz`` answers, both configurations list every handler with its rules,
  and a server-side dry-run of a Pod comes back pinned. At module end kitpin is stopped and
  both configurations are deleted. A failing test's report gets the kitpin log tail, the
  registry log tails and the control plane's. The :class:`Kitpin` object also runs kubectl
  (:meth:`Kitpin.create`, :meth:`Kitpin.apply`: the object printed, ``Warning:`` lines, the
  denial text) and reads kitpin's ``/metrics``.
- ``repo`` (function): a repository name no other test uses.

Tests write manifests with :func:`pod`, :func:`deployment`, :func:`job`, :func:`cronjob`
(a ``kitops-init`` init container whose ``MODELKIT_REF`` is the reference under test) and
read results with :func:`at` (a JSON pointer) and :func:`pins` (the ``kitpin.dev/pinned``
annotation).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import ssl
import sys
import urllib.request
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from controller import operator as kitpin_operator
from controller import sites
from controller.admission import pinning, webhook
from harness import modelkit, procs, tools
from harness.controlplane import Clients, ControlPlane
from harness.registry import RegistryServer

NAMESPACE_READY_TIMEOUT = 30.0

# --------------------------------------------------------------------------- constants

CRD_DIR = Path(__file__).parent / "crds"
KITPIN_CRD_DIR = tools.REPO_ROOT / "deploy" / "crds"
KITPIN_START_TIMEOUT = 90.0
"""Seconds for kitpin to serve, publish its webhook configurations and admit a probe Pod."""
TIMEOUT = 60.0
"""Seconds tests wait for controllers (ReplicaSets, Pods, Jobs) or kitpin's index."""

CACHE_TTL = 2
"""kitpin's cache TTL in these tests (production default 60 s). Short so that the
stale-if-error test waits seconds, not a minute. It does not weaken other tests: children
carry digests (cached 600 s by digest), UPDATEs keep the old object's digest, and a test
that moves a tag and expects the *new* digest waits for it explicitly."""

PRIVATE_USER = ("e2e-puller", "pull-secret-8c1d2f")
"""The only user of the ``private`` registry."""

OWN_NAMESPACE = "kitpin-system"
"""Passed as ``kitpin run --namespace``: the controller's own namespace is never admitted."""
SETTINGS_IGNORED_NAMESPACE = "e2e-ignored-by-settings"
"""Listed in the settings' ``ignoredNamespaces``."""

EXTRA_GROUP = "e2e.kitpin.dev"
EXTRA_KIND = "ModelDeployment"
EXTRA_VERSION = "v1alpha1"

SETTINGS: dict[str, Any] = {
    "mode": "pin",
    "failure": "deny",
    "deadlineSeconds": 8,
    "ignoredNamespaces": [SETTINGS_IGNORED_NAMESPACE],
    "cache": {"ttlSeconds": CACHE_TTL, "negativeTtlSeconds": 1, "staleIfErrorSeconds": 300},
    "tags": {"records": True},  # the default (docs/tags.md), stated for the e2e suite
    "drift": {"enabled": True},
    "sites": {
        "extra": [
            {
                "group": EXTRA_GROUP,
                "kind": EXTRA_KIND,
                "paths": ["spec.models[*].source"],
                "grammar": "kit",
            }
        ]
    },
}

KITOPS_INIT_IMAGE = "ghcr.io/kitops-ml/kitops-init:v1.7.0"
SERVE_IMAGE = "registry.example/serve:1"
"""The main container's image: never pulled (no kubelet), and not a ModelKit site."""
PROBE_REPO = "kitpin-e2e/probe"

POD_ENV = "/spec/initContainers/0/env/0/value"
TEMPLATE_ENV = "/spec/template/spec/initContainers/0/env/0/value"
CRONJOB_ENV = "/spec/jobTemplate/spec/template/spec/initContainers/0/env/0/value"


# --------------------------------------------------------------------------- control plane


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    tools.ensure("etcd", "kube-apiserver", "kube-controller-manager")
    cp = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    cp.start()  # stops whatever it started if it fails
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> Iterator[Clients]:
    clients = control_plane.clients()
    try:
        yield clients
    finally:
        clients.close()


def _namespace_name(test_name: str, suffix: str = "") -> str:
    short = re.sub(r"[^a-z0-9]+", "-", test_name.lower().removeprefix("test_"))
    short = short.strip("-")[: 40 - len(suffix)].strip("-") or "test"
    return f"e2e-{short}{suffix}-{secrets.token_hex(3)}"  # <= 4 + 40 + 7 < 63 (a DNS label)


def create_namespace(api: Clients, name: str, labels: Mapping[str, str] | None = None) -> str:
    """Create namespace ``name`` and wait for its ``default`` ServiceAccount."""
    api.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=dict(labels or {})))
    )
    # The ServiceAccount admission plugin rejects pods until `default` exists.
    procs.wait_until(
        lambda: api.core.read_namespaced_service_account("default", name),
        timeout=NAMESPACE_READY_TIMEOUT,
        what=f"ServiceAccount default in namespace {name}",
    )
    return name


@pytest.fixture
def new_namespace(request: pytest.FixtureRequest, api: Clients) -> Iterator[Callable[..., str]]:
    """``new_namespace(suffix="", labels=None)`` → a fresh namespace, deleted afterwards."""
    made: list[str] = []

    def make(suffix: str = "", labels: Mapping[str, str] | None = None) -> str:
        name = _namespace_name(request.node.name, f"-{suffix}" if suffix else "")
        made.append(name)
        return create_namespace(api, name, labels)

    try:
        yield make
    finally:
        for name in made:
            with contextlib.suppress(ApiException):
                api.core.delete_namespace(name)


@pytest.fixture
def namespace(new_namespace: Callable[..., str]) -> str:
    return new_namespace()


# --------------------------------------------------------------------------- registries


@dataclass(frozen=True, kw_only=True)
class Registries:
    plain: RegistryServer
    private: RegistryServer
    flaky: RegistryServer

    @property
    def all(self) -> tuple[RegistryServer, ...]:
        return (self.plain, self.private, self.flaky)

    @contextlib.contextmanager
    def flaky_down(self) -> Iterator[RegistryServer]:
        """Stop the flaky registry for the block; start it again (same port) afterwards."""
        host = self.flaky.host
        self.flaky.stop()
        try:
            yield self.flaky
        finally:
            self.flaky.start()
            if self.flaky.host != host:  # its port was taken meanwhile: kitpin would not
                raise procs.HarnessError(  # trust the new one over plain HTTP
                    f"the flaky registry came back on {self.flaky.host}, not {host}"
                )

    def logs(self, lines: int = 15) -> str:
        """The last access-log lines of each registry (its long structured lines repeat them)."""
        parts = []
        for server in self.all:
            try:
                text = server.log_path.read_text(errors="replace").splitlines()
            except OSError:
                parts.append(f"--- {server.name}: no log ---")
                continue
            kept = [line for line in text if not line.startswith('time="')][-lines:]
            parts.append(f"--- {server.name} ({server.host}) access log, last {len(kept)} ---")
            parts.extend(kept)
        return "\n".join(parts)


@pytest.fixture(scope="session")
def registry_binary() -> Path:
    return tools.ensure("registry")["registry"]


@pytest.fixture(scope="session")
def registries(
    tmp_path_factory: pytest.TempPathFactory, registry_binary: Path
) -> Iterator[Registries]:
    user, password = PRIVATE_USER
    with contextlib.ExitStack() as stack:

        def start(name: str, **kwargs: Any) -> RegistryServer:
            server = RegistryServer(
                workdir=tmp_path_factory.mktemp(name), name=name, binary=registry_binary, **kwargs
            )
            return stack.enter_context(server)

        yield Registries(
            plain=start("registry-plain"),
            private=start("registry-private", htpasswd={user: password}),
            flaky=start("registry-flaky"),
        )


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name no other test uses: ``e2e/<test name>-<random>``."""
    short = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))
    short = short.strip("-")[:40].strip("-") or "test"
    return f"e2e/{short}-{secrets.token_hex(3)}"


# --------------------------------------------------------------------------- CRDs


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> list[str]:
    """Install kitpin's own CRDs (``deploy/crds``: the policies, as a real install has them)
    and the test CRDs (``tests/e2e/crds``); return the names once all are Established."""
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


def e2e_crd_kinds() -> set[tuple[str, str]]:
    """(group, kind) of every CRD in ``tests/e2e/crds``."""
    kinds = set()
    for path in CRD_DIR.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        kinds.add((crd["spec"]["group"], crd["spec"]["names"]["kind"]))
    return kinds


# --------------------------------------------------------------------------- manifests


def kitops_init(ref: str) -> dict[str, Any]:
    """The KitOps init container: it pulls ``MODELKIT_REF`` into a shared volume."""
    return {
        "name": "kitops-init",
        "image": KITOPS_INIT_IMAGE,
        "env": [
            {"name": "MODELKIT_REF", "value": ref},
            {"name": "UNPACK_PATH", "value": "/models"},
        ],
        "volumeMounts": [{"name": "models", "mountPath": "/models"}],
    }


def pod_spec(ref: str | None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "serve",
                "image": SERVE_IMAGE,
                "volumeMounts": [{"name": "models", "mountPath": "/models"}],
            }
        ],
        "volumes": [{"name": "models", "emptyDir": {}}],
    }
    if ref is not None:
        spec["initContainers"] = [kitops_init(ref)]
    spec.update(extra)
    return spec


def pod(name: str, namespace: str, ref: str | None, **spec: Any) -> dict[str, Any]:
    """A bare Pod; ``spec`` adds pod-spec fields (imagePullSecrets, volumes, ...)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": pod_spec(ref, **spec),
    }


def deployment(
    name: str, namespace: str, ref: str, *, replicas: int | None = 1, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(ref, **spec)},
        },
    }
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    return body


def job(name: str, namespace: str, ref: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": pod_spec(ref, restartPolicy="Never"),
            },
        },
    }


def cronjob(name: str, namespace: str, ref: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedule": "0 0 1 1 *",  # once a year: the tests create Jobs by hand
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": pod_spec(ref, restartPolicy="Never"),
                    },
                }
            },
        },
    }


def pull_secret(name: str, namespace: str, host: str) -> dict[str, Any]:
    """A ``kubernetes.io/dockerconfigjson`` Secret for :data:`PRIVATE_USER` at ``host``."""
    user, password = PRIVATE_USER
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = json.dumps({"auths": {host: {"auth": auth}}}).encode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": namespace},
        "data": {".dockerconfigjson": base64.b64encode(config).decode()},
    }


def denied_by(handler_id: str) -> re.Pattern[str]:
    """What the apiserver writes when the webhook ``handler_id`` (``pin-pods``) of a
    ``kitpin run --dev`` denies: its webhooks are named after its port
    (``pin-pods.dev-<port>.kitpin.dev``, :func:`controller.operator.dev_config_name`)."""
    return re.compile(
        rf'admission webhook "{re.escape(handler_id)}\.dev-[0-9]+\.kitpin\.dev" '
        "denied the request"
    )


def at(obj: Mapping[str, Any], pointer: str) -> Any:
    """The value at a JSON pointer (``/spec/initContainers/0/env/0/value``)."""
    return sites.get(obj, pointer)


def pins(obj: Mapping[str, Any]) -> dict[str, dict[str, str]] | None:
    """The ``kitpin.dev/pinned`` annotation, parsed; None when absent."""
    text = (obj.get("metadata", {}).get("annotations") or {}).get(pinning.PINNED_ANNOTATION)
    return None if text is None else dict(json.loads(text))


def owned_by(items: list[dict[str, Any]], uid: str) -> list[dict[str, Any]]:
    """The objects among ``items`` whose controller owner has ``uid``."""
    return [
        i
        for i in items
        if any(
            o.get("uid") == uid and o.get("controller")
            for o in i["metadata"].get("ownerReferences") or []
        )
    ]


def ref_to(server: RegistryServer, repository: str, tag: str) -> str:
    return f"{server.host}/{repository}:{tag}"


def pinned_ref(server: RegistryServer, repository: str, tag: str, digest: str) -> str:
    return f"{server.host}/{repository}:{tag}@{digest}"


# --------------------------------------------------------------------------- kitpin


@dataclass(frozen=True, kw_only=True)
class Result:
    """What kubectl printed for one command."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def obj(self) -> dict[str, Any]:
        """The object printed with ``-o json``."""
        assert self.ok, f"kubectl failed:\n{self.stderr}"
        return dict(json.loads(self.stdout))

    @property
    def warnings(self) -> list[str]:
        """The admission warnings kubectl printed (``Warning: ...`` lines on stderr)."""
        return [
            line.removeprefix("Warning: ")
            for line in self.stderr.splitlines()
            if line.startswith("Warning: ")
        ]


@dataclass(kw_only=True)
class Kitpin:
    """The running ``kitpin run --dev`` process, and kubectl through its webhooks."""

    control_plane: ControlPlane
    api: Clients
    registries: Registries
    workdir: Path
    port: int = 0
    process: procs.Process | None = None
    ca_bundle: str = ""
    """The webhook configurations' caBundle (base64 PEM): the CA the apiserver trusts."""
    expected_webhooks: dict[str, set[str]] = field(default_factory=dict)

    # -- lifecycle --------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def argv(self, settings_file: Path) -> list[str]:
        console_script = Path(sys.executable).parent / "kitpin"
        command = (
            [str(console_script)]
            if console_script.exists()
            else [sys.executable, "-m", "controller.cli"]
        )
        argv = [
            *command,
            "run",
            "--dev",
            f"--port={self.port}",
            f"--settings={settings_file}",
            f"--namespace={OWN_NAMESPACE}",
        ]
        for server in self.registries.all:
            argv.append(f"--plain-http-registry={server.host}")
        return argv

    def start(self) -> None:
        settings_file = self.workdir / "settings.yaml"
        settings_file.write_text(yaml.safe_dump(SETTINGS, sort_keys=False))
        dev_dir = self.workdir / "dev"  # empty: a developer's .dev/env must not leak in
        tmp_dir = self.workdir / "tmp"  # kitpin --dev writes its certificates under TMPDIR
        dev_dir.mkdir(exist_ok=True)
        tmp_dir.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.control_plane.kubeconfig),
            KITPIN_DEV_DIR=str(dev_dir),
            TMPDIR=str(tmp_dir),
            PYTHONUNBUFFERED="1",
        )
        env.pop("POD_NAMESPACE", None)
        for attempt in range(3):  # a free port may be taken before kitpin binds it
            self.port = procs.free_port()
            self.process = procs.Process(
                "kitpin", self.argv(settings_file), log_dir=self.workdir, env=env
            ).start()
            try:
                self._until(self._serving, f"kitpin /readyz on {self.url}")
                break
            except procs.HarnessError:
                self.process.stop()
                if attempt == 2 or "address already in use" not in self.log_tail(200):
                    raise
        self._wait_for_configurations()
        self._wait_for_admission()

    def _exited(self) -> bool:
        """True once the process has exited: ends a poll early (``check_alive`` raises then;
        an exception inside a ``wait_until`` predicate only means "not yet")."""
        return self.process is not None and not self.process.alive()

    def _until(self, predicate: Callable[[], object], what: str) -> None:
        procs.wait_until(
            lambda: self._exited() or predicate(),
            timeout=KITPIN_START_TIMEOUT,
            what=what,
            interval=0.2,
        )
        self.check_alive()

    def _serving(self) -> bool:
        context = ssl.create_default_context()
        # Before the webhook configurations exist there is no CA to verify with; this only
        # asks whether the port answers (the apiserver verifies against caBundle later).
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return procs.http_ok(f"{self.url}/readyz", ssl_context=context)

    def _expected(self) -> dict[str, set[str]]:
        """The webhooks the tests rely on: every core resource, the shipped custom resources
        whose CRDs ``tests/e2e/crds`` installs (kopf gives the others no rules: their
        resources are not discovered) and the extra site."""
        extra = sites.ExtraSite.from_mapping(SETTINGS["sites"]["extra"][0])
        installed = e2e_crd_kinds()
        resources = [
            *webhook.CORE_RESOURCES,
            *(r for r in webhook.DEFAULT_RESOURCES if (r.group, r.kind) in installed),
            *webhook.extra_resources([extra]),
        ]
        mutating = {self.webhook(webhook.handler_ids(r)[0]) for r in resources}
        validating = {self.webhook(webhook.handler_ids(r)[1]) for r in resources}
        return {"mutating": mutating, "validating": validating}

    @property
    def config_name(self) -> str:
        """The webhook configurations of this ``kitpin run --dev`` (both kinds)."""
        return kitpin_operator.dev_config_name(self.port)

    def webhook(self, handler_id: str) -> str:
        """The name of a webhook as the apiserver quotes it in a denial
        (``admission webhook "<name>" denied the request``)."""
        return f"{handler_id}.{self.config_name}"

    def configuration_problems(self) -> list[str]:
        """What keeps the ``dev-<port>.kitpin.dev`` configurations from serving the tests: a
        missing configuration or webhook, a URL elsewhere, a webhook without rules (its
        resource is not discovered yet). Empty when ready; the caBundle is recorded then."""
        name = self.config_name
        problems: list[str] = []
        reads = {
            "mutating": self.api.admission.read_mutating_webhook_configuration,
            "validating": self.api.admission.read_validating_webhook_configuration,
        }
        for kind, read in reads.items():
            try:
                config: Any = read(name)
            except ApiException as e:
                problems.append(f"{kind} configuration {name}: {e.status} {e.reason}")
                continue
            hooks = {h.name: h for h in config.webhooks or []}
            problems += [
                f"{kind} webhook {n} missing" for n in self.expected_webhooks[kind] - set(hooks)
            ]
            for hook_name in sorted(self.expected_webhooks[kind] & set(hooks)):
                hook = hooks[hook_name]
                url = hook.client_config.url or ""
                if not url.startswith(f"{self.url}/"):
                    problems.append(f"{kind} webhook {hook_name} calls {url}, not {self.url}")
                elif not any(r.resources for r in hook.rules or []):
                    problems.append(f"{kind} webhook {hook_name} has no rules yet")
                else:
                    self.ca_bundle = hook.client_config.ca_bundle
        return problems

    def _wait_for_configurations(self) -> None:
        self.expected_webhooks = self._expected()
        try:
            self._until(
                lambda: not self.configuration_problems(),
                f"the {self.config_name} webhook configurations with every handler and its rules",
            )
        except procs.HarnessError as e:
            raise procs.HarnessError(f"{e}\n" + "\n".join(self.configuration_problems())) from e

    def _wait_for_admission(self) -> None:
        """Until a real admission works: a server-side dry-run Pod comes back pinned."""
        plain = self.registries.plain
        digest = modelkit.push_modelkit(plain, PROBE_REPO, "ready", seed=0)
        expected = pinned_ref(plain, PROBE_REPO, "ready", digest)
        probe = pod("kitpin-probe", "default", ref_to(plain, PROBE_REPO, "ready"))

        def pinned() -> bool:
            answer: client.V1Pod = self.api.core.create_namespaced_pod(
                "default",
                probe,  # type: ignore[arg-type]  # the client serialises dicts as they are
                dry_run="All",
            )
            assert answer.spec is not None and answer.spec.init_containers
            env = answer.spec.init_containers[0].env or []
            return bool(env and env[0].value == expected)

        self._until(pinned, "a dry-run Pod admitted and pinned by kitpin")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()  # kitpin deletes its own configurations as it stops
        name = self.config_name  # should it have been killed
        for delete in (
            self.api.admission.delete_mutating_webhook_configuration,
            self.api.admission.delete_validating_webhook_configuration,
        ):
            with contextlib.suppress(ApiException):
                delete(name)

    def check_alive(self) -> None:
        assert self.process is not None
        self.process.check_alive()

    # -- diagnostics ------------------------------------------------------------------

    def log_tail(self, lines: int = 80) -> str:
        if self.process is None:
            return "--- kitpin: not started ---"
        return self.process.log_tail(lines)

    def diagnostics(self) -> str:
        return "\n".join([self.log_tail(), self.registries.logs(), self.control_plane.logs(40)])

    # -- metrics ----------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext:
        """Trusts what the apiserver trusts: the caBundle kopf put in the configurations."""
        return ssl.create_default_context(cadata=base64.b64decode(self.ca_bundle).decode())

    def metric(self, name: str, **labels: str) -> float:
        """One sample of kitpin's ``/metrics`` (0.0 when absent), e.g.
        ``metric("kitpin_admission_reviews_total", webhook="mutate", outcome="Pinned")``."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5, context=self._ssl()) as r:
            text = r.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def admissions(self, webhook: str, outcome: str) -> float:
        return self.metric("kitpin_admission_reviews_total", webhook=webhook, outcome=outcome)

    # -- kubectl ----------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None) -> Result:  # noqa: A002
        done = self.control_plane.kubectl(*args, input=input, check=False)
        return Result(returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)

    def create(self, manifest: Mapping[str, Any], *, dry_run: bool = False) -> Result:
        """``kubectl create -f - -o json`` (``--dry-run=server`` when ``dry_run``)."""
        args = ["create", "-f", "-", "-o", "json"]
        if dry_run:
            args.append("--dry-run=server")
        return self.kubectl(*args, input=json.dumps(manifest))

    def apply(
        self, manifest: Mapping[str, Any], *, server_side: bool = False, dry_run: bool = False
    ) -> Result:
        """``kubectl apply -f - -o json`` (client-side unless ``server_side``, which also
        takes over conflicting fields like a GitOps controller does)."""
        args = ["apply", "-f", "-", "-o", "json"]
        if server_side:
            args += ["--server-side", "--force-conflicts", "--field-manager=e2e-gitops"]
        if dry_run:
            args.append("--dry-run=server")
        return self.kubectl(*args, input=json.dumps(manifest))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        done = self.control_plane.kubectl("get", kind, name, "-n", namespace, "-o", "json")
        return dict(json.loads(done.stdout))

    def exists(self, kind: str, name: str, namespace: str) -> bool:
        done = self.kubectl("get", kind, name, "-n", namespace, "--ignore-not-found", "-o", "name")
        assert done.ok, done.stderr
        return bool(done.stdout.strip())

    def list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        done = self.control_plane.kubectl("get", kind, "-n", namespace, "-o", "json")
        return list(json.loads(done.stdout)["items"])


@pytest.fixture(scope="module")
def kitpin_server(
    tmp_path_factory: pytest.TempPathFactory,
    control_plane: ControlPlane,
    api: Clients,
    registries: Registries,
    crds: list[str],
) -> Iterator[Kitpin]:
    server = Kitpin(
        control_plane=control_plane,
        api=api,
        registries=registries,
        workdir=tmp_path_factory.mktemp("kitpin"),
    )
    try:
        server.start()
    except BaseException as e:
        report = server.diagnostics()
        server.stop()
        raise procs.HarnessError(f"kitpin did not start: {e}\n{report}") from e
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kitpin(kitpin_server: Kitpin) -> Kitpin:
    """The module's kitpin, checked alive before each test."""
    kitpin_server.check_alive()
    return kitpin_server


# --------------------------------------------------------------------------- reports


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        server = funcargs.get("kitpin_server") or funcargs.get("kitpin")
        if isinstance(server, Kitpin):
            report.sections.append(("kitpin log", server.log_tail(120)))
        regs = funcargs.get("registries")
        if isinstance(regs, Registries):
            report.sections.append(("registry logs", regs.logs()))
        cp = funcargs.get("control_plane")
        if isinstance(cp, ControlPlane):
            report.sections.append(("control plane logs", cp.logs()))
    return report
