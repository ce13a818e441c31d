"""Workloads through the real apiserver, controller-manager and kitpin: pin once at the owner,
children inherit, re-applies keep the digest (issue 4, "Show")."""

from __future__ import annotations

import re
from typing import Any

import pytest

from harness import modelkit, procs
from tests.e2e.conftest import (
    CRONJOB_ENV,
    POD_ENV,
    TEMPLATE_ENV,
    TIMEOUT,
    Kitpin,
    at,
    cronjob,
    deployment,
    job,
    owned_by,
    pinned_ref,
    pins,
    pod,
    ref_to,
)

pytestmark = pytest.mark.e2e

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _assert_pin_record(
    record: dict[str, dict[str, str]] | None, *, pointer: str, original: str, digest: str
) -> None:
    assert record is not None, "no kitpin.dev/pinned annotation"
    assert set(record) == {pointer}
    assert record[pointer]["from"] == original
    assert record[pointer]["digest"] == digest
    assert RFC3339.match(record[pointer]["resolvedAt"]), record[pointer]


def _wait_owned(
    kitpin: Kitpin, kind: str, namespace: str, uid: str, count: int
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        found[:] = owned_by(kitpin.list(kind, namespace), uid)
        return len(found) >= count

    procs.wait_until(enough, timeout=TIMEOUT, what=f"{count} {kind} owned by {uid}")
    return found


def test_deployment_pinned_replicaset_and_pods_inherit_and_scale_keeps_digest(
    kitpin: Kitpin, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.plain
    first = modelkit.push_modelkit(registry, repo, "production", seed=1)
    tagged = ref_to(registry, repo, "production")
    pinned = pinned_ref(registry, repo, "production", first)
    manifest = deployment("llama", namespace, tagged, replicas=1)
    owned_before = kitpin.admissions("mutate", "TemplateOwnedByController")

    applied = kitpin.apply(manifest, server_side=True)

    assert applied.ok, applied.stderr
    stored = kitpin.get("deployment", "llama", namespace)
    assert at(stored, TEMPLATE_ENV) == pinned  # tag kept, digest added
    _assert_pin_record(pins(stored), pointer=TEMPLATE_ENV, original=tagged, digest=first)
    uid = stored["metadata"]["uid"]

    # The controller-manager copies the pinned template: ReplicaSet and Pod carry the digest.
    (replica_set,) = _wait_owned(kitpin, "replicaset", namespace, uid, 1)
    assert at(replica_set, TEMPLATE_ENV) == pinned
    # (the Deployment controller copies the Deployment's annotations, kitpin's record too)
    assert pins(replica_set) == pins(stored)
    assert kitpin.admissions("mutate", "TemplateOwnedByController") > owned_before
    (first_pod,) = _wait_owned(kitpin, "pod", namespace, replica_set["metadata"]["uid"], 1)
    assert at(first_pod, POD_ENV) == pinned

    # The tag moves; a GitOps controller re-applies the same manifest (server-side apply sends
    # the tag-only value): the Deployment keeps its digest, so no new ReplicaSet is made.
    second = modelkit.push_modelkit(registry, repo, "production", seed=2)
    assert second != first
    kept_before = kitpin.admissions("mutate", "KeptFromOldObject")
    reapplied = kitpin.apply(manifest, server_side=True)
    assert reapplied.ok, reapplied.stderr
    assert kitpin.admissions("mutate", "KeptFromOldObject") == kept_before + 1
    again = kitpin.get("deployment", "llama", namespace)
    assert at(again, TEMPLATE_ENV) == pinned
    assert again["metadata"]["generation"] == stored["metadata"]["generation"]
    assert pins(again) == pins(stored)

    # Scale up after the tag moved: the new Pods come from the same ReplicaSet, old digest.
    scaled = kitpin.kubectl("scale", "deployment/llama", "-n", namespace, "--replicas=3")
    assert scaled.ok, scaled.stderr
    pods = _wait_owned(kitpin, "pod", namespace, replica_set["metadata"]["uid"], 3)
    assert len(pods) == 3
    assert {at(p, POD_ENV) for p in pods} == {pinned}
    assert len(owned_by(kitpin.list("replicaset", namespace), uid)) == 1


def test_bare_pod_pins_env_and_image_volumes(kitpin: Kitpin, namespace: str, repo: str) -> None:
    registry = kitpin.registries.plain
    model = modelkit.push_modelkit(registry, f"{repo}/model", "v1")
    weights = modelkit.push_modelkit(registry, f"{repo}/weights", "v2", fmt="modelpack")
    # An image volume may mount any OCI artifact: a plain image is pinned, not refused.
    image = modelkit.push_image(registry, f"{repo}/tools", "latest")
    volumes = [
        {"name": "models", "emptyDir": {}},
        {"name": "weights", "image": {"reference": ref_to(registry, f"{repo}/weights", "v2")}},
        {"name": "tools", "image": {"reference": ref_to(registry, f"{repo}/tools", "latest")}},
    ]
    manifest = pod("serve", namespace, ref_to(registry, f"{repo}/model", "v1"), volumes=volumes)

    created = kitpin.create(manifest)

    assert created.ok, created.stderr
    stored = kitpin.get("pod", "serve", namespace)
    assert at(stored, POD_ENV) == pinned_ref(registry, f"{repo}/model", "v1", model)
    assert at(stored, "/spec/volumes/1/image/reference") == pinned_ref(
        registry, f"{repo}/weights", "v2", weights
    )
    assert at(stored, "/spec/volumes/2/image/reference") == pinned_ref(
        registry, f"{repo}/tools", "latest", image
    )
    record = pins(stored)
    assert record is not None
    assert {k: v["digest"] for k, v in record.items()} == {
        POD_ENV: model,
        "/spec/volumes/1/image/reference": weights,
        "/spec/volumes/2/image/reference": image,
    }
    assert created.warnings == []


def test_cronjob_pinned_and_job_created_from_it_keeps_the_digest(
    kitpin: Kitpin, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.plain
    first = modelkit.push_modelkit(registry, repo, "nightly", seed=1)
    tagged = ref_to(registry, repo, "nightly")
    pinned = pinned_ref(registry, repo, "nightly", first)

    applied = kitpin.apply(cronjob("retrain", namespace, tagged))

    assert applied.ok, applied.stderr
    stored = kitpin.get("cronjob", "retrain", namespace)
    assert at(stored, CRONJOB_ENV) == pinned
    _assert_pin_record(pins(stored), pointer=CRONJOB_ENV, original=tagged, digest=first)

    # The tag moves before the Job is made: the Job copies the CronJob's pinned template and
    # kitpin leaves a template owned by its CronJob alone (no re-resolution, no annotation).
    modelkit.push_modelkit(registry, repo, "nightly", seed=2)
    owned_before = kitpin.admissions("mutate", "TemplateOwnedByController")
    made = kitpin.kubectl("create", "job", "retrain-now", "--from=cronjob/retrain", "-n", namespace)
    assert made.ok, made.stderr
    # (>=: the job controller may update the Job too; each such review is owned as well)
    assert kitpin.admissions("mutate", "TemplateOwnedByController") >= owned_before + 1

    the_job = kitpin.get("job", "retrain-now", namespace)
    owners = the_job["metadata"]["ownerReferences"]
    assert [(o["kind"], o["uid"], o.get("controller")) for o in owners] == [
        ("CronJob", stored["metadata"]["uid"], True)
    ]
    assert at(the_job, TEMPLATE_ENV) == pinned
    assert pins(the_job) is None
    (job_pod,) = _wait_owned(kitpin, "pod", namespace, the_job["metadata"]["uid"], 1)
    assert at(job_pod, POD_ENV) == pinned


@pytest.mark.parametrize("how", ["client-side", "server-side"])
def test_job_reapplied_after_its_tag_moved_keeps_its_digest(
    kitpin: Kitpin, namespace: str, repo: str, how: str
) -> None:
    """Job templates are immutable: re-resolving the tag on re-apply would fail the update
    with "field is immutable". kitpin keeps the digest of the object being updated."""
    registry = kitpin.registries.plain
    first = modelkit.push_modelkit(registry, repo, "production", seed=1)
    pinned = pinned_ref(registry, repo, "production", first)
    manifest = job("batch-score", namespace, ref_to(registry, repo, "production"))
    server_side = how == "server-side"

    created = kitpin.apply(manifest, server_side=server_side)
    assert created.ok, created.stderr
    stored = kitpin.get("job", "batch-score", namespace)
    assert at(stored, TEMPLATE_ENV) == pinned

    second = modelkit.push_modelkit(registry, repo, "production", seed=2)
    assert second != first
    if not server_side:
        # Client-side apply of an unchanged file sends nothing; a label change (a mutable
        # field) makes kubectl send the merged object through the webhooks.
        manifest["metadata"]["labels"] = {"team": "scoring"}
    kept_before = kitpin.admissions("mutate", "KeptFromOldObject")

    reapplied = kitpin.apply(manifest, server_side=server_side)

    assert reapplied.ok, reapplied.stderr  # no "field is immutable"
    assert "immutable" not in reapplied.stderr
    assert kitpin.admissions("mutate", "KeptFromOldObject") == kept_before + 1
    again = kitpin.get("job", "batch-score", namespace)
    assert at(again, TEMPLATE_ENV) == pinned
    assert pins(again) == pins(stored)


def test_server_side_dry_run_apply_shows_the_pin_and_stores_nothing(
    kitpin: Kitpin, namespace: str, repo: str
) -> None:
    registry = kitpin.registries.plain
    digest = modelkit.push_modelkit(registry, repo, "v3")
    tagged = ref_to(registry, repo, "v3")

    dry = kitpin.apply(deployment("preview", namespace, tagged), dry_run=True)

    assert dry.ok, dry.stderr
    assert at(dry.obj, TEMPLATE_ENV) == pinned_ref(registry, repo, "v3", digest)
    _assert_pin_record(pins(dry.obj), pointer=TEMPLATE_ENV, original=tagged, digest=digest)
    assert not kitpin.exists("deployment", "preview", namespace)


def test_reference_from_a_config_map_is_admitted_with_a_warning(
    kitpin: Kitpin, namespace: str
) -> None:
    manifest = pod("from-config", namespace, None)
    manifest["spec"]["initContainers"] = [
        {
            "name": "kitops-init",
            "image": "ghcr.io/kitops-ml/kitops-init:v1.7.0",
            "env": [
                {
                    "name": "MODELKIT_REF",
                    "valueFrom": {"configMapKeyRef": {"name": "model", "key": "ref"}},
                }
            ],
        }
    ]

    created = kitpin.create(manifest)

    assert created.ok, created.stderr
    (warning,) = created.warnings
    assert 'initContainer "kitops-init" env MODELKIT_REF' in warning
    assert "valueFrom" in warning and "kitpin cannot pin a value it cannot see" in warning
    assert "write the reference in the manifest (value:)" in warning
    assert pins(kitpin.get("pod", "from-config", namespace)) is None
