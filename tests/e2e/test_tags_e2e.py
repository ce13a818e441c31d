"""ModelKitTag records end to end: real apiserver, real registry, the real ``kitpin run --dev``
(records turned on by the suite's settings, tests/e2e/conftest.py).

An admission creates the tag's record (``kubectl get mkt``) with the first-seen digest; a
content tag under ``tags.immutable`` re-pushed to another digest makes the next admission
denied under ``enforce``, naming the tag and the first-seen digest.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from controller import policy
from controller.tags import model as tag_model
from harness import modelkit, procs
from tests.e2e.conftest import (
    CACHE_TTL,
    OWN_NAMESPACE,
    TIMEOUT,
    Kitpin,
    deployment,
    ref_to,
)

pytestmark = pytest.mark.e2e

SELECTOR_LABEL = "e2e.kitpin.dev/tags-test"


def _record(kitpin: Kitpin, name: str) -> dict[str, Any] | None:
    done = kitpin.kubectl("get", "mkt", name, "-o", "json")
    if not done.ok:
        return None
    return dict(json.loads(done.stdout))


def _wait_record(kitpin: Kitpin, name: str, digest: str) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def written() -> bool:
        record = _record(kitpin, name)
        status = (record or {}).get("status") or {}
        if record is not None and status.get("currentDigest") == digest:
            seen[:] = [record]
            return True
        return False

    procs.wait_until(
        written,
        timeout=TIMEOUT,
        what=f"ModelKitTag {name} at {digest}",
        interval=0.3,
        on_timeout=kitpin.log_tail,
    )
    return seen[0]


def test_admission_records_the_tag_and_an_immutable_tag_that_moved_is_denied(
    kitpin: Kitpin, new_namespace: Any, repo: str
) -> None:
    label = secrets.token_hex(4)
    namespace = new_namespace(labels={SELECTOR_LABEL: label})
    registry = kitpin.registries.plain
    tag = f"7b-chat-{secrets.token_hex(3)}"
    first = modelkit.push_modelkit(registry, f"{repo}/llama", tag, seed=1)
    ref = ref_to(registry, f"{repo}/llama", tag)

    name = f"content-tags-{label}"
    manifest = {
        "apiVersion": policy.API_VERSION,
        "kind": policy.CLUSTER_KIND,
        "metadata": {"name": name},
        "spec": {
            "mode": "enforce",
            "namespaceSelector": {"matchLabels": {SELECTOR_LABEL: label}},
            "tags": {"immutable": ["7b-*"]},
        },
    }
    made = kitpin.create(manifest)
    assert made.ok, made.stderr
    try:
        # the policy is in force once kitpin's index has it (a dry run is judged by it too)
        procs.wait_until(
            lambda: kitpin.create(deployment("probe", namespace, ref), dry_run=True).ok,
            timeout=TIMEOUT,
            what="a dry run admitted",
            interval=0.3,
            on_timeout=kitpin.log_tail,
        )
        admitted = kitpin.create(deployment("llm", namespace, ref))
        assert admitted.ok, admitted.stderr

        key = tag_model.TagKey(registry=registry.host, repository=f"{repo}/llama", tag=tag)
        record = _wait_record(kitpin, key.name, first)
        assert record["spec"] == {
            "registry": registry.host,
            "repository": f"{repo}/llama",
            "tag": tag,
        }
        status = record["status"]
        assert status["firstSeen"]["digest"] == first
        assert status["inUse"] == 1
        table = kitpin.kubectl("get", "mkt", key.name)
        assert table.ok and key.reference in table.stdout

        # re-push the content tag with other content: another digest
        second = modelkit.push_modelkit(registry, f"{repo}/llama", tag, seed=2)
        assert second != first
        time.sleep(CACHE_TTL + 0.5)  # kitpin's cache forgets the old answer

        def denied() -> str | None:
            result = kitpin.create(deployment("llm-2", namespace, ref))
            if result.ok:
                kitpin.kubectl("delete", "deployment", "llm-2", "-n", namespace, "--wait=false")
                return None
            return result.stderr

        stderr = procs.wait_until(
            denied,
            timeout=TIMEOUT,
            what="the moved immutable tag denied",
            interval=0.5,
            on_timeout=kitpin.log_tail,
        )
        assert isinstance(stderr, str)
        assert f"ClusterModelKitPolicy/{name} rule tags.immutable" in stderr
        assert repr(tag) in stderr and first in stderr and second in stderr
        assert "push the new content under a new tag" in stderr
        assert not kitpin.exists("deployment", "llm-2", namespace)

        # the record saw the move (the admission observed it before the denial)
        moved = _wait_record(kitpin, key.name, second)
        assert moved["status"]["firstSeen"]["digest"] == first
        conditions = {c["type"]: c for c in moved["status"].get("conditions") or []}
        assert conditions.get("ImmutableTagMoved", {}).get("status") == "True"
    finally:
        kitpin.kubectl("delete", "cmkp", name, "--ignore-not-found", "--wait=false")


def test_the_drift_watch_holds_the_lease_in_kitpins_namespace(kitpin: Kitpin) -> None:
    """One replica holds the Lease (leader election for the drift watch); its holder is the
    host name (no POD_NAME outside a pod) and a random suffix."""
    if not kitpin.kubectl("get", "namespace", OWN_NAMESPACE).ok:
        made = kitpin.kubectl("create", "namespace", OWN_NAMESPACE)
        assert made.ok or "AlreadyExists" in made.stderr, made.stderr

    def holder() -> str | None:
        done = kitpin.kubectl(
            "-n",
            OWN_NAMESPACE,
            "get",
            "lease",
            "kitpin-drift-watch",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        )
        return done.stdout.strip() or None if done.ok else None

    found = procs.wait_until(
        holder,
        timeout=TIMEOUT,
        what="the drift watch's Lease held",
        interval=0.5,
        on_timeout=kitpin.log_tail,
    )
    assert isinstance(found, str) and "_" in found
