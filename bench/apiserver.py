"""Through the apiserver: create N Pods with kitpin's webhooks registered and without them,
alternating in one run, and compare the wall time until all N are created.

The webhook configurations are the ones ``kitpin run --dev`` had kopf create
(``kitpin.dev``, mutating ``pin-*`` and validating ``check-*``). "Without" deletes both
objects; "with" re-creates them exactly as saved. After each switch a probe Pod is created
until the apiserver's webhook informer shows the new state (pinned annotation present or
absent), so no round straddles the switch.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import ssl
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench import env, reviews
from tests.harness.controlplane import ControlPlane

ADMISSION = "/apis/admissionregistration.k8s.io/v1"
KINDS = ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
PINNED = "kitpin.dev/pinned"


@dataclass(kw_only=True)
class Outcome:
    pods: int
    concurrency: int
    with_webhook_s: list[float] = field(default_factory=list)
    without_webhook_s: list[float] = field(default_factory=list)
    cpu_with_s: dict[str, list[float]] = field(default_factory=dict)
    """CPU seconds each component used per measured round, with the webhooks."""
    cpu_without_s: dict[str, list[float]] = field(default_factory=dict)

    def cpu_ms_per_pod(self, runs: dict[str, list[float]]) -> dict[str, float]:
        return {k: round(statistics.median(v) / self.pods * 1e3, 3) for k, v in runs.items()}

    def summary(self) -> dict[str, Any]:
        w = statistics.median(self.with_webhook_s)
        wo = statistics.median(self.without_webhook_s)
        return {
            "pods": self.pods,
            "with_webhook_s": round(w, 3),
            "without_webhook_s": round(wo, 3),
            "ratio": round(w / wo, 3),
            "concurrency": self.concurrency,
            "rounds": len(self.with_webhook_s),
            "with_webhook_runs_s": [round(x, 3) for x in self.with_webhook_s],
            "without_webhook_runs_s": [round(x, 3) for x in self.without_webhook_s],
            # where the time goes: CPU per created Pod, by process (median round)
            "cpu_ms_per_pod_with": self.cpu_ms_per_pod(self.cpu_with_s),
            "cpu_ms_per_pod_without": self.cpu_ms_per_pod(self.cpu_without_s),
        }


def _ssl(cp: ControlPlane) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cp.ca.cert))
    ctx.load_cert_chain(str(cp.admin.cert), str(cp.admin.key))
    return ctx


def creatable(pod: dict[str, Any]) -> dict[str, Any]:
    """A Pod as a client sends it: what the apiserver defaults or owns is left out."""
    pod = copy.deepcopy(pod)
    pod.pop("status", None)
    spec = pod["spec"]
    for key in ("priority", "preemptionPolicy", "serviceAccount", "schedulerName"):
        spec.pop(key, None)
    return pod


class Api:
    def __init__(self, cp: ControlPlane, session: aiohttp.ClientSession) -> None:
        self.base = cp.url
        self.session = session

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(
            method, self.base + path, json=body, headers={"Accept": "application/json"}
        ) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text else None)

    async def ensure_namespace(self, name: str) -> None:
        status, body = await self.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        if status not in (201, 409):
            raise RuntimeError(f"creating namespace {name}: {status} {body}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the ServiceAccount plugin needs `default`
            status, _ = await self.call("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")
            if status == 200:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"no default ServiceAccount in {name} after 30 s")

    async def create_pod(self, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
        pod["metadata"]["namespace"] = namespace
        status, body = await self.call("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
        if status != 201:
            raise RuntimeError(f"creating pod {pod['metadata']['name']}: {status} {body}")
        return dict(body)


async def _save(api: Api, name: str) -> dict[str, dict[str, Any]]:
    saved: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        status, body = await api.call("GET", f"{ADMISSION}/{kind}/{name}")
        if status != 200:
            raise RuntimeError(f"{kind}/{name} not found ({status}): is kitpin --dev running?")
        meta = body["metadata"]
        body["metadata"] = {k: meta[k] for k in ("name", "labels", "annotations") if k in meta}
        saved[kind] = body
    return saved


async def _switch(
    api: Api,
    saved: dict[str, dict[str, Any]],
    *,
    on: bool,
    probe_ns: str,
    pod: dict[str, Any],
    counter: list[int],
) -> None:
    for kind, body in saved.items():
        name = body["metadata"]["name"]
        if on:
            status, answer = await api.call("POST", f"{ADMISSION}/{kind}", body)
            ok = status in (201, 409)
        else:
            status, answer = await api.call("DELETE", f"{ADMISSION}/{kind}/{name}")
            ok = status in (200, 404)
        if not ok:
            raise RuntimeError(f"{'creating' if on else 'deleting'} {kind}/{name}: {answer}")
    deadline = time.monotonic() + 30
    streak = 0
    while time.monotonic() < deadline:
        counter[0] += 1
        probe = copy.deepcopy(pod)
        probe["metadata"]["name"] = f"probe-{counter[0]}"
        created = await api.create_pod(probe_ns, probe)
        pinned = PINNED in (created["metadata"].get("annotations") or {})
        streak = streak + 1 if pinned == on else 0
        if streak >= 3:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the webhooks did not turn {'on' if on else 'off'} within 30 s")


async def _round(
    api: Api, namespace: str, pod: dict[str, Any], n: int, concurrency: int, *, expect_pinned: bool
) -> float:
    await api.ensure_namespace(namespace)
    gate = asyncio.Semaphore(concurrency)
    bodies = []
    for i in range(n):
        body = copy.deepcopy(pod)
        body["metadata"]["name"] = f"pod-{i:05d}"
        body["metadata"]["namespace"] = namespace
        bodies.append(body)

    async def one(body: dict[str, Any]) -> bool:
        async with gate:
            created = await api.create_pod(namespace, body)
        return PINNED in (created["metadata"].get("annotations") or {})

    started = time.perf_counter()
    pinned = await asyncio.gather(*(one(b) for b in bodies))
    seconds = time.perf_counter() - started
    if any(p != expect_pinned for p in pinned):
        raise RuntimeError(
            f"{namespace}: {sum(pinned)}/{n} pods pinned, expected "
            f"{'all' if expect_pinned else 'none'}"
        )
    return seconds


async def measure(
    cp: ControlPlane,
    *,
    references: Sequence[str],
    pods: int,
    rounds: int,
    concurrency: int = 32,
    config_name: str = "kitpin.dev",
    processes: dict[str, int] | None = None,
) -> Outcome:
    """``rounds`` alternating pairs (without, with) after one unmeasured warm-up pair.
    ``processes`` (name -> pid): whose CPU time to account per round."""
    pids = dict(processes or {})
    pod = creatable(reviews.pod("x", "x", references))
    outcome = Outcome(pods=pods, concurrency=min(concurrency, pods))
    run_id = secrets.token_hex(3)  # names never collide with an earlier run's
    connector = aiohttp.TCPConnector(ssl=_ssl(cp), limit=concurrency + 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        api = Api(cp, session)
        probe_ns = f"bench-probe-{run_id}"
        await api.ensure_namespace(probe_ns)
        saved = await _save(api, config_name)
        counter = [0]
        try:
            for r in range(rounds + 1):
                for on in (False, True):
                    await _switch(api, saved, on=on, probe_ns=probe_ns, pod=pod, counter=counter)
                    ns = f"bench-{run_id}-{'with' if on else 'without'}-{r}"
                    cpu0 = {k: env.cpu_seconds(pid) for k, pid in pids.items()}
                    seconds = await _round(api, ns, pod, pods, concurrency, expect_pinned=on)
                    cpu = {k: env.cpu_seconds(pid) - cpu0[k] for k, pid in pids.items()}
                    if r == 0:
                        continue  # warm-up: connections, caches, the apiserver's own
                    (outcome.with_webhook_s if on else outcome.without_webhook_s).append(seconds)
                    for k, used in cpu.items():
                        (outcome.cpu_with_s if on else outcome.cpu_without_s).setdefault(
                            k, []
                        ).append(used)
        finally:
            await _switch(api, saved, on=True, probe_ns=probe_ns, pod=pod, counter=counter)
    return outcome
