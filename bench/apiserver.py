"""Through the apiserver: create N Pods with kitpin's webhooks registered and without them,
alternating in one run, and compare the wall time until all N are created.

A third mode, ``noop``, registers the same two configurations pointed at the no-op responder
(``bench/noop.py``; its mutating answers add one annotation): the cost of any webhook pair
to the apiserver on this machine, the floor under kitpin's ratio.

The webhook configurations are the ones ``kitpin run --dev`` had kopf create
(``kitpin.dev``, mutating ``pin-*`` and validating ``check-*``). "Without" deletes both
objects; "with" re-creates them exactly as saved. After each switch a probe Pod is created
until the apiserver's webhook informer shows the new state (pinned annotation present or
absent), so no round straddles the switch.

A webhook that manages its own configurations (Kyverno, bench/kyverno.py) cannot be deleted
and re-created like this: its controller puts them back. It is a *selected* mode
(:class:`Selected`): its configurations stay registered throughout, its webhooks select only
namespaces with its label (its own ``namespaceSelector`` setting), and only that mode's rounds
create their namespaces with the label. Every mode pays for the apiserver checking that
selector; only the selected mode's Pods are sent to it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import secrets
import ssl
import statistics
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench import env, reviews
from harness.controlplane import ControlPlane

ADMISSION = "/apis/admissionregistration.k8s.io/v1"
KINDS = ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
PINNED = "kitpin.dev/pinned"
NOOP_ANNOTATION = "bench.kitpin.dev/noop"
Mode = str  # "without" | "with" | "noop" | a selected mode


@dataclass(frozen=True, kw_only=True)
class Selected:
    """A mode whose webhooks are always registered and select namespaces by ``labels``."""

    labels: Mapping[str, str]
    admitted: Callable[[dict[str, Any]], bool]
    """True when a created Pod shows this webhook's work (and not kitpin's or the no-op's)."""


@dataclass(kw_only=True)
class Outcome:
    pods: int
    concurrency: int
    with_webhook_s: list[float] = field(default_factory=list)
    without_webhook_s: list[float] = field(default_factory=list)
    noop_webhook_s: list[float] = field(default_factory=list)
    cpu_with_s: dict[str, list[float]] = field(default_factory=dict)
    """CPU seconds each component used per measured round, with the webhooks."""
    cpu_without_s: dict[str, list[float]] = field(default_factory=dict)
    cpu_noop_s: dict[str, list[float]] = field(default_factory=dict)
    selected_s: dict[Mode, list[float]] = field(default_factory=dict)
    """Seconds per measured round of each selected mode."""
    cpu_selected_s: dict[Mode, dict[str, list[float]]] = field(default_factory=dict)

    def seconds(self, mode: Mode) -> list[float]:
        fixed = {
            "with": self.with_webhook_s,
            "without": self.without_webhook_s,
            "noop": self.noop_webhook_s,
        }
        return fixed[mode] if mode in fixed else self.selected_s.setdefault(mode, [])

    def cpu(self, mode: Mode) -> dict[str, list[float]]:
        fixed = {"with": self.cpu_with_s, "without": self.cpu_without_s, "noop": self.cpu_noop_s}
        return fixed[mode] if mode in fixed else self.cpu_selected_s.setdefault(mode, {})

    def cpu_ms_per_pod(self, runs: dict[str, list[float]]) -> dict[str, float]:
        return {k: round(statistics.median(v) / self.pods * 1e3, 3) for k, v in runs.items()}

    def summary(self) -> dict[str, Any]:
        w = statistics.median(self.with_webhook_s)
        wo = statistics.median(self.without_webhook_s)
        floor: dict[str, Any] = {}
        if self.noop_webhook_s:
            n = statistics.median(self.noop_webhook_s)
            floor = {
                # the same two configurations pointed at the no-op responder
                "noop_webhook_s": round(n, 3),
                "noop_ratio": round(n / wo, 3),
                "noop_webhook_runs_s": [round(x, 3) for x in self.noop_webhook_s],
                "cpu_ms_per_pod_noop": self.cpu_ms_per_pod(self.cpu_noop_s),
            }
        for mode, runs in self.selected_s.items():
            m = statistics.median(runs)
            floor |= {
                f"{mode}_webhook_s": round(m, 3),
                f"{mode}_ratio": round(m / wo, 3),
                f"{mode}_webhook_runs_s": [round(x, 3) for x in runs],
                f"cpu_ms_per_pod_{mode}": self.cpu_ms_per_pod(self.cpu_selected_s.get(mode, {})),
            }
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
            **floor,
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

    async def ensure_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        meta: dict[str, Any] = {"name": name}
        if labels:
            meta["labels"] = dict(labels)
        status, body = await self.call("POST", "/api/v1/namespaces", {"metadata": meta})
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


def _pointed_at(
    saved: dict[str, dict[str, Any]], base_url: str, ca_pem: bytes
) -> dict[str, dict[str, Any]]:
    """``saved`` with every webhook sent to ``base_url`` (same paths; mutating ones under
    ``/annotate``) and trusting ``ca_pem``."""
    bundle = base64.b64encode(ca_pem).decode()
    out = copy.deepcopy(saved)
    for kind, body in out.items():
        prefix = "/annotate" if kind.startswith("mutating") else ""
        for hook in body.get("webhooks") or []:
            cc = hook["clientConfig"]
            path = urllib.parse.urlsplit(cc["url"]).path if "url" in cc else cc["service"]["path"]
            hook["clientConfig"] = {"url": base_url + prefix + path, "caBundle": bundle}
    return out


async def _switch(
    api: Api,
    configs: dict[Mode, dict[str, dict[str, Any]]],
    *,
    mode: Mode,
    probe_ns: str,
    pod: dict[str, Any],
    counter: list[int],
    selected: Mapping[Mode, Selected],
) -> None:
    """Register the configurations of ``mode`` (none for ``without`` or a selected mode),
    then create probe Pods (in the selected mode's labelled namespace for one) until three in
    a row show that the apiserver uses them."""
    any_saved = next(iter(configs.values()))
    for kind, body in any_saved.items():
        name = body["metadata"]["name"]
        status, answer = await api.call("DELETE", f"{ADMISSION}/{kind}/{name}")
        if status not in (200, 404):
            raise RuntimeError(f"deleting {kind}/{name}: {answer}")
    for kind, body in (configs.get(mode) or {}).items():
        status, answer = await api.call("POST", f"{ADMISSION}/{kind}", body)
        if status != 201:
            raise RuntimeError(f"creating {kind}/{body['metadata']['name']}: {answer}")
    if mode in selected:
        probe_ns = f"{probe_ns}-{mode}"
        await api.ensure_namespace(probe_ns, selected[mode].labels)
    deadline = time.monotonic() + 30
    streak = 0
    while time.monotonic() < deadline:
        counter[0] += 1
        probe = copy.deepcopy(pod)
        probe["metadata"]["name"] = f"probe-{counter[0]}"
        created = await api.create_pod(probe_ns, probe)
        streak = streak + 1 if _mode_of(created, selected) == mode else 0
        if streak >= 3:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the apiserver did not switch to webhooks {mode!r} within 30 s")


def _mode_of(created: dict[str, Any], selected: Mapping[Mode, Selected]) -> Mode:
    annotations = created["metadata"].get("annotations") or {}
    if PINNED in annotations:
        return "with"
    if NOOP_ANNOTATION in annotations:
        return "noop"
    for mode, how in selected.items():
        if how.admitted(created):
            return mode
    return "without"


async def _round(
    api: Api,
    namespace: str,
    pod: dict[str, Any],
    n: int,
    concurrency: int,
    *,
    mode: Mode,
    selected: Mapping[Mode, Selected],
) -> float:
    await api.ensure_namespace(namespace, selected[mode].labels if mode in selected else None)
    gate = asyncio.Semaphore(concurrency)
    bodies = []
    for i in range(n):
        body = copy.deepcopy(pod)
        body["metadata"]["name"] = f"pod-{i:05d}"
        body["metadata"]["namespace"] = namespace
        bodies.append(body)

    async def one(body: dict[str, Any]) -> Mode:
        async with gate:
            created = await api.create_pod(namespace, body)
        return _mode_of(created, selected)

    started = time.perf_counter()
    modes = await asyncio.gather(*(one(b) for b in bodies))
    seconds = time.perf_counter() - started
    wrong = [m for m in modes if m != mode]
    if wrong:
        raise RuntimeError(
            f"{namespace}: {len(wrong)}/{n} pods admitted by webhooks {wrong[0]!r}, not {mode!r}"
        )
    return seconds


async def measure(
    cp: ControlPlane,
    *,
    references: Sequence[str],
    pods: int,
    rounds: int,
    concurrency: int = 32,
    config_name: str,
    processes: dict[str, int] | None = None,
    noop: tuple[str, bytes] | None = None,
    selected: Mapping[Mode, Selected] | None = None,
) -> Outcome:
    """``rounds`` alternating pairs (without, with) after one unmeasured warm-up pair.
    ``processes`` (name -> pid): whose CPU time to account per round. ``noop``: (base URL, CA
    PEM) of the no-op responder, to add the ``noop`` mode to every round. ``selected``: more
    modes, each a webhook that keeps its own configurations (:class:`Selected`)."""
    chosen = dict(selected or {})
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
        configs: dict[Mode, dict[str, dict[str, Any]]] = {"with": saved}
        if noop is not None:
            configs["noop"] = _pointed_at(saved, *noop)
        modes = ["without", *configs, *chosen]
        counter = [0]
        try:
            for r in range(rounds + 1):
                for mode in modes:
                    await _switch(
                        api,
                        configs,
                        mode=mode,
                        probe_ns=probe_ns,
                        pod=pod,
                        counter=counter,
                        selected=chosen,
                    )
                    ns = f"bench-{run_id}-{mode}-{r}"
                    cpu0 = {k: env.cpu_seconds(pid) for k, pid in pids.items()}
                    seconds = await _round(
                        api, ns, pod, pods, concurrency, mode=mode, selected=chosen
                    )
                    cpu = {k: env.cpu_seconds(pid) - cpu0[k] for k, pid in pids.items()}
                    if r == 0:
                        continue  # warm-up: connections, caches, the apiserver's own
                    outcome.seconds(mode).append(seconds)
                    for k, used in cpu.items():
                        outcome.cpu(mode).setdefault(k, []).append(used)
        finally:
            await _switch(
                api,
                configs,
                mode="with",
                probe_ns=probe_ns,
                pod=pod,
                counter=counter,
                selected=chosen,
            )
    return outcome
