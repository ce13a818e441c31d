"""The fault matrix's worker: one resolution by kitpin's real registry client and resolver, in
a process of its own, measured.

``python -m tests.integration.conftest_faults SPEC_JSON`` wires the registry access as
``kitpin run`` does (:func:`controller.settings.registry_access` from a ``--registry-config``
file, ``RegistryClient(policy, on_request=metrics...)``, ``Resolver(client, settings=...,
metrics=...)``, ``ConfigCache(client)``), resolves one reference within the resolver's
deadline, and prints one JSON object (:class:`Outcome`) on stdout: the outcome, the error
reason, the digest it would pin, the wall time, and memory. A fresh process per case, so one
case cannot hide another's growth: after the imports and the client are set up, the peak
resident size is reset (``/proc/self/clear_refs``), and the growth is the peak reached during
the case (``VmHWM``) over the resident size before it (``VmRSS``).

Modes (``SPEC_JSON["mode"]``):

- ``manifest``: resolve the reference once (what the webhook does for a Pod);
- ``config``: resolve it, then read its config blob (the Kitfile, for policy rules) through
  the ``ConfigCache`` under what is left of the same deadline, as the admission engine does;
- ``warm``: resolve it once (must succeed), then again with the entry expired (``ttl=0``): the
  second answer is measured, so a fault met on a refresh can be served stale or not.

A resolution that succeeds is a pin only when kitpin would pin it: the manifest must be a
model artifact (:func:`controller.artifacts.model_format`, the one "is this a ModelKit" rule),
else the outcome is refused with the engine's ``NotAModelKit`` reason.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Literal, TypedDict

Mode = Literal["manifest", "config", "warm"]


class Spec(TypedDict):
    reference: str
    mode: Mode
    deadline: float
    registry_config: str


class Outcome(TypedDict):
    outcome: Literal["pinned", "stale", "refused", "escaped", "warmup-failed"]
    """``pinned``: kitpin would pin ``digest``; ``stale``: it would pin a cached ``digest``
    served stale; ``refused``: an error with ``reason``; ``escaped``: an exception outside
    kitpin's error hierarchy (``reason`` is its type); ``warmup-failed``: the first
    resolution of ``warm`` mode failed."""
    reason: str | None
    message: str
    digest: str | None
    retry_after: float | str | None
    wall: float
    """Seconds the measured call took (the resolution, plus the config read in config mode)."""
    rss_before_kib: int
    hwm_kib: int
    growth_kib: int
    """Peak resident size during the case over the resident size before it."""
    traceback: str


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    found = {}
    for name in ("VmRSS", "VmHWM"):
        m = re.search(rf"^{name}:\s+(\d+) kB", text, re.MULTILINE)
        found[name] = int(m.group(1)) if m else 0
    return found


def _reset_peak() -> None:
    """Make ``VmHWM`` start again from the current resident size (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


async def run(spec: Spec) -> Outcome:
    from controller import artifacts, errors, refs, settings
    from controller.admission import pinning
    from controller.metrics import Metrics
    from controller.registry.client import RegistryClient
    from controller.resolver import ConfigCache, Resolver, ResolverSettings

    policy, _keychain = settings.registry_access(registry_config=spec["registry_config"])
    deadline = spec["deadline"]
    warm = spec["mode"] == "warm"
    resolver_settings = ResolverSettings(deadline=deadline, ttl=0.0 if warm else 60.0)
    metrics = Metrics()
    ref = refs.parse(spec["reference"], grammar="kit")
    outcome: Outcome = {
        "outcome": "refused",
        "reason": None,
        "message": "",
        "digest": None,
        "retry_after": None,
        "wall": 0.0,
        "rss_before_kib": 0,
        "hwm_kib": 0,
        "growth_kib": 0,
        "traceback": "",
    }
    async with RegistryClient(policy, on_request=metrics.count_registry_request) as client:
        resolver = Resolver(client, settings=resolver_settings, metrics=metrics)
        configs = ConfigCache(client)
        if warm:
            try:
                await resolver.resolve(ref)
            except errors.RegistryError as e:
                outcome.update({"outcome": "warmup-failed", "reason": e.reason, "message": str(e)})
                return outcome
        gc.collect()
        _reset_peak()
        before = _status()["VmRSS"]
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        deadline_at = loop.time() + deadline
        try:
            resolution = await resolver.resolve(ref, deadline=deadline)
            if spec["mode"] == "config":
                # As the engine reads a Kitfile: under what is left of the same deadline.
                async with asyncio.timeout(max(deadline_at - loop.time(), 0.001)):
                    await configs.get_config(ref, resolution.manifest)
        except errors.RegistryError as e:
            outcome.update({"reason": e.reason, "message": str(e)})
            if isinstance(e, errors.RateLimitedError):
                outcome["retry_after"] = (
                    e.retry_after
                    if e.retry_after is None or e.retry_after < float("inf")
                    else "inf"
                )
        except TimeoutError as e:  # the engine's config read: its deadline, reason Timeout
            outcome.update({"reason": errors.RegistryTimeoutError.reason, "message": repr(e)})
        except Exception as e:
            outcome.update(
                {
                    "outcome": "escaped",
                    "reason": type(e).__name__,
                    "message": str(e)[:500],
                    "traceback": traceback.format_exc()[-4000:],
                }
            )
        else:
            if artifacts.model_format(resolution.manifest) is None:
                outcome.update(
                    {
                        "reason": pinning.Reason.NOT_A_MODELKIT,
                        "message": artifacts.not_a_modelkit(resolution.manifest) or "",
                    }
                )
            else:
                outcome.update(
                    {
                        "outcome": "stale" if resolution.stale else "pinned",
                        "digest": resolution.digest,
                        "message": resolution.stale_reason or "",
                    }
                )
        outcome["wall"] = time.perf_counter() - started
        after = _status()
        outcome.update(
            {
                "rss_before_kib": before,
                "hwm_kib": after["VmHWM"],
                "growth_kib": max(after["VmHWM"] - before, 0),
            }
        )
        outcome["message"] = outcome["message"][:500]
        return outcome


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec: Spec = json.loads(argv[0])
    result: dict[str, Any] = dict(asyncio.run(run(spec)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
