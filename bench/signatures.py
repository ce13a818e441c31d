"""What a policy's ``signatures`` block costs at admission (issue 18), in one run:
``bench/results/signatures/latest.{json,png}``.

    python -m bench.signatures [--quick] [--out bench/results/signatures] [--keep]

One real control plane (kitpin's CRDs), one real CNCF distribution registry (plain HTTP, no
auth: the cost measured is the signature lookup, not the token dance that ``bench.run``
measures), the real ``cosign`` CLI (harness/cosign.py) signing with a key, and ONE
``kitpin run`` answering direct reviews on ``/pin-pods`` (the mutating webhook: it resolves
the tag and, under a ``signatures`` rule, verifies the digest before pinning). A
``ClusterModelKitPolicy`` with a ``signatures`` block (one inline key) selects the namespace
``bench-signed`` only; the namespace ``bench`` has no policy. The reviews are a Pod review
captured from kube-apiserver (``bench.run.capture_reviews``), its namespace rewritten.

- **cold** (the first admission of a new digest), :attr:`Plan.cold` of each, interleaved: a
  signed ModelKit under the signature policy vs an unsigned one without any policy; the
  wall time of each review (one at a time, one keep-alive connection) and the requests the
  registry logged for it (manifest, blob, referrers);
- **warm** (the same digest again: resolver and verifier caches hit): the signed reference
  under the signature policy, the unsigned one under a policy without ``signatures`` (a tag
  rule it passes: ``bench-policy``), and the unsigned one without any policy; max throughput
  with wrk, in blocks that run each case twice in mirrored order, against the same process;
  **CPU µs per review and rps as ratios within the run** (the machine is shared: absolute
  figures move between runs, ratios much less). Signature policy / policy only is the
  signature check's own cost on a warm review; policy only / none is evaluating a policy.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import dataclasses
import functools
import json
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import client, env, loadgen, reviews, tools
from bench import run as bench_run
from bench.env import log
from controller import devcerts, policy
from harness import modelkit, procs
from harness import tools as harness_tools
from harness.controlplane import ControlPlane
from harness.cosign import Cosign
from harness.registry import RegistryServer

KITPIN_CPU = bench_run.KITPIN_CPU
PLAIN_NS = bench_run.NAMESPACE
SIGNED_NS = "bench-signed"
POLICY_NS = "bench-policy"
"""A policy without a ``signatures`` block (a tag rule the reference passes): the baseline
that separates the signature check's own cost from evaluating a policy at all."""
LABEL = "bench.kitpin.dev/signatures"
CRD_DIR = env.REPO_ROOT / "deploy" / "crds"
SIGNED_REPO = "bench/signed"
UNSIGNED_REPO = "bench/unsigned"
POLICY_NAME = "bench-signed"
PLAIN_POLICY_NAME = "bench-policy"
POLICY_LABEL = "bench.kitpin.dev/policy"


@dataclass(frozen=True, kw_only=True)
class Plan:
    quick: bool
    cold: int
    """Cold admissions of each kind (each a distinct new digest)."""
    duration: float
    """Seconds per max-throughput run."""
    repeats: int
    """ABBA blocks of the warm comparison (four runs each)."""

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(quick=True, cold=3, duration=2, repeats=1)
        return cls(quick=False, cold=8, duration=3, repeats=3)

    def bench_plan(self) -> bench_run.Plan:
        return bench_run.Plan(
            quick=self.quick,
            duration=self.duration,
            rate_duration=self.duration,
            repeats=self.repeats,
            mixed_refs=0,
            pods=0,
            pod_rounds=0,
            rss_refs=0,
        )


def in_namespace(template: dict[str, Any], ref: str, namespace: str, name: str) -> dict[str, Any]:
    """The captured Pod review with ``ref``, in ``namespace``, named ``name``."""
    doc = reviews.with_references(copy.deepcopy(template), [ref], name=name)
    doc["request"]["namespace"] = namespace
    doc["request"]["object"]["metadata"]["namespace"] = namespace
    return doc


def post(server: env.Server, body: bytes, ca: str) -> client.Answer:
    (answer,) = asyncio.run(
        client.each_once(server.url("/pin-pods"), [body], cafile=ca, concurrency=1)
    )
    return answer


def kind_of(path: str) -> str:
    if "/referrers/" in path:
        return "referrers"
    if "/blobs/" in path:
        return "blob"
    if re.search(r"/manifests/sha256-[0-9a-f]{64}\.sig$", path):
        return "sig-manifest"
    if re.search(r"/manifests/sha256-[0-9a-f]{64}$", path):
        return "referrers-tag-index"
    if "/manifests/" in path:
        return "manifest"
    return "other"


def cold_section(
    plan: Plan,
    results: dict[str, Any],
    server: env.Server,
    registry: RegistryServer,
    template: dict[str, Any],
    signed: Sequence[str],
    unsigned: Sequence[str],
    ca: str,
) -> None:
    """One first admission of each new digest, signed (policy) and unsigned (none)
    interleaved; wall time and the requests the registry logged for it."""
    cases: dict[str, list[dict[str, Any]]] = {"signed-policy": [], "no-policy": []}
    for i in range(plan.cold):
        order = [("signed-policy", signed[i], SIGNED_NS), ("no-policy", unsigned[i], PLAIN_NS)]
        if i % 2:
            order.reverse()
        for name, ref, namespace in order:
            body = bench_run.bodies([in_namespace(template, ref, namespace, f"cold-{name}-{i}")])
            seen = len(registry.requests())
            answer = post(server, body[0], ca)
            if answer.status != 200 or env.check_answers([answer.body], expect=b'"patch"'):
                raise RuntimeError(f"cold {name} {ref}: not pinned: {answer.body[:400]!r}")
            time.sleep(0.3)  # the registry writes its access-log line as the handler returns
            logged = registry.requests()[seen:]
            by_kind = Counter(kind_of(e.path) for e in logged)
            cases[name].append(
                {
                    "ms": round(answer.seconds * 1000, 2),
                    "requests": len(logged),
                    "by_kind": dict(by_kind),
                    "statuses": dict(Counter(f"{e.method} {e.status}" for e in logged)),
                }
            )
    summary: dict[str, Any] = {}
    for name, rows in cases.items():
        summary[name] = {
            "admissions": len(rows),
            "median_ms": round(statistics.median(r["ms"] for r in rows), 2),
            "min_ms": min(r["ms"] for r in rows),
            "max_ms": max(r["ms"] for r in rows),
            "registry_requests_per_admission": round(
                statistics.mean(r["requests"] for r in rows), 2
            ),
            "by_kind_first": rows[0]["by_kind"],
            "runs_ms": [r["ms"] for r in rows],
            "runs_requests": [r["requests"] for r in rows],
        }
    s, n = summary["signed-policy"], summary["no-policy"]
    results["cold"] = summary
    results["cold_signed_vs_unsigned"] = {
        "wall_ratio_median": round(s["median_ms"] / n["median_ms"], 3),
        "extra_ms_median": round(s["median_ms"] - n["median_ms"], 2),
        "requests_ratio": round(
            s["registry_requests_per_admission"] / n["registry_requests_per_admission"], 3
        ),
        "extra_requests": round(
            s["registry_requests_per_admission"] - n["registry_requests_per_admission"], 2
        ),
    }
    log(f"cold: {results['cold_signed_vs_unsigned']}")


def _pooled_cpu(rs: Sequence[loadgen.Result]) -> float:
    n = sum(r.requests for r in rs)
    return sum((r.server_cpu_us_per_review or 0.0) * r.requests for r in rs) / n if n else 0.0


def _pooled_rps(rs: Sequence[loadgen.Result]) -> float:
    seconds = sum(r.duration_s for r in rs)
    return sum(r.requests for r in rs) / seconds if seconds else 0.0


WARM_CASES: tuple[str, ...] = ("no-policy", "policy-only", "signed-policy")
"""The warm cases: no policy; a policy without ``signatures`` (tags.denied); the signature
policy. signed-policy / policy-only is the signature check's own cost on a warm review."""


def _ratio(runs: dict[str, list[loadgen.Result]], a: str, b: str) -> dict[str, float]:
    return {
        "cpu_ratio": round(_pooled_cpu(runs[a]) / _pooled_cpu(runs[b]), 3),
        "rps_ratio": round(_pooled_rps(runs[a]) / _pooled_rps(runs[b]), 3),
    }


def warm_section(
    plan: Plan,
    results: dict[str, Any],
    server: env.Server,
    bodies: dict[str, list[bytes]],
    ca: str,
) -> None:
    """The warm review in the three :data:`WARM_CASES`, in blocks that run each case twice in
    mirrored order (ABCCBA, rotating), one process."""
    for name, payload in bodies.items():  # warm every cache
        answers = asyncio.run(
            client.each_once(server.url("/pin-pods"), payload * 50, cafile=ca, concurrency=4)
        )
        if env.check_answers([a.body for a in answers], expect=b'"patch"'):
            raise RuntimeError(f"warm-up {name}: not pinned")
    measured = bench_run.Measured(plan.bench_plan())
    runs: dict[str, list[loadgen.Result]] = {name: [] for name in WARM_CASES}
    blocks: list[dict[str, float]] = []
    for i in range(plan.repeats):
        order = list(WARM_CASES[i % 3 :] + WARM_CASES[: i % 3])
        block: dict[str, list[loadgen.Result]] = {name: [] for name in WARM_CASES}
        for name in order + order[::-1]:
            r = measured.run(name, server, bodies[name], rate=None, expect='"patch"', record=False)
            block[name].append(r)
            runs[name].append(r)
        blocks.append(_ratio(block, "signed-policy", "policy-only"))
    cases: dict[str, Any] = {}
    for name, rs in runs.items():
        median = sorted(rs, key=lambda r: r.rps)[len(rs) // 2]
        cases[name] = {
            **median.summary(),
            "rps": round(_pooled_rps(rs), 1),
            "cpu_us_per_review": round(_pooled_cpu(rs)),
            "runs_rps": [round(r.rps, 1) for r in rs],
            "runs_cpu_us_per_review": [round(r.server_cpu_us_per_review or 0) for r in rs],
            "errors_total": sum(r.errors for r in rs),
        }
    results["warm"] = cases
    results["warm_signed_vs_policy_only"] = {
        **_ratio(runs, "signed-policy", "policy-only"),
        "cpu_ratio_per_block": [b["cpu_ratio"] for b in blocks],
        "rps_ratio_per_block": [b["rps_ratio"] for b in blocks],
    }
    results["warm_policy_only_vs_none"] = _ratio(runs, "policy-only", "no-policy")
    results["warm_signed_vs_unsigned"] = _ratio(runs, "signed-policy", "no-policy")
    log(
        f"warm: signed/policy-only {results['warm_signed_vs_policy_only']}, "
        f"policy-only/none {results['warm_policy_only_vs_none']}"
    )


def run(plan: Plan, *, keep: bool) -> dict[str, Any]:
    t_start = time.monotonic()
    results: dict[str, Any] = {
        "machine": bench_run.machine_info(plan.bench_plan(), env.REPO_ROOT),
        "plan": dataclasses.asdict(plan),
        "setup": {
            "webhook": "/pin-pods (mutating: resolve, then verify under a signatures rule)",
            "registry": "CNCF distribution, plain HTTP, no auth",
            "policy": "ClusterModelKitPolicy, signatures.keys: one inline ECDSA P-256 key",
            "signatures": "cosign sign --key --tlog-upload=false (tag sha256-<hex>.sig)",
        },
    }
    tools.wrk()
    harness_tools.ensure("etcd", "kube-apiserver", "kube-controller-manager", "registry")
    results["machine"]["generators"] = {"max": tools.wrk_version(tools.wrk())}
    work = Path(tempfile.mkdtemp(prefix="kitpin-bench-signatures-"))
    cp = ControlPlane(work / "controlplane")
    started_cp = bench_run.in_thread(cp.start)
    registry = RegistryServer(workdir=work / "registry", name="registry")
    servers: list[env.Server] = []
    try:
        registry.start()
        cosign = Cosign(work / "cosign")
        keys = cosign.generate_key_pair("release")
        results["machine"]["cosign"] = cosign.version()

        def push(repo: str, tag: str, seed: int, *, sign: bool) -> str:
            digest = modelkit.push_modelkit(registry, repo, tag, seed=seed)
            if sign:
                cosign.sign(f"{registry.host}/{repo}@{digest}", keys)
            return f"{registry.host}/{repo}:{tag}"

        signed = [push(SIGNED_REPO, f"c{i}", 100 + i, sign=True) for i in range(plan.cold)]
        unsigned = [push(UNSIGNED_REPO, f"c{i}", 200 + i, sign=False) for i in range(plan.cold)]
        warm_signed = push(SIGNED_REPO, "warm", 1, sign=True)
        warm_unsigned = push(UNSIGNED_REPO, "warm", 2, sign=False)
        probe = push(UNSIGNED_REPO, "probe", 3, sign=False)
        log(f"registry {registry.host}: ModelKits pushed and signed")

        started_cp()
        cp.kubectl("create", "namespace", PLAIN_NS)
        cp.kubectl("create", "namespace", SIGNED_NS)
        cp.kubectl("label", "namespace", SIGNED_NS, f"{LABEL}=true")
        cp.kubectl("create", "namespace", POLICY_NS)
        cp.kubectl("label", "namespace", POLICY_NS, f"{POLICY_LABEL}=true")
        cp.kubectl("apply", "--server-side", "-f", str(CRD_DIR))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        procs.wait_until(
            lambda: cp.kubectl("get", "sa", "default", "-n", PLAIN_NS, check=False).returncode == 0,
            timeout=30,
            what=f"ServiceAccount default in {PLAIN_NS}",
        )
        certs = devcerts.write_dev_certificates(work / "certs", hosts=("127.0.0.1", "localhost"))
        ca = str(certs.ca_file)
        reg_config = work / "registry-config.json"
        reg_config.write_text(json.dumps({"registries": {registry.host: {"plainHTTP": True}}}))
        ports = [procs.free_port() for _ in range(2)]
        kitpin = env.kitpin(
            "kitpin",
            port=ports[0],
            workdir=work,
            kubeconfig=cp.kubeconfig,
            registry_config=reg_config,
            settings={"tags": {"records": False}, "drift": {"enabled": False}},
            cpu=None,
            dev=False,
            cert=certs,
            extra_env={"POD_NAMESPACE": "kitpin-bench", "POD_NAME": "kitpin"},  # never admitted
        )
        noop = env.noop(
            "noop", port=ports[1], workdir=work, cert=certs, cpu=None, capture=work / "captured"
        )
        for s in (kitpin, noop):
            s.process.start()
            servers.append(s)
        for s in (kitpin, noop):
            procs.wait_until(
                functools.partial(bench_run.healthy, s),
                timeout=90,
                what=f"{s.name} /healthz",
                on_timeout=s.process.log_tail,
            )
        kitpin.pin(KITPIN_CPU)
        (template,) = bench_run.capture_reviews(
            cp,
            noop,
            work / "captured",
            Path(certs.ca_file),
            [reviews.pod("capture", PLAIN_NS, [warm_unsigned])],
        )
        noop.stop()
        cp.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": policy.API_VERSION,
                    "kind": policy.CLUSTER_KIND,
                    "metadata": {"name": POLICY_NAME},
                    "spec": {
                        "namespaceSelector": {"matchLabels": {LABEL: "true"}},
                        "signatures": {"keys": [{"name": "release", "publicKey": keys.public_pem}]},
                    },
                }
            ),
        )
        cp.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": policy.API_VERSION,
                    "kind": policy.CLUSTER_KIND,
                    "metadata": {"name": PLAIN_POLICY_NAME},
                    "spec": {
                        "namespaceSelector": {"matchLabels": {POLICY_LABEL: "true"}},
                        "tags": {"denied": ["latest"]},
                    },
                }
            ),
        )
        probe_body = bench_run.bodies([in_namespace(template, probe, SIGNED_NS, "probe")])[0]
        latest = f"{registry.host}/{UNSIGNED_REPO}:latest"
        modelkit.push_modelkit(registry, UNSIGNED_REPO, "latest", seed=4)
        latest_body = bench_run.bodies([in_namespace(template, latest, POLICY_NS, "latest")])[0]

        last: list[bytes] = [b""]

        def plain_in_force() -> bool:  # tag rules are the validating webhook's
            (answer,) = asyncio.run(
                client.each_once(kitpin.url("/check-pods"), [latest_body], cafile=ca, concurrency=1)
            )
            last[0] = answer.body
            return b"rule tags.denied" in answer.body

        procs.wait_until(
            plain_in_force,
            timeout=60,
            what="the policy without signatures in force",
            interval=0.5,
            on_timeout=lambda: f"last answer: {last[0][:600]!r}",
        )

        def in_force() -> bool:
            answer = post(kitpin, probe_body, ca)
            return b"SignatureMissing" in answer.body

        procs.wait_until(
            in_force,
            timeout=60,
            what="the signature policy in force",
            interval=0.5,
            on_timeout=kitpin.process.log_tail,
        )
        warm_body = bench_run.bodies([in_namespace(template, warm_signed, SIGNED_NS, "warm")])
        answer = post(kitpin, warm_body[0], ca)
        patch = json.loads(answer.body)["response"].get("patch", "")
        if "signedBy" not in base64.b64decode(patch).decode():
            raise RuntimeError(f"the warm signed review was not verified: {answer.body[:400]!r}")
        log(f"servers up, policy in force at {time.monotonic() - t_start:.0f}s")

        cold_section(plan, results, kitpin, registry, template, signed, unsigned, ca)
        warm_section(
            plan,
            results,
            kitpin,
            {
                "signed-policy": warm_body,
                "no-policy": bench_run.bodies(
                    [in_namespace(template, warm_unsigned, PLAIN_NS, "warm")]
                ),
                "policy-only": bench_run.bodies(
                    [in_namespace(template, warm_unsigned, POLICY_NS, "warm")]
                ),
            },
            ca,
        )
        results["machine"]["wall_seconds"] = round(time.monotonic() - t_start, 1)
    finally:
        env.tear_down(
            servers, registry=registry, cp=cp, started_cp=started_cp, work=work, keep=keep
        )
    return results


def plot(results: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ms, ax_req, ax_warm) = plt.subplots(1, 3, figsize=(16, 5), layout="constrained")
    cold = results.get("cold", {})
    colors = {"no-policy": "#888888", "signed-policy": "#1f77b4"}
    for name, c in cold.items():
        ax_ms.plot(
            range(1, len(c["runs_ms"]) + 1),
            c["runs_ms"],
            marker="o",
            label=name,
            color=colors[name],
        )
    ax_ms.set_xlabel("cold admission (a new digest each)")
    ax_ms.set_ylabel("wall ms (one review)")
    ax_ms.set_ylim(bottom=0)
    ratio = results.get("cold_signed_vs_unsigned", {})
    ax_ms.set_title(f"cold: median ratio {ratio.get('wall_ratio_median')}")
    ax_ms.legend(fontsize=8)
    if cold:
        names = list(cold)
        values = [cold[n]["registry_requests_per_admission"] for n in names]
        bars = ax_req.bar(names, values, color=[colors[n] for n in names])
        for bar, value in zip(bars, values, strict=True):
            ax_req.annotate(
                f"{value:g}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
            )
    ax_req.set_ylabel("registry requests per cold admission (access log)")
    ax_req.set_title("cold: registry requests")
    warm = results.get("warm_signed_vs_policy_only", {})
    blocks = range(1, len(warm.get("cpu_ratio_per_block", [])) + 1)
    if blocks:
        ax_warm.axhspan(0.95, 1.05, color="#dddddd", label="within 5%")
        ax_warm.axhline(1.0, color="#888888", linewidth=0.8)
        for key, label in (
            ("cpu_ratio_per_block", "CPU per review"),
            ("rps_ratio_per_block", "rps"),
        ):
            ax_warm.plot(list(blocks), warm[key], marker="o", label=label)
        ax_warm.set_xticks(list(blocks))
        ax_warm.legend(fontsize=8)
    ax_warm.set_xlabel("block (each case twice, mirrored order)")
    ax_warm.set_ylabel("signature policy / policy without signatures")
    ax_warm.set_title(f"warm: CPU {warm.get('cpu_ratio')}, rps {warm.get('rps_ratio')} (pooled)")
    machine = results.get("machine", {})
    fig.suptitle(
        f"kitpin signatures {'(quick) ' if machine.get('quick') else ''}"
        f"{machine.get('timestamp', '')} {machine.get('cpu_model', '')}; ratios within one run",
        fontsize=10,
    )
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def print_summary(results: dict[str, Any]) -> None:
    print(f"\n{'cold':<16}{'median ms':>10}{'requests':>10}")
    for name, c in results.get("cold", {}).items():
        print(f"{name:<16}{c['median_ms']:>10}{c['registry_requests_per_admission']:>10}")
    print(f"\n{'warm':<16}{'rps':>10}{'cpu us':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, c in results.get("warm", {}).items():
        print(
            f"{name:<16}{c['rps']:>10,.0f}{c['cpu_us_per_review']:>9}{c['p50_ms']:>9.2f}"
            f"{c['p99_ms']:>9.2f}{c['errors_total']:>8}"
        )
    print(f"\ncold: {results.get('cold_signed_vs_unsigned')}")
    print(f"warm, signature policy / policy only: {results.get('warm_signed_vs_policy_only')}")
    print(f"warm, policy only / no policy: {results.get('warm_policy_only_vs_none')}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.signatures", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="short smoke run")
    p.add_argument("--out", type=Path, default=env.REPO_ROOT / "bench" / "results" / "signatures")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    plan = Plan.make(args.quick)
    results = run(plan, keep=args.keep)
    target = args.out / f"{'quick' if plan.quick else 'latest'}.json"
    env.save(results, target, plot=plot, summary=print_summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
