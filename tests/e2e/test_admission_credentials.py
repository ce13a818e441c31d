"""A private repository resolves only with the workload's own namespace's pull secrets (the
pod's ``imagePullSecrets``, then its ServiceAccount's), never with a secret of the same name in
another namespace (the confused-deputy rule)."""

from __future__ import annotations

from typing import Any

import pytest

from harness import modelkit, procs
from tests.e2e.conftest import (
    POD_ENV,
    PRIVATE_USER,
    TEMPLATE_ENV,
    TIMEOUT,
    Kitpin,
    at,
    denied_by,
    deployment,
    owned_by,
    pinned_ref,
    pins,
    pod,
    pull_secret,
    ref_to,
)

pytestmark = pytest.mark.e2e


def _assert_unauthorized(message: str, host: str, tagged: str) -> None:
    assert denied_by("pin-pods").search(message), message
    assert f"cannot pin '{tagged}'" in message
    assert "Unauthorized" in message and "(401)" in message
    assert f"add a pull secret for {host} to the namespace (imagePullSecrets)" in message


def test_private_repo_pins_with_the_podspull_secret(
    kitpin: Kitpin, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.private
    digest = modelkit.push_modelkit(registry, repo, "production", auth=PRIVATE_USER)
    tagged = ref_to(registry, repo, "production")

    anonymous = kitpin.create(pod("anonymous", namespace, tagged))
    assert not anonymous.ok
    _assert_unauthorized(anonymous.stderr, registry.host, tagged)

    assert kitpin.create(pull_secret("regcred", namespace, registry.host)).ok
    created = kitpin.create(
        pod("with-secret", namespace, tagged, imagePullSecrets=[{"name": "regcred"}])
    )

    assert created.ok, created.stderr
    stored = kitpin.get("pod", "with-secret", namespace)
    assert at(stored, POD_ENV) == pinned_ref(registry, repo, "production", digest)
    assert (pins(stored) or {})[POD_ENV]["digest"] == digest


def test_private_repo_pins_with_the_service_accountspull_secret(
    kitpin: Kitpin, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.private
    digest = modelkit.push_modelkit(registry, repo, "production", auth=PRIVATE_USER)
    tagged = ref_to(registry, repo, "production")
    pinned = pinned_ref(registry, repo, "production", digest)
    assert kitpin.create(pull_secret("sa-regcred", namespace, registry.host)).ok
    service_account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "model-puller", "namespace": namespace},
        "imagePullSecrets": [{"name": "sa-regcred"}],
    }
    assert kitpin.create(service_account).ok

    applied = kitpin.apply(
        deployment("private", namespace, tagged, serviceAccountName="model-puller")
    )

    assert applied.ok, applied.stderr
    stored = kitpin.get("deployment", "private", namespace)
    assert at(stored, TEMPLATE_ENV) == pinned
    # The Pods the controller-manager makes are checked with the same ServiceAccount's secret.
    pods: list[dict[str, Any]] = []

    def pod_made() -> bool:
        replica_sets = owned_by(kitpin.list("replicaset", namespace), stored["metadata"]["uid"])
        if len(replica_sets) != 1:
            return False
        pods[:] = owned_by(kitpin.list("pod", namespace), replica_sets[0]["metadata"]["uid"])
        return len(pods) == 1

    procs.wait_until(pod_made, timeout=TIMEOUT, what="the Deployment's ReplicaSet and Pod")
    assert at(pods[0], POD_ENV) == pinned


def test_pull_secret_name_from_another_namespace_is_not_used(
    kitpin: Kitpin, new_namespace: Any, repo: str
) -> None:
    registry = kitpin.registries.private
    digest = modelkit.push_modelkit(registry, repo, "production", auth=PRIVATE_USER)
    tagged = ref_to(registry, repo, "production")
    team_a, team_b = new_namespace("a"), new_namespace("b")
    assert kitpin.create(pull_secret("regcred", team_a, registry.host)).ok
    # Team A resolves first, so kitpin has the digest cached for team A's credential.
    owner = kitpin.create(pod("model", team_a, tagged, imagePullSecrets=[{"name": "regcred"}]))
    assert owner.ok, owner.stderr
    assert at(owner.obj, POD_ENV) == pinned_ref(registry, repo, "production", digest)
    refused_before = registry.count_manifest_requests(repo, "production", status=401)

    # Team B names a secret "regcred" that exists only in team A's namespace.
    borrowed = kitpin.create(pod("model", team_b, tagged, imagePullSecrets=[{"name": "regcred"}]))

    assert not borrowed.ok
    _assert_unauthorized(borrowed.stderr, registry.host, tagged)
    assert not kitpin.exists("pod", "model", team_b)
    # The registry was asked anonymously (and refused): nothing was served from team A's
    # cache entry or with team A's secret.
    assert registry.count_manifest_requests(repo, "production", status=401) > refused_before
