"""kitpin side by side with Kyverno, the engine a platform team would use instead (issue 20):
``bench/results/kyverno/latest.{json,png}``.

    python -m bench.kyverno [--quick] [--out bench/results/kyverno] [--keep]

One run, one world: the real control plane, the token-auth registry of ``bench.run`` (anonymous
pull of ``bench/*``; its realm names ``localhost``, see :class:`bench.env.Registry`), the no-op
responder, ONE warm ``kitpin run --dev`` and the real Kyverno admission controller
(``KYVERNO_VERSION`` in hack/tools.env, built by ``hack/tools.sh kyverno``), run out of cluster
as its developers run it locally (``--kubeconfig`` + ``--serverIP``: its own certificate manager
issues a CA and a serving certificate for 127.0.0.1, and its webhooks are registered by URL).
Kyverno runs the library policy "Resolve Image to Digest" adapted to kitpin's job
(``bench/kyverno-policy.yaml``): the ``MODELKIT_REF`` env value of every init container is looked
up with an ``imageRegistry`` context entry and rewritten to ``<reference>@<digest>``. Kyverno is
started as its chart starts it (verbosity 2) but with admission reports off
(``--admissionReports=false``): with them on (the chart's default) every admission also writes
an ``EphemeralReport`` to the apiserver, work kitpin does not do.

Every webhook process is pinned to CPU 0 (Kyverno from its start, so that Go sizes its scheduler
to one core), the load generators to CPU 1. The same review stream for all: the Pod reviews
kube-apiserver sent, captured by the no-op server (``bench.run.capture_reviews``).

- **direct, max throughput**: wrk, 16 connections, interleaved noop / kitpin / Kyverno runs
  (the median of :attr:`Plan.repeats` each); rps, latency, server CPU per review, and the
  registry requests each review caused (kitpin: none when warm; Kyverno caches nothing);
- **direct, fixed rate**: vegeta at :attr:`Plan.rate` reviews/s, the latency distribution of
  each (the plot);
- **registry**: :attr:`Plan.burst` admissions of one reference neither has seen, all in flight at
  once: manifest and token requests at the registry and its issuer;
- **apiserver**: :attr:`Plan.pods` Pods created through kube-apiserver with kitpin's webhooks,
  with Kyverno's, with the no-op pair and with none (``bench.apiserver``; Kyverno keeps its own
  webhook configurations, so its webhooks select a labelled namespace: :class:`Selected`);
- **memory**: RSS of kitpin and Kyverno after start-up and after the load.

Ratios within the run are what to read: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import apiserver, client, env, loadgen, reviews, tools
from bench import run as bench_run
from bench.env import log
from controller import devcerts
from harness import procs
from harness import tools as harness_tools
from harness.controlplane import ControlPlane

KITPIN_CPU = bench_run.KITPIN_CPU
GENERATOR_CPU = bench_run.GENERATOR_CPU
NAMESPACE = bench_run.NAMESPACE
POLICY = Path(__file__).with_name("kyverno-policy.yaml")
POLICY_NAME = "pin-modelkit-ref"
KYVERNO_NS = "kyverno"
KYVERNO_SA = "kyverno-admission-controller"
CA_SECRET = "kyverno-svc.kyverno.svc.kyverno-tls-ca"
TLS_SECRET = "kyverno-svc.kyverno.svc.kyverno-tls-pair"
RESOURCE_WEBHOOKS = "kyverno-resource-mutating-webhook-cfg"
MUTATE_PATH = "/mutate/fail"
"""Kyverno's mutating webhook for policies with failurePolicy Fail (the default)."""
SELECT_LABEL = "bench.kitpin.dev/kyverno"
"""Kyverno's webhooks select namespaces with this label (its ``webhooks`` setting)."""
PIN_PATH = "/pin-pods"
CASES = ("noop", "kitpin", "kyverno")


@dataclass(frozen=True, kw_only=True)
class Plan:
    quick: bool
    duration: float
    """Seconds per max-throughput run."""
    rate_duration: float
    repeats: int
    rate: int
    """Reviews/s of the fixed-rate runs: half of what Kyverno sustains here (about 50/s on one
    core), so that the latencies compared are not those of a saturated server."""
    pods: int
    pod_rounds: int
    burst: int
    connections: int = 16

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(
                quick=True,
                duration=3,
                rate_duration=2,
                repeats=1,
                rate=25,
                pods=30,
                pod_rounds=1,
                burst=100,
            )
        return cls(
            quick=False,
            duration=10,
            rate_duration=10,
            repeats=3,
            rate=25,
            pods=200,
            pod_rounds=3,
            burst=1_000,
        )

    def bench_plan(self) -> bench_run.Plan:
        """The ``bench.run`` plan of the same length (for ``machine_info``)."""
        return bench_run.Plan.make(self.quick)


# ----------------------------------------------------------------------------- Kyverno


def _config_map() -> dict[str, Any]:
    """Kyverno's ``kyverno`` ConfigMap: its chart's defaults that apply here (resource filters,
    the default registry), with its webhooks selecting the labelled namespaces only."""
    filters = [
        "[Event,*,*]",
        "[*/*,kube-system,*]",
        "[*/*,kube-public,*]",
        "[*/*,kube-node-lease,*]",
        "[Node,*,*]",
        "[APIService,*,*]",
        "[TokenReview,*,*]",
        "[SubjectAccessReview,*,*]",
        "[SelfSubjectAccessReview,*,*]",
        "[Binding,*,*]",
        "[Pod/binding,*,*]",
        "[ReplicaSet,*,*]",
        "[EphemeralReport,*,*]",
        "[ClusterEphemeralReport,*,*]",
        f"[ConfigMap,{KYVERNO_NS},kyverno]",
        f"[ConfigMap,{KYVERNO_NS},kyverno-metrics]",
    ]
    selector = {"namespaceSelector": {"matchLabels": {SELECT_LABEL: "true"}}}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kyverno", "namespace": KYVERNO_NS},
        "data": {
            "defaultRegistry": "docker.io",
            "enableDefaultRegistryMutation": "true",
            "generateSuccessEvents": "false",
            "excludeGroups": "system:nodes",
            "resourceFilters": "".join(filters),
            "webhooks": json.dumps(selector),
        },
    }


def install_kyverno(cp: ControlPlane) -> None:
    """Kyverno's CRDs (from its module), its namespace, ServiceAccount and ConfigMaps."""
    for directory in tools.kyverno_crds():
        # server-side: two CRDs are over the client-side last-applied annotation's limit
        cp.kubectl("apply", "--server-side", "-f", str(directory), timeout=120)
    procs.wait_until(
        lambda: (
            cp.kubectl(
                "wait", "--for=condition=Established", "crd", "--all", "--timeout=20s", check=False
            ).returncode
            == 0
        ),
        timeout=90,
        what="Kyverno's CRDs Established",
    )
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KYVERNO_NS}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": KYVERNO_SA, "namespace": KYVERNO_NS},
        },
        _config_map(),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kyverno-metrics", "namespace": KYVERNO_NS},
            "data": {},
        },
    ]
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


def kyverno_server(cp: ControlPlane, *, port: int, workdir: Path, issuer_ca: Path) -> env.Server:
    """The admission controller, out of cluster, pinned to :data:`KITPIN_CPU` from its start.
    Go trusts the registry's token issuer through ``SSL_CERT_FILE`` (system CAs + its CA)."""
    bundle = workdir / "kyverno-ca-bundle.pem"
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    bundle.write_bytes((system.read_bytes() if system.exists() else b"") + issuer_ca.read_bytes())
    argv = [
        *env.taskset(KITPIN_CPU),
        str(tools.kyverno()),
        f"--kubeconfig={cp.kubeconfig}",
        f"--serverIP=127.0.0.1:{port}",
        "--webhookServerHost=127.0.0.1",
        f"--webhookServerPort={port}",
        f"--caSecretName={CA_SECRET}",
        f"--tlsSecretName={TLS_SECRET}",
        "--backgroundServiceAccountName=system:serviceaccount:kyverno:kyverno-background-controller",
        "--reportsServiceAccountName=system:serviceaccount:kyverno:kyverno-reports-controller",
        "--metricsHost=127.0.0.1",
        f"--metricsPort={procs.free_port()}",
        "--controllerRuntimeMetricsAddress=0",
        "--admissionReports=false",
        "--disableLogColor",
        "-v=2",
    ]
    environment = dict(os.environ)
    environment.update(
        KYVERNO_NAMESPACE=KYVERNO_NS,
        KYVERNO_SERVICEACCOUNT_NAME=KYVERNO_SA,
        KYVERNO_DEPLOYMENT="kyverno-admission-controller",
        KYVERNO_POD_NAME="kyverno-out-of-cluster",
        INIT_CONFIG="kyverno",
        METRICS_CONFIG="kyverno-metrics",
        OTEL_TRACES_EXPORTER="none",
        SSL_CERT_FILE=str(bundle),
    )
    return env.Server("kyverno", argv, port=port, workdir=workdir, env=environment, cwd=workdir)


def _wait_ready(server: env.Server, path: str) -> None:
    def up() -> bool:
        server.process.check_alive()
        try:
            return env.get(server.url(path), timeout=2)[0] == 200
        except OSError:
            return False

    procs.wait_until(
        up, timeout=120, what=f"{server.name} {path}", on_timeout=server.process.log_tail
    )


def kyverno_ca(cp: ControlPlane, workdir: Path) -> str:
    """Kyverno's CA (the one its webhooks' caBundle names), written to a file."""
    path = workdir / "kyverno-ca.pem"

    def read() -> bool:
        out = cp.kubectl("get", "secret", CA_SECRET, "-n", KYVERNO_NS, "-o", "json", check=False)
        if out.returncode:
            return False
        path.write_bytes(base64.b64decode(json.loads(out.stdout)["data"]["tls.crt"]))
        return True

    procs.wait_until(read, timeout=60, what=f"Kyverno's CA Secret {CA_SECRET}")
    return str(path)


def apply_policy(cp: ControlPlane, kyverno: env.Server) -> None:
    """The policy, then wait until it is Ready and Kyverno's resource webhook sends Pods."""
    procs.wait_until(
        lambda: cp.kubectl("apply", "-f", str(POLICY), check=False).returncode == 0,
        timeout=60,
        what="Kyverno accepting the policy (its policy webhook)",
        on_timeout=kyverno.process.log_tail,
    )

    def ready() -> bool:
        kyverno.process.check_alive()
        out = cp.kubectl("get", "clusterpolicy", POLICY_NAME, "-o", "json", check=False)
        if out.returncode:
            return False
        conditions = json.loads(out.stdout).get("status", {}).get("conditions") or []
        if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return False
        hooks = cp.kubectl(
            "get", "mutatingwebhookconfiguration", RESOURCE_WEBHOOKS, "-o", "json", check=False
        )
        if hooks.returncode:
            return False
        rules = [r for h in json.loads(hooks.stdout)["webhooks"] for r in h.get("rules") or []]
        return any("pods" in r.get("resources", []) for r in rules)

    procs.wait_until(
        ready,
        timeout=90,
        what=f"policy {POLICY_NAME} Ready and Pods in {RESOURCE_WEBHOOKS}",
        on_timeout=kyverno.process.log_tail,
    )


def kyverno_pinned(created: dict[str, Any]) -> bool:
    """A created Pod whose every ``MODELKIT_REF`` carries a digest (and that kitpin did not
    pin: :func:`bench.apiserver._mode_of` checks kitpin's annotation first)."""
    values = [
        e.get("value", "")
        for c in created["spec"].get("initContainers") or []
        for e in c.get("env") or []
        if e.get("name") == "MODELKIT_REF"
    ]
    return bool(values) and all("@sha256:" in v for v in values)


def patched_values(answer: bytes) -> list[str]:
    """The ``MODELKIT_REF`` values a mutating answer's JSON patch writes (kitpin's and
    Kyverno's patches both replace the value in place)."""
    response = json.loads(answer)["response"]
    ops = json.loads(base64.b64decode(response.get("patch") or "W10="))
    return [
        str(op["value"])
        for op in ops
        if op.get("op") in ("replace", "add") and str(op.get("path", "")).endswith("/value")
    ]


# ----------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Target:
    name: str
    server: env.Server
    path: str
    ca: str
    expect: str | None


def measure_load(
    target: Target,
    bodies: list[bytes],
    plan: Plan,
    registry: env.Registry,
    repos: Sequence[str],
    *,
    rate: int | None,
) -> tuple[loadgen.Result, float]:
    """One load run; the server's CPU µs per review is set on the result. Also returns the
    registry manifest requests per review the run caused (for ``repos``)."""
    before = sum(sum(registry.manifest_requests(r).values()) for r in repos)
    c0 = target.server.cpu_seconds()
    url = target.server.url(target.path)
    if rate is None:
        r = loadgen.run_wrk(
            url,
            bodies,
            duration=plan.duration,
            connections=plan.connections,
            cpu=GENERATOR_CPU,
            expect=target.expect,
        )
    else:
        r = loadgen.run_vegeta(
            url,
            bodies,
            rate=rate,
            duration=plan.rate_duration,
            connections=plan.connections,
            cpu=GENERATOR_CPU,
            expect=target.expect,
            cacert=target.ca,
        )
    r.server_cpu_us_per_review = (target.server.cpu_seconds() - c0) / max(1, r.requests) * 1e6
    time.sleep(0.2)  # the registry writes its access-log line as the handler returns
    after = sum(sum(registry.manifest_requests(r).values()) for r in repos)
    per_review = (after - before) / max(1, r.requests)
    log(
        f"  {target.name}{'' if rate is None else f'@{rate}'}: {r.rps:,.0f} rps, "
        f"p50 {r.pct(50):.2f} p99 {r.pct(99):.2f} max {r.pct(100):.2f} ms, "
        f"{r.server_cpu_us_per_review:,.0f} CPU-us/review, {per_review:.2f} registry "
        f"manifest requests/review, errors {r.errors}"
    )
    return r, per_review


def direct_section(
    targets: Sequence[Target],
    bodies: list[bytes],
    plan: Plan,
    registry: env.Registry,
    repos: Sequence[str],
) -> dict[str, Any]:
    runs: dict[str, list[tuple[loadgen.Result, float]]] = {t.name: [] for t in targets}
    for _ in range(plan.repeats):  # interleaved: drift on a shared machine hits all
        for t in targets:
            runs[t.name].append(measure_load(t, bodies, plan, registry, repos, rate=None))
    out: dict[str, Any] = {"max": {}, "rate": {}, "distributions": {}}
    for t in targets:
        ordered = sorted(runs[t.name], key=lambda x: x[0].rps)
        median, per_review = ordered[len(ordered) // 2]
        out["max"][t.name] = {
            **median.summary(),
            "cpu_us_per_review": round(median.server_cpu_us_per_review or 0),
            "registry_manifest_requests_per_review": round(per_review, 3),
            "runs_rps": [round(r.rps, 1) for r, _ in runs[t.name]],
            "requests": median.requests,
        }
        out["distributions"][t.name] = median.percentiles_ms
    for t in targets:
        r, per_review = measure_load(t, bodies, plan, registry, repos, rate=plan.rate)
        out["rate"][t.name] = {
            **r.summary(),
            "rate": plan.rate,
            "cpu_us_per_review": round(r.server_cpu_us_per_review or 0),
            "registry_manifest_requests_per_review": round(per_review, 3),
            "requests": r.requests,
        }
        out["distributions"][f"{t.name}@{plan.rate}"] = r.percentiles_ms
    return out


def burst_case(
    target: Target, registry: env.Registry, repo: str, n: int, template: dict[str, Any]
) -> dict[str, Any]:
    """``n`` admissions of one reference the webhook never resolved, all in flight at once."""
    ref = registry.ref(repo, "v1")
    manifests_before = registry.manifest_requests(repo)
    tokens_before = registry.token_requests(repo)
    docs = [reviews.with_references(template, [ref], name=f"burst-{i:05d}") for i in range(n)]
    bodies = bench_run.bodies(docs)
    started = time.perf_counter()
    answers = asyncio.run(client.burst(target.server.url(target.path), bodies, cafile=target.ca))
    seconds = time.perf_counter() - started
    time.sleep(0.2)
    by_status = {
        k: v - manifests_before.get(k, 0)
        for k, v in registry.manifest_requests(repo).items()
        if v - manifests_before.get(k, 0)
    }
    pinned = sum(
        1
        for a in answers
        if a.status == 200 and any("@sha256:" in v for v in _values_or_none(a.body))
    )
    result = {
        "admissions": n,
        "pinned": pinned,
        "errors": n - pinned,
        "manifest_requests": sum(by_status.values()),
        "manifest_requests_by_status": by_status,
        "token_requests": registry.token_requests(repo) - tokens_before,
        "seconds": round(seconds, 3),
        "p50_ms": round(statistics.median(a.seconds for a in answers) * 1000, 2),
        "max_ms": round(max(a.seconds for a in answers) * 1000, 2),
    }
    log(
        f"registry, {target.name}: {n} admissions of one new reference -> "
        f"{result['manifest_requests']} manifest {by_status}, {result['token_requests']} token "
        f"requests; {pinned} pinned, {seconds:.2f}s"
    )
    return result


def _values_or_none(body: bytes) -> list[str]:
    try:
        return patched_values(body)
    except (ValueError, KeyError, TypeError):
        return []


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """kitpin / Kyverno (and each / no-op) from one run's figures."""
    out: dict[str, Any] = {}
    direct = results.get("direct", {}).get("max", {})
    if {"kitpin", "kyverno"} <= set(direct):
        k, y = direct["kitpin"], direct["kyverno"]
        out["max_rps_kitpin_over_kyverno"] = round(k["rps"] / y["rps"], 2) if y["rps"] else None
        out["cpu_per_review_kyverno_over_kitpin"] = (
            round(y["cpu_us_per_review"] / k["cpu_us_per_review"], 2)
            if k["cpu_us_per_review"]
            else None
        )
        if "noop" in direct and direct["noop"]["rps"]:
            out["max_rps_over_noop"] = {
                n: round(direct[n]["rps"] / direct["noop"]["rps"], 3) for n in ("kitpin", "kyverno")
            }
    rate = results.get("direct", {}).get("rate", {})
    if {"kitpin", "kyverno"} <= set(rate):
        out["p99_ms_at_rate"] = {n: rate[n]["p99_ms"] for n in ("noop", "kitpin", "kyverno")}
    burst = results.get("registry", {})
    if {"kitpin", "kyverno"} <= set(burst):
        out["registry_requests_for_burst"] = {
            n: {
                "manifest": burst[n]["manifest_requests"],
                "token": burst[n]["token_requests"],
            }
            for n in ("kitpin", "kyverno")
        }
    api = results.get("apiserver", {})
    if "ratio" in api and "kyverno_ratio" in api:
        out["apiserver_vs_none"] = {
            "kitpin": api["ratio"],
            "kyverno": api["kyverno_ratio"],
            "noop": api.get("noop_ratio"),
        }
        out["apiserver_kyverno_over_kitpin"] = round(
            api["kyverno_webhook_s"] / api["with_webhook_s"], 3
        )
    rss = results.get("rss_mb", {})
    if rss:
        out["rss_mb"] = rss
    return out


# ----------------------------------------------------------------------------- run


def run(plan: Plan, *, keep: bool) -> dict[str, Any]:
    t_start = time.monotonic()
    results: dict[str, Any] = {
        "machine": bench_run.machine_info(plan.bench_plan(), env.REPO_ROOT),
        "plan": dataclasses.asdict(plan),
        "setup": {
            "kyverno": tools.kyverno_version(),
            "kyverno_flags": "--admissionReports=false, -v=2 (chart verbosity); out of cluster",
            "kyverno_policy": "bench/kyverno-policy.yaml (library 'Resolve Image to Digest', "
            "adapted: MODELKIT_REF env values, <reference>@<digest>)",
            "kitpin": "kitpin run --dev, default settings (cache on, tag records on)",
            "registry": "CNCF distribution, token auth (anonymous pull of bench/*), realm "
            "on localhost",
            "cpus": f"webhooks on CPU {KITPIN_CPU}, generators on CPU {GENERATOR_CPU}",
        },
    }
    tools.wrk()
    tools.vegeta()
    tools.kyverno()
    harness_tools.ensure("etcd", "kube-apiserver", "kube-controller-manager", "registry")
    results["machine"]["generators"] = {
        "max": tools.wrk_version(tools.wrk()),
        "rate": f"vegeta {tools.VEGETA_VERSION}",
    }
    work = Path(tempfile.mkdtemp(prefix="kitpin-bench-kyverno-"))
    cp = ControlPlane(work / "controlplane")
    started_cp = bench_run.in_thread(cp.start)
    registry = env.Registry(work, realm_host="localhost")
    servers: list[env.Server] = []
    try:
        registry.start()
        warm_repos = ["bench/llama-7b", "bench/mistral-7b"]
        warm_refs = [registry.ref(r, "v1") for r in warm_repos]
        for seed, repo in enumerate(warm_repos, start=1):
            registry.push(repo, "v1", seed=seed)
        burst_repos = {"kitpin": "bench/burst-kitpin", "kyverno": "bench/burst-kyverno"}
        for repo in burst_repos.values():
            registry.push(repo, "v1", seed=3)
        log(f"registry {registry.host}: ModelKits pushed")
        started_cp()
        log(f"control plane up in {cp.startup_seconds.get('total', 0):.1f}s")
        cp.kubectl("apply", "--server-side", "-f", str(env.REPO_ROOT / "deploy" / "crds"))
        install_kyverno(cp)
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
        ports = [procs.free_port() for _ in range(4)]
        warm = env.kitpin(
            "kitpin-warm",
            port=ports[0],
            workdir=work,
            kubeconfig=cp.kubeconfig,
            registry_config=reg_config,
            settings={},
            cpu=None,
            dev=True,
        )
        burst = env.kitpin(
            "kitpin-burst",
            port=ports[1],
            workdir=work,
            kubeconfig=cp.kubeconfig,
            registry_config=reg_config,
            settings={},
            cpu=None,
            dev=False,
            cert=certs,
        )
        capture_dir = work / "captured"
        noop = env.noop(
            "noop", port=ports[2], workdir=work, cert=certs, cpu=None, capture=capture_dir
        )
        assert registry.issuer.ca_file is not None
        kyverno = kyverno_server(cp, port=ports[3], workdir=work, issuer_ca=registry.issuer.ca_file)
        for s in (warm, burst, noop, kyverno):
            s.process.start()
            servers.append(s)
        for s in (warm, burst, noop, kyverno):
            _wait_ready(s, "/health/readiness" if s is kyverno else "/healthz")
        for s in (warm, burst, noop):
            s.pin(KITPIN_CPU)
        kyverno.pin(KITPIN_CPU)  # its threads since start inherit CPU 0 already
        config_name, warm_ca = bench_run.wait_for_config(cp, warm.port, work)
        kyverno_ca_file = kyverno_ca(cp, work)
        apply_policy(cp, kyverno)
        results["rss_mb"] = {
            "kitpin_startup": round(warm.rss_mb(), 1),
            "kyverno_startup": round(kyverno.rss_mb(), 1),
        }
        one_ref, two_refs = bench_run.capture_reviews(
            cp,
            noop,
            capture_dir,
            Path(certs.ca_file),
            [
                reviews.pod("capture-one", NAMESPACE, warm_refs[:1]),
                reviews.pod("capture-two", NAMESPACE, warm_refs),
            ],
        )
        log(f"everything up at {time.monotonic() - t_start:.0f}s")

        targets = [
            Target("noop", noop, PIN_PATH, str(certs.ca_file), None),
            Target("kitpin", warm, PIN_PATH, warm_ca, '"patch"'),
            Target("kyverno", kyverno, MUTATE_PATH, kyverno_ca_file, '"patch"'),
        ]
        warm_review = reviews.with_references(two_refs, warm_refs, name="llm-0")
        warm_bodies = bench_run.bodies([warm_review])
        for t in targets[1:]:  # warm up, and check that both really pin both references
            answers = asyncio.run(
                client.each_once(t.server.url(t.path), warm_bodies * 20, cafile=t.ca, concurrency=4)
            )
            values = patched_values(answers[0].body)
            if sorted(v.partition("@")[0] for v in values) != sorted(warm_refs) or not all(
                "@sha256:" in v for v in values
            ):
                raise RuntimeError(f"{t.name} did not pin the review: {answers[0].body[:600]!r}")

        # -- registry: one new reference, all in flight at once -----------------------------
        burst_targets = {
            "kitpin": Target("kitpin", burst, PIN_PATH, str(certs.ca_file), '"patch"'),
            "kyverno": targets[2],
        }
        results["registry"] = {
            name: burst_case(t, registry, burst_repos[name], plan.burst, one_ref)
            for name, t in burst_targets.items()
        }
        burst.stop()

        # -- direct -------------------------------------------------------------------------
        results["direct"] = direct_section(targets, warm_bodies, plan, registry, warm_repos)
        results["rss_mb"]["kitpin_after_load"] = round(warm.rss_mb(), 1)
        results["rss_mb"]["kyverno_after_load"] = round(kyverno.rss_mb(), 1)

        # -- through the apiserver ----------------------------------------------------------
        for s in (warm, noop, kyverno):
            s.pin(None)
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
                    "kyverno": kyverno.pid,
                    "noop": noop.pid,
                    "bench": os.getpid(),
                },
                noop=(noop.url(""), Path(certs.ca_file).read_bytes()),
                selected={
                    "kyverno": apiserver.Selected(
                        labels={SELECT_LABEL: "true"}, admitted=kyverno_pinned
                    )
                },
            )
        )
        results["apiserver"] = outcome.summary()
        log(
            f"apiserver: {plan.pods} pods: none {results['apiserver']['without_webhook_s']}s, "
            f"kitpin {results['apiserver']['with_webhook_s']}s, "
            f"kyverno {results['apiserver']['kyverno_webhook_s']}s, "
            f"noop pair {results['apiserver'].get('noop_webhook_s')}s"
        )
        results["rss_mb"]["kitpin_end"] = round(warm.rss_mb(), 1)
        results["rss_mb"]["kyverno_end"] = round(kyverno.rss_mb(), 1)
        results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        results["machine"]["wall_seconds"] = round(time.monotonic() - t_start, 1)
    finally:
        env.tear_down(
            servers, registry=registry, cp=cp, started_cp=started_cp, work=work, keep=keep
        )
    results["ratios"] = ratios(results)
    return results


# ----------------------------------------------------------------------------- output


def plot(results: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.plot import _nines

    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [3, 2]}, layout="constrained"
    )
    colours = {"noop": "#888888", "kitpin": "#1f77b4", "kyverno": "#d62728"}
    ticks = [0, 50, 90, 99, 99.9]
    for name, pct in results.get("direct", {}).get("distributions", {}).items():
        points = sorted((float(p), v) for p, v in pct.items() if float(p) < 100)
        base = name.partition("@")[0]
        ax.plot(
            [_nines(p) for p, _ in points],
            [max(v, 1e-3) for _, v in points],
            "--" if "@" in name else "-",
            marker=".",
            color=colours.get(base),
            label=f"{name} (max {pct.get('100', 0):.1f} ms)",
        )
    ax.set_xticks([_nines(t) for t in ticks], [f"p{t:g}" if t else "min" for t in ticks])
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_xlabel("percentile")
    ax.set_title("AdmissionReview latency (solid: max throughput, dashed: fixed rate)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)

    direct = results.get("direct", {}).get("max", {})
    names = [n for n in CASES if n in direct]
    rps = [direct[n]["rps"] for n in names]
    bars = bx.bar(names, rps, color=[colours[n] for n in names])
    for bar, name in zip(bars, names, strict=True):
        d = direct[name]
        bx.annotate(
            f"{d['rps']:,.0f} rps\n{d['cpu_us_per_review']:,} CPU-us",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    api = results.get("apiserver", {})
    if api:
        bx.set_xlabel(
            f"{api.get('pods')} Pods through the apiserver, x the time with no webhook:\n"
            f"kitpin {api.get('ratio')}, Kyverno {api.get('kyverno_ratio')}, "
            f"no-op pair {api.get('noop_ratio')}",
            fontsize=9,
        )
    bx.set_ylabel("reviews/s (each webhook pinned to one core)")
    bx.set_title("max throughput, warm")
    machine = results.get("machine", {})
    fig.suptitle(
        f"kitpin vs Kyverno {results.get('setup', {}).get('kyverno', '')} "
        f"{'(quick) ' if machine.get('quick') else ''}{machine.get('timestamp', '')}",
        fontsize=10,
    )
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def print_summary(results: dict[str, Any]) -> None:
    direct = results.get("direct", {})
    print(f"\n{'direct, max':<14}{'rps':>9}{'cpu us':>9}{'p50 ms':>9}{'p99 ms':>9}{'reg/rev':>9}")
    for name, c in direct.get("max", {}).items():
        print(
            f"{name:<14}{c['rps']:>9,.0f}{c['cpu_us_per_review']:>9}{c['p50_ms']:>9.2f}"
            f"{c['p99_ms']:>9.2f}{c['registry_manifest_requests_per_review']:>9}"
        )
    for name, c in direct.get("rate", {}).items():
        print(f"{name}@{c['rate']:<8} p50 {c['p50_ms']:.2f} p99 {c['p99_ms']:.2f} ms")
    print(f"\nratios: {json.dumps(results.get('ratios', {}), indent=2)}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.kyverno", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="short smoke run")
    p.add_argument("--out", type=Path, default=env.REPO_ROOT / "bench" / "results" / "kyverno")
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
