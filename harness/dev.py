"""A long-lived local environment for humans: ``make dev-up`` / ``make dev-down``.

    python -m harness.dev up       # control plane + plain-HTTP registry, detached
    python -m harness.dev up --node  # ... and a node: Pods run (make dev-up NODE=1, docs/node.md)
    python -m harness.dev status   # exit 0 when everything is up
    python -m harness.dev down     # stop everything, remove the state (logs are kept)

State lives in ``$KITPIN_DEV_DIR`` (default ``<repo>/.dev``)::

    state.json      pids, binaries, endpoints
    env             `export KUBECONFIG=...`, `export KITPIN_REGISTRY=127.0.0.1:PORT` and
                    `export PATH=...` with the pinned kubectl and helm (tools cache) first
    controlplane/   etcd data, PKI, kubeconfig
    registry/       registry config, storage and log (the log is kept in logs/ by `down`)
    node/           with --node: containerd and kubelet state (harness/node.py); `down` kills
                    its containers, unmounts and restores what the node changed on the host
    logs/           one log per component (appended to across runs; kept by `down`)

``kitpin run --dev`` reads the same ``env``: the registry (trusted over plain HTTP) and, when
``$KUBECONFIG`` is unset, the kubeconfig, so it needs no ``. .dev/env`` first.

The processes run in their own sessions, so they outlive the command that started them;
``down`` stops each recorded process group (after checking the pid still runs the recorded
binary, so a recycled pid is never signalled).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness import kit as harness_kit
from harness import node as harness_node
from harness import procs, tools
from harness.controlplane import ControlPlane
from harness.registry import RegistryServer

REPO_ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE = 10.0


def dev_dir() -> Path:
    """``$KITPIN_DEV_DIR`` or ``<repo>/.dev``, absolute."""
    return Path(os.environ.get("KITPIN_DEV_DIR") or REPO_ROOT / ".dev").resolve()


# -- registry ------------------------------------------------------------------------------


def start_registry(directory: Path) -> tuple[procs.Process, str]:
    """Start a plain-HTTP registry (:class:`RegistryServer`, storage under ``directory``);
    return its process and ``host:port``."""
    server = RegistryServer(workdir=directory).start()
    # RegistryServer has no public handle on its process yet; dev needs the pid to record.
    process = server._process
    assert process is not None
    return process, server.host


# -- recorded processes --------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _running(pid: int, binary: str) -> bool:
    """True when ``pid`` is alive and still runs ``binary`` (not a recycled pid)."""
    cmd = _cmdline(pid)
    return bool(cmd) and cmd[0] == binary


def _stop_group(pid: int, binary: str) -> None:
    """SIGTERM the process group ``pid`` leads, SIGKILL after a grace period."""
    if not _running(pid, binary):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while _running(pid, binary) and time.monotonic() < deadline:
        time.sleep(0.05)  # a process we did not spawn: no wait() handle to block on
    if _running(pid, binary):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _load_state(directory: Path) -> dict[str, object] | None:
    try:
        state: dict[str, object] = json.loads((directory / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return state


def _components(state: dict[str, object]) -> list[dict[str, object]]:
    items = state.get("processes")
    return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []


def _alive(component: dict[str, object]) -> bool:
    pid, binary = component.get("pid"), component.get("binary")
    return isinstance(pid, int) and isinstance(binary, str) and _running(pid, binary)


def _stop_recorded(state: dict[str, object]) -> None:
    # Reverse start order: registry, kube-controller-manager, kube-apiserver, etcd.
    for component in reversed(_components(state)):
        pid, binary = component.get("pid"), component.get("binary")
        if isinstance(pid, int) and isinstance(binary, str):
            _stop_group(pid, binary)


def _cleanup_node(directory: Path) -> None:
    """With ``--node``: what :func:`harness_node.cleanup` undoes (containers, mounts,
    cgroups, host files), before the node's directory is removed. Nothing otherwise."""
    if (directory / "node" / "node.json").exists():
        try:
            harness_node.cleanup(directory / "node")
        except harness_node.NodeError as e:
            print(f"{e}\nnot removing {directory / 'node'}", file=sys.stderr)
            raise


def _clear(directory: Path) -> None:
    """Remove everything in ``directory`` except ``logs/``; logs kept elsewhere (the
    registry's, in its work dir) are appended to ``logs/<name>`` first."""
    if not directory.is_dir():
        return
    logs = directory / "logs"
    for stray in directory.glob("*/*.log"):
        if stray.parent != logs:
            logs.mkdir(exist_ok=True)
            with open(logs / stray.name, "ab") as kept:
                kept.write(stray.read_bytes())
    for entry in directory.iterdir():
        if entry.name == "logs":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


# -- commands ------------------------------------------------------------------------------


def _usage(directory: Path, state: dict[str, object]) -> str:
    env = directory / "env"
    try:
        shown = env.relative_to(Path.cwd())
    except ValueError:
        shown = env
    node = state.get("node")
    on_node = (
        f"node {node.get('name')}: Pods with hostNetwork: true run (docs/node.md)\n"
        if isinstance(node, dict)
        else ""
    )
    return (
        f"kube-apiserver {state.get('apiserver')}, registry {state.get('registry')}\n"
        f"{on_node}"
        f"use it:  . {shown} && kubectl get ns\n"
        f"logs:    {directory / 'logs'}/\n"
        f"stop it: make dev-down  (python -m harness.dev down)"
    )


def up(directory: Path, *, node: bool = False) -> int:
    state = _load_state(directory)
    if state is not None:
        if all(_alive(c) for c in _components(state)):
            print(f"dev environment already up in {directory}")
            print(_usage(directory, state))
            return 0
        print("dev environment partly down: cleaning up and starting afresh", file=sys.stderr)
        _stop_recorded(state)
        _cleanup_node(directory)
        _clear(directory)

    binaries = tools.ensure(
        "etcd", "kube-apiserver", "kube-controller-manager", "registry", "kubectl", "helm"
    )
    directory.mkdir(parents=True, exist_ok=True)
    _cleanup_node(directory)
    _clear(directory)  # leftovers of a crashed `up` (etcd data, certs)
    log_dir = directory / "logs"
    started = time.monotonic()
    the_node = harness_node.Node(directory / "node", log_dir=log_dir) if node else None
    flags = the_node.apiserver_flags() if the_node is not None else ()
    cp = ControlPlane(directory / "controlplane", log_dir=log_dir, extra_apiserver_flags=flags)
    registry: procs.Process | None = None
    try:
        cp.start()
        registry, address = start_registry(directory / "registry")
        if the_node is not None:
            kit: Path | None = None
            with contextlib.suppress(harness_kit.KitNotFoundError):
                kit = harness_kit.find()  # the kit image only when there is a kit
            the_node.start(cp, registry=address, kit=kit)
    except BaseException as e:
        node_clean = True
        if the_node is not None:
            try:
                the_node.stop(keep_run_dir=True)
            except harness_node.NodeError as stop_error:
                node_clean = False
                print(
                    f"{stop_error}\nkept {directory}: `python -m harness.node cleanup "
                    f"{the_node.run_dir}` as root, then `make dev-down`",
                    file=sys.stderr,
                )
        cp.stop()
        if registry is not None:
            registry.stop()
        if node_clean:
            _clear(directory)
        print(f"dev-up failed: {e}", file=sys.stderr)
        if not isinstance(e, procs.HarnessError):
            raise
        return 1

    processes = [*cp.processes, registry]
    if the_node is not None:
        processes += the_node.processes
    state = {
        "processes": [
            {"name": p.name, "pid": p.pid, "binary": p.argv[0], "log": str(p.log_path)}
            for p in processes
        ],
        "apiserver": cp.url,
        "kubeconfig": str(cp.kubeconfig),
        "registry": address,
    }
    node_images = the_node.images.as_dict() if the_node and the_node.images else None
    if node_images is not None:
        state["node"] = {"name": harness_node.NODE_NAME, "images": node_images}
    (directory / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    (directory / "env").write_text(env_file(cp.kubeconfig, address, binaries, node_images))
    print(f"dev environment up in {time.monotonic() - started:.1f}s ({directory})")
    print(_usage(directory, state))
    return 0


def env_file(
    kubeconfig: Path,
    registry: str,
    binaries: Mapping[str, Path],
    node_images: Mapping[str, str] | None = None,
) -> str:
    """The text of ``<dev dir>/env``: the cluster, the registry, and the pinned kubectl and
    helm ahead of any others on ``PATH`` (the versions the tests use); with a node, the
    images it can run (``KITPIN_NODE_IMAGE_BUSYBOX``, ``..._KIT``: pinned references)."""
    dirs: list[str] = []
    for name in ("kubectl", "helm"):
        if name in binaries and str(binaries[name].parent) not in dirs:
            dirs.append(str(binaries[name].parent))
    path = ":".join([*(shlex.quote(d) for d in dirs), '"$PATH"'])
    text = (
        f"export KUBECONFIG={shlex.quote(str(kubeconfig))}\n"
        f"export KITPIN_REGISTRY={registry}\n"
        f"export PATH={path}\n"
    )
    for name, ref in (node_images or {}).items():
        text += f"export KITPIN_NODE_IMAGE_{name.upper()}={ref}\n"
    return text


def down(directory: Path) -> int:
    state = _load_state(directory)
    if state is None:
        return 0
    _stop_recorded(state)
    _cleanup_node(directory)
    _clear(directory)
    print(f"dev environment stopped; logs kept in {directory / 'logs'}/")
    return 0


def status(directory: Path) -> int:
    state = _load_state(directory)
    if state is None:
        print(f"dev environment not up ({directory})")
        return 1
    ok = True
    for c in _components(state):
        alive = _alive(c)
        ok = ok and alive
        print(
            f"{c.get('name')!s:24} pid {c.get('pid')!s:8} {'running' if alive else 'NOT RUNNING'}"
        )
    if ok:
        print(_usage(directory, state))
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.dev",
        description="Local control plane + registry for development ($KITPIN_DEV_DIR, .dev/).",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--node",
        action="store_true",
        help="up: also a node (kube-scheduler, kubelet, containerd): Pods run (docs/node.md)",
    )
    args = parser.parse_args(argv)
    directory = dev_dir()
    if args.command == "up":
        return up(directory, node=args.node)
    commands = {"down": down, "status": status}
    return commands[args.command](directory)


if __name__ == "__main__":
    sys.exit(main())
