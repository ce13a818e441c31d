"""The audit trail through the apiserver (ApiAuditSink over kubeapi): merge patches of policy
status carrying the resourceVersion they were computed from, Conflict handling (nothing
lost or counted twice), Warning Events."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from controller import audit, kubeapi, policy
from tests.kubeapi.fakeapi import FakeApiServer

CLUSTER = policy.PolicyRef(kind="ClusterModelKitPolicy", namespace=None, name="prod")
NAMESPACED = policy.PolicyRef(kind="ModelKitPolicy", namespace="ml", name="tags")
CLUSTER_PATH = "/apis/kitpin.dev/v1alpha1/clustermodelkitpolicies/prod"
NAMESPACED_PATH = "/apis/kitpin.dev/v1alpha1/namespaces/ml/modelkitpolicies/tags"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def api(server: FakeApiServer) -> kubeapi.KubeAPI[kopf.ConnectionInfo]:
    info = kopf.ConnectionInfo(server=server.server, ca_data=server.ca_pem, token="t0k3n")
    return kubeapi.KubeAPI(info)


def violation(ref: policy.PolicyRef, mode: policy.Mode = "warn") -> policy.Violation:
    return policy.Violation(
        policy=ref,
        rule="tags.denied",
        reason="TagDenied",
        mode=mode,
        path="/spec/containers/0/env/0/value",
        where="container app, env MODELKIT_REF",
        reference="reg.example/m:latest",
        message=f"{ref}: tag latest is denied",
    )


def deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}"},
    }


def test_status_paths() -> None:
    assert audit.status_path(CLUSTER) == CLUSTER_PATH + "/status"
    assert audit.status_path(NAMESPACED) == NAMESPACED_PATH + "/status"


@pytest.mark.parametrize(("ref", "where"), [(CLUSTER, CLUSTER_PATH), (NAMESPACED, NAMESPACED_PATH)])
async def test_merge_patch_of_status_with_the_resource_version(
    fake_api: FakeApiServer, ref: policy.PolicyRef, where: str
) -> None:
    stored = fake_api.put(where, {"kind": ref.kind, "spec": {"mode": "warn"}})
    rv = stored["metadata"]["resourceVersion"]
    async with api(fake_api) as client:
        sink = audit.ApiAuditSink(client)
        result = await sink.patch_policy_status(ref, {"violations": 1}, rv)
        unconditional = await sink.patch_policy_status(ref, {"violations": 2}, None)
    (first, second) = fake_api.seen
    assert (first.method, first.path) == ("PATCH", where + "/status")
    assert first.headers["Content-Type"] == "application/merge-patch+json"
    assert first.body == {"status": {"violations": 1}, "metadata": {"resourceVersion": rv}}
    assert second.body == {"status": {"violations": 2}}
    assert result["status"] == {"violations": 1}  # the stored object comes back
    assert int(result["metadata"]["resourceVersion"]) > int(rv)
    assert unconditional["status"] == {"violations": 2}
    assert fake_api.objects[where]["spec"] == {"mode": "warn"}  # only status changed


async def test_a_stale_resource_version_is_a_conflict(fake_api: FakeApiServer) -> None:
    fake_api.put(CLUSTER_PATH, {"kind": "ClusterModelKitPolicy"})
    async with api(fake_api) as client:
        sink = audit.ApiAuditSink(client)
        with pytest.raises(audit.ConflictError) as e:
            await sink.patch_policy_status(CLUSTER, {"violations": 1}, "1")
    assert isinstance(e.value.__cause__, kubeapi.ConflictError)
    assert "has been modified" in str(e.value)


async def test_other_errors_are_not_conflicts(fake_api: FakeApiServer) -> None:
    async with api(fake_api) as client:
        with pytest.raises(kubeapi.NotFoundError):  # a deleted policy
            await audit.ApiAuditSink(client).patch_policy_status(CLUSTER, {}, "5")


async def test_an_event_is_posted_in_the_objects_namespace(fake_api: FakeApiServer) -> None:
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "kitpin-"}}
    async with api(fake_api) as client:
        await audit.ApiAuditSink(client).create_event("ml", event)
    (seen,) = fake_api.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/api/v1/namespaces/ml/events", event)
    assert seen.headers["Content-Type"] == "application/json"


async def test_recorder_counts_each_violation_once_across_a_conflict(
    fake_api: FakeApiServer,
) -> None:
    """Another replica writes the status in between: the patch answers 409, the violation
    stays queued, and once the watch delivers the newer status it is added to that."""
    fake_api.put(CLUSTER_PATH, {"kind": "ClusterModelKitPolicy"})
    async with api(fake_api) as client:
        recorder = audit.AuditRecorder(audit.ApiAuditSink(client), now=lambda: NOW)
        recorder.observe(CLUSTER, fake_api.objects[CLUSTER_PATH])

        recorder.record([violation(CLUSTER)], obj=deployment("a"), namespace="ml")
        await recorder.flush()
        assert fake_api.objects[CLUSTER_PATH]["status"]["violations"] == 1

        # The other replica (its own count included) writes; our view is now stale.
        other = fake_api.objects[CLUSTER_PATH]
        other["status"] = {**other["status"], "violations": 5}
        fake_api.put(CLUSTER_PATH, other)

        recorder.record([violation(CLUSTER)], obj=deployment("b"), namespace="ml")
        await recorder.flush()  # 409: kept for the next flush
        assert fake_api.objects[CLUSTER_PATH]["status"]["violations"] == 5

        recorder.observe(CLUSTER, fake_api.objects[CLUSTER_PATH])  # the watch catches up
        await recorder.flush()

    status = fake_api.objects[CLUSTER_PATH]["status"]
    assert status["violations"] == 6
    assert [r["object"] for r in status["recentViolations"]][:2] == ["Deployment/b", "Deployment/a"]
    patches = fake_api.requests("PATCH")
    assert len(patches) == 3
    events = fake_api.requests("POST")
    # One Warning Event per object, none again for the retried status write.
    assert [e.body["involvedObject"]["name"] for e in events] == ["a", "b"]
    assert {e.path for e in events} == {"/api/v1/namespaces/ml/events"}
    first = events[0].body
    assert first["type"] == "Warning" and first["reason"] == "TagDenied"
    assert first["involvedObject"]["uid"] == "uid-a"


async def test_recorder_drops_the_status_of_a_deleted_policy(
    fake_api: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with api(fake_api) as client:
        recorder = audit.AuditRecorder(audit.ApiAuditSink(client), now=lambda: NOW)
        recorder.record([violation(NAMESPACED, "audit")], obj=deployment("a"), namespace="ml")
        with caplog.at_level(logging.WARNING, logger="controller.audit"):
            await recorder.flush()
        await recorder.flush()  # nothing queued any more
    assert any(
        "cannot write the status of ModelKitPolicy/tags" in r.getMessage() and "404" in r.message
        for r in caplog.records
    )
    assert len(fake_api.requests("PATCH")) == 1
    assert len(fake_api.requests("POST")) == 1  # the Event (audit mode) was still written


async def test_enforce_violations_get_no_event(fake_api: FakeApiServer) -> None:
    fake_api.put(CLUSTER_PATH, {"kind": "ClusterModelKitPolicy"})
    async with api(fake_api) as client:
        recorder = audit.AuditRecorder(audit.ApiAuditSink(client), now=lambda: NOW)
        recorder.record([violation(CLUSTER, "enforce")], obj=deployment("a"), namespace="ml")
        await recorder.flush()
    assert fake_api.requests("POST") == []
    assert fake_api.objects[CLUSTER_PATH]["status"]["violations"] == 1


async def test_a_notice_is_an_event_like_a_violations_and_touches_no_status(
    fake_api: FakeApiServer,
) -> None:
    """failure: warn admissions (decide.py) reach the apiserver by the path policy warnings
    take: the same Event shape on the same object, and no policy status change."""
    fake_api.put(CLUSTER_PATH, {"kind": "ClusterModelKitPolicy"})
    async with api(fake_api) as client:
        recorder = audit.AuditRecorder(audit.ApiAuditSink(client), now=lambda: NOW)
        recorder.record([violation(CLUSTER)], obj=deployment("a"), namespace="ml")
        recorder.notice(
            obj=deployment("a"), namespace="ml", reason="AdmittedUnpinned", message="unpinned"
        )
        await recorder.flush()
    warned, unpinned = (e.body for e in fake_api.requests("POST"))
    assert (warned["reason"], unpinned["reason"]) == ("TagDenied", "AdmittedUnpinned")
    assert unpinned["message"] == "unpinned"
    assert {k: v for k, v in warned.items() if k not in ("reason", "message")} == {
        k: v for k, v in unpinned.items() if k not in ("reason", "message")
    }
    assert len(fake_api.requests("PATCH")) == 1  # the violation's status, nothing for the notice
    assert fake_api.objects[CLUSTER_PATH]["status"]["violations"] == 1
