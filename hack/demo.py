"""`make demo`: kitpin's main job, end to end, on an embedded default.

1. start a local control plane (etcd, kube-apiserver, kube-controller-manager) and a CNCF
   distribution registry, all on loopback;
2. pack a small ModelKit and push it as ``demo/llama:production``: with the real KitOps ``kit``
   CLI when one is found (``$KITPIN_KIT``, else ``kit`` on ``PATH``), else with the harness
   packer (``harness/modelkit.py``, which writes the same bytes); the demo prints which;
3. run kitpin (``kitpin run --dev``) and apply ``examples/`` with kubectl;
4. show what was applied next to what the apiserver stored, and the ReplicaSet and Pods the
   controller-manager made from it;
5. move the ``production`` tag to a new ModelKit, scale up, and show the workload stays pinned.

Everything is torn down at the end; ``KEEP=1`` keeps it running until Ctrl-C. Everything
the demo writes (etcd data, registry storage, logs, kitpin's dev certificates) lives in one
temporary directory, removed at the end whatever happened (a failure prints the logs first).

With a node (``harness/node.py``, docs/node.md: kube-scheduler, kubelet, containerd; needs
root and the real kit CLI) the Deployment's Pods run, their init container runs ``kit unpack``
of the reference kitpin pinned, and the demo prints the sha256 of the files each replica
unpacked (its app container's log, read through the apiserver and the kubelet) before and
after the tag moved. ``make demo`` (``--node=auto``) adds one when it can start at once: as
root, with the kit CLI and the node's tools already there (a warm machine: about 25 s in
all); otherwise it says why and runs without. ``NODE=1`` (``--node=on``) insists, building
and installing what the node needs; ``NODE=0`` (``--node=off``) never adds one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import yaml

from harness import kit as harness_kit
from harness import modelkit, procs, tools
from harness import node as harness_node
from harness.controlplane import ControlPlane
from harness.registry import RegistryServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NAMESPACE = "demo"
REPOSITORY, TAG = "demo/llama", "production"
KITPIN = ROOT / ".venv" / "bin" / "kitpin"

BOLD, DIM, GREEN, CYAN, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[36m", "\033[0m"
if not sys.stdout.isatty() or os.environ.get("NO_COLOR"):
    BOLD = DIM = GREEN = CYAN = RESET = ""


def step(text: str) -> None:
    print(f"\n{BOLD}==> {text}{RESET}", flush=True)


def short(digest: str) -> str:
    return digest[:19] + "…"


def side_by_side(rows: list[tuple[str, str, str]]) -> None:
    """what | applied | stored, wrapped to the terminal."""
    width = max(len(r[0]) for r in rows)
    for what, applied, stored in rows:
        print(f"  {CYAN}{what:<{width}}{RESET}  applied: {applied}")
        marker = GREEN if stored != applied else ""
        print(f"  {'':<{width}}  stored:  {marker}{stored}{RESET}")


def kubectl_json(cp: ControlPlane, *args: str) -> Any:
    return json.loads(cp.kubectl(*args, "-o", "json").stdout)


def render(path: Path, registry: str) -> str:
    return path.read_text().replace("${KITPIN_REGISTRY}", registry)


def find_kit(workdir: Path) -> tuple[harness_kit.Kit | None, str]:
    """The real kit (its home under ``workdir``) when one is found, and how the demo packs."""
    try:
        kit = harness_kit.Kit(workdir, path=harness_kit.find())
    except harness_kit.KitNotFoundError:
        return None, (
            "the harness packer (harness/modelkit.py): no kit CLI found "
            f"(set {harness_kit.ENV_VARIABLE} or put kit on PATH)"
        )
    return kit, f"the real kit CLI, version {kit.version()} ({kit.path})"


def pack_and_push(
    kit: harness_kit.Kit | None, registry: str, kitfile: dict[str, Any], *, seed: int, work: Path
) -> str:
    """Pack ``kitfile`` with files derived from ``seed`` and push it as ``demo/llama:production``
    (kit: ``kit pack`` + ``kit push --plain-http``); the manifest digest."""
    files = harness_kit.context_files(kitfile, seed=seed)
    if kit is None:
        return modelkit.push_modelkit(
            registry, REPOSITORY, TAG, kitfile=kitfile, files=files, fmt="kitops"
        )
    reference = f"{registry}/{REPOSITORY}:{TAG}"
    kit.pack(harness_kit.write_context(work / f"modelkit-{seed}", kitfile, files), reference)
    return kit.push(reference)


def start_kitpin(cp: ControlPlane, registry: str, log_dir: Path) -> procs.Process:
    port = procs.free_port()
    env = dict(os.environ)
    env["KUBECONFIG"] = str(cp.kubeconfig)
    env["KITPIN_DEV_DIR"] = str(log_dir / "no-dev-env")  # never pick up a developer's .dev
    env["TMPDIR"] = str(log_dir)  # kitpin's dev certificates: inside the demo's directory too
    process = procs.Process(
        "kitpin",
        [
            str(KITPIN),
            "run",
            "--dev",
            "--port",
            str(port),
            "--plain-http-registry",
            registry,
        ],
        log_dir=log_dir,
        env=env,
    ).start()
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE

    def ready() -> bool:
        process.check_alive()
        return procs.http_ok(f"https://127.0.0.1:{port}/readyz", ssl_context=insecure)

    procs.wait_until(ready, timeout=60, what="kitpin's /readyz", on_timeout=process.log_tail)

    # The webhook configurations are written by kopf right after start-up; wait until an
    # admission really goes through kitpin (a server-side dry run of a pinned Pod).
    probe = textwrap.dedent(
        f"""
        apiVersion: v1
        kind: Pod
        metadata: {{name: kitpin-probe, namespace: {NAMESPACE}}}
        spec:
          containers:
            - name: c
              image: busybox
              env: [{{name: MODELKIT_REF, value: "{registry}/demo/llama:production"}}]
        """
    )

    def admitting() -> bool:
        process.check_alive()
        out = cp.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=probe)
        return "@sha256:" in out.stdout

    procs.wait_until(
        admitting, timeout=60, what="kitpin to answer admissions", on_timeout=process.log_tail
    )
    return process


# -- NODE=1: the Pods run ------------------------------------------------------------------


def node_manifest(text: str, node: harness_node.Node) -> str:
    """``examples/deployment.yaml`` made to run on the node: the kit image unpacks the
    pinned ModelKit, busybox prints the sha256 of every file (:func:`harness_node.run_on_node`)."""
    assert node.images is not None
    doc = yaml.safe_load(text)
    template = doc["spec"]["template"]
    template["spec"] = harness_node.run_on_node(template["spec"], node.images)
    return yaml.safe_dump(doc, sort_keys=False)


def show_unpacked(cp: ControlPlane, count: int) -> dict[str, dict[str, str]]:
    """Wait for ``count`` running replicas; print and return what each unpacked."""
    pods = harness_node.wait_running(cp, NAMESPACE, "app=llama", count)
    seen: dict[str, dict[str, str]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"]):
        name = pod["metadata"]["name"]
        ref = pod["spec"]["initContainers"][0]["env"][0]["value"]
        seen[name] = harness_node.unpacked_hashes(cp, NAMESPACE, name, "server")
        print(f"  Pod {name}  kit unpack {ref.rsplit('/', 1)[-1][:40]}…")
        for path, digest in seen[name].items():
            print(f"      {digest[:16]}…  {path}")
    return seen


def expected_hashes(kitfile: dict[str, Any], seed: int) -> dict[str, str]:
    files = harness_kit.context_files(kitfile, seed=seed)
    return {
        path: modelkit.sha256_digest(data).removeprefix("sha256:") for path, data in files.items()
    }


def node_wanted(mode: str) -> bool:
    """``on``/``off`` as asked; ``auto``: a node when one starts at once (root, the kit CLI and
    the node's tools already here), else a line saying why not and how."""
    if mode != "auto":
        return mode == "on"
    why = harness_node.why_not_ready()
    if why is None and harness_kit.why_absent() is not None:
        why = f"no kit CLI: {harness_kit.why_absent()}"
    if why is not None:
        print(f"demo: without a node (Pods stay Pending): {why}; `make demo NODE=1` insists")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.demo", description="make demo")
    parser.add_argument(
        "--node",
        choices=("auto", "on", "off"),
        default="auto",
        help="a node, so that Pods run and kit unpacks: auto (when it can start at once), "
        "on (make demo NODE=1), off (NODE=0)",
    )
    mode = parser.parse_args(argv).node
    started = time.monotonic()
    tools.ensure("kube-apiserver", "kube-controller-manager", "etcd", "registry")
    on_node = node_wanted(mode)
    work = Path(tempfile.mkdtemp(prefix="kitpin-demo-"))
    keep = os.environ.get("KEEP") == "1"
    kitpin: procs.Process | None = None
    node = harness_node.Node(work / "node", log_dir=work / "logs") if on_node else None
    cp = ControlPlane(
        run_dir=work / "controlplane",
        extra_apiserver_flags=node.apiserver_flags() if node is not None else (),
    )
    registry_server = RegistryServer(workdir=work / "registry")
    node_clean = True
    try:
        step("Starting a local control plane (etcd, kube-apiserver, kube-controller-manager)")
        cp.start()
        registry_server.start()
        registry = registry_server.host
        total = max(cp.startup_seconds.values(), default=0.0)  # cumulative per component
        print(f"  control plane ready in {total:.1f}s; registry at {registry}")

        kit, packer = find_kit(work / "kit")
        if node is not None:
            step("Starting a node (containerd, kube-scheduler, kubelet; images from the registry)")
            if kit is None:
                raise procs.HarnessError(
                    f"NODE=1 runs the real kit in the Pods: {packer.split(': ', 1)[-1]}"
                )
            node.start(cp, registry=registry, kit=kit.path)
            assert node.images is not None
            print(
                f"  node {harness_node.NODE_NAME} Ready in {node.startup_seconds['total']:.1f}s "
                f"({node.snapshotter} snapshotter); images assembled and pushed:"
            )
            for name, ref in node.images.as_dict().items():
                print(f"    {name:8} {ref}")

        step("Packing a ModelKit and pushing it as demo/llama:production")
        print(f"  packing with {packer}")
        kitfile = modelkit.default_kitfile()
        first = pack_and_push(kit, registry, kitfile, seed=1, work=work)
        print(f"  {registry}/demo/llama:production -> {first}")

        step("Starting kitpin (kitpin run --dev: webhooks on 127.0.0.1, kopf-managed configs)")
        cp.kubectl("create", "namespace", NAMESPACE)
        procs.wait_until(
            lambda: (
                cp.kubectl("get", "sa", "default", "-n", NAMESPACE, check=False).returncode == 0
            ),
            timeout=30,
            what="the demo namespace's default ServiceAccount",
        )
        cp.kubectl("apply", "-f", str(EXAMPLES / "kserve-crd-subset.yaml"))
        procs.wait_until(
            lambda: cp.kubectl("get", "inferenceservices", "-A", check=False).returncode == 0,
            timeout=30,
            what="the InferenceService CRD to be served",
        )
        kitpin = start_kitpin(cp, registry, work / "logs")
        print("  kitpin is admitting")

        step("kubectl apply -f examples/deployment.yaml -f examples/inferenceservice.yaml")
        for name in ("deployment.yaml", "inferenceservice.yaml"):
            text = render(EXAMPLES / name, registry)
            if node is not None and name == "deployment.yaml":
                text = node_manifest(text, node)
                print("  (on the node: the kit image unpacks MODELKIT_REF, busybox hashes it)")
            result = cp.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=text)
            print("  " + result.stdout.strip())

        applied_ref = f"{registry}/demo/llama:production"
        deploy = kubectl_json(cp, "get", "deployment", "llama", "-n", NAMESPACE)
        isvc = kubectl_json(cp, "get", "inferenceservice", "llama", "-n", NAMESPACE)
        env = deploy["spec"]["template"]["spec"]["initContainers"][0]["env"][0]["value"]
        uri = isvc["spec"]["predictor"]["model"]["storageUri"]

        step("What was applied, and what the apiserver stored")
        side_by_side(
            [
                ("Deployment MODELKIT_REF", applied_ref, env),
                ("InferenceService storageUri", f"kit://{applied_ref}", uri),
            ]
        )
        annotation = json.loads(deploy["metadata"]["annotations"]["kitpin.dev/pinned"])
        print("\n  annotation kitpin.dev/pinned on the Deployment:")
        print(textwrap.indent(json.dumps(annotation, indent=2), "    "))

        def pods() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = kubectl_json(
                cp, "get", "pods", "-n", NAMESPACE, "-l", "app=llama"
            )["items"]
            return items

        def show_children(expected_pods: int) -> None:
            procs.wait_until(
                lambda: len(pods()) >= expected_pods,
                timeout=60,
                what=f"{expected_pods} Pods from the controller-manager",
            )
            replicasets = kubectl_json(cp, "get", "rs", "-n", NAMESPACE, "-l", "app=llama")["items"]
            for rs in replicasets:
                ref = rs["spec"]["template"]["spec"]["initContainers"][0]["env"][0]["value"]
                print(f"  ReplicaSet {rs['metadata']['name']:<28} {ref}")
            for pod in pods():
                ref = pod["spec"]["initContainers"][0]["env"][0]["value"]
                print(f"  Pod        {pod['metadata']['name']:<28} {ref}")
            print(f"  ReplicaSets: {len(replicasets)}")

        if node is None:
            step("The ReplicaSet and Pods the controller-manager made (no scheduler: Pending)")
            show_children(2)
        else:
            step("The ReplicaSet and Pods the controller-manager made, running on the node")
            show_children(2)
            step("What each replica's kit unpacked (sha256 from its log: apiserver -> kubelet)")
            before = show_unpacked(cp, 2)

        step("Moving the production tag to a new ModelKit in the registry")
        second = pack_and_push(kit, registry, kitfile, seed=2, work=work)
        resolved = subprocess.run(
            [str(KITPIN), "resolve", "--plain-http", applied_ref],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"  the tag now points at {second}")
        print(f"  kitpin resolve {applied_ref}\n    -> {resolved}")

        step("kubectl scale deployment llama --replicas=3: the new Pod still runs the old digest")
        cp.kubectl("scale", "deployment", "llama", "-n", NAMESPACE, "--replicas=3")
        show_children(3)
        refs = {p["spec"]["initContainers"][0]["env"][0]["value"] for p in pods()}
        assert refs == {f"{applied_ref}@{first}"}, refs
        if node is not None:
            step("What each replica's kit unpacked after the tag moved")
            after = show_unpacked(cp, 3)
            wanted = expected_hashes(kitfile, seed=1)
            moved = expected_hashes(kitfile, seed=2)
            new_pods = set(after) - set(before)
            assert new_pods and all(h == wanted for h in after.values()), after
            print(
                f"\n  {len(after)} replicas (new: {', '.join(sorted(new_pods))}) unpacked the "
                f"same {len(wanted)} files, byte for byte the first ModelKit's;"
            )
            print(
                "  the moved tag serves other bytes, e.g. "
                f"{next(iter(moved))} {moved[next(iter(moved))][:16]}… "
                f"(pinned: {wanted[next(iter(wanted))][:16]}…)"
            )
        print(
            f"\n{BOLD}{GREEN}Every replica runs {short(first)} although the tag moved to "
            f"{short(second)}.{RESET}"
        )
        print(f"{DIM}demo finished in {time.monotonic() - started:.0f}s{RESET}")

        if keep:
            print(f"\nKEEP=1: still running. KUBECONFIG={cp.kubeconfig}  registry={registry}")
            print("Press Ctrl-C to tear everything down.")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    except procs.HarnessError as e:
        print(f"\ndemo failed: {e}", file=sys.stderr)
        if kitpin is not None:
            print(kitpin.log_tail(), file=sys.stderr)
        print(cp.logs(), file=sys.stderr)
        if node is not None:
            print(node.logs(), file=sys.stderr)
        return 1
    finally:
        step("Tearing down")
        try:
            if kitpin is not None:
                kitpin.stop()
            if node is not None:
                try:
                    node.stop(keep_run_dir=True)  # containers, mounts, cgroups, host files
                except harness_node.NodeError as e:
                    node_clean = False
                    print(
                        f"  {e}\n  kept {work}: run `python -m harness.node cleanup "
                        f"{node.run_dir}` as root",
                        file=sys.stderr,
                    )
            registry_server.stop()
            cp.stop()
        finally:
            if node_clean:
                shutil.rmtree(work, ignore_errors=True)  # etcd data, registry storage, logs
        print("  done")


if __name__ == "__main__":
    sys.exit(main())
