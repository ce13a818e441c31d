"""``RegistryClient.head_digest`` against the real CNCF distribution registry: the digest of a
HEAD is the digest ``get_manifest`` computes from the bytes, a deleted tag (and a deleted
manifest) is not found, and the bearer token flow works for HEADs. What was sent is checked
in the registry's own access log. Fixtures: ``tests/integration/conftest.py``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from controller import errors
from harness import modelkit
from harness.registry import RegistryServer
from harness.tokenissuer import TokenIssuer
from tests.integration.conftest import (
    MakeClient,
    make_client,
    plain_http_policy,
    plain_registry,
    registry_binary,
    repo,
    token_issuer,
    token_registry,
)
from tests.integration.test_registry_real import kit_ref, push_two_tags, token_policy

__all__ = [
    "make_client",
    "plain_registry",
    "registry_binary",
    "repo",
    "token_issuer",
    "token_registry",
]

pytestmark = pytest.mark.integration


def delete_manifest(server: RegistryServer, repository: str, reference: str) -> None:
    """``DELETE /v2/<repository>/manifests/<reference>``: a tag (distribution v3 deletes the
    tag alone) or a digest (the manifest, and every tag on it)."""
    answer = httpx.delete(f"{server.url}/v2/{repository}/manifests/{reference}", timeout=10)
    assert answer.status_code == 202, answer.text


async def test_head_digest_is_get_manifests_digest_and_a_deleted_tag_is_not_found(
    plain_registry: RegistryServer, make_client: MakeClient, repo: str
) -> None:
    pushed = modelkit.push_modelkit(plain_registry, repo, "v1")
    modelkit.tag(plain_registry, repo, "v1", "production")
    client = make_client(plain_http_policy(plain_registry))
    ref = kit_ref(plain_registry, repo, "production")

    head = await client.head_digest(ref)
    manifest = await client.get_manifest(ref)

    assert head == manifest.digest == pushed
    assert await client.head_digest(ref.with_digest(pushed)) == pushed
    assert plain_registry.count_manifest_requests(repo, "production", method="HEAD") == 1
    assert plain_registry.count_manifest_requests(repo, "production", method="GET") == 1

    delete_manifest(plain_registry, repo, "production")

    with pytest.raises(errors.NotFoundError) as by_tag:
        await client.head_digest(ref)
    assert f"{ref.canonical} not found (404)" in by_tag.value.message
    # Only the tag went: the manifest is still there by its digest and under v1.
    assert await client.head_digest(ref.with_digest(pushed)) == pushed
    assert await client.head_digest(kit_ref(plain_registry, repo, "v1")) == pushed

    delete_manifest(plain_registry, repo, pushed)

    with pytest.raises(errors.NotFoundError) as by_digest:
        await client.head_digest(ref.with_digest(pushed))
    assert (by_digest.value.registry, by_digest.value.repository) == (plain_registry.host, repo)
    assert plain_registry.count_manifest_requests(repo, pushed, method="HEAD", status=404) == 1


async def test_head_digest_through_the_bearer_token_flow(
    token_registry: RegistryServer,
    token_issuer: TokenIssuer,
    make_client: MakeClient,
    repo: str,
    tmp_path: Path,
) -> None:
    v1, v2, credential = push_two_tags(token_registry, token_issuer, repo, tmp_path)
    client = make_client(token_policy(token_registry, token_issuer))
    before = len(token_issuer.requests)

    for tag, pushed in (("v1", v1), ("v2", v2)):
        ref = kit_ref(token_registry, repo, tag)
        assert await client.head_digest(ref, credential=credential) == pushed

    # The /v2/ ping taught the challenge: every HEAD carried the (one, cached) token.
    for tag in ("v1", "v2"):
        assert token_registry.count_manifest_requests(repo, tag, method="HEAD", status=200) == 1
        assert token_registry.count_manifest_requests(repo, tag, method="HEAD", status=401) == 0
    (kitpin_token,) = token_issuer.requests[before:]
    assert (kitpin_token.user, kitpin_token.status) == ("bob", 200)
    assert f"repository:{repo}:pull" in kitpin_token.scopes

    with pytest.raises(errors.UnauthorizedError):
        await client.head_digest(kit_ref(token_registry, repo, "v1"))  # anonymous
