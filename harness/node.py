"""An opt-in node for the local control plane: kube-scheduler, kubelet and containerd, so that
Pods really run (``NODE=1``: ``make dev-up NODE=1``, ``make demo NODE=1``,
``tests/e2e/test_node_e2e.py``; docs/node.md).

    node = Node()
    cp = ControlPlane(extra_apiserver_flags=node.apiserver_flags())
    cp.start()
    node.start(cp, registry=registry.host, kit=harness.kit.find())
    ...                                   # Pods with hostNetwork: true run on it
    node.stop()                           # before cp.stop(): kills, unmounts, restores
    cp.stop()

What runs, all from this machine:

- ``kube-scheduler`` and ``kubelet`` of the apiserver's Kubernetes version, built into the
  tools cache by ``hack/tools.sh node`` (:func:`ensure_tools` runs it when one is missing,
  which also installs Debian's containerd, runc, busybox-static and CNI plugins);
- Debian's ``containerd`` (1.6) with ``runc``, state and sockets under the run dir, cgroupfs
  (``SystemdCgroup = false``), overlayfs (the native snapshotter where overlayfs cannot mount),
  its images pulled over plain HTTP from the local registry only (``certs.d/<host>/hosts.toml``);
  the sandbox ("pause") image and the others are assembled by :mod:`harness.images`.

The node is named ``127.0.0.1`` (``--hostname-override``): a kubelet refuses a loopback
``--node-ip``, but takes an IP given as its host name as its address, so the apiserver
reaches the kubelet (logs, exec) on loopback and nowhere else. There is no CNI network: the
CNI configuration is a loopback-only one (so containerd reports its network ready), and
the Pods to run use ``hostNetwork: true`` (they reach the registry on 127.0.0.1).

A Service cannot reach such a Pod: Endpoints and EndpointSlices refuse loopback addresses,
and the Pod's address is the node's. ``Node(address=SERVICE_ADDRESS)`` gives the node a second
address for that, on the loopback *interface*: the harness adds ``<address>/32`` to ``lo`` (and
removes it at stop), the kubelet takes it as ``--node-ip``, so a host-network Pod's IP, and
the endpoint of its Service, is that address, and every packet to it is delivered locally on
``lo``, never routed. The apiserver resolves a Service to its endpoint
(``--enable-aggregator-routing``: there is no kube-proxy to route a cluster IP), so admission
webhooks reach a Pod through its Service.

Identity and trust:

- the kubelet's client certificate (``system:node:127.0.0.1``, group ``system:nodes``) and
  the scheduler's (``system:kube-scheduler``) are issued by the control plane through the
  certificates API (a CSR approved by the admin, signed by kube-controller-manager);
  ``system:nodes`` is bound to the ``system:node`` ClusterRole (RBAC only, no Node authorizer);
- a node CA of its own (``<run dir>/pki/node-ca.crt``) issues the kubelet's serving
  certificate (IP 127.0.0.1) and the client certificate the apiserver presents to the kubelet;
  :meth:`Node.apiserver_flags` gives the apiserver both (``--kubelet-certificate-authority``,
  ``--kubelet-client-certificate``); the kubelet authorises that user through the apiserver
  (Webhook mode, bound to ``system:kubelet-api-admin``).

The kubelet on this VM (cgroup v1, hybrid hierarchy): ``failCgroupV1: false`` (1.35 refuses
cgroup v1 otherwise), ``cgroupDriver: cgroupfs`` and a ``cgroupRoot`` of its own
(``/kitpin-node-<id>``, created in every hierarchy, removed by :meth:`Node.stop`),
``failSwapOn: false``, its root, certificate, pod-log and volume-plugin directories under
the run dir, eviction thresholds low enough for a developer's disk.

What a node changes outside its run dir, and :meth:`Node.stop` (or :func:`cleanup`, for
``make dev-down``) puts back:

- the kubelet sets ``vm.overcommit_memory``, ``kernel.panic`` and ``kernel.panic_on_oops``
  (``protectKernelDefaults: false``; ``true`` would refuse to start): the values before are
  recorded in ``node.json`` and restored;
- ``/var/log/containers/`` (hard-coded in the kubelet): the symlinks into this run dir are
  removed, the directory too if the node created it;
- containerd's shims put their sockets in ``/run/containerd/s/`` (hard-coded): the ones of
  this node's shims are removed;
- iptables: none; the kubelet is given a ``PATH`` on which ``iptables``/``ip6tables`` fail,
  so it creates no chains (kube-proxy is not run);
- processes: the kubelet, the scheduler, containerd, its shims (found by their ``-address``,
  this node's socket) and every process in the node's cgroups; mounts: every mount under the
  run dir (Pod volumes, container root filesystems), deepest first.

Everything the node knows is in ``<run dir>/node.json``, written before anything starts, so
:func:`cleanup` can undo a node that another process started (``make dev-down``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness import images, pki, procs, tools
from harness.controlplane import ControlPlane, write_kubeconfig

NODE_NAME = "127.0.0.1"
"""The node's name and, through ``--hostname-override``, its address (the apiserver reaches
the kubelet there)."""
SERVICE_ADDRESS = "198.18.0.10"
"""The node's second address with ``Node(address=...)``, on the loopback interface: from the
benchmarking range (RFC 2544, 198.18.0.0/15), which no network here uses."""
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
"""The CN of the certificate the apiserver presents to the kubelet."""
SCHEDULER_USER = "system:kube-scheduler"
NODE_BINARIES = ("kubelet", "kube-scheduler")
SYSTEM_BINARIES = ("containerd", "containerd-shim-runc-v2", "runc")
CNI_BIN_DIR = Path("/usr/lib/cni")
CONTAINER_LOGS_DIR = Path("/var/log/containers")
"""Hard-coded in the kubelet (``kubelet.ContainerLogsDir``)."""
SHIM_SOCKET_DIR = Path("/run/containerd/s")
"""Hard-coded in containerd 1.6 (``runtime/v2/shim.SocketAddress``)."""
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
"""What the kubelet's container manager sets (``setupKernelTunables``)."""
NAMESPACE = "k8s.io"
"""containerd's namespace for the CRI."""
READY_TIMEOUT = 120.0
STOP_GRACE = 10.0


class NodeError(procs.HarnessError):
    """The node could not start, or could not be cleaned up completely."""


# ---------------------------------------------------------------------------- tools


def _kubernetes_binary(name: str) -> Path:
    """kubelet / kube-scheduler: ``$KITPIN_TOOLS_DIR/<name>``, else
    ``<cache>/kubernetes-<KUBERNETES_VERSION>/<name>`` (hack/tools.sh's layout)."""
    if tools_dir := os.environ.get("KITPIN_TOOLS_DIR"):
        candidate = Path(tools_dir) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    version = tools.versions()["KUBERNETES_VERSION"]
    return tools.cache_dir() / f"kubernetes-{version}" / name


def _system_binary(name: str) -> Path | None:
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin:/sbin")
    return Path(found) if found else None


def _missing() -> list[str]:
    missing = [b for b in NODE_BINARIES if not os.access(_kubernetes_binary(b), os.X_OK)]
    missing += [b for b in SYSTEM_BINARIES if _system_binary(b) is None]
    if not images.BUSYBOX.is_file():
        missing.append(str(images.BUSYBOX))
    if not (CNI_BIN_DIR / "loopback").is_file():
        missing.append(str(CNI_BIN_DIR / "loopback"))
    if shutil.which("mmdebstrap") is None:  # kitpin's image (harness/kitpin_image.py)
        missing.append("mmdebstrap")
    return missing


def why_not_ready() -> str | None:
    """Why a node cannot start right now without building or installing anything (not root,
    a tool missing); None when it can: ``make demo`` runs one then (``--node=auto``)."""
    if os.geteuid() != 0:
        return "a node needs root (kubelet, containerd, mounts)"
    missing = _missing()
    if missing:
        return f"the node's tools are not all here ({', '.join(missing)}): `hack/tools.sh node`"
    return None


def ensure_tools() -> dict[str, Path]:
    """Paths of the node's binaries; runs ``hack/tools.sh node`` first when any is missing
    (builds kubelet and kube-scheduler, installs Debian's packages as root)."""
    if _missing():
        result = subprocess.run(
            ["bash", str(tools.TOOLS_SH), "node"],
            cwd=tools.REPO_ROOT,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        still = _missing()
        if result.returncode != 0 or still:
            raise NodeError(
                f"hack/tools.sh node failed (exit {result.returncode}); missing: "
                f"{', '.join(still) or 'nothing?'}; run `hack/tools.sh node` to see why"
            )
    found = {b: _kubernetes_binary(b) for b in NODE_BINARIES}
    for b in (*SYSTEM_BINARIES, "mount", "umount"):
        path = _system_binary(b)
        assert path is not None
        found[b] = path
    return found


# ---------------------------------------------------------------------------- host state


def mounts() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount this process sees."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        point = left.split()[4].encode().decode("unicode_escape")
        out.append((point, right.split()[0]))
    return out


def cgroup_hierarchies() -> list[Path]:
    """The mount points of every cgroup (v1) and cgroup2 hierarchy."""
    return sorted({Path(p) for p, fs in mounts() if fs in ("cgroup", "cgroup2")})


def _read_sysctls() -> dict[str, str]:
    values = {}
    for key in SYSCTLS:
        with contextlib.suppress(OSError):
            values[key] = Path("/proc/sys", key).read_text().strip()
    return values


def _overlay_works(directory: Path) -> bool:
    """Can overlayfs (two lower dirs, as containerd's snapshotter checks) mount here?"""
    probe = directory / "overlay-probe"
    dirs = [probe / d for d in ("l1", "l2", "upper", "work", "merged")]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={dirs[0]}:{dirs[1]},upperdir={dirs[2]},workdir={dirs[3]}"
    mounted = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(dirs[4])],
        capture_output=True,
        check=False,
    )
    if mounted.returncode == 0:
        subprocess.run(["umount", str(dirs[4])], capture_output=True, check=False)
    shutil.rmtree(probe, ignore_errors=True)
    return mounted.returncode == 0


# ---------------------------------------------------------------------------- certificates


def _client_certificate(
    cp: ControlPlane, *, name: str, common_name: str, groups: Sequence[str], signer: str
) -> tuple[bytes, bytes]:
    """A client certificate for ``common_name`` from the control plane: a CSR created and
    approved as the admin, signed by kube-controller-manager. (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attrs))
        .sign(key, hashes.SHA256())
    )
    csr_name = f"kitpin-node-{name}-{secrets.token_hex(3)}"
    manifest = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": csr_name},
        "spec": {
            "request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
            "signerName": signer,
            "usages": ["digital signature", "client auth"],
        },
    }
    cp.kubectl("create", "-f", "-", input=json.dumps(manifest))
    try:
        cp.kubectl("certificate", "approve", csr_name)

        def issued() -> str:
            out = cp.kubectl("get", "csr", csr_name, "-o", "jsonpath={.status.certificate}")
            return out.stdout.strip()

        cert_b64 = procs.wait_until(issued, timeout=30, what=f"the CSR {csr_name} to be signed")
    finally:
        cp.kubectl("delete", "csr", csr_name, "--ignore-not-found", check=False)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return base64.b64decode(str(cert_b64)), key_pem


def _binding(name: str, role: str, kind: str, subject: str) -> dict[str, Any]:
    group = "rbac.authorization.k8s.io"
    return {
        "apiVersion": f"{group}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": group, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": group, "kind": kind, "name": subject}],
    }


RBAC = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        # No Node authorizer here (RBAC only): nodes get the system:node role by group.
        _binding("kitpin-node:system:node", "system:node", "Group", "system:nodes"),
        # What the apiserver may do on the kubelet (logs, exec), authorised by the kubelet
        # through a SubjectAccessReview (Webhook mode).
        _binding(
            "kitpin-node:kubelet-api-admin",
            "system:kubelet-api-admin",
            "User",
            KUBELET_CLIENT_USER,
        ),
    ],
}


# ---------------------------------------------------------------------------- the node


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Every path of one node, under its run dir."""

    run_dir: Path

    @property
    def state_file(self) -> Path:
        return self.run_dir / "node.json"

    @property
    def pki(self) -> Path:
        return self.run_dir / "pki"

    @property
    def containerd(self) -> Path:
        return self.run_dir / "containerd"

    @property
    def socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def kubelet(self) -> Path:
        return self.run_dir / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.run_dir / "pod-logs"

    @property
    def bin(self) -> Path:
        """Shims put first on the kubelet's PATH (iptables that fails)."""
        return self.run_dir / "bin"


class Node:
    """containerd + kube-scheduler + kubelet for a :class:`ControlPlane`; see the module
    docstring."""

    def __init__(
        self,
        run_dir: Path | str | None = None,
        *,
        log_dir: Path | str | None = None,
        timeout: float = READY_TIMEOUT,
        address: str | None = None,
    ) -> None:
        """``run_dir``: the node's state (a fresh short temp dir, removed by ``stop()``, if
        None; unix socket paths must stay short). ``log_dir``: default ``<run dir>/logs``.
        ``address``: an IPv4 address the node adds to ``lo`` and reports as its InternalIP
        (:data:`SERVICE_ADDRESS`), so that Services reach its Pods; None: none."""
        self._own_run_dir = run_dir is None
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix="kitpin-node-")).resolve()
        self.layout = Layout(run_dir=self.run_dir)
        self.log_dir = Path(log_dir).resolve() if log_dir else self.run_dir / "logs"
        self.timeout = timeout
        self.cgroup_root = f"/kitpin-node-{secrets.token_hex(4)}"
        self.containerd: procs.Process | None = None
        self.scheduler: procs.Process | None = None
        self.kubelet: procs.Process | None = None
        self.images: images.NodeImages | None = None
        self.snapshotter = ""
        self.startup_seconds: dict[str, float] = {}
        """Seconds each phase of ``start()`` took."""
        self._node_ca: pki.CA | None = None
        self.address = address

    @property
    def processes(self) -> list[procs.Process]:
        """The started processes, in start order."""
        return [p for p in (self.containerd, self.scheduler, self.kubelet) if p]

    def logs(self, lines: int = 60) -> str:
        return "\n".join(p.log_tail(lines) for p in self.processes) or "(node not started)"

    # -- before the control plane ----------------------------------------------------

    def apiserver_flags(self) -> list[str]:
        """The apiserver flags the node needs: how it trusts and authenticates to the
        kubelet. Creates the node CA; call before the control plane starts."""
        if self._node_ca is None:
            self._node_ca = pki.CA("kitpin-node-ca")
            self._node_ca.write(self.layout.pki, "node-ca")
            self._node_ca.client_cert(KUBELET_CLIENT_USER).write(
                self.layout.pki, "apiserver-kubelet-client"
            )
        p = self.layout.pki
        flags = [
            f"--kubelet-certificate-authority={p / 'node-ca.crt'}",
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
        ]
        if self.address is not None:
            # Services to their endpoints: no kube-proxy routes a cluster IP here.
            flags.append("--enable-aggregator-routing=true")
        return flags

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, cp: ControlPlane, *, registry: str, kit: Path | None = None) -> Node:
        """Push the node's images to ``registry`` (``host:port``, plain HTTP), start
        containerd, the scheduler and the kubelet; return once the node is Ready.

        On failure everything started is stopped and cleaned up before the error propagates
        (the run dir is kept, for its logs)."""
        if self._node_ca is None:
            raise NodeError("call Node.apiserver_flags() before the control plane starts")
        t0 = time.monotonic()
        binaries = ensure_tools()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.layout.socket)) + len(".ttrpc") > 100:
            raise NodeError(f"run dir {self.run_dir} too long for containerd's socket path")
        try:
            self._record_state()
            if self.address is not None:
                _add_loopback_address(self.layout, self.address)
            t = time.monotonic()
            self.images = images.push_node_images(registry, kit=kit)
            self.startup_seconds["images"] = time.monotonic() - t
            self._make_cgroups()
            t = time.monotonic()
            self._start_containerd(binaries, registry)
            self.startup_seconds["containerd"] = time.monotonic() - t
            t = time.monotonic()
            cp.kubectl("apply", "-f", "-", input=json.dumps(RBAC))
            self._start_scheduler(cp, binaries)
            self.startup_seconds["kube-scheduler"] = time.monotonic() - t
            t = time.monotonic()
            self._start_kubelet(cp, binaries)
            self.wait_ready(cp)
            self.startup_seconds["kubelet"] = time.monotonic() - t
        except BaseException as e:
            try:
                self.stop(keep_run_dir=True)
            except NodeError as stop_error:
                e.add_note(str(stop_error))
            raise
        self.startup_seconds["total"] = time.monotonic() - t0
        return self

    def stop(self, *, keep_run_dir: bool = False) -> None:
        """Stop the kubelet and the scheduler, kill every container, stop containerd and its
        shims, unmount, remove the cgroups, put back what the node changed (module
        docstring); idempotent. A run dir this object created is removed unless
        ``keep_run_dir``. Raises :class:`NodeError` naming what could not be cleaned up."""
        errors: list[str] = []
        for proc in (self.kubelet, self.scheduler):
            if proc is not None:
                try:
                    proc.stop(grace=STOP_GRACE)
                except BaseException as e:  # keep cleaning up
                    errors.append(f"stopping {proc.name}: {e}")
        errors += _kill_cgroups(self.cgroup_root)
        if self.containerd is not None:
            try:
                self.containerd.stop(grace=STOP_GRACE)
            except BaseException as e:
                errors.append(f"stopping containerd: {e}")
        if self.layout.state_file.exists():
            errors += _cleanup(self.layout)
        if self._own_run_dir and not keep_run_dir and not errors:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if errors:
            raise NodeError("node clean-up incomplete:\n  " + "\n  ".join(errors))

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- components --------------------------------------------------------------------

    def _record_state(self) -> None:
        """``node.json``: what :func:`cleanup` needs, written before anything starts."""
        state = {
            "cgroup_root": self.cgroup_root,
            "socket": str(self.layout.socket),
            "processes": [],
            "sysctls": _read_sysctls(),
            "created": [
                str(d)
                for d in (CONTAINER_LOGS_DIR, SHIM_SOCKET_DIR, SHIM_SOCKET_DIR.parent)
                if not d.exists()
            ],
            "loopback_addresses": [],
        }
        self.layout.state_file.write_text(json.dumps(state, indent=2) + "\n")

    def _started(self, process: procs.Process) -> procs.Process:
        """Start ``process`` and record it in ``node.json`` (:func:`cleanup` stops it)."""
        process.start()
        state = json.loads(self.layout.state_file.read_text())
        state["processes"].append(
            {"name": process.name, "pid": process.pid, "binary": process.argv[0]}
        )
        self.layout.state_file.write_text(json.dumps(state, indent=2) + "\n")
        return process

    def _make_cgroups(self) -> None:
        """``cgroupRoot`` in every hierarchy (the kubelet requires it to exist); cpuset's
        cpus and mems copied from the top so that tasks may join."""
        for hierarchy in cgroup_hierarchies():
            path = hierarchy / self.cgroup_root.lstrip("/")
            path.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                source, target = hierarchy / name, path / name
                if source.exists() and target.exists() and not target.read_text().strip():
                    target.write_text(source.read_text())

    def _start_containerd(self, binaries: dict[str, Path], registry: str) -> None:
        assert self.images is not None
        layout = self.layout
        root, state = layout.containerd / "root", layout.containerd / "state"
        cni_conf = layout.run_dir / "cni"
        certs = layout.run_dir / "certs.d"
        for d in (root, state, cni_conf, certs / registry):
            d.mkdir(parents=True, exist_ok=True)
        # Loopback only: containerd reports its network ready, and a Pod without
        # hostNetwork would get a network namespace holding nothing but `lo`.
        (cni_conf / "10-loopback.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "kitpin-loopback",
                    "plugins": [{"type": "loopback"}],
                }
            )
        )
        (certs / registry / "hosts.toml").write_text(
            f'server = "http://{registry}"\n\n'
            f'[host."http://{registry}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        )
        self.snapshotter = "overlayfs" if _overlay_works(layout.containerd) else "native"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = textwrap.dedent(
            f"""\
            version = 2
            root = "{root}"
            state = "{state}"
            disabled_plugins = [
              "io.containerd.snapshotter.v1.aufs",
              "io.containerd.snapshotter.v1.btrfs",
              "io.containerd.snapshotter.v1.devmapper",
              "io.containerd.snapshotter.v1.zfs",
              "io.containerd.tracing.processor.v1.otlp",
            ]

            [grpc]
              address = "{layout.socket}"

            [plugins."io.containerd.internal.v1.opt"]
              path = "{layout.containerd / "opt"}"

            [{cri}]
              sandbox_image = "{self.images.pause}"
              stream_server_address = "127.0.0.1"
              stream_server_port = "0"
              enable_selinux = false
              disable_apparmor = true
              restrict_oom_score_adj = true

            [{cri}.containerd]
              snapshotter = "{self.snapshotter}"
              default_runtime_name = "runc"

            [{cri}.containerd.runtimes.runc]
              runtime_type = "io.containerd.runc.v2"

            [{cri}.containerd.runtimes.runc.options]
              SystemdCgroup = false
              BinaryName = "{binaries["runc"]}"
              Root = "{layout.containerd / "runc"}"

            [{cri}.cni]
              bin_dir = "{CNI_BIN_DIR}"
              conf_dir = "{cni_conf}"

            [{cri}.registry]
              config_path = "{certs}"
            """
        )
        config_file = layout.containerd / "config.toml"
        config_file.write_text(config)
        self.containerd = self._started(
            procs.Process(
                "containerd",
                [str(binaries["containerd"]), "--config", str(config_file)],
                log_dir=self.log_dir,
            )
        )
        containerd = self.containerd
        procs.wait_until(
            lambda: not containerd.alive() or layout.socket.is_socket(),
            timeout=self.timeout,
            what="containerd's socket",
            on_timeout=self.logs,
        )
        containerd.check_alive()

    def _start_scheduler(self, cp: ControlPlane, binaries: dict[str, Path]) -> None:
        cert, key = _client_certificate(
            cp,
            name="scheduler",
            common_name=SCHEDULER_USER,
            groups=(),
            signer="kubernetes.io/kube-apiserver-client",
        )
        kubeconfig = write_kubeconfig(
            self.run_dir / "kube-scheduler.kubeconfig",
            server=cp.url,
            ca_pem=cp.ca.cert.read_bytes(),
            cert_pem=cert,
            key_pem=key,
            user=SCHEDULER_USER,
        )
        self.scheduler = self._started(
            procs.Process(
                "kube-scheduler",
                [
                    str(binaries["kube-scheduler"]),
                    f"--kubeconfig={kubeconfig}",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    "--secure-port=0",
                ],
                log_dir=self.log_dir,
            )
        )

    def _start_kubelet(self, cp: ControlPlane, binaries: dict[str, Path]) -> None:
        layout = self.layout
        assert self._node_ca is not None
        ips = (NODE_NAME,) if self.address is None else (NODE_NAME, self.address)
        serving = self._node_ca.server_cert(
            dns_names=("localhost",), ips=ips, common_name=f"kubelet@{NODE_NAME}"
        ).write(layout.pki, "kubelet-serving")
        cert, key = _client_certificate(
            cp,
            name="kubelet",
            common_name=f"system:node:{NODE_NAME}",
            groups=("system:nodes",),
            signer="kubernetes.io/kube-apiserver-client-kubelet",
        )
        kubeconfig = write_kubeconfig(
            self.run_dir / "kubelet.kubeconfig",
            server=cp.url,
            ca_pem=cp.ca.cert.read_bytes(),
            cert_pem=cert,
            key_pem=key,
            user=f"system:node:{NODE_NAME}",
        )
        for d in (layout.kubelet, layout.pod_logs, layout.bin):
            d.mkdir(parents=True, exist_ok=True)
        for name in ("iptables", "ip6tables"):
            shim = layout.bin / name
            shim.write_text(f"#!/bin/sh\necho '{name}: disabled for the kitpin node' >&2\nexit 2\n")
            shim.chmod(0o755)
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": procs.free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": procs.free_port(),
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(layout.pki / "node-ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{layout.socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failCgroupV1": False,
            "failSwapOn": False,
            "podLogsDir": str(layout.pod_logs),
            "volumePluginDir": str(layout.kubelet / "volume-plugins"),
            "resolvConf": "/etc/resolv.conf",
            "maxPods": 30,
            "shutdownGracePeriod": "0s",
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "registerNode": True,
            "enableDebuggingHandlers": True,  # logs and exec through the apiserver
        }
        config_file = self.run_dir / "kubelet-config.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        env = dict(os.environ)
        env["PATH"] = f"{layout.bin}:{env.get('PATH', '/usr/bin:/bin')}:/usr/sbin:/sbin"
        self.kubelet = self._started(
            procs.Process(
                "kubelet",
                [
                    str(binaries["kubelet"]),
                    f"--config={config_file}",
                    f"--kubeconfig={kubeconfig}",
                    f"--root-dir={layout.kubelet}",
                    f"--cert-dir={layout.kubelet / 'pki'}",
                    f"--hostname-override={NODE_NAME}",
                    *([f"--node-ip={self.address}"] if self.address else []),
                    "--v=1",
                ],
                log_dir=self.log_dir,
                env=env,
            )
        )

    def wait_ready(self, cp: ControlPlane) -> None:
        """Until the node is Ready and has no taints (the node lifecycle controller lifts
        ``not-ready`` once the kubelet reports Ready)."""

        def ready() -> bool:
            if any(not p.alive() for p in self.processes):
                return True  # fail fast below, with the log
            out = cp.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
            if out.returncode != 0:
                return False
            node = json.loads(out.stdout)
            conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            return conditions.get("Ready") == "True" and not node["spec"].get("taints")

        procs.wait_until(
            ready, timeout=self.timeout, what=f"node {NODE_NAME} Ready", on_timeout=self.logs
        )
        for p in self.processes:
            p.check_alive()


# ---------------------------------------------------------------------------- workloads

UNPACK_SCRIPT = 'exec kit unpack "$MODELKIT_REF" -d "$UNPACK_PATH" --plain-http --progress none'
"""The init container's command (the kit image): unpack the (pinned) ``MODELKIT_REF``."""
HASH_SCRIPT = (
    'cd "$UNPACK_PATH" && find . -type f ! -name Kitfile | sort | xargs sha256sum; '
    'trap "exit 0" TERM; sleep 2147483647 & wait'
)
"""The app container's command (the busybox image): print the ``sha256sum`` of every file
kit unpacked (the Kitfile aside: kit rewrites it), then wait for SIGTERM."""


def run_on_node(pod_spec: dict[str, Any], node_images: images.NodeImages) -> dict[str, Any]:
    """A copy of ``pod_spec`` (a Pod's or a template's ``spec`` whose first init container
    unpacks ``MODELKIT_REF`` into a volume mounted in its first container, like
    ``examples/deployment.yaml``) that runs on the node: host network, the init container
    running :data:`UNPACK_SCRIPT` in the kit image, the first container :data:`HASH_SCRIPT`
    in busybox. ``UNPACK_PATH`` is set in both (``/models`` unless the init container sets
    it). The ``MODELKIT_REF`` variable, what kitpin pins, is left as it is."""
    if node_images.kit is None:
        raise NodeError("the node has no kit image: start it with kit=<path of kit>")
    spec: dict[str, Any] = json.loads(json.dumps(pod_spec))  # a deep copy
    spec["hostNetwork"] = True
    spec["terminationGracePeriodSeconds"] = 2
    init = spec["initContainers"][0]
    env = init.setdefault("env", [])
    path = next((e["value"] for e in env if e["name"] == "UNPACK_PATH"), "/models")
    if all(e["name"] != "UNPACK_PATH" for e in env):
        env.append({"name": "UNPACK_PATH", "value": path})
    init.update(image=node_images.kit, command=["/bin/sh", "-c", UNPACK_SCRIPT])
    init.pop("args", None)
    app = spec["containers"][0]
    app.update(image=node_images.busybox, command=["/bin/sh", "-c", HASH_SCRIPT])
    app.pop("args", None)
    app["env"] = [*app.get("env", []), {"name": "UNPACK_PATH", "value": path}]
    return spec


def parse_sha256sum(text: str) -> dict[str, str]:
    """``{path: hex}`` from ``sha256sum`` output (``<hex>  ./path``)."""
    hashes: dict[str, str] = {}
    for line in text.splitlines():
        digest, _, path = line.strip().partition("  ")
        if len(digest) == 64 and path:
            hashes[path.removeprefix("./")] = digest
    return hashes


def unpacked_hashes(cp: ControlPlane, namespace: str, pod: str, container: str) -> dict[str, str]:
    """What a :func:`run_on_node` Pod's app container printed: ``{path: sha256 hex}`` of
    every file kit unpacked, read through the apiserver (kubectl logs → kubelet)."""
    out = cp.kubectl("logs", "-n", namespace, pod, "-c", container)
    return parse_sha256sum(out.stdout)


def running_pods(cp: ControlPlane, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The Pods matching ``selector`` whose containers are all ready (init done)."""
    out = cp.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
    pods: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running"
        and p["metadata"].get("deletionTimestamp") is None
        and all(c.get("ready") for c in p["status"].get("containerStatuses", []))
    ]


def wait_running(
    cp: ControlPlane, namespace: str, selector: str, count: int, *, timeout: float = 120.0
) -> list[dict[str, Any]]:
    """Until ``count`` Pods matching ``selector`` run (:func:`running_pods`); those Pods.
    On timeout the error carries the Pods' states and events."""

    def enough() -> list[dict[str, Any]] | None:
        pods = running_pods(cp, namespace, selector)
        return pods if len(pods) >= count else None

    def describe() -> str:
        return cp.kubectl("describe", "pods", "-n", namespace, "-l", selector, check=False).stdout

    found = procs.wait_until(
        enough,
        timeout=timeout,
        what=f"{count} running Pods {selector} in {namespace}",
        on_timeout=describe,
    )
    assert isinstance(found, list)
    return found


# ---------------------------------------------------------------------------- clean-up


def cleanup(run_dir: Path) -> None:
    """Undo a node whose processes are gone or going (``make dev-down``): kill what is left
    in its cgroups and its shims, unmount, remove its cgroups and host files, restore the
    sysctls. Does nothing without ``<run_dir>/node.json``. Raises :class:`NodeError` naming
    what it could not clean up."""
    layout = Layout(run_dir=Path(run_dir).resolve())
    if not layout.state_file.exists():
        return
    state = json.loads(layout.state_file.read_text())
    recorded = {p["name"]: p for p in state.get("processes", [])}
    for name in ("kubelet", "kube-scheduler"):
        if name in recorded:
            _stop_recorded(recorded[name])
    errors = _kill_cgroups(state["cgroup_root"])
    if "containerd" in recorded:
        _stop_recorded(recorded["containerd"])
    errors += _cleanup(layout)
    if errors:
        raise NodeError("node clean-up incomplete:\n  " + "\n  ".join(errors))


def _stop_recorded(process: dict[str, Any]) -> None:
    """SIGTERM the process group a recorded process leads, SIGKILL after a grace period;
    nothing when its pid no longer runs the recorded binary (a recycled pid)."""
    pid, binary = int(process["pid"]), str(process["binary"])

    def running() -> bool:
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, IndexError):
            return False
        return argv0 == binary and _process_running(pid)

    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not running():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + STOP_GRACE
        while running() and time.monotonic() < deadline:
            time.sleep(0.05)


def _cgroup_dirs(cgroup_root: str) -> Iterator[Path]:
    """Every cgroup directory of the node, deepest first."""
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / cgroup_root.lstrip("/")
        if top.is_dir():
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                yield Path(dirpath)


def _cgroup_pids(cgroup_root: str) -> set[int]:
    pids: set[int] = set()
    for d in _cgroup_dirs(cgroup_root):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
    return pids


def _kill_cgroups(cgroup_root: str, timeout: float = 20.0) -> list[str]:
    """SIGKILL every process in the node's cgroups (the containers) until none is left."""
    deadline = time.monotonic() + timeout
    while pids := _cgroup_pids(cgroup_root):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return [f"processes still in cgroup {cgroup_root}: {sorted(pids)}"]
        time.sleep(0.1)
    return []


def shims(socket: str) -> list[tuple[int, str]]:
    """(pid, id) of the containerd shims serving the containerd at ``socket``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if not args or not Path(args[0]).name.startswith("containerd-shim"):
            continue
        opts = dict(zip(args[1::2], args[2::2], strict=False))
        if opts.get("-address") == socket:
            found.append((int(entry.name), opts.get("-id", "")))
    return found


def _process_running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def _loopback_addresses() -> set[str]:
    done = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True
    )
    return {line.split()[3] for line in done.stdout.splitlines() if " inet " in line}


def _add_loopback_address(layout: Layout, address: str) -> None:
    """``address``/32 on ``lo``, recorded in ``node.json`` (:func:`_cleanup` removes it) unless
    it was there already (then it is not the node's to remove)."""
    cidr = f"{address}/32"
    if cidr in _loopback_addresses():
        return
    state = json.loads(layout.state_file.read_text())
    state["loopback_addresses"].append(cidr)
    layout.state_file.write_text(json.dumps(state, indent=2) + "\n")
    done = subprocess.run(
        ["ip", "addr", "add", cidr, "dev", "lo"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise NodeError(f"ip addr add {cidr} dev lo: {done.stderr.strip()}")


def _cleanup(layout: Layout) -> list[str]:
    """Everything after the processes: shims, mounts, cgroups, host files, sysctls, the
    loopback address."""
    state = json.loads(layout.state_file.read_text())
    errors: list[str] = []
    socket = state["socket"]
    # containerd's shims outlive containerd by design: find ours by their -address.
    found = shims(socket)
    for pid, _ in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_GRACE
    while any(_process_running(pid) for pid, _ in found) and time.monotonic() < deadline:
        time.sleep(0.05)
    for _, shim_id in found:
        digest = hashlib.sha256(os.path.join(socket, NAMESPACE, shim_id).encode()).hexdigest()
        for leftover in SHIM_SOCKET_DIR.glob(f"{digest}*"):
            leftover.unlink(missing_ok=True)
    # Mounts under the run dir (Pod volumes, container root filesystems), deepest first.
    root = str(layout.run_dir)
    points = sorted(
        {p for p, _ in mounts() if p == root or p.startswith(root + "/")},
        key=lambda p: -p.count("/"),
    )
    for point in points:
        done = subprocess.run(["umount", point], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lazy = subprocess.run(["umount", "-l", point], capture_output=True, text=True)
            if lazy.returncode != 0:
                errors.append(f"umount {point}: {done.stderr.strip()} / {lazy.stderr.strip()}")
    for d in _cgroup_dirs(state["cgroup_root"]):
        try:
            d.rmdir()
        except OSError as e:
            errors.append(f"rmdir {d}: {e}")
    # The kubelet's symlinks in /var/log/containers point into the run dir's pod logs.
    if CONTAINER_LOGS_DIR.is_dir():
        for link in CONTAINER_LOGS_DIR.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(root + "/"):
                link.unlink(missing_ok=True)
    for created in state.get("created", []):
        with contextlib.suppress(OSError):  # not empty: another node uses it
            Path(created).rmdir()
    for key, value in state.get("sysctls", {}).items():
        path = Path("/proc/sys", key)
        try:
            if path.read_text().strip() != value:
                path.write_text(value)
        except OSError as e:
            errors.append(f"restoring sysctl {key}={value}: {e}")
    for cidr in state.get("loopback_addresses", []):
        if cidr in _loopback_addresses():
            done = subprocess.run(
                ["ip", "addr", "del", cidr, "dev", "lo"], capture_output=True, text=True
            )
            if done.returncode != 0:
                errors.append(f"ip addr del {cidr} dev lo: {done.stderr.strip()}")
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.node cleanup RUN_DIR``: :func:`cleanup` by hand (as root), for a
    node whose owner died before it could stop it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.node")
    parser.add_argument("command", choices=["cleanup"])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        cleanup(args.run_dir)
    except NodeError as e:
        print(e)
        return 1
    print(f"node in {args.run_dir} cleaned up")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
