"""References that can never work are denied, with a message that says why and what to do;
nothing is stored."""

from __future__ import annotations

import pytest

from harness import modelkit
from tests.e2e.conftest import Kitpin, denied_by, deployment, pod, ref_to

pytestmark = pytest.mark.e2e


def test_kit_local_reference_is_denied(kitpin: Kitpin, namespace: str) -> None:
    # kit's grammar: no registry host means kit's local storage, which a Pod does not have.
    applied = kitpin.apply(deployment("local", namespace, "llama:production"))

    assert not applied.ok
    message = applied.stderr
    assert denied_by("check-deployments").search(message), message
    assert 'initContainer "kitops-init" env MODELKIT_REF' in message
    assert "'llama:production'" in message
    assert "no registry host" in message and "local storage" in message
    assert "write the registry explicitly" in message
    assert not kitpin.exists("deployment", "local", namespace)


def test_non_modelkit_artifact_is_denied(kitpin: Kitpin, namespace: str, repo: str) -> None:
    registry = kitpin.registries.plain
    digest = modelkit.push_image(registry, repo, "latest")  # a container image
    tagged = ref_to(registry, repo, "latest")

    created = kitpin.create(pod("image-not-model", namespace, tagged))

    assert not created.ok
    message = created.stderr
    assert denied_by("check-pods").search(message), message
    assert f"'{tagged}@{digest}' resolves to {digest}" in message
    assert "not a ModelKit" in message
    assert "application/vnd.oci.image.config.v1+json" in message
    assert "expects a KitOps ModelKit or a CNCF ModelPack" in message
    assert "`kit pack`" in message
    assert not kitpin.exists("pod", "image-not-model", namespace)


def test_missing_tag_is_denied_as_not_found(kitpin: Kitpin, namespace: str, repo: str) -> None:
    registry = kitpin.registries.plain
    modelkit.push_modelkit(registry, repo, "v1")
    tagged = ref_to(registry, repo, "v2")  # never pushed

    created = kitpin.create(pod("typo", namespace, tagged))

    assert not created.ok
    message = created.stderr
    assert denied_by("pin-pods").search(message), message
    assert f"cannot pin '{tagged}'" in message
    assert "NotFound" in message
    assert "check the repository and tag" in message
    assert not kitpin.exists("pod", "typo", namespace)
