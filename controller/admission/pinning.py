"""The admission engine: what kitpin decides for one object. No kopf, no HTTP.

The fast path and the kopf handlers turn an AdmissionReview into a :class:`Review`
(:mod:`.indexes`), call :meth:`Engine.mutate` or :meth:`Engine.validate` (through
:class:`.decide.Admission`), and :mod:`.response` turns the :class:`Decision` into the answer.

Mutation rules (each outcome has a named reason, see ``Reason``):

1. Every ModelKit reference found by :mod:`controller.sites` is parsed in its own grammar.
   Malformed ones are left alone here: the validating webhook denies them with the message.
2. A reference that already carries a digest is left alone (the validating webhook checks it).
3. A pod template (:func:`sites.is_template`: a workload, a PodTemplate, a custom resource
   declared with pod specs only) that has a controller owner is never mutated: the owner was
   pinned (a ReplicaSet of a Deployment or Rollout, a Job of a CronJob or JobSet, a
   StatefulSet of a LeaderWorkerSet, a RayCluster of a RayService), or its Pods will be, and
   changing the child's template breeds ReplicaSets, revisions or groups (k8s-digester #25).
   Pods are always pinned. ``pods-only`` leaves every pod template alone.
4. On UPDATE, a site whose reference is unchanged from the old object keeps the digest the
   old object had: re-applies from GitOps are stable and immutable Job templates stay equal.
   Only CREATE or a changed reference resolves anew.
5. Resolution failures deny with the real cause by default; ``failure="warn"`` admits the
   object unpinned, with a warning and the ``kitpin.dev/unpinned`` annotation.
6. Pinned sites are recorded in the ``kitpin.dev/pinned`` annotation: a JSON object mapping
   each site's JSON pointer to ``{"from", "digest", "resolvedAt"}`` (:mod:`.pins`).

7. Signatures (a policy's ``signatures`` block, :mod:`.signing`): before pinning, the digest
   a tag resolved to is verified with the policy's keys; a missing or invalid signature under
   a rule in mode ``enforce`` denies instead of pinning, and a verified one is named in the
   record (``signedBy``). A check that cannot be made (``SignatureUnavailable``: a registry
   error, a key Secret that cannot be read) follows ``failure`` under an ``enforce`` rule
   (deny by default; ``warn`` pins without ``signedBy`` and validation warns). Validation
   verifies every reference it admits the same way (cached: the digest mutate verified costs
   nothing), with the rule's mode.

Validation denies references that can never work (malformed, kit-local, non-sha256 digests)
and artifacts that are not ModelKits/ModelPacks where a ModelKit is expected
(:func:`not_a_modelkit_message`, also used by ``kitpin pin`` and ``kitpin check``). It warns
when an image volume names a KitOps-format ModelKit, which the kubelet cannot mount
(:func:`artifacts.image_volume_problem`).

Policy judges what :func:`.evidence.build` gives it: every reference as the user wrote it
(kitpin's own pin never satisfies ``tags.requireDigest``), the same evidence ``kitpin check``
judges.

Tag records (:class:`TagRecorder`, the ModelKitTag writer, optional): every successful
resolution of a reference written without a digest is observed (with the admitted object's
owner-level workload), and so is every digest kept by rule 4; never for a dry run. The
recorder is synchronous, does no I/O and constant work per call; a cached review (the tag at
its recorded digest, the workload known) writes nothing and costs one memo lookup
(:class:`controller.tags.writer.TagWriter`: records on vs off within 5% CPU per warm review,
bench/README.md). The policies in force are looked up once per review, and only when there
are policies. The recorder is also where ``tags.immutable`` reads a tag's first-seen digest.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

from controller import artifacts, errors, policy, refs, signatures, sites, types
from controller.admission import evidence, pins, signing
from controller.admission.evidence import Found
from controller.admission.pins import PINNED_ANNOTATION, UNPINNED_ANNOTATION
from controller.resolver import ConfigSource
from controller.types import Credential, Resolution

__all__ = [
    "IGNORE_LABEL",
    "PINNED_ANNOTATION",
    "UNPINNED_ANNOTATION",
    "UNPINNED_WARNING",
    "UNVERIFIED_WARNING",
    "AdmissionMode",
    "AdmissionSettings",
    "Credentials",
    "Decision",
    "Denial",
    "Engine",
    "FailureMode",
    "NoCredentials",
    "Reason",
    "Resolver",
    "Review",
    "TagRecorder",
    "not_a_modelkit_message",
]

logger = logging.getLogger(__name__)

AdmissionMode = Literal["pin", "pods-only", "validate-only"]
FailureMode = Literal["deny", "warn"]

IGNORE_LABEL: Final = "kitpin.dev/ignore"

UNPINNED_WARNING: Final = "admitted unpinned (failure mode warn): "
"""How the warning of each site admitted unpinned (``failure: warn``) begins."""
UNVERIFIED_WARNING: Final = "not verified (failure mode warn): "
"""How the warning of each reference validation could not verify (``failure: warn``) begins."""


class Reason:
    """Named outcomes (k8s-digester style): one code per outcome, the same in logs, the
    admission metrics' ``outcome`` label, Events and denial messages (a denial's text names
    its reason, e.g. ``...: LocalReference: ...``). The README's troubleshooting tables list
    every one (a test compares them). Denials for registry failures carry the error's own
    reason (:mod:`controller.errors`), policy outcomes ``policy.Reason``'s verdict reasons."""

    PINNED: Final = "Pinned"
    KEPT: Final = "KeptFromOldObject"
    NOTHING_TO_DO: Final = "NoModelKitReferences"
    VERIFIED: Final = "Verified"
    """validation: every reference is valid and (where needed) resolved; no policy applies."""
    OWNED: Final = "TemplateOwnedByController"
    PODS_ONLY: Final = "PodsOnlyMode"
    VALIDATE_ONLY: Final = "ValidateOnlyMode"
    IGNORED_NAMESPACE: Final = "IgnoredNamespace"
    INVALID_REFERENCE: Final = errors.ReferenceError.reason
    LOCAL_REFERENCE: Final = errors.LocalReferenceError.reason
    """A kit-grammar reference without a registry host: kit's local storage."""
    NOT_A_MODELKIT: Final = "NotAModelKit"
    ADMITTED_UNPINNED: Final = "AdmittedUnpinned"
    """failure: warn, and no reference could be resolved."""
    ADMITTED_UNVERIFIED: Final = "AdmittedUnverified"
    """failure: warn, and validation could not verify a reference (the registry failed)."""
    SIGNATURE_UNAVAILABLE: Final = signatures.REASON_UNAVAILABLE
    """A ``signatures`` rule in mode enforce could not be checked (the registry failed while
    fetching signatures, or a key Secret cannot be read): denied, like a registry failure,
    unless ``failure: warn``."""


@dataclass(frozen=True, kw_only=True)
class AdmissionSettings:
    """How the webhooks behave. Every field has a safe default."""

    mode: AdmissionMode = "pin"
    """``pin`` (default) pins Pods and workload templates; ``pods-only`` pins Pods but never
    rewrites workload specs (for GitOps tools that fight spec changes); ``validate-only``
    never mutates anything."""

    failure: FailureMode = "deny"
    """On a resolution failure: ``deny`` (default, safe: nothing runs unpinned) with the real
    cause, or ``warn``: admit unpinned with a warning and the ``kitpin.dev/unpinned``
    annotation."""

    deadline: float = 8.0
    """Seconds one review may spend resolving. Must stay below the webhook's
    ``timeoutSeconds`` (10 s by default) so kitpin answers with the real cause before the
    apiserver gives up (Ratify #92)."""

    ignored_namespaces: frozenset[str] = frozenset(
        {"kube-system", "kube-public", "kube-node-lease"}
    )
    """Namespaces never touched (the controller's own is added at start-up). Namespaces
    labelled ``kitpin.dev/ignore=true`` are skipped too."""

    sites: sites.SitesSettings = field(default_factory=sites.SitesSettings)
    """Where references are looked for (env names, kit CLI images, extra CRD sites)."""


@dataclass(frozen=True, kw_only=True)
class Review:
    """The parts of an AdmissionReview request the engine reads."""

    operation: str
    namespace: str
    obj: Mapping[str, Any]
    old: Mapping[str, Any] | None = None
    dry_run: bool = False
    namespace_ignored: bool = False
    """The namespace carries ``kitpin.dev/ignore=true`` (looked up by the caller)."""
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    """The namespace's labels (cluster policies select namespaces by label)."""
    policies: Sequence[policy.Policy] = ()
    """Every known policy (the caller's index); the engine picks the matching ones."""


@dataclass(frozen=True, kw_only=True)
class Denial:
    reason: str
    message: str
    code: int = 403


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What to answer. ``values`` maps JSON pointers to new string values; ``annotations``
    maps annotation keys to new values (None removes)."""

    reason: str
    values: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str | None] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    denial: Denial | None = None
    violations: tuple[policy.Violation, ...] = ()
    """Policy violations found (every mode), for the audit trail (status, Events, metrics)."""

    @property
    def allowed(self) -> bool:
        return self.denial is None

    @property
    def changes(self) -> bool:
        return bool(self.values or self.annotations)


class Resolver(Protocol):
    """Resolves references to digests (:class:`controller.resolver.Resolver`)."""

    def peek(
        self, ref: refs.Reference, *, credential: Credential | None = None
    ) -> Resolution | None:
        """The fresh cached answer, or None (then :meth:`resolve`). Synchronous: a review
        whose references are all cached needs no task and no event-loop turn."""
        ...

    async def resolve(
        self,
        ref: refs.Reference,
        *,
        credential: Credential | None = None,
        deadline: float | None = None,
    ) -> Resolution: ...


class Credentials(Protocol):
    """Finds the credential for one registry on behalf of one object (its namespace's pull
    secrets, then central ones). Never crosses namespaces."""

    def lookup_cached(
        self,
        *,
        namespace: str,
        registry: str,
        repository: str,
        pod_spec: Mapping[str, Any] | None,
    ) -> tuple[bool, Credential | None]:
        """:meth:`lookup` from caches alone: ``(True, credential)`` when it could answer
        without I/O, else ``(False, None)`` (then :meth:`lookup`)."""
        ...

    async def lookup(
        self,
        *,
        namespace: str,
        registry: str,
        repository: str,
        pod_spec: Mapping[str, Any] | None,
    ) -> Credential | None: ...


class NoCredentials:
    """Anonymous access everywhere (the CLI without --docker-config, unit tests)."""

    def lookup_cached(
        self,
        *,
        namespace: str,
        registry: str,
        repository: str,
        pod_spec: Mapping[str, Any] | None,
    ) -> tuple[bool, Credential | None]:
        return True, None

    async def lookup(
        self,
        *,
        namespace: str,
        registry: str,
        repository: str,
        pod_spec: Mapping[str, Any] | None,
    ) -> Credential | None:
        return None


class TagRecorder(Protocol):
    """The ModelKitTag records (:class:`controller.tags.writer.TagWriter`). Every method is
    synchronous, does no I/O and constant work: it runs on the admission path."""

    def observe_admission(
        self,
        resolution: Resolution,
        *,
        obj: Mapping[str, Any],
        namespace: str,
        immutable: bool = False,
    ) -> bool:
        """``obj`` (its owner-level workload) was pinned to ``resolution``'s digest;
        ``immutable``: the tag is under a ``tags.immutable`` rule. True when queued. Called
        for every resolution of every review: a cached review must cost next to nothing."""
        ...

    def observe_kept(
        self,
        ref: refs.Reference,
        digest: str,
        *,
        obj: Mapping[str, Any],
        namespace: str,
        at: datetime,
    ) -> bool:
        """``obj`` keeps ``digest`` of ``ref``'s tag without a resolution (rule 4)."""
        ...

    def first_seen(self, ref: refs.Reference) -> tuple[str, datetime] | None:
        """The first digest recorded for ``ref``'s tag and when; None without a record."""
        ...


class Engine:
    """Decides mutations and validations; holds no per-request state."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        credentials: Credentials | None = None,
        configs: ConfigSource | None = None,
        settings: AdmissionSettings | None = None,
        tags: TagRecorder | None = None,
        signatures: signing.Signing | None = None,
    ) -> None:
        self.resolver = resolver
        self.credentials: Credentials = credentials or NoCredentials()
        self.configs = configs
        self.settings = settings or AdmissionSettings()
        self.tags = tags
        self.signing = signatures
        """Policies' ``signatures`` blocks (:mod:`.signing`); None: not checked (reported as
        not checked, never as passed)."""

    # --- mutation ------------------------------------------------------------------------

    async def mutate(self, review: Review) -> Decision:
        skip = self._skip_reason(review)
        if skip is not None:
            return Decision(reason=skip)
        if self.settings.mode == "validate-only":
            return Decision(reason=Reason.VALIDATE_ONLY)
        findings = sites.find(review.obj, self.settings.sites)
        warnings = [_unresolvable_warning(u) for u in findings.unresolvable]
        if not findings.sites:
            return Decision(reason=Reason.NOTHING_TO_DO, warnings=tuple(warnings))

        if sites.is_template(review.obj, self.settings.sites):
            if self.settings.mode == "pods-only":
                return Decision(reason=Reason.PODS_ONLY, warnings=tuple(warnings))
            if sites.controller_owner(review.obj) is not None:
                return Decision(reason=Reason.OWNED, warnings=tuple(warnings))

        existing = pins.read(review.obj)
        old_values = self._old_values(review)
        values: dict[str, str] = {}
        records: dict[str, pins.Record] = {}
        to_resolve: list[Found] = []
        parsed: list[Found] = []
        for site in findings.sites:
            try:
                parsed.append(
                    Found(site=site, ref=refs.parse(site.reference_text, grammar=site.grammar))
                )
            except errors.ReferenceError:
                continue  # the validating webhook denies it with the full message

        # Policy, before anything is resolved: rules on the references as the user wrote them
        # (registry, repository, tag, requireDigest; an UPDATE of an object kitpin pinned is
        # judged by its pin records, as the validating webhook judges it) refuse here instead
        # of pinning. Warnings and the audit trail come from the validating webhook, which
        # sees the final object.
        if review.policies:
            verdict = policy.evaluate(
                review.policies,
                namespace=review.namespace,
                namespace_labels=review.namespace_labels,
                evidence=evidence.build(review.obj, parsed),
            )
            if verdict.denials:
                return Decision(
                    reason=verdict.reason,
                    denial=Denial(reason=verdict.reason, message=verdict.denial_message()),
                    warnings=tuple(warnings),
                    violations=verdict.violations,
                )

        for found in parsed:
            site, ref = found.site, found.ref
            if ref.digest is not None:
                record = existing.get(site.path)
                if record is not None and record.get("digest") == ref.digest:
                    records[site.path] = record
                continue
            kept = _kept_digest(site, ref, old_values.get(site.path))
            if kept is not None:
                values[site.path] = site.prefix + ref.pinned(kept)
                previous = pins.read(review.old or {}).get(site.path)
                records[site.path] = (
                    previous
                    if previous is not None and previous.get("digest") == kept
                    else pins.record(site.value, kept, None)
                )
                if self.tags is not None and not review.dry_run:
                    self.tags.observe_kept(
                        ref,
                        kept,
                        obj=review.obj,
                        namespace=review.namespace,
                        at=datetime.now(UTC),
                    )
                continue
            to_resolve.append(found)

        failures: list[tuple[Found, errors.RegistryError]] = []
        if to_resolve:
            deadline_at = self._deadline_at()
            creds = await self._credentials(
                review.namespace,
                to_resolve,
                _pod_spec(review.obj, self.settings.sites),
                deadline_at,
            )
            results = await self._resolve_all(to_resolve, creds, deadline_at)
            signed, refused = await self._pin_signatures(
                review,
                [
                    (f, r)
                    for f, r in zip(to_resolve, results, strict=True)
                    if isinstance(r, Resolution)
                ],
                creds,
                deadline_at,
                warnings,
            )
            if refused is not None:
                return refused
            immutable_rules = self._immutable_rules(review)
            for found, result in zip(to_resolve, results, strict=True):
                if isinstance(result, errors.RegistryError):
                    failures.append((found, result))
                    continue
                values[found.site.path] = found.site.prefix + found.ref.pinned(result.digest)
                records[found.site.path] = pins.record(
                    found.site.value,
                    result.digest,
                    result.resolved_at,
                    signed_by=signed.get(found.site.path),
                )
                self._observe(review, result, immutable_rules)
                if result.stale:
                    warnings.append(
                        f"{found.site.where}: the registry could not be reached "
                        f"({result.stale_reason}); pinned to the last verified digest "
                        f"{result.digest} from {types.rfc3339(result.resolved_at)}"
                    )

        annotations: dict[str, str | None] = {}
        if failures:
            # The reason (NotFound, Unauthorized, Unreachable, ...) goes into the text: the
            # apiserver shows users only the message of a denial.
            messages = [
                f"{f.site.where}: cannot pin '{f.site.value}': {e.reason}: {e}" for f, e in failures
            ]
            if self.settings.failure == "deny":
                return Decision(
                    reason=failures[0][1].reason,
                    denial=Denial(
                        reason=failures[0][1].reason,
                        message="kitpin could not pin every ModelKit reference, so nothing "
                        "was admitted: " + "; ".join(messages),
                    ),
                    warnings=tuple(warnings),
                )
            warnings.extend(f"{UNPINNED_WARNING}{m}" for m in messages)
            annotations[UNPINNED_ANNOTATION] = json.dumps(
                {f.site.path: {"from": f.site.value, "reason": e.reason} for f, e in failures},
                sort_keys=True,
                separators=(",", ":"),
            )
        elif pins.annotations_of(review.obj).get(UNPINNED_ANNOTATION) is not None:
            annotations[UNPINNED_ANNOTATION] = None

        pinned_text = (
            json.dumps(records, sort_keys=True, separators=(",", ":")) if records else None
        )
        if pins.annotations_of(review.obj).get(PINNED_ANNOTATION) != pinned_text:
            annotations[PINNED_ANNOTATION] = pinned_text
        values = {p: v for p, v in values.items() if sites.get(review.obj, p) != v}
        if len(failures) < len(to_resolve):
            reason = Reason.PINNED
        elif failures:
            reason = Reason.ADMITTED_UNPINNED
        else:
            reason = Reason.KEPT if values else Reason.NOTHING_TO_DO
        return Decision(
            reason=reason, values=values, annotations=annotations, warnings=tuple(warnings)
        )

    # --- validation ----------------------------------------------------------------------

    async def validate(self, review: Review) -> Decision:
        skip = self._skip_reason(review)
        if skip is not None:
            return Decision(reason=skip)
        findings = sites.find(review.obj, self.settings.sites)
        warnings = [_unresolvable_warning(u) for u in findings.unresolvable]
        problems: list[str] = []
        reasons: list[str] = []
        found: list[Found] = []
        for site in findings.sites:
            try:
                found.append(
                    Found(site=site, ref=refs.parse(site.reference_text, grammar=site.grammar))
                )
            except errors.ReferenceError as e:  # InvalidReference or LocalReference
                reasons.append(e.reason)
                problems.append(f"{site.where}: {e.reason}: {e}")
        if problems:
            return Decision(
                reason=reasons[0],
                denial=Denial(reason=reasons[0], message="; ".join(problems)),
                warnings=tuple(warnings),
            )
        if not found:
            return Decision(reason=Reason.NOTHING_TO_DO, warnings=tuple(warnings))

        applicable = policy.matching(
            review.policies, namespace=review.namespace, namespace_labels=review.namespace_labels
        )
        # ModelKit sites need the artifact checked; other sites only when a policy reads the
        # manifest. Owned templates and child Pods carry the owner's digests: cache hits.
        needs_manifest = policy.needs_resolution(applicable)
        # Image volumes too, for the KitOps-format warning (artifacts.image_volume_problem):
        # their failures and manifests count only where the reasons above need them.
        checked = [f for f in found if f.site.expects_modelkit or needs_manifest or _mounted(f)]
        deadline_at = self._deadline_at()
        creds = await self._credentials(
            review.namespace, checked, _pod_spec(review.obj, self.settings.sites), deadline_at
        )
        results = await self._resolve_all(checked, creds, deadline_at)
        resolved: dict[str, Resolution] = {}
        failures: list[tuple[str, str]] = []  # (reason, message) of each registry failure
        for f, result in zip(checked, results, strict=True):
            needed = f.site.expects_modelkit or needs_manifest
            if isinstance(result, errors.RegistryError):
                if needed:
                    failures.append(
                        (
                            result.reason,
                            f"{f.site.where}: cannot check '{f.site.value}': "
                            f"{result.reason}: {result}",
                        )
                    )
                continue
            if _mounted(f) and (mount := artifacts.image_volume_problem(result.manifest)):
                warnings.append(
                    f"{f.site.where}: '{f.site.value}' resolves to {result.digest}, {mount}"
                )
            if not needed:
                continue
            resolved[f.site.path] = result
            if f.ref.digest is None:  # not pinned by kitpin (validate-only, pods-only, ...)
                self._observe(review, result, applicable)
            problem = not_a_modelkit_message(f.site, result)
            if problem is not None:
                problems.append(f"{f.site.where}: {Reason.NOT_A_MODELKIT}: {problem}")
        if problems:
            return Decision(
                reason=Reason.NOT_A_MODELKIT,
                denial=Denial(reason=Reason.NOT_A_MODELKIT, message="; ".join(problems)),
                warnings=tuple(warnings),
            )

        violations: tuple[policy.Violation, ...] = ()
        reason = Reason.VERIFIED
        if applicable:
            configs: Mapping[str, Mapping[str, Any]] = {}
            verified: Mapping[str, Mapping[policy.PolicyRef, signatures.Outcome]] = {}
            if self.signing is None or not policy.signature_policies(applicable):
                configs = await self._configs(
                    found, resolved, applicable, creds, deadline_at, failures
                )
            else:  # both at once: a cold review waits for the slower, not the sum
                configs, verified = await asyncio.gather(
                    self._configs(found, resolved, applicable, creds, deadline_at, failures),
                    self._verify(found, resolved, applicable, creds, deadline_at),
                )
                failures.extend(_signature_failures(found, verified, applicable))
            verdict = policy.evaluate(
                applicable,
                namespace=review.namespace,
                namespace_labels=review.namespace_labels,
                evidence=evidence.build(
                    review.obj,
                    found,
                    resolutions=resolved,
                    configs=configs,
                    first_seen=(
                        self._first_seen
                        if self.tags is not None and policy.needs_first_seen(applicable)
                        else None
                    ),
                    verified=verified,
                ),
            )
            violations = verdict.violations
            reason = verdict.reason
            if verdict.denials:
                return Decision(
                    reason=verdict.reason,
                    denial=Denial(reason=verdict.reason, message=verdict.denial_message()),
                    warnings=tuple(warnings),
                    violations=violations,
                )
            warnings.extend(verdict.warning_messages())
            if not failures:  # with failures, the rules that could not run are said below
                warnings.extend(u.message for u in verdict.unchecked)

        if failures:
            messages = "; ".join(m for _, m in failures)
            if self.settings.failure == "deny":
                return Decision(
                    reason=failures[0][0],
                    denial=Denial(reason=failures[0][0], message=messages),
                    warnings=tuple(warnings),
                    violations=violations,
                )
            warnings.extend(f"{UNVERIFIED_WARNING}{m}" for _, m in failures)
            reason = Reason.ADMITTED_UNVERIFIED
        return Decision(reason=reason, warnings=tuple(warnings), violations=violations)

    async def _configs(
        self,
        found: Sequence[Found],
        resolved: Mapping[str, Resolution],
        applicable: Sequence[policy.Policy],
        creds: _Creds,
        deadline_at: float,
        failures: list[tuple[str, str]],
    ) -> dict[str, Mapping[str, Any]]:
        """The config blob (the Kitfile) of each resolved reference a rule needs it for
        (:func:`policy.needs_config`), by site; what cannot be read goes into ``failures``."""
        configs: dict[str, Mapping[str, Any]] = {}
        if self.configs is None:
            return configs
        for f in found:
            resolution = resolved.get(f.site.path)
            if resolution is None or not policy.needs_config(applicable, resolution.manifest):
                continue
            try:
                async with asyncio.timeout(_remaining(deadline_at)):
                    configs[f.site.path] = await self.configs.get_config(
                        f.ref, resolution.manifest, credential=_credential_for(creds, f.ref)
                    )
            except TimeoutError:
                timeout = errors.RegistryTimeoutError.reason
                failures.append(
                    (
                        timeout,
                        f"{f.site.where}: cannot read the Kitfile of '{f.site.value}': "
                        f"{timeout}: it took longer than the {self.settings.deadline:g}s "
                        "deadline",
                    )
                )
            except errors.RegistryError as e:
                failures.append(
                    (
                        e.reason,
                        f"{f.site.where}: cannot read the Kitfile of '{f.site.value}': "
                        f"{e.reason}: {e}",
                    )
                )
        return configs

    # --- signatures ----------------------------------------------------------------------

    async def _verify(
        self,
        found: Sequence[Found],
        resolved: Mapping[str, Resolution],
        applicable: Sequence[policy.Policy],
        creds: _Creds,
        deadline_at: float,
    ) -> dict[str, dict[policy.PolicyRef, signatures.Outcome]]:
        """The signature check of each resolved digest under every applicable ``signatures``
        block (:class:`.signing.Signing`), by site, concurrently within the review's
        deadline; empty without such a block (or without a verifier)."""
        checked = policy.signature_policies(applicable)
        todo = [f for f in found if f.site.path in resolved]
        if self.signing is None or not checked or not todo:
            return {}
        verifying = self.signing

        async def one(f: Found) -> dict[policy.PolicyRef, signatures.Outcome]:
            return await verifying.outcomes(
                checked,
                f.ref,
                resolved[f.site.path].digest,
                credential=_credential_for(creds, f.ref),
                timeout=_remaining(deadline_at),
            )

        if len(todo) == 1:  # the common case: no task
            return {todo[0].site.path: await one(todo[0])}
        results = await asyncio.gather(*(one(f) for f in todo))
        return {f.site.path: r for f, r in zip(todo, results, strict=True)}

    async def _pin_signatures(
        self,
        review: Review,
        pinned: Sequence[tuple[Found, Resolution]],
        creds: _Creds,
        deadline_at: float,
        warnings: Sequence[str],
    ) -> tuple[dict[str, str], Decision | None]:
        """Before pinning (rule 7): the ``signedBy`` of each site whose digest a policy's
        keys verified, or the denial when a signature is missing or invalid under an
        enforce rule (or cannot be checked, with ``failure: deny``). Warn and audit
        violations are left to the validating webhook, which sees the final object."""
        if self.signing is None or not review.policies or not pinned:
            return {}, None
        checked = policy.signature_policies(
            policy.matching(
                review.policies,
                namespace=review.namespace,
                namespace_labels=review.namespace_labels,
            )
        )
        if not checked:
            return {}, None
        found = [f for f, _ in pinned]
        resolved = {f.site.path: r for f, r in pinned}
        verified = await self._verify(found, resolved, checked, creds, deadline_at)
        if len(verified) == len(found) and all(
            len(per) == len(checked)
            and all(isinstance(o, signatures.Verified) for o in per.values())
            for per in verified.values()
        ):
            # Every digest verified under every block (the warm case): no signature rule can be
            # broken, so the evaluation below would find nothing; only the pin record's names.
            return {
                p: names for p, per in verified.items() if (names := signing.signed_by(per))
            }, None
        verdict = policy.evaluate(
            checked,
            namespace=review.namespace,
            namespace_labels=review.namespace_labels,
            evidence=evidence.build(review.obj, found, resolutions=resolved, verified=verified),
            blocks=("signatures",),
        )
        if verdict.denials:
            return {}, Decision(
                reason=verdict.reason,
                denial=Denial(reason=verdict.reason, message=verdict.denial_message()),
                warnings=tuple(warnings),
                violations=verdict.violations,
            )
        failures = _signature_failures(found, verified, checked)
        if failures and self.settings.failure == "deny":
            return {}, Decision(
                reason=Reason.SIGNATURE_UNAVAILABLE,
                denial=Denial(
                    reason=Reason.SIGNATURE_UNAVAILABLE,
                    message="kitpin could not verify the signature of every ModelKit, so "
                    "nothing was admitted: " + "; ".join(m for _, m in failures),
                ),
                warnings=tuple(warnings),
            )
        signed = {p: names for p, per in verified.items() if (names := signing.signed_by(per))}
        return signed, None

    # --- tag records ---------------------------------------------------------------------

    def _immutable_rules(self, review: Review) -> Sequence[policy.Policy]:
        """The policies in force for ``review`` that may hold a ``tags.immutable`` rule,
        looked up once per review and only when the records will be told (a review without
        policies, the benchmark's and most clusters' cached case, pays nothing)."""
        if self.tags is None or review.dry_run or not review.policies:
            return ()
        return policy.matching(
            review.policies, namespace=review.namespace, namespace_labels=review.namespace_labels
        )

    def _observe(
        self, review: Review, resolution: Resolution, applicable: Sequence[policy.Policy]
    ) -> None:
        """Tell the tag records what a review resolved (never for a dry run); ``applicable``:
        the policies in force (:meth:`_immutable_rules`), for ``tags.immutable``. Constant
        work: a cached review is answered by the recorder's memo."""
        if self.tags is None or review.dry_run:
            return
        immutable = bool(applicable) and policy.immutable_tag(applicable, resolution.reference)
        self.tags.observe_admission(
            resolution, obj=review.obj, namespace=review.namespace, immutable=immutable
        )

    def _first_seen(self, ref: refs.Reference) -> policy.FirstSeen | None:
        if self.tags is None:
            return None
        known = self.tags.first_seen(ref)
        return None if known is None else policy.FirstSeen(digest=known[0], at=known[1])

    # --- helpers -------------------------------------------------------------------------

    def _old_values(self, review: Review) -> dict[str, str]:
        """On UPDATE: the string at every site of the old object, by JSON pointer."""
        if review.operation != "UPDATE" or review.old is None:
            return {}
        return {s.path: s.value for s in sites.find(review.old, self.settings.sites).sites}

    def _skip_reason(self, review: Review) -> str | None:
        if review.namespace_ignored or review.namespace in self.settings.ignored_namespaces:
            return Reason.IGNORED_NAMESPACE
        return None

    def _deadline_at(self) -> float:
        """One absolute deadline per review, shared by every stage (pull secrets, manifests,
        Kitfiles), so the whole answer stays below the webhook's timeoutSeconds."""
        return asyncio.get_running_loop().time() + self.settings.deadline

    async def _credentials(
        self,
        namespace: str,
        found: Sequence[Found],
        pod_spec: Mapping[str, Any] | None,
        deadline_at: float | None = None,
    ) -> _Creds:
        """The credential for every distinct (registry, repository), from the object's own
        namespace (see :class:`Credentials`)."""
        if deadline_at is None:
            deadline_at = self._deadline_at()
        repositories = sorted({(f.ref.registry, f.ref.repository) for f in found})
        if not repositories:
            return {}
        known: dict[tuple[str, str], Credential | None] = {}
        # Synchronous when every read is cached: no task per lookup.
        for registry, repository in repositories:
            hit, credential = self.credentials.lookup_cached(
                namespace=namespace,
                registry=registry,
                repository=repository,
                pod_spec=pod_spec,
            )
            if hit:
                known[(registry, repository)] = credential
        repositories = [r for r in repositories if r not in known]
        if not repositories:
            return known
        try:
            async with asyncio.timeout(_remaining(deadline_at)):
                looked_up = await asyncio.gather(
                    *(
                        self.credentials.lookup(
                            namespace=namespace,
                            registry=registry,
                            repository=repository,
                            pod_spec=pod_spec,
                        )
                        for registry, repository in repositories
                    )
                )
        except TimeoutError:
            return errors.RegistryTimeoutError(
                f"looking up pull secrets in namespace {namespace!r} took longer than the "
                f"{self.settings.deadline:g}s deadline; check the apiserver's health"
            )
        return known | dict(zip(repositories, looked_up, strict=True))

    async def _resolve_all(
        self, found: Sequence[Found], creds: _Creds, deadline_at: float | None = None
    ) -> list[Resolution | errors.RegistryError]:
        """Resolve every reference concurrently (one request per distinct reference and
        credential; the resolver coalesces), all within the review's deadline."""
        if isinstance(creds, errors.RegistryError):
            return [creds for _ in found]
        if deadline_at is None:
            deadline_at = self._deadline_at()

        async def one(f: Found) -> Resolution | errors.RegistryError:
            try:
                return await self.resolver.resolve(
                    f.ref,
                    credential=_credential_for(creds, f.ref),
                    deadline=_remaining(deadline_at),
                )
            except errors.RegistryError as e:
                return e

        # Cache hits are answered synchronously (no task, no event-loop turn); only the
        # rest are resolved concurrently.
        results: list[Resolution | errors.RegistryError | None] = [None] * len(found)
        todo: list[int] = []
        for i, f in enumerate(found):
            hit = self.resolver.peek(f.ref, credential=_credential_for(creds, f.ref))
            if hit is not None:
                results[i] = hit
            else:
                todo.append(i)
        if todo:
            fetched = await asyncio.gather(*(one(found[i]) for i in todo))
            for i, result in zip(todo, fetched, strict=True):
                results[i] = result
        return [r for r in results if r is not None]


_Creds = Mapping[tuple[str, str], Credential | None] | errors.RegistryTimeoutError
"""Credentials by (registry, repository), or the error that stopped the lookup."""


def _signature_failures(
    found: Sequence[Found],
    verified: Mapping[str, Mapping[policy.PolicyRef, signatures.Outcome]],
    applicable: Sequence[policy.Policy],
) -> list[tuple[str, str]]:
    """``(reason, message)`` of each signature check that could not be made under a rule in
    mode enforce (:func:`policy.signature_failures`): they follow ``failure``."""
    failures: list[tuple[str, str]] = []
    for f in found:
        outcomes = verified.get(f.site.path)
        if not outcomes:
            continue
        for p, outcome in policy.signature_failures(applicable, outcomes):
            failures.append(
                (
                    Reason.SIGNATURE_UNAVAILABLE,
                    f"{f.site.where}: cannot verify the signature of '{f.site.value}' for "
                    f"{p.display} rule {policy.Rule.SIGNATURES_KEYS}: {outcome.reason} "
                    f"({outcome.error_reason}): {outcome.message}",
                )
            )
    return failures


def _credential_for(creds: _Creds, ref: refs.Reference) -> Credential | None:
    if isinstance(creds, errors.RegistryError):
        return None
    return creds.get((ref.registry, ref.repository))


def _remaining(deadline_at: float) -> float:
    """Seconds left until ``deadline_at`` (a tiny positive floor: asyncio.timeout(0) is fine,
    but the resolver wants a positive deadline)."""
    return max(deadline_at - asyncio.get_running_loop().time(), 0.001)


def _mounted(f: Found) -> bool:
    """An image volume: the kubelet mounts what it names (see the image-volume warning)."""
    return f.site.kind == "image-volume"


def _unresolvable_warning(u: sites.Unresolvable) -> str:
    return f"{u.where}: {u.why}; kitpin cannot pin a value it cannot see"


def _kept_digest(site: sites.Site, ref: refs.Reference, old_value: str | None) -> str | None:
    """The old object's digest for this site, if the reference itself did not change."""
    if old_value is None or not old_value.startswith(site.prefix):
        return None
    try:
        old = refs.parse(old_value[len(site.prefix) :], grammar=site.grammar)
    except errors.ReferenceError:
        return None
    if old.digest is None:
        return None
    if old.canonical_name == ref.canonical_name and old.tag == ref.tag:
        return old.digest
    return None


def _pod_spec(obj: Mapping[str, Any], settings: sites.SitesSettings) -> Mapping[str, Any] | None:
    """What the object's own credentials are read from (:class:`Credentials`): its pod spec
    (a workload's template, a Pod), else the pod specs of a custom resource or an
    InferenceService's components (:func:`sites.pod_specs`) folded into one: the pull secrets
    of all of them in document order, and the first service account named. All in the
    object's own namespace; None when it has no pod spec (central credentials only)."""
    pointer = sites.pod_template_path(obj, settings)
    if pointer is not None:
        spec = sites.get(obj, pointer)
        return spec if isinstance(spec, Mapping) else None
    specs = [spec for _, spec in sites.pod_specs(obj, settings)]
    if not specs:
        return None
    if len(specs) == 1:
        return specs[0]
    secrets: dict[str, Mapping[str, Any]] = {}  # by name: linear in what the object lists
    account: Any = None
    for spec in specs:
        entries = spec.get("imagePullSecrets")
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
                secrets.setdefault(entry["name"], entry)
        if account is None and spec.get("serviceAccountName"):
            account = spec.get("serviceAccountName")
    folded: dict[str, Any] = {"imagePullSecrets": list(secrets.values())}
    if account is not None:
        folded["serviceAccountName"] = account
    return folded


def not_a_modelkit_message(site: sites.Site, resolution: Resolution) -> str | None:
    """Why ``resolution`` cannot be where ``site`` is, or None: a site that expects a ModelKit
    (:attr:`sites.Site.expects_modelkit`) must hold a KitOps ModelKit or a CNCF ModelPack
    (:func:`artifacts.model_format`). The webhook denies such an object; ``kitpin pin`` and
    ``kitpin check`` fail with the same words."""
    if not site.expects_modelkit:
        return None
    what = artifacts.not_a_modelkit(resolution.manifest)
    if what is None:
        return None
    return (
        f"'{site.value}' resolves to {resolution.digest}, which is {what}; "
        "this field expects a KitOps ModelKit or a CNCF ModelPack (made with `kit pack`, "
        "optionally `--use-model-pack`): point it at the ModelKit's repository and tag"
    )
