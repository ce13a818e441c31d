"""``make bench``: every benchmark case in one run; ``bench/results/latest.{json,png}``.

    python -m bench.run [--quick] [--profile] [--kitpin-src DIR] [--baseline-src DIR] [--out DIR]

One run starts the real control plane, a token-auth registry with real ModelKits, the no-op
baseline and two kitpin processes (cache on, via ``kitpin run --dev``; cache off), each
pinned to CPU 0, and drives them from CPU 1. See bench/README.md for what each case means.
``--quick`` (``make bench QUICK=1``) shortens durations and sizes so it ends within a minute;
its numbers are a smoke test, not a measurement to compare. ``--kitpin-src`` benchmarks
another source tree (a branch, a proposed fix) against the same stream. ``--baseline-src``
adds a second warm kitpin from another tree (e.g. a clone of main before a change) to the
direct section: its ``warm-base`` runs are interleaved with ``noop`` and ``warm``, so old and
new are compared in ONE run, as ratios (``warm_vs_base``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import apiserver, client, env, loadgen, reviews, tools
from bench.env import log
from controller import devcerts
from harness import procs
from harness import tools as harness_tools
from harness.controlplane import ControlPlane

KITPIN_CPU = 0
GENERATOR_CPU = 1
NAMESPACE = "bench"

TARGETS = {
    "warm_vs_noop": 0.5,
    "warm@500_p99_ms": 3.0,
    "manifest_requests": 1,
    "token_requests_max": 1,
    "rss_mb_10k_refs": 120.0,
    "apiserver_ratio": 1.2,
}


@dataclass(frozen=True, kw_only=True)
class Plan:
    quick: bool
    duration: float  # seconds per max-throughput run
    rate_duration: float  # seconds per fixed-rate run
    repeats: int  # interleaved noop/warm max-throughput runs (the median is reported)
    mixed_refs: int  # distinct references in a mixed run
    pods: int
    pod_rounds: int
    rss_refs: int  # distinct references cached for the memory case
    burst: int = 1_000
    connections: int = 16
    rate: int = 500

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(
                quick=True,
                duration=3,
                rate_duration=2,
                repeats=1,
                mixed_refs=100,
                pods=50,
                pod_rounds=1,
                rss_refs=600,
            )
        return cls(
            quick=False,
            duration=10,
            rate_duration=10,
            repeats=3,
            mixed_refs=1000,
            pods=200,
            pod_rounds=3,
            rss_refs=10_000,
        )


# ----------------------------------------------------------------------------- machine


def tree_commit(src: Path) -> str:
    """``git describe --always --dirty`` of a source tree; "?" outside a git checkout."""
    return (
        subprocess.run(
            ["git", "-C", str(src), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        or "?"
    )


def machine_info(plan: Plan, src: Path) -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    commit = tree_commit(src)
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": plan.quick,
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kopf": version("kopf"),
        "aiohttp": version("aiohttp"),
        "kitpin_commit": commit,
        # the tree benchmarked: "." for this repository, else another tree (--kitpin-src),
        # named by its commit above: a path on the machine that ran it means nothing elsewhere
        "kitpin_src": "." if src.resolve() == env.REPO_ROOT else "another tree",
        "kitpin_cpu": KITPIN_CPU,
        "generator_cpu": GENERATOR_CPU,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "note": "other work may share this machine: compare cases as ratios within one run",
    }


# ----------------------------------------------------------------------------- helpers


def in_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``fn`` in a thread now; the returned callable joins it and returns/raises."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the joiner
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()

    def join() -> Any:
        t.join()
        if "error" in box:
            raise box["error"]
        return box.get("value")

    return join


def healthy(server: env.Server) -> bool:
    """``/healthz`` answers 200 (the process must be alive: it raises otherwise)."""
    server.process.check_alive()
    return env.get(server.url("/healthz"))[0] == 200


def bodies(documents: Sequence[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(d, separators=(",", ":")).encode() for d in documents]


def pair_reviews(
    template: dict[str, Any], refs: Sequence[str], prefix: str
) -> list[dict[str, Any]]:
    """One Pod review (``template``, two references) per two consecutive references."""
    return [
        reviews.with_references(template, refs[i : i + 2], name=f"{prefix}-{i // 2:05d}")
        for i in range(0, len(refs), 2)
    ]


CAPTURE_CONFIG = "bench-capture"  # sorts before kitpin.dev: it sees the Pod as sent
CAPTURE_LABEL = "bench.kitpin.dev/capture"


def capture_reviews(
    cp: ControlPlane, noop: env.Server, capture_dir: Path, ca_file: Path, pods: Sequence[Any]
) -> list[dict[str, Any]]:
    """The AdmissionReviews kube-apiserver sends for ``pods`` (created in this order in
    namespace ``bench``), recorded by the no-op server registered as a webhook for a moment:
    the benchmark replays exactly what a webhook receives (defaulted object, managedFields,
    userInfo, options), not a hand-written approximation."""
    import base64

    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CAPTURE_CONFIG},
        "webhooks": [
            {
                "name": "capture.bench.kitpin.dev",
                "clientConfig": {
                    "url": noop.url("/capture"),
                    "caBundle": base64.b64encode(ca_file.read_bytes()).decode(),
                },
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {CAPTURE_LABEL: "true"}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
            }
        ],
    }
    cp.kubectl("label", "namespace", NAMESPACE, f"{CAPTURE_LABEL}=true", "--overwrite")
    cp.kubectl("apply", "-f", "-", input=json.dumps(config))
    try:
        captured: list[dict[str, Any]] = []
        for i, pod in enumerate(pods):
            before = set(capture_dir.glob("*.json")) if capture_dir.exists() else set()

            def created(i: int = i, pod: Any = pod, before: set[Path] = before) -> Path | None:
                body = apiserver.creatable(pod)
                body["metadata"]["name"] = f"{body['metadata']['name']}-{secrets.token_hex(3)}"
                cp.kubectl("create", "-n", NAMESPACE, "-f", "-", input=json.dumps(body))
                new = sorted(set(capture_dir.glob("*.json")) - before, key=lambda p: int(p.stem))
                return new[-1] if new else None

            found = procs.wait_until(created, timeout=30, what="the capture webhook")
            assert isinstance(found, Path)
            captured.append(json.loads(found.read_bytes()))
        return captured
    finally:
        cp.kubectl("delete", "mutatingwebhookconfiguration", CAPTURE_CONFIG, check=False)
        cp.kubectl("label", "namespace", NAMESPACE, f"{CAPTURE_LABEL}-", check=False)


def wait_for_config(
    cp: ControlPlane, port: int, work: Path, timeout: float = 60.0
) -> tuple[str, str]:
    """Wait until the ``--dev`` kitpin serving on ``port`` has written its webhook
    configurations (both kinds); their name and its CA (PEM path). Found by the port in the
    webhooks' URL, so a tree from before per-instance names (``kitpin.dev``) is found too.
    The CA is written into ``work`` (removed with it)."""
    import base64

    ca_path = work / f"dev-ca-{port}.pem"
    found: list[str] = []

    def ready() -> bool:
        out = cp.kubectl("get", "mutatingwebhookconfigurations", "-o", "json", check=False)
        if out.returncode:
            return False
        for item in json.loads(out.stdout).get("items") or []:
            hooks = item.get("webhooks") or []
            cfg = [
                h["clientConfig"] for h in hooks if f":{port}/" in h["clientConfig"].get("url", "")
            ]
            if not cfg or not cfg[0].get("caBundle"):
                continue
            name = item["metadata"]["name"]
            if cp.kubectl("get", "validatingwebhookconfiguration", name, check=False).returncode:
                return False
            ca_path.write_bytes(base64.b64decode(cfg[0]["caBundle"]))
            found[:] = [name]
            return True
        return False

    procs.wait_until(ready, timeout=timeout, what=f"webhook configurations of :{port}")
    return found[0], str(ca_path)


# ----------------------------------------------------------------------------- cases


def registry_case(
    kitpin: env.Server,
    registry: env.Registry,
    repo: str,
    n: int,
    ca: str,
    template: dict[str, Any],
) -> dict[str, Any]:
    """``n`` admissions of one never-resolved reference, all in flight at once."""
    ref = registry.ref(repo, "v1")
    before = kitpin.metrics()
    manifests_before = registry.manifest_requests(repo)
    tokens_before = registry.token_requests(repo)
    docs = [reviews.with_references(template, [ref], name=f"burst-{i:05d}") for i in range(n)]
    started = time.perf_counter()
    answers = asyncio.run(client.burst(kitpin.url("/pin-pods"), bodies(docs), cafile=ca))
    seconds = time.perf_counter() - started
    after = kitpin.metrics()
    time.sleep(0.2)  # the registry writes its access-log line as the handler returns

    def delta(name: str, **labels: str) -> int:
        return round(env.metric(after, name, **labels) - env.metric(before, name, **labels))

    by_status = {
        k: v - manifests_before.get(k, 0)
        for k, v in registry.manifest_requests(repo).items()
        if v - manifests_before.get(k, 0)
    }
    bad = env.check_answers((a.body for a in answers if a.status == 200), expect=b'"patch"')
    bad += sum(1 for a in answers if a.status != 200)
    return {
        "admissions": n,
        "manifest_requests": sum(by_status.values()),
        "token_requests": registry.token_requests(repo) - tokens_before,
        "manifest_requests_by_status": by_status,
        "errors": bad,
        "seconds": round(seconds, 3),
        "p50_ms": round(statistics.median(a.seconds for a in answers) * 1000, 2),
        "max_ms": round(max(a.seconds for a in answers) * 1000, 2),
        "kitpin_metrics": {
            "registry_manifest_requests": delta(
                "kitpin_registry_requests_total", registry=registry.host, kind="manifest"
            ),
            "registry_token_requests": delta("kitpin_registry_requests_total", kind="token"),
            "resolver_requests": delta("kitpin_resolver_requests_total"),
            "resolver_cache_misses": delta("kitpin_resolver_cache_misses_total"),
            "resolver_coalesced": delta("kitpin_resolver_coalesced_total"),
            "resolver_cache_hits": delta("kitpin_resolver_cache_hits_total"),
        },
    }


def profile_warm(
    kitpin: env.Server, review_file: Path, plan: Plan, out_dir: Path
) -> dict[str, Any]:
    """py-spy on kitpin during one extra (unreported) warm max-throughput run."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = out_dir / "profile-warm.txt"
    svg = out_dir / "profile-warm.svg"
    seconds = max(5, int(plan.duration))
    recorders = []
    for fmt, path in (("raw", raw), ("flamegraph", svg)):
        recorders.append(
            subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    str(GENERATOR_CPU),
                    pyspy,
                    "record",
                    "--pid",
                    str(kitpin.pid),
                    "--rate",
                    "250",
                    "--duration",
                    str(seconds + 1),
                    "--format",
                    fmt,
                    "-o",
                    str(path),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    time.sleep(1.0)
    result = loadgen.run_wrk(
        kitpin.url("/pin-pods"),
        loadgen.read_reviews([review_file]),
        duration=seconds,
        connections=plan.connections,
        cpu=GENERATOR_CPU,
    )
    for r in recorders:
        r.wait(timeout=60)
    return {
        "rps_under_profiler": round(result.rps, 1),
        "flamegraph": svg.name,
        "top": top_frames(raw),
    }


def top_frames(collapsed: Path, n: int = 25) -> dict[str, Any]:
    """Self and inclusive time per function from py-spy's collapsed stacks."""
    self_t: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count
        self_t[frames[-1]] = self_t.get(frames[-1], 0) + count

    def top(d: dict[str, int]) -> list[list[Any]]:
        ranked = sorted(d.items(), key=lambda kv: -kv[1])[:n]
        return [[f, round(100 * c / total, 1)] for f, c in ranked]

    return {"samples": total, "self_pct": top(self_t), "inclusive_pct": top(incl)}


# ----------------------------------------------------------------------------- main


class Measured:
    """Runs a load case and charges the server's CPU time to it (robust to a noisy machine:
    CPU-seconds per review do not depend on how much of the core the server got)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.cases: dict[str, loadgen.Result] = {}

    def run(
        self,
        name: str,
        server: env.Server,
        payload: list[bytes],
        *,
        rate: int | None,
        expect: str | None,
        cacert: str | None = None,
        record: bool = True,
    ) -> loadgen.Result:
        gc0 = gc_pauses(server)
        c0 = server.cpu_seconds()
        if rate is None:
            r = loadgen.run_wrk(
                server.url("/pin-pods"),
                payload,
                duration=self.plan.duration,
                connections=self.plan.connections,
                cpu=GENERATOR_CPU,
                expect=expect,
            )
        else:
            r = loadgen.run_vegeta(
                server.url("/pin-pods"),
                payload,
                rate=rate,
                duration=self.plan.rate_duration,
                connections=self.plan.connections,
                cpu=GENERATOR_CPU,
                expect=expect,
                cacert=cacert,
            )
        cpu = (server.cpu_seconds() - c0) / max(1, r.requests) * 1e6
        r.server_cpu_us_per_review = cpu
        gc1 = gc_pauses(server)
        log(
            f"  {name}: {r.rps:,.0f} rps, p50 {r.pct(50):.2f} p99 {r.pct(99):.2f} "
            f"max {r.pct(100):.2f} ms, {cpu:,.0f} CPU-us/review, errors {r.errors}"
        )
        if gc0 is not None and gc1 is not None:
            g = {k: round(gc1[k] - gc0[k], 3) for k in gc1}
            log(
                f"    gc: {g['gen0']:.0f}/{g['gen1']:.0f}/{g['gen2']:.0f} collections "
                f"(gen 0/1/2), {g['pause_ms']:.1f} ms paused, {g['over_5ms']:.0f} over 5 ms"
            )
            r.gc = g
        if record:
            self.cases[name] = r
        return r


def gc_pauses(server: env.Server) -> dict[str, float] | None:
    """kitpin's collections so far per generation, their total pause (ms) and how many
    paused over 5 ms; None for a server without kitpin's metrics (the no-op)."""
    if not server.name.startswith("kitpin"):
        return None
    m = server.metrics()
    out: dict[str, float] = {}
    for g in ("0", "1", "2"):
        out[f"gen{g}"] = env.metric(m, "kitpin_gc_pause_seconds_count", generation=g)
    out["pause_ms"] = 1e3 * env.metric(m, "kitpin_gc_pause_seconds_sum")
    under = env.metric(m, "kitpin_gc_pause_seconds_bucket", le="0.005")
    out["over_5ms"] = env.metric(m, "kitpin_gc_pause_seconds_count") - under
    return out


SECTIONS = ("registry", "memory", "direct", "apiserver")


def run(
    plan: Plan,
    *,
    out_dir: Path,
    src: Path,
    profile: bool,
    keep: bool,
    only: frozenset[str] = frozenset(SECTIONS),
    baseline_src: Path | None = None,
) -> dict[str, Any]:
    t_start = time.monotonic()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    results: dict[str, Any] = {"machine": machine_info(plan, src), "cases": {}}
    log(f"{'quick' if plan.quick else 'full'} run; kitpin from {src}")
    if baseline_src is not None:
        results["machine"]["baseline_commit"] = tree_commit(baseline_src)
        log(f"baseline kitpin (warm-base) from {baseline_src}")

    tools.wrk()
    tools.vegeta()
    harness_tools.ensure("etcd", "kube-apiserver", "kube-controller-manager", "registry")
    results["machine"]["generators"] = {
        "max": tools.wrk_version(tools.wrk()),
        "rate": f"vegeta {tools.VEGETA_VERSION}",
    }

    work = Path(tempfile.mkdtemp(prefix="kitpin-bench-"))
    cp = ControlPlane(work / "controlplane")
    started_cp = in_thread(cp.start)
    registry = env.Registry(work)
    servers: list[env.Server] = []
    try:
        # -- the world ---------------------------------------------------------------------
        registry.start()
        warm_refs = [registry.ref("bench/llama-7b", "v1"), registry.ref("bench/mistral-7b", "v1")]
        registry.push("bench/llama-7b", "v1", seed=1)
        registry.push("bench/mistral-7b", "v1", seed=2)
        for repo in ("bench/burst-first", "bench/burst-second")[: 1 if plan.quick else 2]:
            registry.push(repo, "v1", seed=3)
        registry.push("bench/pool", "base", seed=4)
        n_mixed = plan.mixed_refs
        pool_tags = [f"p{i:05d}" for i in range(plan.rss_refs + 2 * n_mixed)]
        registry.seed_modelkits("bench/pool", "base", pool_tags)
        pool = [registry.ref("bench/pool", t) for t in pool_tags]
        fill_refs, mixed_refs = pool[: plan.rss_refs], pool[plan.rss_refs :]
        log(f"registry {registry.host}: ModelKits pushed, {len(pool)} distinct pool ModelKits")
        started_cp()
        log(f"control plane up in {cp.startup_seconds.get('total', 0):.1f}s")
        # kitpin's CRDs, as an install has them (the policies; the ModelKitTag records kitpin
        # keeps by default): applied before kitpin starts
        cp.kubectl("apply", "--server-side", "-f", str(env.REPO_ROOT / "deploy" / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        cp.kubectl("create", "namespace", NAMESPACE)
        procs.wait_until(
            lambda: (
                cp.kubectl("get", "sa", "default", "-n", NAMESPACE, check=False).returncode == 0
            ),
            timeout=30,
            what=f"ServiceAccount default in {NAMESPACE}",
        )

        certs = devcerts.write_dev_certificates(work / "certs", hosts=("127.0.0.1", "localhost"))
        reg_config = registry.kitpin_config(work / "registry-config.json")
        ports = [procs.free_port() for _ in range(5)]

        def kitpin(name: str, port: int, tree: Path = src, **kw: Any) -> env.Server:
            return env.kitpin(
                name,
                port=port,
                workdir=work,
                kubeconfig=cp.kubeconfig,
                registry_config=reg_config,
                cpu=None,
                src=tree,
                **kw,
            )

        # warm: the managed webhook configurations (--dev), for the direct cases and the
        # apiserver; cold: cache off; burst: a fresh process (empty cache, no registry
        # contact yet) for the registry case, so nothing else shares its memory or cache.
        warm = kitpin("kitpin-warm", ports[0], settings={}, dev=True)
        cold = kitpin(
            "kitpin-cold", ports[1], settings={"cache": {"enabled": False}}, dev=False, cert=certs
        )
        burst = kitpin("kitpin-burst", ports[2], settings={}, dev=False, cert=certs)
        capture_dir = work / "captured"
        noop = env.noop(
            "noop", port=ports[3], workdir=work, cert=certs, cpu=None, capture=capture_dir
        )
        base = (
            None
            if baseline_src is None or "direct" not in only
            else kitpin("kitpin-base", ports[4], baseline_src, settings={}, dev=False, cert=certs)
        )
        started = [s for s in (warm, cold, burst, noop, base) if s is not None]
        for s in started:
            s.process.start()
            servers.append(s)
        for s in started:
            procs.wait_until(
                functools.partial(healthy, s),
                timeout=90,
                what=f"{s.name} /healthz",
                on_timeout=s.process.log_tail,
            )
            s.pin(KITPIN_CPU)
        config_name, warm_ca = wait_for_config(cp, warm.port, work)
        rss_startup = warm.rss_mb()
        one_ref, two_refs = capture_reviews(
            cp,
            noop,
            capture_dir,
            Path(certs.ca_file),
            [
                reviews.pod("capture-one", NAMESPACE, warm_refs[:1]),
                reviews.pod("capture-two", NAMESPACE, warm_refs),
            ],
        )
        results["machine"]["review_bytes"] = len(json.dumps(two_refs, separators=(",", ":")))
        log(
            f"kitpin (warm :{warm.port}, cold :{cold.port}, burst :{burst.port}) and noop "
            f"(:{noop.port}) up at {time.monotonic() - t_start:.0f}s"
        )

        # -- 2. registry load: a fresh process, an empty cache -----------------------------
        if "registry" in only:
            registry_section(results, burst, registry, plan, certs, one_ref, rss_startup)
        burst.stop()

        # -- 4. memory: fill the cache with distinct references, before any overload -------
        if "memory" in only:
            results["rss_mb_10k_refs"], results["memory"] = memory_case(
                warm, fill_refs, warm_ca, rss_startup=rss_startup, plan=plan, template=two_refs
            )

        # -- 1. direct webhook cases -----------------------------------------------------
        if "direct" in only:
            direct_section(
                results,
                plan,
                work,
                warm,
                cold,
                noop,
                certs,
                warm_ca,
                two_refs,
                warm_refs,
                mixed_refs,
                out_dir,
                profile,
                base,
            )
        cold.stop()
        if base is not None:
            base.stop()

        # -- 3. through the apiserver ------------------------------------------------------
        # Not a throughput case: kitpin runs like the apiserver and etcd, on any CPU.
        if "apiserver" in only:
            warm.pin(None)
            noop.pin(None)
            outcome = asyncio.run(
                apiserver.measure(
                    cp,
                    references=warm_refs,
                    pods=plan.pods,
                    rounds=plan.pod_rounds,
                    config_name=config_name,
                    processes={
                        **{p.name: p.pid for p in cp.processes if p.pid is not None},
                        "kitpin": warm.pid,
                        "noop": noop.pid,
                        "bench": os.getpid(),
                    },
                    noop=(noop.url(""), Path(certs.ca_file).read_bytes()),
                )
            )
            results["apiserver"] = outcome.summary()
            log(
                f"apiserver: {plan.pods} pods with {results['apiserver']['with_webhook_s']}s, "
                f"without {results['apiserver']['without_webhook_s']}s "
                f"-> ratio {results['apiserver']['ratio']} "
                f"(the no-op webhook pair: {results['apiserver'].get('noop_ratio')})"
            )
        noop.stop()
        if "memory" in only:
            results["memory"]["rss_mb_end"] = round(warm.rss_mb(), 1)
        results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        results["machine"]["wall_seconds"] = round(time.monotonic() - t_start, 1)
    finally:
        env.tear_down(
            servers, registry=registry, cp=cp, started_cp=started_cp, work=work, keep=keep
        )
    results["targets"] = judge(results, plan)
    return results


def registry_section(
    results: dict[str, Any],
    burst: env.Server,
    registry: env.Registry,
    plan: Plan,
    certs: devcerts.DevCertificates,
    one_ref: dict[str, Any],
    rss_startup: float,
) -> None:
    first = registry_case(
        burst, registry, "bench/burst-first", plan.burst, str(certs.ca_file), one_ref
    )
    results["registry"] = first
    if not plan.quick:
        second = registry_case(
            burst, registry, "bench/burst-second", plan.burst, str(certs.ca_file), one_ref
        )
        results["registry"]["second_repository"] = second
    results["registry"]["rss_mb_after"] = round(burst.rss_mb(), 1)
    results["registry"]["rss_mb_startup"] = round(rss_startup, 1)
    log(
        f"registry: {first['admissions']} admissions -> {first['manifest_requests']} manifest "
        f"{first['manifest_requests_by_status']}, {first['token_requests']} token"
        + (
            f"; then another repository: {second['manifest_requests']} manifest "
            f"{second['manifest_requests_by_status']}, {second['token_requests']} token"
            if not plan.quick
            else ""
        )
    )


def direct_section(
    results: dict[str, Any],
    plan: Plan,
    work: Path,
    warm: env.Server,
    cold: env.Server,
    noop: env.Server,
    certs: devcerts.DevCertificates,
    warm_ca: str,
    two_refs: dict[str, Any],
    warm_refs: list[str],
    mixed_refs: list[str],
    out_dir: Path,
    profile: bool,
    base: env.Server | None = None,
) -> None:
    n_mixed = plan.mixed_refs
    rdir = work / "reviews"
    warm_file = reviews.write_jsonl(
        rdir / "warm.jsonl", [reviews.with_references(two_refs, warm_refs, name="llm-0")]
    )
    warm_bodies = loadgen.read_reviews([warm_file])
    warmed = asyncio.run(
        client.each_once(warm.url("/pin-pods"), warm_bodies * 50, cafile=warm_ca, concurrency=4)
    )
    if env.check_answers([a.body for a in warmed], expect=b'"patch"'):
        raise RuntimeError(f"kitpin did not pin the warm review: {warmed[0].body[:500]!r}")
    interleaved: list[tuple[str, env.Server, str | None]] = [
        ("noop", noop, None),
        ("warm", warm, '"patch"'),
    ]
    if base is not None:
        based = asyncio.run(
            client.each_once(
                base.url("/pin-pods"), warm_bodies * 50, cafile=str(certs.ca_file), concurrency=4
            )
        )
        if env.check_answers([a.body for a in based], expect=b'"patch"'):
            raise RuntimeError(f"the baseline did not pin the warm review: {based[0].body[:500]!r}")
        interleaved.append(("warm-base", base, '"patch"'))
    m = Measured(plan)
    runs: dict[str, list[loadgen.Result]] = {name: [] for name, _, _ in interleaved}
    for _ in range(plan.repeats):  # interleaved, so drift on a shared machine hits all
        for name, server, expect in interleaved:
            runs[name].append(
                m.run(name, server, warm_bodies, rate=None, expect=expect, record=False)
            )
    for name in runs:
        ordered = sorted(runs[name], key=lambda r: r.rps)
        m.cases[name] = ordered[len(ordered) // 2]  # the median run
    for name, server, expect, ca in (
        ("noop", noop, None, str(certs.ca_file)),
        ("warm", warm, '"patch"', warm_ca),
    ):
        m.run(f"{name}@{plan.rate}", server, warm_bodies, rate=plan.rate, expect=expect, cacert=ca)
    mixed_max = reviews.write_jsonl(
        rdir / "mixed.jsonl", pair_reviews(two_refs, mixed_refs[:n_mixed], "mixed")
    )
    m.run("mixed", warm, loadgen.read_reviews([mixed_max]), rate=None, expect='"patch"')
    mixed_rate = reviews.write_jsonl(
        rdir / "mixed-rate.jsonl", pair_reviews(two_refs, mixed_refs[n_mixed:], "mixedr")
    )
    m.run(
        f"mixed@{plan.rate}",
        warm,
        loadgen.read_reviews([mixed_rate]),
        rate=plan.rate,
        expect='"patch"',
        cacert=warm_ca,
    )
    m.run("cold", cold, warm_bodies, rate=None, expect='"patch"')

    order = [
        "noop",
        "warm",
        "mixed",
        "cold",
        f"noop@{plan.rate}",
        f"warm@{plan.rate}",
        f"mixed@{plan.rate}",
    ]
    cases = m.cases
    if base is not None:
        order.insert(2, "warm-base")
    results["cases"] = {k: cases[k].summary() for k in order}
    for name in runs:
        results["cases"][name]["runs_rps"] = [round(r.rps, 1) for r in runs[name]]
    for k in order:
        cpu = cases[k].server_cpu_us_per_review
        if cpu is not None:
            results["cases"][k]["cpu_us_per_review"] = round(cpu)
    for k in ("mixed", f"mixed@{plan.rate}"):
        results["cases"][k]["distinct_references"] = n_mixed
    for k in order:
        if cases[k].gc is not None:
            results["cases"][k]["gc"] = cases[k].gc
    results["distributions"] = {k: cases[k].percentiles_ms for k in order}
    if base is not None:
        new, old = cases["warm"], cases["warm-base"]
        results["warm_vs_base"] = {
            "rps_ratio": round(new.rps / old.rps, 3) if old.rps else None,
            "cpu_us_per_review": {
                "new": round(new.server_cpu_us_per_review or 0),
                "base": round(old.server_cpu_us_per_review or 0),
            },
            "runs_rps": {
                "new": results["cases"]["warm"]["runs_rps"],
                "base": results["cases"]["warm-base"]["runs_rps"],
            },
        }
        log(f"warm vs warm-base (one run): {results['warm_vs_base']}")
    results["load"] = {
        k: {
            "tool": c.tool,
            "connections": c.connections,
            "duration_s": c.duration_s,
            "requests": c.requests,
            "reviews_in_stream": c.reviews,
            "error_detail": c.error_detail,
        }
        for k, c in cases.items()
    }

    if profile:
        log("profiling kitpin (py-spy) during an extra warm run")
        results["profile"] = profile_warm(warm, warm_file, plan, out_dir)


def memory_case(
    kitpin: env.Server,
    refs: Sequence[str],
    ca: str,
    *,
    rss_startup: float,
    plan: Plan,
    template: dict[str, Any],
) -> tuple[float | None, dict[str, Any]]:
    """Resolve every reference in ``refs`` (distinct ModelKits) once through kitpin; its RSS."""
    before = kitpin.rss_mb()
    fill = bodies(pair_reviews(template, refs, "fill"))
    t = time.perf_counter()
    c0 = kitpin.cpu_seconds()
    answers = asyncio.run(
        client.each_once(kitpin.url("/pin-pods"), fill, cafile=ca, concurrency=16)
    )
    seconds = time.perf_counter() - t
    cpu = kitpin.cpu_seconds() - c0
    bad = env.check_answers([a.body for a in answers], expect=b'"patch"')
    entries = round(env.metric(kitpin.metrics(), "kitpin_resolver_cache_misses_total"))
    rss = kitpin.rss_mb()
    log(
        f"memory: RSS {rss:.1f} MiB with {entries} cache entries ({len(refs)} filled in "
        f"{seconds:.1f}s, {cpu / len(refs) * 1e6:,.0f} CPU-us per miss)"
    )
    detail: dict[str, Any] = {
        "cached_references": entries,
        "filled_references": len(refs),
        "rss_mb": round(rss, 1),
        "rss_mb_startup": round(rss_startup, 1),
        "rss_mb_before_fill": round(before, 1),
        "kib_per_reference": round((rss - before) * 1024 / len(refs), 2),
        "fill_seconds": round(seconds, 2),
        "fill_cpu_us_per_reference": round(cpu / len(refs) * 1e6),
        "fill_errors": bad,
    }
    if plan.rss_refs < 10_000:
        detail["note"] = (
            f"quick run: {plan.rss_refs} references, not 10,000; "
            "rss_mb_10k_refs is measured by the full run only"
        )
        return None, detail
    return round(rss, 1), detail


def judge(results: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """Measured vs target for every target whose section ran."""
    out: dict[str, Any] = {}
    cases = results["cases"]
    reg = results.get("registry")
    if cases:
        ratio = cases["warm"]["rps"] / cases["noop"]["rps"] if cases["noop"]["rps"] else 0.0
        p99 = cases.get(f"warm@{plan.rate}", {}).get("p99_ms")
        out["warm_vs_noop"] = {
            "measured": round(ratio, 3),
            "target": ">= 0.5",
            "met": ratio >= TARGETS["warm_vs_noop"],
        }
        out[f"warm@{plan.rate}_p99_ms"] = {
            "measured": p99,
            "target": "<= 3",
            "met": (p99 or 1e9) <= TARGETS["warm@500_p99_ms"],
        }
    if reg is not None:
        out["manifest_requests"] = {
            "measured": reg["manifest_requests"],
            "target": "== 1",
            "met": reg["manifest_requests"] == TARGETS["manifest_requests"],
        }
        out["token_requests"] = {
            "measured": reg["token_requests"],
            "target": "<= 1",
            "met": reg["token_requests"] <= TARGETS["token_requests_max"],
        }
    if "memory" in results:
        rss = results["rss_mb_10k_refs"]
        out["rss_mb_10k_refs"] = {
            "measured": rss,
            "target": "<= 120",
            "met": rss is not None and rss <= TARGETS["rss_mb_10k_refs"],
        }
    if "apiserver" in results:
        out["apiserver_ratio"] = {
            "measured": results["apiserver"]["ratio"],
            "target": "<= 1.2",
            "met": results["apiserver"]["ratio"] <= TARGETS["apiserver_ratio"],
            # the same webhook pair answered by the no-op responder, same run: the floor
            "noop_pair": results["apiserver"].get("noop_ratio"),
        }
    errors = sum(c["errors"] for c in cases.values()) + (reg["errors"] if reg else 0)
    out["errors"] = {"measured": errors, "target": "== 0", "met": errors == 0}
    return out


def print_summary(results: dict[str, Any]) -> None:
    print(
        f"\n{'case':<14}{'rps':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'errors':>8}"
    )
    for name, c in results["cases"].items():
        print(
            f"{name:<14}{c['rps']:>10,.0f}{c['p50_ms']:>9.2f}{c['p90_ms']:>9.2f}"
            f"{c['p99_ms']:>9.2f}{c['max_ms']:>9.2f}{c['errors']:>8}"
        )
    print("\ntarget                      measured   target   met")
    for name, t in results["targets"].items():
        floor = f"   (no-op webhook pair: {t['noop_pair']})" if t.get("noop_pair") else ""
        print(
            f"{name:<28}{t['measured']!s:>9}{t['target']:>9}   {'yes' if t['met'] else 'NO'}{floor}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short smoke run (< 60 s)")
    p.add_argument("--profile", action="store_true", help="py-spy kitpin during a warm run")
    p.add_argument(
        "--kitpin-src",
        type=Path,
        default=env.REPO_ROOT,
        help="source tree whose controller/ to run (default: this one)",
    )
    p.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="another source tree to run as a second warm kitpin (warm-base), interleaved "
        "with warm in the direct section: old vs new in one run",
    )
    p.add_argument("--out", type=Path, default=env.REPO_ROOT / "bench" / "results")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, of {','.join(SECTIONS)} (default: all). "
        "A partial run writes partial.json, never latest.json",
    )
    args = p.parse_args(argv)
    only = frozenset(x.strip() for x in args.only.split(",") if x.strip())
    if not only or not only <= set(SECTIONS):
        p.error(f"--only takes sections of {','.join(SECTIONS)}, not {args.only!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    plan = Plan.make(args.quick)
    results = run(
        plan,
        out_dir=args.out,
        src=args.kitpin_src.resolve(),
        profile=args.profile,
        keep=args.keep,
        only=only,
        baseline_src=args.baseline_src.resolve() if args.baseline_src else None,
    )
    if only != set(SECTIONS):
        partial = args.out / "partial.json"
        partial.write_text(json.dumps(results, indent=2) + "\n")
        print_summary(results)
        print(f"\nwrote {partial} (sections: {', '.join(sorted(only))})")
        return 0
    latest = args.out / "latest.json"
    tmp = latest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(latest)
    from bench import plot

    plot.plot(results, latest.with_suffix(".png"))
    print_summary(results)
    print(f"\nwrote {latest} and {latest.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
