"""ModelKit policy at admission, end to end: real apiserver, real registry, the real
``kitpin run --dev`` subprocess learning ClusterModelKitPolicy / ModelKitPolicy objects
through its kopf watch (issue "Show" for policy).

Every rule in every mode against ModelKits packed in kit's wire format (KitOps and
ModelPack, with and without a parent reference, with different licenses): the denial text,
the warning text, the status counters, the Events and the metric.

Policies are cluster-wide objects and kitpin is shared by the module, so each test makes its
own policy (unique name) whose ``namespaceSelector`` matches a label only the test's own
namespace carries, and deletes it at the end. kitpin learns policies asynchronously: before
asserting, each test polls with a server-side dry run until the policy takes effect.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller import policy
from harness import modelkit, procs
from tests.e2e.conftest import (
    POD_ENV,
    TEMPLATE_ENV,
    TIMEOUT,
    Kitpin,
    Result,
    at,
    denied_by,
    deployment,
    owned_by,
    pinned_ref,
    pins,
    pod,
    ref_to,
)

pytestmark = pytest.mark.e2e

SELECTOR_LABEL = "e2e.kitpin.dev/policy-test"
"""The namespace label each test's ClusterModelKitPolicy selects (value unique per test)."""
EFFECT_TIMEOUT = TIMEOUT
"""Seconds for kitpin's watch to bring a new or changed policy into force."""
STATUS_TIMEOUT = TIMEOUT
"""Seconds for the audit trail to reach a policy's status (kitpin flushes every 5 s)."""
SHORT = {policy.CLUSTER_KIND: "cmkp", policy.NAMESPACED_KIND: "mkp"}
SHORT_PLURAL = {
    policy.CLUSTER_KIND: "clustermodelkitpolicies",
    policy.NAMESPACED_KIND: "modelkitpolicies",
}
WHERE = 'initContainer "kitops-init" env MODELKIT_REF'
DENIED = f"denied by ModelKit policy ({policy.Reason.DENIED}): "
"""How a policy denial begins: it names its reason, the metrics' outcome label."""


# --------------------------------------------------------------------------- helpers


def _label() -> dict[str, str]:
    return {SELECTOR_LABEL: secrets.token_hex(4)}


@dataclass(kw_only=True)
class Policies:
    """Creates policy objects through kubectl (so kitpin's policy webhook sees them), reads
    them back, waits for kitpin to accept them; deletes them at the end of the test."""

    kitpin: Kitpin
    made: list[tuple[str, str, str | None]] = field(default_factory=list)

    @staticmethod
    def manifest(
        kind: str, name: str, spec: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name}
        if namespace is not None:
            metadata["namespace"] = namespace
        return {
            "apiVersion": policy.API_VERSION,
            "kind": kind,
            "metadata": metadata,
            "spec": dict(spec),
        }

    def create(
        self, kind: str, name: str, spec: Mapping[str, Any], namespace: str | None = None
    ) -> Result:
        self.made.append((kind, name, namespace))
        return self.kitpin.create(self.manifest(kind, name, spec, namespace))

    def _args(self, kind: str, name: str, namespace: str | None) -> list[str]:
        args = [SHORT[kind], name]
        return [*args, "-n", namespace] if namespace else args

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        done = self.kitpin.kubectl("get", *self._args(kind, name, namespace), "-o", "json")
        assert done.ok, done.stderr
        return dict(json.loads(done.stdout))

    def table(self, kind: str, name: str, namespace: str | None = None, *wide: str) -> list[str]:
        done = self.kitpin.kubectl("get", *self._args(kind, name, namespace), *wide)
        assert done.ok, done.stderr
        return done.stdout.splitlines()

    def patch(
        self, kind: str, name: str, body: Mapping[str, Any], namespace: str | None = None
    ) -> Result:
        return self.kitpin.kubectl(
            "patch", *self._args(kind, name, namespace), "--type=merge", "-p", json.dumps(body)
        )

    def wait_ready(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        """Until kitpin wrote Ready=True for the policy's current generation."""
        seen: list[dict[str, Any]] = []

        def ready() -> bool:
            seen[:] = [self.get(kind, name, namespace)]
            status = seen[0].get("status") or {}
            generation = seen[0]["metadata"]["generation"]
            conditions = {c["type"]: c for c in status.get("conditions") or []}
            cond = conditions.get(policy.READY) or {}
            return (
                status.get("observedGeneration") == generation
                and cond.get("status") == "True"
                and cond.get("observedGeneration") == generation
            )

        procs.wait_until(
            ready,
            timeout=EFFECT_TIMEOUT,
            what=f"{kind}/{name} Ready=True for its generation",
            interval=0.3,
            on_timeout=self.kitpin.log_tail,
        )
        return seen[0]

    def wait_status(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        done: Callable[[Mapping[str, Any]], bool],
        what: str,
    ) -> dict[str, Any]:
        """Until ``done(status)``: the audit trail reached the policy's status."""
        seen: list[dict[str, Any]] = []

        def reached() -> bool:
            seen[:] = [self.get(kind, name, namespace).get("status") or {}]
            return done(seen[0])

        procs.wait_until(
            reached,
            timeout=STATUS_TIMEOUT,
            what=f"{kind}/{name} status: {what}",
            interval=0.5,
            on_timeout=self.kitpin.log_tail,
        )
        return seen[0]

    def delete_all(self) -> None:
        for kind, name, namespace in self.made:
            self.kitpin.kubectl(
                "delete", *self._args(kind, name, namespace), "--ignore-not-found", "--wait=false"
            )


@pytest.fixture
def policies(kitpin: Kitpin) -> Iterator[Policies]:
    made = Policies(kitpin=kitpin)
    try:
        yield made
    finally:
        made.delete_all()


def wait_in_effect(kitpin: Kitpin, manifest: Mapping[str, Any], mode: str, rule: str) -> Result:
    """Dry-run ``manifest`` until the policy's ``rule`` acts on it in ``mode``: denied
    (enforce), a warning (warn), or an audited verdict (audit: silent, so kitpin's
    ``PolicyAudited`` outcome counter tells). Dry runs are never counted as violations."""

    def acts() -> Result | None:
        audited = kitpin.admissions("validate", policy.Reason.AUDITED)
        result = kitpin.create(manifest, dry_run=True)
        if mode == "enforce":
            return result if not result.ok and f" rule {rule}: " in result.stderr else None
        if mode == "warn":
            return (
                result
                if result.ok and any(f" rule {rule}: " in w for w in result.warnings)
                else None
            )
        return (
            result
            if result.ok and kitpin.admissions("validate", policy.Reason.AUDITED) > audited
            else None
        )

    found = procs.wait_until(
        acts,
        timeout=EFFECT_TIMEOUT,
        what=f"kitpin to apply rule {rule} in mode {mode}",
        interval=0.3,
        on_timeout=kitpin.log_tail,
    )
    assert isinstance(found, Result)
    return found


def violations_metric(kitpin: Kitpin, display: str, rule: str, mode: str) -> float:
    return kitpin.metric("kitpin_policy_violations_total", policy=display, rule=rule, mode=mode)


def kitpin_events(kitpin: Kitpin, namespace: str) -> list[Any]:
    """The Events kitpin wrote in ``namespace``."""
    events = kitpin.api.core.list_namespaced_event(namespace).items
    return [e for e in events if e.source is not None and e.source.component == "kitpin"]


def denial_of(result: Result, webhook: str) -> str:
    """The denial text of a refused admission, checked to come from ``webhook``."""
    assert not result.ok, f"admitted:\n{result.stdout}"
    found = denied_by(webhook).search(result.stderr)
    assert found and result.stderr[found.end() :].startswith(": "), result.stderr
    return result.stderr[found.end() + 2 :].strip()


# --------------------------------------------------------------------------- rules x modes


@dataclass(frozen=True, kw_only=True)
class Case:
    """One pod whose ModelKit breaks exactly one rule (or none)."""

    pod: str
    repository: str
    tag: str
    digest: str
    rule: str | None = None
    reason: str = ""
    stage: str = "check"
    """Which webhook enforces it: ``pin`` (rules on the reference as written, refused before
    anything is resolved) or ``check`` (rules on the artifact, after pinning)."""
    words: tuple[str, ...] = ()
    """Exact pieces of the message: what is wrong and what to do."""


def _kitfile_without_model() -> dict[str, Any]:
    kitfile = modelkit.default_kitfile("data-only")
    del kitfile["model"]  # code, datasets and docs only
    return kitfile


def _gpl_kitfile(name: str) -> dict[str, Any]:
    kitfile = modelkit.default_kitfile(name)
    kitfile["package"]["license"] = "GPL-3.0"
    del kitfile["model"]["license"]
    return kitfile


@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
def test_every_rule_in_mode(
    kitpin: Kitpin,
    new_namespace: Callable[..., str],
    policies: Policies,
    repo: str,
    mode: str,
) -> None:
    registry = kitpin.registries.plain
    host = registry.host
    label = _label()
    namespace = new_namespace(labels=label)
    name = f"e2e-rules-{mode}-{secrets.token_hex(3)}"
    display = f"{policy.CLUSTER_KIND}/{name}"
    allowed = f"{host}/{repo}/ok/**"
    denied = f"{host}/{repo}/ok/experimental/**"

    # One ModelKit per rule, each breaking that rule only; two that break none.
    model = modelkit.push_modelkit(registry, f"{repo}/ok/model", "v1")
    for tag in ("latest", "nightly"):
        assert modelkit.push_modelkit(registry, f"{repo}/ok/model", tag) == model
    experimental = modelkit.push_modelkit(registry, f"{repo}/ok/experimental/model", "v1")
    elsewhere = modelkit.push_modelkit(registry, f"{repo}/elsewhere/model", "v1")
    packed = modelkit.push_modelkit(registry, f"{repo}/ok/packed", "v1", fmt="modelpack")
    data_only = modelkit.push_modelkit(
        registry, f"{repo}/ok/data-only", "v1", kitfile=_kitfile_without_model()
    )
    # (a Kitfile of its own: kitpin caches config blobs by digest, across repositories)
    gpl_pack = modelkit.pack_modelkit(kitfile=_gpl_kitfile(f"gpl-{secrets.token_hex(3)}"))
    gpl = modelkit.push_packed(registry, f"{repo}/ok/gpl", "v1", gpl_pack)
    parent = modelkit.push_modelkit(registry, f"{repo}/ok/parent", "v1", seed=7)
    parent_tagged = ref_to(registry, f"{repo}/ok/parent", "v1")
    child = modelkit.push_modelkit(
        registry,
        f"{repo}/ok/child",
        "v1",
        kitfile=modelkit.default_kitfile("child", model_path=parent_tagged),
    )
    child_pinned = modelkit.push_modelkit(
        registry,
        f"{repo}/ok/child-pinned",
        "v1",
        kitfile=modelkit.default_kitfile("child", model_path=f"{parent_tagged}@{parent}"),
    )

    offending = [
        Case(
            pod="repo-denied",
            repository=f"{repo}/ok/experimental/model",
            tag="v1",
            digest=experimental,
            rule=policy.Rule.REPOSITORIES_DENIED,
            reason=policy.Reason.REPOSITORY_DENIED,
            stage="pin",
            words=(
                f"comes from {host}/{repo}/ok/experimental/model, which matches the denied "
                f"pattern '{denied}' in namespace {namespace}",
                f"use a ModelKit from an approved repository ('{allowed}')",
            ),
        ),
        Case(
            pod="repo-not-allowed",
            repository=f"{repo}/elsewhere/model",
            tag="v1",
            digest=elsewhere,
            rule=policy.Rule.REPOSITORIES_ALLOWED,
            reason=policy.Reason.REPOSITORY_NOT_ALLOWED,
            stage="pin",
            words=(
                f"comes from {host}/{repo}/elsewhere/model, which matches none of the "
                f"repositories allowed in namespace {namespace} ('{allowed}')",
                f"use a ModelKit from an allowed repository, or ask the platform team to "
                f"allow this one in {display}",
            ),
        ),
        Case(
            pod="tag-latest",
            repository=f"{repo}/ok/model",
            tag="latest",
            digest=model,
            rule=policy.Rule.TAGS_DENIED,
            reason=policy.Reason.TAG_DENIED,
            stage="pin",
            words=(
                f"uses the tag 'latest', which is not allowed in namespace {namespace} "
                "(denied pattern 'latest')",
                f"pin a release tag or a digest ('{host}/{repo}/ok/model@sha256:<digest>')",
            ),
        ),
        Case(
            pod="tag-nightly",
            repository=f"{repo}/ok/model",
            tag="nightly",
            digest=model,
            rule=policy.Rule.TAGS_ALLOWED,
            reason=policy.Reason.TAG_NOT_ALLOWED,
            stage="pin",
            words=(
                f"uses the tag 'nightly', which matches none of the tags allowed in "
                f"namespace {namespace} ('v*')",
                "use an allowed tag, or reference the ModelKit by digest only "
                f"('{host}/{repo}/ok/model@sha256:<digest>')",
            ),
        ),
        Case(
            pod="modelpack",
            repository=f"{repo}/ok/packed",
            tag="v1",
            digest=packed,
            rule=policy.Rule.ARTIFACTS_FORMATS,
            reason=policy.Reason.FORMAT_NOT_ALLOWED,
            words=(
                f"is a CNCF ModelPack, but namespace {namespace} accepts only a KitOps ModelKit",
                "pack it with `kit pack` (without --use-model-pack)",
            ),
        ),
        Case(
            pod="no-model-layer",
            repository=f"{repo}/ok/data-only",
            tag="v1",
            digest=data_only,
            rule=policy.Rule.ARTIFACTS_REQUIRED_LAYERS,
            reason=policy.Reason.LAYERS_MISSING,
            words=(
                "has no model layer (its layers: code, dataset, docs), but namespace "
                f"{namespace} requires model",
                "use a ModelKit that contains them (a Kitfile model section packs a model layer)",
            ),
        ),
        Case(
            pod="gpl",
            repository=f"{repo}/ok/gpl",
            tag="v1",
            digest=gpl,
            rule=policy.Rule.ARTIFACTS_LICENSES,
            reason=policy.Reason.LICENSE_NOT_ALLOWED,
            words=(
                "declares the license 'GPL-3.0' (Kitfile package.license), which is not "
                f"approved in namespace {namespace} (approved: Apache-2.0, MIT)",
                "use a ModelKit under an approved license, or ask the platform team to "
                f"approve it in {display}",
            ),
        ),
        Case(
            pod="parent-by-tag",
            repository=f"{repo}/ok/child",
            tag="v1",
            digest=child,
            rule=policy.Rule.PARENTS_REQUIRE_DIGEST,
            reason=policy.Reason.PARENT_NOT_PINNED,
            words=(
                f"takes content from the parent ModelKit '{parent_tagged}' (Kitfile "
                "model.path) by tag: `kit unpack` pulls that tag even though this ModelKit "
                "is pinned, so its content can change underneath (KitOps #899)",
                f"repack the ModelKit with model.path: '{host}/{repo}/ok/parent:v1"
                f"@sha256:<digest>' (`kitpin resolve '{parent_tagged}'` prints the digest)",
            ),
        ),
    ]
    passing = [
        Case(pod="clean", repository=f"{repo}/ok/model", tag="v1", digest=model),
        # A parent pinned by digest is fine, and supplies the model layer the child lacks.
        Case(pod="parent-by-digest", repository=f"{repo}/ok/child-pinned", tag="v1",
             digest=child_pinned),
    ]  # fmt: skip

    created = policies.create(
        policy.CLUSTER_KIND,
        name,
        {
            "mode": mode,
            "namespaceSelector": {"matchLabels": label},
            "repositories": {"allowed": [allowed], "denied": [denied]},  # deny wins
            "tags": {"denied": ["latest"], "allowed": ["v*"]},
            "artifacts": {
                "formats": ["kitops-modelkit"],
                "requiredLayers": ["model"],
                "licenses": {"allowed": ["Apache-2.0", "MIT"]},
            },
            "parents": {"requireDigest": True},
        },
    )
    assert created.ok, created.stderr
    stored = policies.wait_ready(policy.CLUSTER_KIND, name)
    assert stored["status"]["ruleCount"] == 8
    probe = pod("probe", namespace, ref_to(registry, f"{repo}/ok/model", "latest"))
    wait_in_effect(kitpin, probe, mode, policy.Rule.TAGS_DENIED)

    for case in [*offending, *passing]:
        tagged = ref_to(registry, case.repository, case.tag)
        pinned = pinned_ref(registry, case.repository, case.tag, case.digest)
        result = kitpin.create(pod(case.pod, namespace, tagged))
        if case.rule is None or mode != "enforce":
            assert result.ok, f"{case.pod}: {result.stderr}"
            stored_pod = kitpin.get("pod", case.pod, namespace)
            assert at(stored_pod, POD_ENV) == pinned, case.pod  # pinned as usual
        if case.rule is None or mode == "audit":
            assert result.warnings == [], f"{case.pod}: {result.warnings}"
            continue
        # Messages quote the reference as the user wrote it, whichever webhook decided
        # (after kitpin pinned it, the validating webhook reads its pin record's "from").
        subject = f"{display} rule {case.rule}: {WHERE} '{tagged}' "
        if mode == "enforce":
            message = denial_of(result, f"{case.stage}-pods")
            assert message.startswith(f"{DENIED}{subject}"), message
            assert message.count(" rule ") == 1, message  # this rule and no other
            assert not kitpin.exists("pod", case.pod, namespace)
            if case.stage == "pin":  # refused on the reference itself: never looked up
                path = f"/v2/{re.escape(case.repository)}/manifests/{case.tag}"
                assert registry.count_requests("GET", path) == 0, path
                assert registry.count_requests("HEAD", path) == 0, path
        else:
            assert len(result.warnings) == 1, f"{case.pod}: {result.warnings}"
            (message,) = result.warnings
            assert message.startswith(subject), message
            assert message.endswith("(mode warn: admitted for now)"), message
        for words in case.words:
            assert words in message, f"{case.pod}: {words!r} not in {message!r}"

    # The Kitfile (config blob) was read once, by digest, for the license rule.
    config_path = f"/v2/{repo}/ok/gpl/blobs/{gpl_pack.config.digest}"
    assert registry.count_requests("GET", config_path) == 1

    # The audit trail: every violation counted once, by rule, newest first.
    rules = [c.rule for c in offending]
    status = policies.wait_status(
        policy.CLUSTER_KIND,
        name,
        None,
        lambda s: s.get("violations", 0) >= len(offending),
        f"{len(offending)} violations",
    )
    assert status["violations"] == len(offending), status
    assert status["violationsByRule"] == dict.fromkeys(rules, 1)
    recent = status["recentViolations"]
    assert [(r["object"], r["rule"]) for r in recent] == [
        (f"Pod/{c.pod}", c.rule) for c in reversed(offending)
    ]
    assert {r["mode"] for r in recent} == {mode}
    assert {r["namespace"] for r in recent} == {namespace}
    # (as written in the object: a check-stage violation sees kitpin's pin)
    assert recent[0]["reference"] == pinned_ref(registry, f"{repo}/ok/child", "v1", child)
    for rule in rules:
        assert violations_metric(kitpin, display, str(rule), mode) == 1.0, rule

    # Events on the offending objects (warn/audit); a denied object does not exist.
    events = kitpin_events(kitpin, namespace)
    if mode == "enforce":
        assert events == []
        return
    by_pod = {e.involved_object.name: e for e in events}
    assert len(events) == len(offending) and set(by_pod) == {c.pod for c in offending}
    for case in offending:
        event = by_pod[case.pod]
        assert event.type == "Warning"
        assert event.reason == case.reason
        assert event.involved_object.kind == "Pod"
        uid = kitpin.get("pod", case.pod, namespace)["metadata"]["uid"]
        assert event.involved_object.uid == uid
        assert event.message.startswith(f"{display} rule {case.rule}: {WHERE} ")
        assert case.words[0] in event.message


def test_modelpack_only_namespace_checks_modelpacks_by_their_kitfile_annotation(
    kitpin: Kitpin, namespace: str, policies: Policies, repo: str
) -> None:
    """The other way round: a ModelKitPolicy that admits only ModelPacks refuses a KitOps
    ModelKit, and checks a ModelPack's layers (weight counts as model) and the licenses of
    the Kitfile kit packs into its manifest annotation (no config blob is read)."""
    registry = kitpin.registries.plain
    name = "modelpack-only"
    display = f"{policy.NAMESPACED_KIND}/{name}"
    kitops = modelkit.push_modelkit(registry, f"{repo}/kitops", "v1")
    packed = modelkit.push_modelkit(registry, f"{repo}/packed", "v1", fmt="modelpack")
    gpl_pack = modelkit.pack_modelkit(
        kitfile=_gpl_kitfile(f"gpl-{secrets.token_hex(3)}"), fmt="modelpack"
    )
    gpl = modelkit.push_packed(registry, f"{repo}/gpl", "v1", gpl_pack)
    data_only = modelkit.push_modelkit(
        registry, f"{repo}/data-only", "v1", kitfile=_kitfile_without_model(), fmt="modelpack"
    )

    created = policies.create(
        policy.NAMESPACED_KIND,
        name,
        {
            "artifacts": {
                "formats": ["modelpack"],
                "requiredLayers": ["model"],
                "licenses": {"allowed": ["Apache-2.0"]},
            }
        },
        namespace=namespace,
    )
    assert created.ok, created.stderr
    policies.wait_ready(policy.NAMESPACED_KIND, name, namespace)
    kitops_ref = ref_to(registry, f"{repo}/kitops", "v1")
    wait_in_effect(
        kitpin, pod("probe", namespace, kitops_ref), "enforce", policy.Rule.ARTIFACTS_FORMATS
    )

    refused = {
        "kitops": (kitops_ref, kitops),
        "gpl": (ref_to(registry, f"{repo}/gpl", "v1"), gpl),
        "data-only": (ref_to(registry, f"{repo}/data-only", "v1"), data_only),
    }
    messages = {}
    for pod_name, (tagged, _digest) in refused.items():
        message = denial_of(kitpin.create(pod(pod_name, namespace, tagged)), "check-pods")
        assert message.startswith(f"{DENIED}{display} rule "), message
        assert f"{WHERE} '{tagged}' " in message
        assert message.count(" rule ") == 1, message
        messages[pod_name] = message
    assert (
        f"rule artifacts.formats: {WHERE} '{kitops_ref}' is a KitOps ModelKit, but "
        f"namespace {namespace} accepts only a CNCF ModelPack; pack it with `kit pack "
        "--use-model-pack`"
    ) in messages["kitops"]
    assert (
        "rule artifacts.licenses: " in messages["gpl"]
        and "declares the license 'GPL-3.0' (Kitfile package.license), which is not approved "
        f"in namespace {namespace} (approved: Apache-2.0)"
        in messages["gpl"]
    )
    assert (
        "rule artifacts.requiredLayers: " in messages["data-only"]
        and "has no model layer (its layers: code, dataset, docs)" in messages["data-only"]
    )
    # kit packs the Kitfile into the ModelPack's manifest annotation: no config blob read.
    assert registry.count_requests("GET", f"/v2/{repo}/gpl/blobs/{gpl_pack.config.digest}") == 0

    admitted = kitpin.create(pod("modelpack", namespace, ref_to(registry, f"{repo}/packed", "v1")))
    assert admitted.ok, admitted.stderr
    assert admitted.warnings == []
    stored = kitpin.get("pod", "modelpack", namespace)
    assert at(stored, POD_ENV) == pinned_ref(registry, f"{repo}/packed", "v1", packed)


# --------------------------------------------------------------------------- tags.requireDigest


def test_require_digest_refuses_tag_only_references_before_resolving_them(
    kitpin: Kitpin, new_namespace: Callable[..., str], policies: Policies, repo: str
) -> None:
    registry = kitpin.registries.plain
    label = _label()
    namespace = new_namespace(labels=label)
    name = f"e2e-digests-{secrets.token_hex(3)}"
    display = f"{policy.CLUSTER_KIND}/{name}"
    digest = modelkit.push_modelkit(registry, f"{repo}/model", "v1")
    tagged = ref_to(registry, f"{repo}/model", "v1")

    created = policies.create(
        policy.CLUSTER_KIND,
        name,
        {"namespaceSelector": {"matchLabels": label}, "tags": {"requireDigest": True}},
    )
    assert created.ok, created.stderr
    stored = policies.wait_ready(policy.CLUSTER_KIND, name)
    assert stored["spec"]["mode"] == "enforce"  # the schema's default
    # The probe's tag was never pushed: the policy refuses it before any lookup, so the
    # answer is the policy's, not NotFound.
    never = ref_to(registry, f"{repo}/never-pushed", "v1")
    probe = wait_in_effect(
        kitpin, pod("probe", namespace, never), "enforce", policy.Rule.TAGS_REQUIRE_DIGEST
    )
    assert "NotFound" not in probe.stderr

    manifests = f"/v2/{re.escape(repo)}/model/manifests/.*"
    before = {m: registry.count_requests(m, manifests) for m in ("GET", "HEAD")}
    refused = kitpin.create(pod("tag-only", namespace, tagged))
    refused_deployment = kitpin.create(deployment("tag-only", namespace, tagged))

    assert denial_of(refused, "pin-pods") == (
        f"{DENIED}{display} rule tags.requireDigest: {WHERE} '{tagged}' "
        f"has no digest, and namespace {namespace} accepts only references written with a "
        f"digest; write '{tagged}@sha256:<digest>' in the manifest "
        f"(`kitpin resolve '{tagged}'` prints the digest)"
    )
    message = denial_of(refused_deployment, "pin-deployments")
    assert f"{display} rule tags.requireDigest: " in message
    assert f"'{tagged}' has no digest" in message
    # Nothing was resolved: the registry saw no manifest request for the repository.
    assert {m: registry.count_requests(m, manifests) for m in ("GET", "HEAD")} == before
    assert not kitpin.exists("pod", "tag-only", namespace)
    assert not kitpin.exists("deployment", "tag-only", namespace)

    # A digest written by the user passes, with or without its tag, and is left as written.
    for pod_name, written in [
        ("tag-and-digest", f"{tagged}@{digest}"),
        ("digest-only", f"{registry.host}/{repo}/model@{digest}"),
    ]:
        admitted = kitpin.create(pod(pod_name, namespace, written))
        assert admitted.ok, admitted.stderr
        assert admitted.warnings == []
        stored_pod = kitpin.get("pod", pod_name, namespace)
        assert at(stored_pod, POD_ENV) == written
        assert pins(stored_pod) is None  # kitpin pinned nothing
    # A Deployment pinned in Git: admitted, and so are the ReplicaSet and Pod it makes.
    admitted = kitpin.create(deployment("pinned", namespace, f"{tagged}@{digest}"))
    assert admitted.ok, admitted.stderr
    uid = kitpin.get("deployment", "pinned", namespace)["metadata"]["uid"]
    (replica_set,) = _wait_owned(kitpin, "replicaset", namespace, uid)
    (child,) = _wait_owned(kitpin, "pod", namespace, replica_set["metadata"]["uid"])
    assert at(child, POD_ENV) == f"{tagged}@{digest}"

    # The two denials are the policy's violations (mode enforce: counted, no Events).
    status = policies.wait_status(
        policy.CLUSTER_KIND, name, None, lambda s: s.get("violations", 0) >= 2, "2 violations"
    )
    assert status["violations"] == 2
    assert status["violationsByRule"] == {"tags.requireDigest": 2}
    assert [(r["object"], r["mode"]) for r in status["recentViolations"]] == [
        ("Deployment/tag-only", "enforce"),
        ("Pod/tag-only", "enforce"),
    ]
    assert violations_metric(kitpin, display, "tags.requireDigest", "enforce") == 2.0
    assert kitpin_events(kitpin, namespace) == []


def _wait_owned(kitpin: Kitpin, kind: str, namespace: str, uid: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def made() -> bool:
        found[:] = owned_by(kitpin.list(kind, namespace), uid)
        return bool(found)

    procs.wait_until(made, timeout=TIMEOUT, what=f"a {kind} owned by {uid}", interval=0.3)
    return found


@pytest.mark.parametrize("mode", ["warn", "audit"])
def test_namespaced_policy_require_digest_reads_the_reference_as_written(
    kitpin: Kitpin, namespace: str, policies: Policies, repo: str, mode: str
) -> None:
    """kitpin pins the tag-only reference (the rule is not enforced), and the validating
    webhook still sees what the user wrote (the ``from`` of kitpin's pin): kitpin's own
    digest never satisfies requireDigest."""
    registry = kitpin.registries.plain
    name = f"digests-{mode}"
    display = f"{policy.NAMESPACED_KIND}/{name}"
    digest = modelkit.push_modelkit(registry, repo, "v1")
    tagged = ref_to(registry, repo, "v1")
    pinned = pinned_ref(registry, repo, "v1", digest)

    created = policies.create(
        policy.NAMESPACED_KIND,
        name,
        {"mode": mode, "tags": {"requireDigest": True}},
        namespace=namespace,
    )
    assert created.ok, created.stderr
    policies.wait_ready(policy.NAMESPACED_KIND, name, namespace)
    wait_in_effect(kitpin, pod("probe", namespace, tagged), mode, policy.Rule.TAGS_REQUIRE_DIGEST)

    admitted = kitpin.create(pod("tag-only", namespace, tagged))
    written = kitpin.create(pod("written-digest", namespace, f"{tagged}@{digest}"))

    assert admitted.ok, admitted.stderr
    stored = kitpin.get("pod", "tag-only", namespace)
    assert at(stored, POD_ENV) == pinned  # pinned as usual
    record = pins(stored)
    assert record is not None and record[POD_ENV]["from"] == tagged
    if mode == "warn":
        (warning,) = admitted.warnings
        assert warning.startswith(f"{display} rule tags.requireDigest: {WHERE} '")
        assert f"namespace {namespace} accepts only references written with a digest" in warning
        assert f"write '{tagged}@sha256:<digest>' in the manifest" in warning
        assert warning.endswith("(mode warn: admitted for now)")
    else:
        assert admitted.warnings == []
    assert written.ok, written.stderr
    assert written.warnings == []

    status = policies.wait_status(
        policy.NAMESPACED_KIND, name, namespace, lambda s: s.get("violations", 0) >= 1, "1"
    )
    assert status["violations"] == 1
    assert status["violationsByRule"] == {"tags.requireDigest": 1}
    (recent,) = status["recentViolations"]
    assert recent["object"] == "Pod/tag-only"
    assert recent["namespace"] == namespace
    assert recent["mode"] == mode
    # a ModelKitPolicy's series carries its namespace: same-named policies stay apart
    metric_label = f"{policy.NAMESPACED_KIND}/{namespace}/{name}"
    assert violations_metric(kitpin, metric_label, "tags.requireDigest", mode) == 1.0
    (event,) = kitpin_events(kitpin, namespace)
    assert (event.involved_object.kind, event.involved_object.name) == ("Pod", "tag-only")
    assert (event.type, event.reason) == ("Warning", policy.Reason.DIGEST_REQUIRED)
    assert event.message.startswith(f"{display} rule tags.requireDigest: ")

    table = policies.table(policy.NAMESPACED_KIND, name, namespace)
    assert table[0].split() == ["NAME", "MODE", "RULES", "VIOLATIONS", "READY", "AGE"]
    assert table[1].split()[:5] == [name, mode, "1", "1", "True"]


# --------------------------------------------------------------------------- audit trail


def test_audit_trail_counts_each_object_once_and_kubectl_shows_it(
    kitpin: Kitpin, new_namespace: Callable[..., str], policies: Policies, repo: str
) -> None:
    """A Deployment counts once: not its dry runs, not the ReplicaSet and Pods it makes
    (they carry the same reference, and warnings, but their owner was counted)."""
    registry = kitpin.registries.plain
    label = _label()
    namespace = new_namespace(labels=label)
    name = f"e2e-trail-{secrets.token_hex(3)}"
    display = f"{policy.CLUSTER_KIND}/{name}"
    digest = modelkit.push_modelkit(registry, repo, "latest")
    latest = ref_to(registry, repo, "latest")

    created = policies.create(
        policy.CLUSTER_KIND,
        name,
        {
            "mode": "warn",
            "namespaceSelector": {"matchLabels": label},
            "tags": {"denied": ["latest"]},
        },
    )
    assert created.ok, created.stderr
    policies.wait_ready(policy.CLUSTER_KIND, name)
    wait_in_effect(kitpin, pod("probe", namespace, latest), "warn", policy.Rule.TAGS_DENIED)
    dry = kitpin.create(deployment("llama", namespace, latest), dry_run=True)
    assert dry.ok and len(dry.warnings) == 1, dry.stderr

    applied = kitpin.create(deployment("llama", namespace, latest, replicas=2))

    assert applied.ok, applied.stderr
    (warning,) = applied.warnings
    assert warning.startswith(f'{display} rule tags.denied: initContainer "kitops-init" ')
    assert "uses the tag 'latest'" in warning
    stored = kitpin.get("deployment", "llama", namespace)
    assert at(stored, TEMPLATE_ENV) == pinned_ref(registry, repo, "latest", digest)
    (replica_set,) = _wait_owned(kitpin, "replicaset", namespace, stored["metadata"]["uid"])
    rs_uid = replica_set["metadata"]["uid"]
    procs.wait_until(
        lambda: len(owned_by(kitpin.list("pod", namespace), rs_uid)) == 2,
        timeout=TIMEOUT,
        what="2 Pods of the ReplicaSet",
        interval=0.3,
    )
    # A sentinel admitted after the children: once it is counted, so would they be.
    sentinel = kitpin.create(pod("sentinel", namespace, latest))
    assert sentinel.ok and len(sentinel.warnings) == 1, sentinel.stderr

    status = policies.wait_status(
        policy.CLUSTER_KIND, name, None, lambda s: s.get("violations", 0) >= 2, "2 violations"
    )
    assert status["violations"] == 2, status
    assert status["violationsByRule"] == {"tags.denied": 2}
    recent = status["recentViolations"]
    assert [(r["object"], r["rule"], r["mode"]) for r in recent] == [
        ("Pod/sentinel", "tags.denied", "warn"),
        ("Deployment/llama", "tags.denied", "warn"),
    ]
    assert recent[1]["reference"] == pinned_ref(registry, repo, "latest", digest)
    assert violations_metric(kitpin, display, "tags.denied", "warn") == 2.0
    events = kitpin_events(kitpin, namespace)
    assert sorted((e.involved_object.kind, e.involved_object.name) for e in events) == [
        ("Deployment", "llama"),
        ("Pod", "sentinel"),
    ]
    for event in events:
        assert (event.type, event.reason) == ("Warning", policy.Reason.TAG_DENIED)
        assert event.message.startswith(f"{display} rule tags.denied: ")
        assert "(denied pattern 'latest')" in event.message

    table = policies.table(policy.CLUSTER_KIND, name)
    assert table[0].split() == ["NAME", "MODE", "RULES", "VIOLATIONS", "READY", "AGE"]
    row = table[1].split()
    assert row[:5] == [name, "warn", "1", "2", "True"]
    assert re.fullmatch(r"\d+s|\d+m\d*s?", row[5]), row
    wide = "\n".join(policies.table(policy.CLUSTER_KIND, name, None, "-o", "wide"))
    assert "SUMMARY" in wide and "tags: deny latest" in wide


def test_block_mode_overrides_the_policy_mode_and_edits_take_effect(
    kitpin: Kitpin, new_namespace: Callable[..., str], policies: Policies, repo: str
) -> None:
    """Policy enforce, tags block warn: the tag rule warns while the repository rule denies.
    Every matching policy applies (a ModelKitPolicy in audit adds its own record), the
    strictest outcome wins. Editing the policy moves observedGeneration and the verdict."""
    registry = kitpin.registries.plain
    host = registry.host
    label = _label()
    namespace = new_namespace(labels=label)
    name = f"e2e-override-{secrets.token_hex(3)}"
    display = f"{policy.CLUSTER_KIND}/{name}"
    denied = f"{host}/{repo}/experimental/**"
    digest = modelkit.push_modelkit(registry, f"{repo}/model", "stage-1")
    modelkit.push_modelkit(registry, f"{repo}/experimental/model", "v1")
    staged = ref_to(registry, f"{repo}/model", "stage-1")

    probe = pod("probe", namespace, staged)
    # The audit policy first: alone, its (silent) verdict is observable.
    extra = policies.create(
        policy.NAMESPACED_KIND,
        "audit-stages",
        {"mode": "audit", "tags": {"denied": ["stage-*"]}},
        namespace=namespace,
    )
    assert extra.ok, extra.stderr
    policies.wait_ready(policy.NAMESPACED_KIND, "audit-stages", namespace)
    wait_in_effect(kitpin, probe, "audit", policy.Rule.TAGS_DENIED)
    created = policies.create(
        policy.CLUSTER_KIND,
        name,
        {
            "mode": "enforce",
            "namespaceSelector": {"matchLabels": label},
            "repositories": {"denied": [denied]},
            "tags": {"denied": ["latest", "stage-*"], "mode": "warn"},
        },
    )
    assert created.ok, created.stderr
    stored = policies.wait_ready(policy.CLUSTER_KIND, name)
    assert stored["status"]["summary"] == (
        f"repositories: deny {denied}; tags: deny latest,stage-* [warn]"
    )
    wait_in_effect(kitpin, probe, "warn", policy.Rule.TAGS_DENIED)

    warned = kitpin.create(pod("staged", namespace, staged))
    refused = kitpin.create(
        pod("experimental", namespace, ref_to(registry, f"{repo}/experimental/model", "v1"))
    )

    assert warned.ok, warned.stderr
    assert at(kitpin.get("pod", "staged", namespace), POD_ENV) == pinned_ref(
        registry, f"{repo}/model", "stage-1", digest
    )
    (warning,) = warned.warnings  # the audit policy adds no warning
    assert warning.startswith(f"{display} rule tags.denied: ")
    assert "uses the tag 'stage-1', which is not allowed" in warning
    assert "(denied pattern 'stage-*')" in warning
    message = denial_of(refused, "pin-pods")
    assert message.startswith(f"{DENIED}{display} rule repositories.denied: ")
    assert f"which matches the denied pattern '{denied}'" in message

    # Drop the block's mode: the tag rule falls back to the policy's (enforce).
    edited = policies.patch(policy.CLUSTER_KIND, name, {"spec": {"tags": {"mode": None}}})
    assert edited.ok, edited.stderr
    stored = policies.wait_ready(policy.CLUSTER_KIND, name)
    assert stored["metadata"]["generation"] == 2
    assert stored["status"]["summary"] == (
        f"repositories: deny {denied}; tags: deny latest,stage-*"
    )
    wait_in_effect(kitpin, probe, "enforce", policy.Rule.TAGS_DENIED)
    message = denial_of(kitpin.create(pod("staged-again", namespace, staged)), "pin-pods")
    assert message.startswith(f"{DENIED}{display} rule tags.denied: ")

    status = policies.wait_status(
        policy.CLUSTER_KIND, name, None, lambda s: s.get("violations", 0) >= 3, "3 violations"
    )
    assert status["violations"] == 3
    assert status["violationsByRule"] == {"tags.denied": 2, "repositories.denied": 1}
    assert [(r["object"], r["rule"], r["mode"]) for r in status["recentViolations"]] == [
        ("Pod/staged-again", "tags.denied", "enforce"),
        ("Pod/experimental", "repositories.denied", "enforce"),
        ("Pod/staged", "tags.denied", "warn"),
    ]
    assert violations_metric(kitpin, display, "tags.denied", "warn") == 1.0
    assert violations_metric(kitpin, display, "tags.denied", "enforce") == 1.0
    assert violations_metric(kitpin, display, "repositories.denied", "enforce") == 1.0
    # The ModelKitPolicy keeps its own record, in audit mode, of both objects that broke it:
    # the admitted Pod, and the one the cluster policy denied (every violation is counted,
    # not only the strictest).
    own = policies.wait_status(
        policy.NAMESPACED_KIND, "audit-stages", namespace,
        lambda s: s.get("violations", 0) >= 2, "2 violations",
    )  # fmt: skip
    assert own["violations"] == 2
    assert [(r["object"], r["mode"]) for r in own["recentViolations"]] == [
        ("Pod/staged-again", "audit"),
        ("Pod/staged", "audit"),
    ]
    audit_label = f"{policy.NAMESPACED_KIND}/{namespace}/audit-stages"  # namespaced series
    assert violations_metric(kitpin, audit_label, "tags.denied", "audit") == 2.0
    events = kitpin_events(kitpin, namespace)
    assert sorted((e.involved_object.name, e.message.split(" rule ")[0]) for e in events) == [
        ("staged", display),
        ("staged", f"{policy.NAMESPACED_KIND}/audit-stages"),
        ("staged-again", f"{policy.NAMESPACED_KIND}/audit-stages"),
    ]  # warn and audit violations only: the enforce denials made no Event


# --------------------------------------------------------------------------- malformed


def test_malformed_policies_are_refused_naming_the_field(
    kitpin: Kitpin, namespace: str, policies: Policies
) -> None:
    # The CRD schema catches this one: the apiserver answers before any webhook.
    name = f"e2e-bad-mode-{secrets.token_hex(3)}"
    refused = policies.create(
        policy.CLUSTER_KIND, name, {"mode": "Enforce", "tags": {"denied": ["latest"]}}
    )
    assert not refused.ok
    assert 'spec.mode: Unsupported value: "Enforce"' in refused.stderr
    assert "admission webhook" not in refused.stderr

    # These pass the schema; kitpin's policy webhook (the parser its index uses) refuses them.
    cases: list[tuple[str, dict[str, Any], str]] = [
        (
            policy.CLUSTER_KIND,
            {"tags": {"allowed": ["v1.2"], "denied": ["v*"]}},
            "spec.tags.allowed[0]: the tag 'v1.2' is also matched by spec.tags.denied[0] "
            "'v*', and deny wins, so allowing it has no effect; remove it from one of the lists",
        ),
        (
            policy.CLUSTER_KIND,
            {"repositories": {"allowed": ["acme/models/**"]}},
            "spec.repositories.allowed[0]: 'acme/models/**' starts with 'acme', which is not "
            "a registry host (no '.' or ':'); references are matched by their full name "
            "'registry/repository': write 'docker.io/acme/models/**' for Docker Hub, or put "
            "the registry host first",
        ),
        (
            policy.CLUSTER_KIND,
            {
                "namespaceSelector": {
                    "matchLabels": {"team": "ml"},
                    "matchExpressions": [{"key": "team", "operator": "In", "values": ["search"]}],
                },
                "tags": {"denied": ["latest"]},
            },
            "spec.namespaceSelector: matchLabels requires team=ml but matchExpressions "
            "requires team in (search): no namespace can match; fix one of them",
        ),
        (
            policy.NAMESPACED_KIND,
            {"repositories": {"denied": ["ghcr.io/acme/exp**"]}},
            "spec.repositories.denied[0]: 'ghcr.io/acme/exp**' uses '**' inside the component "
            "'exp**'; '**' must be a whole component",
        ),
    ]
    for kind, spec, expected in cases:
        bad = f"e2e-bad-{secrets.token_hex(3)}"
        ns = namespace if kind == policy.NAMESPACED_KIND else None
        result = policies.create(kind, bad, spec, namespace=ns)
        message = denial_of(result, f"check-{SHORT_PLURAL[kind]}")
        assert message == f"{kind}/{bad} is invalid: {expected}", message
        args = [SHORT[kind], bad, "--ignore-not-found", "-o", "name"]
        listed = kitpin.kubectl("get", *args, *(["-n", ns] if ns else []))
        assert listed.ok and listed.stdout == "", listed  # nothing stored

    # An edit that breaks a stored policy is refused the same way; the policy stays as it was.
    name = f"e2e-edit-{secrets.token_hex(3)}"
    assert policies.create(policy.CLUSTER_KIND, name, {"tags": {"denied": ["v*"]}}).ok
    edit = policies.patch(policy.CLUSTER_KIND, name, {"spec": {"tags": {"allowed": ["v2"]}}})
    message = denial_of(edit, f"check-{SHORT_PLURAL[policy.CLUSTER_KIND]}")
    assert message.startswith(
        f"{policy.CLUSTER_KIND}/{name} is invalid: spec.tags.allowed[0]: the tag 'v2' is also "
        "matched by spec.tags.denied[0] 'v*'"
    ), message
    stored = policies.get(policy.CLUSTER_KIND, name)
    assert stored["metadata"]["generation"] == 1
    assert "allowed" not in stored["spec"]["tags"]
