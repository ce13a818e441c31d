"""The registry goes down: a digest verified before is still served (stale-if-error) with a
warning naming it; a reference never resolved is denied with the real cause.

Only these tests stop the ``flaky`` registry (``registries.flaky_down()`` starts it again on
the same port afterwards). kitpin's cache TTL is ``CACHE_TTL`` seconds in the e2e settings.
"""

from __future__ import annotations

import pytest

from harness import modelkit, procs
from tests.e2e.conftest import (
    CACHE_TTL,
    POD_ENV,
    TIMEOUT,
    Kitpin,
    Result,
    at,
    denied_by,
    pinned_ref,
    pins,
    pod,
    ref_to,
)

pytestmark = pytest.mark.e2e


def test_registry_down_with_a_cached_digest_admits_it_with_a_warning(
    kitpin: Kitpin, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.flaky
    digest = modelkit.push_modelkit(registry, repo, "production")
    tagged = ref_to(registry, repo, "production")
    pinned = pinned_ref(registry, repo, "production", digest)
    first = kitpin.create(pod("before", namespace, tagged))
    assert first.ok, first.stderr
    verified = (pins(first.obj) or {})[POD_ENV]
    assert verified["digest"] == digest
    stale_before = kitpin.metric("kitpin_resolver_stale_served_total")

    with kitpin.registries.flaky_down():
        # Within the TTL the cache answers without a warning; once the entry has expired
        # (CACHE_TTL seconds) the refresh fails and the last verified digest is served stale.
        def stale_warning() -> Result | None:
            dry = kitpin.create(pod("during", namespace, tagged), dry_run=True)
            assert dry.ok, dry.stderr
            return dry if dry.warnings else None

        procs.wait_until(
            stale_warning,
            timeout=CACHE_TTL + TIMEOUT,
            what="a dry-run Pod admitted with the stale-if-error warning",
            interval=0.5,
        )
        created = kitpin.create(pod("during", namespace, tagged))

    assert created.ok, created.stderr
    (warning,) = created.warnings
    assert 'initContainer "kitops-init" env MODELKIT_REF' in warning
    assert "the registry could not be reached" in warning
    assert f"pinned to the last verified digest {digest} from {verified['resolvedAt']}" in warning
    stored = kitpin.get("pod", "during", namespace)
    assert at(stored, POD_ENV) == pinned
    # The record says when the digest was verified, not when it was served.
    assert (pins(stored) or {})[POD_ENV] == verified
    assert kitpin.metric("kitpin_resolver_stale_served_total") > stale_before


def test_registry_down_without_a_cached_digest_denies_with_the_cause(
    kitpin: Kitpin, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.flaky
    digest = modelkit.push_modelkit(registry, repo, "production")  # never resolved by kitpin
    tagged = ref_to(registry, repo, "production")

    with kitpin.registries.flaky_down():
        denied = kitpin.create(pod("model", namespace, tagged))

    assert not denied.ok
    message = denied.stderr
    assert denied_by("pin-pods").search(message), message
    assert "kitpin could not pin every ModelKit reference, so nothing was admitted" in message
    assert f"cannot pin '{tagged}'" in message
    assert "Unreachable" in message
    assert f"cannot talk to {registry.host}" in message
    assert not kitpin.exists("pod", "model", namespace)

    # The registry is back: the same Pod is admitted (an outage is never cached).
    created = kitpin.create(pod("model", namespace, tagged))
    assert created.ok, created.stderr
    assert at(created.obj, POD_ENV) == pinned_ref(registry, repo, "production", digest)
