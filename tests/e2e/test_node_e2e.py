"""Pods really run (issue 21): a node (``harness/node.py``: kube-scheduler, kubelet,
containerd) joins a control plane of its own, kitpin pins a Deployment's ``MODELKIT_REF``,
each replica's init container runs the real ``kit unpack`` of the pinned reference, and the
files every replica unpacked (their sha256, printed by the app container and read through
the apiserver and the kubelet) are the bytes of the ModelKit the tag named when the
Deployment was applied, also for the replica added after the tag moved. And the chart's own
Pods (the image assembled by ``harness/kitpin_image.py``, ``hostNetwork: true``) serve
admission through their Service: the node's second address is on the loopback interface
(``harness_node.SERVICE_ADDRESS``), so the Service has an endpoint and the apiserver reaches it.

Opt-in (marker ``node``): it needs root, Debian's containerd/runc/busybox-static (installed
by ``hack/tools.sh node`` when missing) and the real kit CLI (``$KITPIN_KIT``, else skipped).
Run it with::

    KITPIN_NODE=1 KITPIN_KIT=../shared/tools/kit-1.7.0-19/kit .venv/bin/pytest -m node

It is skipped otherwise, so ``make test`` never starts a node. The module starts its own
control plane (the apiserver needs the node's kubelet flags, and the session's cluster has no
node: Pods stay Pending in every other e2e test) and one registry; the fixtures are named
like the e2e conftest's (``control_plane``, ``registries``, ``kitpin``) so that a failure
report carries the same logs, plus the node's. The node's clean-up is checked at module end:
no mount under its run dir, no cgroup, no shim, the sysctls the kubelet changed put back.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from harness import chart as render
from harness import kit as harness_kit
from harness import kitpin_image, modelkit, procs
from harness import node as harness_node
from harness.controlplane import ControlPlane
from harness.registry import RegistryServer
from tests.e2e.conftest import (
    CRD_DIR,
    KITPIN_CRD_DIR,
    SETTINGS_IGNORED_NAMESPACE,
    TEMPLATE_ENV,
    Kitpin,
    Registries,
    at,
    create_namespace,
    deployment,
    pinned_ref,
    ref_to,
)

ENABLED = os.environ.get("KITPIN_NODE") == "1"
_KIT_ABSENT = harness_kit.why_absent() if ENABLED else None

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.node,
    pytest.mark.skipif(not ENABLED, reason="a real node runs only with KITPIN_NODE=1"),
    pytest.mark.skipif(_KIT_ABSENT is not None, reason=_KIT_ABSENT or ""),
]

RUN_TIMEOUT = 120.0
"""Seconds for replicas to run: schedule, pull (loopback), kit unpack, start."""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness_node.Node]:
    """The node (not started): its CA must reach the apiserver's flags first."""
    if os.geteuid() != 0:
        raise procs.HarnessError("KITPIN_NODE=1 needs root (kubelet, containerd, mounts)")
    the_node = harness_node.Node(
        log_dir=tmp_path_factory.mktemp("node-logs"), address=harness_node.SERVICE_ADDRESS
    )
    mounts_before = _mounts_under(the_node.run_dir)
    sysctls_before = {k: _sysctl(k) for k in harness_node.SYSCTLS}
    try:
        yield the_node
    finally:
        the_node.stop()  # raises NodeError naming whatever it could not clean up
        _check_clean(the_node, mounts_before, sysctls_before)


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registries]:
    """One plain-HTTP registry in the three roles of the conftest's (this module needs one)."""
    with RegistryServer(workdir=tmp_path_factory.mktemp("registry-node")) as server:
        yield Registries(plain=server, private=server, flaky=server)


@pytest.fixture(scope="module")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory,
    node: harness_node.Node,
    registries: Registries,
) -> Iterator[ControlPlane]:
    """A control plane of this module's own, with the node joined (Ready) and kitpin's CRDs
    and the e2e CRDs installed (kopf discovers resources when kitpin starts)."""
    cp = ControlPlane(
        tmp_path_factory.mktemp("controlplane-node"),
        extra_apiserver_flags=node.apiserver_flags(),
    )
    cp.start()
    try:
        node.start(cp, registry=registries.plain.host, kit=harness_kit.find())
        for directory in (KITPIN_CRD_DIR, CRD_DIR):
            cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(directory))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        yield cp
    finally:
        with contextlib.suppress(harness_node.NodeError):  # the node fixture reports it
            node.stop(keep_run_dir=True)
        cp.stop()


@pytest.fixture(scope="module")
def kitpin(
    tmp_path_factory: pytest.TempPathFactory,
    control_plane: ControlPlane,
    registries: Registries,
) -> Iterator[Kitpin]:
    """``kitpin run --dev`` against this module's control plane."""
    clients = control_plane.clients()
    server = Kitpin(
        control_plane=control_plane,
        api=clients,
        registries=registries,
        workdir=tmp_path_factory.mktemp("kitpin-node"),
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        clients.close()


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    clients = control_plane.clients()
    name = create_namespace(clients, f"e2e-node-{secrets.token_hex(3)}")
    try:
        yield name
    finally:
        control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
        clients.close()


@pytest.fixture(autouse=True)
def _node_logs(node: harness_node.Node) -> Iterator[None]:
    """The node's log tails, printed after each test: pytest shows them for a failure."""
    yield
    print(node.logs(80))


# --------------------------------------------------------------------------- helpers


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    return [p for p, _ in harness_node.mounts() if p == prefix or p.startswith(prefix + "/")]


def _sysctl(key: str) -> str:
    return Path("/proc/sys", key).read_text().strip()


def _check_clean(
    node: harness_node.Node, mounts_before: list[str], sysctls_before: Mapping[str, str]
) -> None:
    """What the node changed on the host is gone or put back."""
    assert _mounts_under(node.run_dir) == mounts_before == []
    leftovers = [
        h / node.cgroup_root.lstrip("/")
        for h in harness_node.cgroup_hierarchies()
        if (h / node.cgroup_root.lstrip("/")).exists()
    ]
    assert leftovers == []
    assert harness_node.shims(str(node.layout.socket)) == []
    assert {k: _sysctl(k) for k in harness_node.SYSCTLS} == sysctls_before
    logs = harness_node.CONTAINER_LOGS_DIR
    if logs.is_dir():
        mine = [p for p in logs.iterdir() if str(node.run_dir) in os.readlink(p)]
        assert mine == []
    assert not node.run_dir.exists()
    assert f"{harness_node.SERVICE_ADDRESS}/32" not in harness_node._loopback_addresses()


def _random_files(kitfile: Mapping[str, Any]) -> dict[str, bytes]:
    return {path: secrets.token_bytes(3000) for path in harness_kit.layer_paths(kitfile)}


def _sha256(files: Mapping[str, bytes]) -> dict[str, str]:
    return {
        path: modelkit.sha256_digest(data).removeprefix("sha256:") for path, data in files.items()
    }


def _unpacked(cp: ControlPlane, namespace: str, pods: list[dict[str, Any]]) -> dict[str, Any]:
    """``{pod: {"ref": MODELKIT_REF, "files": {path: sha256}}}`` of running replicas."""
    return {
        p["metadata"]["name"]: {
            "ref": p["spec"]["initContainers"][0]["env"][0]["value"],
            "files": harness_node.unpacked_hashes(cp, namespace, p["metadata"]["name"], "serve"),
        }
        for p in pods
    }


# --------------------------------------------------------------------------- tests


def test_the_node_runs_pods_on_loopback_only(
    control_plane: ControlPlane, node: harness_node.Node, namespace: str
) -> None:
    """The node registered with 127.0.0.1 and its address on the loopback interface as its
    addresses, the apiserver's version; a Pod from the harness's busybox image runs, and its
    log comes back through the kubelet."""
    got = json.loads(control_plane.kubectl("get", "node", "-o", "json").stdout)["items"]
    assert [n["metadata"]["name"] for n in got] == [harness_node.NODE_NAME]
    addresses = {(a["type"], a["address"]) for a in got[0]["status"]["addresses"]}
    assert addresses == {
        ("Hostname", "127.0.0.1"),
        ("InternalIP", harness_node.SERVICE_ADDRESS),
    }
    assert f"{harness_node.SERVICE_ADDRESS}/32" in harness_node._loopback_addresses()
    server = json.loads(control_plane.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert got[0]["status"]["nodeInfo"]["kubeletVersion"] == server["gitVersion"]

    assert node.images is not None
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hello", "namespace": namespace, "labels": {"app": "hello"}},
        "spec": {
            "hostNetwork": True,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "c",
                    "image": node.images.busybox,
                    "command": ["sh", "-c", "echo hello-from-the-node; exec sleep 3600"],
                }
            ],
        },
    }
    control_plane.kubectl("create", "-f", "-", input=json.dumps(pod))
    harness_node.wait_running(control_plane, namespace, "app=hello", 1, timeout=RUN_TIMEOUT)
    logs = control_plane.kubectl("logs", "-n", namespace, "hello").stdout
    assert logs.strip() == "hello-from-the-node"


def test_every_replica_unpacks_the_pinned_bytes_after_the_tag_moved(
    kitpin: Kitpin,
    control_plane: ControlPlane,
    node: harness_node.Node,
    registries: Registries,
    namespace: str,
) -> None:
    """Two replicas unpack the ModelKit the tag named; the tag moves; a third replica
    (scale-up) unpacks the same bytes, not the new ones: kit unpacked kitpin's digest."""
    assert node.images is not None
    registry = registries.plain
    repository = f"e2e/node-{secrets.token_hex(3)}"
    kitfile = modelkit.default_kitfile()
    first_files, moved_files = _random_files(kitfile), _random_files(kitfile)
    first = modelkit.push_modelkit(
        registry, repository, "production", kitfile=kitfile, files=first_files
    )

    manifest = deployment(
        "llama", namespace, ref_to(registry, repository, "production"), replicas=2
    )
    template = manifest["spec"]["template"]
    template["spec"] = harness_node.run_on_node(template["spec"], node.images)
    applied = kitpin.apply(manifest)
    assert applied.ok, applied.stderr
    pinned = pinned_ref(registry, repository, "production", first)
    assert at(applied.obj, TEMPLATE_ENV) == pinned

    before = _unpacked(
        control_plane,
        namespace,
        harness_node.wait_running(control_plane, namespace, "app=llama", 2, timeout=RUN_TIMEOUT),
    )
    assert len(before) == 2
    for name, seen in before.items():
        assert seen["ref"] == pinned, name
        assert seen["files"] == _sha256(first_files), name

    moved = modelkit.push_modelkit(
        registry, repository, "production", kitfile=kitfile, files=moved_files
    )
    assert moved != first
    control_plane.kubectl("scale", "deployment", "llama", "-n", namespace, "--replicas=3")
    after = _unpacked(
        control_plane,
        namespace,
        harness_node.wait_running(control_plane, namespace, "app=llama", 3, timeout=RUN_TIMEOUT),
    )
    assert len(after) == 3 and set(before) < set(after)
    hashes = {name: seen["files"] for name, seen in after.items()}
    assert all(h == _sha256(first_files) for h in hashes.values()), hashes
    assert all(h != _sha256(moved_files) for h in hashes.values())
    assert {seen["ref"] for seen in after.values()} == {pinned}


def test_the_charts_pods_serve_admission_through_their_service(
    control_plane: ControlPlane, registries: Registries, tmp_path: Path
) -> None:
    """kitpin's image (assembled from a Debian root file system and the project's wheel, as the
    Containerfile builds it) installed with the chart: its Pod runs Ready on the node, its
    Service gets the Pod's address as endpoint, kitpin arms its webhooks, and a Deployment is
    pinned by that Pod through the Service. The Deployment's namespace is one the module's
    ``kitpin run --dev`` ignores (its settings), so only the chart's kitpin can have pinned it;
    with the Pod gone, the armed webhook denies (the apiserver names the Service)."""
    registry = registries.plain
    image = kitpin_image.kitpin_image(registry.host)
    repository, _, digest = image.partition("@")
    repository = repository.rsplit(":", 1)[0]
    release, release_ns = "kitpin", f"kitpin-{secrets.token_hex(3)}"
    target = SETTINGS_IGNORED_NAMESPACE
    control_plane.kubectl("create", "namespace", target)
    values = {
        "image": {"repository": repository, "digest": digest},
        "replicaCount": 1,  # one node, and host-network replicas need a node each
        "podDisruptionBudget": {"enabled": False},
        "hostNetwork": True,
        "containerPort": procs.free_port(),
        # no kube-proxy: the apiserver on loopback instead of the kubernetes Service's IP
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(urlsplit(control_plane.url).port)},
        ],
        "registry": {"hosts": {registry.host: {"plainHTTP": True}}},
        "webhook": {
            "failurePolicy": "Fail",
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": target},
            },
        },
    }
    helm_home = tmp_path / "helm"
    helm_env = {k: str(helm_home / k.lower()) for k in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME")}

    def helm(*args: str, **kw: Any) -> render.Result:
        return render.run_helm(
            [*args, "--kubeconfig", str(control_plane.kubeconfig)], env=helm_env, **kw
        )

    installed = helm(
        "install", release, str(render.CHART_DIR), "-n", release_ns, "--create-namespace",
        "--skip-crds", "--wait", "--timeout", "180s", values=values, timeout=240,
    )  # fmt: skip
    try:
        assert installed.returncode == 0, (
            installed.stderr
            + control_plane.kubectl("describe", "pods", "-n", release_ns, check=False).stdout
        )
        (pod,) = harness_node.running_pods(
            control_plane, release_ns, "app.kubernetes.io/name=kitpin"
        )
        assert pod["status"]["podIP"] == harness_node.SERVICE_ADDRESS

        def armed() -> bool:
            out = control_plane.kubectl(
                "get", "mutatingwebhookconfiguration", release, "-o", "json", check=False
            )
            hooks = json.loads(out.stdout)["webhooks"] if out.returncode == 0 else []
            return bool(hooks) and all(h["failurePolicy"] == "Fail" for h in hooks)

        procs.wait_until(armed, timeout=RUN_TIMEOUT, what="the chart's kitpin to arm its webhooks")
        slices = json.loads(
            control_plane.kubectl(
                "get", "endpointslices", "-n", release_ns,
                "-l", f"kubernetes.io/service-name={release}", "-o", "json",
            ).stdout
        )["items"]  # fmt: skip
        addresses = {a for s in slices for e in s["endpoints"] or [] for a in e["addresses"]}
        assert addresses == {harness_node.SERVICE_ADDRESS}

        digest_pushed = modelkit.push_modelkit(registry, "e2e/node-chart", "production")
        tagged = ref_to(registry, "e2e/node-chart", "production")
        manifest = deployment("served", target, tagged, replicas=0)  # no Pods: no Pod network
        created = control_plane.kubectl(
            "create", "-f", "-", "-o", "json", input=json.dumps(manifest), check=False
        )
        assert created.returncode == 0, created.stderr
        stored = json.loads(created.stdout)
        assert at(stored, TEMPLATE_ENV) == pinned_ref(
            registry, "e2e/node-chart", "production", digest_pushed
        )

        # No Pod behind the Service: the armed webhook fails closed, naming the Service.
        control_plane.kubectl("scale", "deployment", release, "-n", release_ns, "--replicas=0")

        def no_endpoint() -> bool:
            pods = control_plane.kubectl("get", "pods", "-n", release_ns, "-o", "name").stdout
            out = control_plane.kubectl(
                "get", "endpoints", release, "-n", release_ns, "-o", "json", check=False
            )
            subsets = json.loads(out.stdout).get("subsets") if out.returncode == 0 else None
            return not pods.strip() and not subsets

        procs.wait_until(no_endpoint, timeout=RUN_TIMEOUT, what="the chart's Pod and endpoint gone")
        refused = control_plane.kubectl(
            "create", "-f", "-", check=False,
            input=json.dumps(deployment("refused", target, tagged, replicas=0)),
        )  # fmt: skip
        assert refused.returncode != 0
        assert f"{release}.{release_ns}.svc" in refused.stderr, refused.stderr
    finally:
        helm("uninstall", release, "-n", release_ns, "--wait", "--timeout", "60s")
        control_plane.kubectl(
            "delete", "namespace", release_ns, target, "--wait=false", check=False
        )
