"""Namespaces kitpin never touches: labelled ``kitpin.dev/ignore=true`` (learnt through a
kopf index, asynchronously), listed in the settings, or the controller's own namespace."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from harness import modelkit, procs
from tests.e2e.conftest import (
    OWN_NAMESPACE,
    POD_ENV,
    SETTINGS_IGNORED_NAMESPACE,
    TIMEOUT,
    Kitpin,
    at,
    create_namespace,
    pinned_ref,
    pins,
    pod,
    ref_to,
)

pytestmark = pytest.mark.e2e


def test_namespace_labelled_ignore_is_not_touched(
    kitpin: Kitpin, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.plain
    digest = modelkit.push_modelkit(registry, repo, "production")
    tagged = ref_to(registry, repo, "production")
    before = kitpin.create(pod("before", namespace, tagged))
    assert before.ok, before.stderr
    assert at(before.obj, POD_ENV) == pinned_ref(registry, repo, "production", digest)

    labelled = kitpin.kubectl("label", "namespace", namespace, "kitpin.dev/ignore=true")
    assert labelled.ok, labelled.stderr

    # kitpin learns labels from a watch: poll with server-side dry-runs until it has.
    def unpinned() -> bool:
        dry = kitpin.create(pod("after", namespace, tagged), dry_run=True)
        assert dry.ok, dry.stderr
        return bool(at(dry.obj, POD_ENV) == tagged)

    procs.wait_until(unpinned, timeout=TIMEOUT, what="kitpin to see the ignore label", interval=0.2)
    created = kitpin.create(pod("after", namespace, tagged))

    assert created.ok, created.stderr
    stored = kitpin.get("pod", "after", namespace)
    assert at(stored, POD_ENV) == tagged
    assert pins(stored) is None
    # Not checked either: a reference kitpin would deny elsewhere is admitted as written.
    local = kitpin.create(pod("local", namespace, "llama:production"))
    assert local.ok, local.stderr


@pytest.mark.parametrize("ignored", [SETTINGS_IGNORED_NAMESPACE, OWN_NAMESPACE])
def test_namespace_ignored_by_settings_or_own_is_not_touched(
    kitpin: Kitpin, repo: str, ignored: str
) -> None:
    registry = kitpin.registries.plain
    modelkit.push_modelkit(registry, repo, "production")
    tagged = ref_to(registry, repo, "production")
    _ensure_namespace(kitpin, ignored)
    name = repo.rsplit("/", 1)[-1]

    created = kitpin.create(pod(name, ignored, tagged))

    assert created.ok, created.stderr
    stored = kitpin.get("pod", name, ignored)
    assert at(stored, POD_ENV) == tagged
    assert pins(stored) is None


def _ensure_namespace(kitpin: Kitpin, name: str) -> Any:
    """These namespaces have fixed names (they are in kitpin's settings and flags): made
    once per control plane, shared by the tests that need them."""
    try:
        kitpin.api.core.read_namespace(name)
    except ApiException as e:
        if e.status != 404:
            raise
        create_namespace(kitpin.api, name)
