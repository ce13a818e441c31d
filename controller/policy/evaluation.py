"""Evaluating policies: which apply in a namespace (:func:`matching`), what data their rules
need (:func:`needs_resolution`, :func:`needs_kitfile`, :func:`needs_config`), and
:func:`evaluate`, which checks every applicable policy against every reference (one
:class:`_Check` per policy and reference) and returns a :class:`~controller.policy.model.Verdict`.
Pure and total.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from controller import artifacts, refs, signatures, types
from controller.policy.kitfile import (
    ParentReference,
    declared_licenses,
    kitfile_of,
    license_approved,
    modelpack_licenses,
    parent_references,
)
from controller.policy.model import (
    Evidence,
    FirstSeen,
    Glob,
    LicenseRules,
    Policy,
    PolicyRef,
    Reason,
    RepositoryRules,
    Rule,
    SignatureRules,
    TagRules,
    Unchecked,
    Verdict,
    Violation,
    policy_order,
)
from controller.types import Manifest


def matching(
    policies: Iterable[Policy], *, namespace: str, namespace_labels: Mapping[str, str]
) -> tuple[Policy, ...]:
    """The policies that apply in ``namespace``: cluster policies whose selector matches its
    labels, and the namespace's own policies; cluster policies first, then by name."""
    return tuple(
        sorted(
            (p for p in policies if p.applies_to(namespace, namespace_labels)),
            key=policy_order,
        )
    )


def needs_resolution(policies: Iterable[Policy]) -> bool:
    """Whether any rule reads the manifest or the digest a tag resolves to (artifact, parent,
    ``tags.immutable`` and signature rules). Without one, the reference itself (repository,
    tag, digest) is all the policies look at."""
    return any(
        p.artifacts is not None
        or p.parents is not None
        or p.signatures is not None
        or (p.tags is not None and bool(p.tags.immutable))
        for p in policies
    )


def signature_policies(policies: Iterable[Policy]) -> tuple[Policy, ...]:
    """The policies among ``policies`` with a ``signatures`` block: the digest of every
    reference they apply to is verified (:mod:`controller.admission.signing`) for each."""
    return tuple(p for p in policies if p.signatures is not None)


def signature_failures(
    policies: Iterable[Policy], outcomes: Mapping[PolicyRef, signatures.Outcome]
) -> tuple[tuple[Policy, signatures.SignatureUnavailable], ...]:
    """The signature checks that could not be made (``SignatureUnavailable``: a registry
    error, a key Secret that cannot be read) for a rule in mode ``enforce``: they follow the
    ``failure`` setting (deny by default), as a registry failure while resolving does. In
    mode ``warn`` or ``audit`` the rule is reported as not checked (:func:`evaluate`)."""
    return tuple(
        (p, outcome)
        for p in policies
        if p.signatures is not None
        and isinstance(outcome := outcomes.get(p.ref), signatures.SignatureUnavailable)
        and p.mode_of(Rule.SIGNATURES_KEYS) == "enforce"
    )


def needs_first_seen(policies: Iterable[Policy]) -> bool:
    """Whether any rule compares a resolution with the tag's first-seen digest
    (``tags.immutable``): only then does the engine look the records up."""
    return any(p.tags is not None and bool(p.tags.immutable) for p in policies)


def immutable_tag(policies: Iterable[Policy], ref: refs.Reference) -> bool:
    """Whether ``ref``'s tag matches a ``tags.immutable`` pattern of any of ``policies``
    (for the ``ImmutableTagMoved`` condition of its record and the drift watch's Event)."""
    return any(p.tags is not None and p.tags.is_immutable(ref.tag) is not None for p in policies)


def needs_kitfile(policies: Iterable[Policy]) -> bool:
    """Whether any rule reads the Kitfile (licenses or parents)."""
    return any(
        p.parents is not None or (p.artifacts is not None and p.artifacts.licenses is not None)
        for p in policies
    )


def needs_config(policies: Iterable[Policy], manifest: Manifest) -> bool:
    """Whether the engine must fetch ``manifest``'s config blob (``get_config``) for the
    rules of ``policies``: a KitOps ModelKit keeps its Kitfile there (licenses, parents,
    and a missing model layer that a parent may supply); a ModelPack keeps its licenses
    there unless kit packed it (then the Kitfile is in an annotation). Never for an index or
    an artifact that is not a model."""
    policies = tuple(policies)
    model_format = artifacts.model_format(manifest)
    if model_format is None or manifest.format == "oci-index":
        return False
    licenses = any(p.artifacts is not None and p.artifacts.licenses for p in policies)
    if model_format == "modelpack":
        return licenses and artifacts.kitfile_json(manifest) is None
    if needs_kitfile(policies):
        return True
    kinds = artifacts.layer_kinds(manifest)
    return artifacts.KIND_MODEL not in kinds and any(
        p.artifacts is not None and artifacts.KIND_MODEL in p.artifacts.required_layers
        for p in policies
    )


def evaluate(
    policies: Sequence[Policy],
    *,
    namespace: str,
    namespace_labels: Mapping[str, str],
    evidence: Sequence[Evidence],
    blocks: Collection[str] | None = None,
) -> Verdict:
    """Evaluate every policy that applies in ``namespace`` against every reference.

    Pure and total: never raises for any evidence. Violations come in evidence (document)
    order, then policy order (cluster policies by name, then the namespace's by name); a
    rule breaks at most once per reference (one violation per ModelKit and rule, naming
    every place of the Kitfile it found the problem in).
    Rules whose data is absent are returned as :class:`Unchecked`; rules that do not apply
    to a reference (artifact rules for an artifact that is not a model, e.g. a container
    image in an image volume) are skipped. See :class:`Verdict` for the outcome.
    ``blocks``: evaluate only the rules of these blocks (``{"signatures"}``: what the
    mutating webhook decides after resolving, before it pins); None: every rule.
    """
    applicable = matching(policies, namespace=namespace, namespace_labels=namespace_labels)
    violations: list[Violation] = []
    unchecked: list[Unchecked] = []
    for ev in evidence:
        for policy in applicable:
            _Check(policy, ev, namespace, violations, unchecked).run(blocks)
    return Verdict(
        violations=tuple(violations),
        unchecked=tuple(unchecked),
        policies=tuple(p.ref for p in applicable),
    )


class _Check:
    """One policy against one reference."""

    def __init__(
        self,
        policy: Policy,
        evidence: Evidence,
        namespace: str,
        violations: list[Violation],
        unchecked: list[Unchecked],
    ) -> None:
        self.policy = policy
        self.ev = evidence
        self.ref = evidence.reference
        self.namespace = namespace
        self.violations = violations
        self.unchecked = unchecked
        self.subject = f"{evidence.site.where} '{evidence.written or evidence.site.value}'"

    def violation(self, rule: str, reason: str, problem: str, advice: str) -> None:
        self.violations.append(
            Violation(
                policy=self.policy.ref,
                rule=rule,
                reason=reason,
                mode=self.policy.mode_of(rule),
                path=self.ev.site.path,
                where=self.ev.site.where,
                reference=self.ev.site.value,
                message=f"{self.policy.display} rule {rule}: {self.subject} {problem}; {advice}",
            )
        )

    def skip(self, rule: str, why: str) -> None:
        self.unchecked.append(
            Unchecked(
                policy=self.policy.ref,
                rule=rule,
                mode=self.policy.mode_of(rule),
                path=self.ev.site.path,
                where=self.ev.site.where,
                reference=self.ev.site.value,
                why=why,
            )
        )

    def run(self, blocks: Collection[str] | None = None) -> None:
        def wanted(block: str) -> bool:
            return blocks is None or block in blocks

        if self.policy.repositories is not None and wanted("repositories"):
            self.repositories(self.policy.repositories)
        if self.policy.tags is not None and wanted("tags"):
            self.tags(self.policy.tags)
        if (self.policy.artifacts is not None and wanted("artifacts")) or (
            self.policy.parents is not None and wanted("parents")
        ):
            self.artifact_rules()
        if self.policy.signatures is not None and wanted("signatures"):
            self.signatures(self.policy.signatures)

    # -- the signature -------------------------------------------------------------------

    def signatures(self, rules: SignatureRules) -> None:
        """The verifier's outcome for this policy's keys (the engine verified the resolved
        digest): missing or invalid signatures violate the rule; a check that could not be
        made is reported as not checked (in mode enforce the engine also treats it as a
        failure, :func:`signature_failures`)."""
        rule = Rule.SIGNATURES_KEYS
        resolution = self.ev.resolution
        outcome = (self.ev.signatures or {}).get(self.policy.ref)
        if resolution is None:
            self.skip(rule, "the reference was not resolved, so the digest to verify is unknown")
            return
        if outcome is None:
            self.skip(rule, f"the signature of {resolution.digest} was not verified")
            return
        if isinstance(outcome, signatures.Verified):
            return
        if isinstance(outcome, signatures.SignatureUnavailable):
            self.skip(rule, f"{outcome.reason}: {outcome.message}")
            return
        requirement = "every one" if rules.require == "all" else "one"
        self.violation(
            rule,
            Reason.SIGNATURE_MISSING
            if isinstance(outcome, signatures.SignatureMissing)
            else Reason.SIGNATURE_INVALID,
            f"resolves to {resolution.digest}, which has no valid signature "
            f"({outcome.reason}): {outcome.message}",
            f"namespace {self.namespace} accepts only ModelKits signed with {requirement} of "
            f"the keys of {self.policy.display} ({rules.names})",
        )

    # -- the reference -------------------------------------------------------------------

    def repositories(self, rules: RepositoryRules) -> None:
        name = self.ref.canonical_name
        for glob in rules.denied:
            if glob.matches(name):
                approved = (
                    f"use a ModelKit from an approved repository ({_quote_all(rules.allowed)})"
                    if rules.allowed
                    else "use a ModelKit from another repository"
                )
                self.violation(
                    Rule.REPOSITORIES_DENIED,
                    Reason.REPOSITORY_DENIED,
                    f"comes from {name}, which matches the denied pattern {glob.pattern!r} "
                    f"in namespace {self.namespace}",
                    approved,
                )
                return
        if rules.allowed and not any(g.matches(name) for g in rules.allowed):
            self.violation(
                Rule.REPOSITORIES_ALLOWED,
                Reason.REPOSITORY_NOT_ALLOWED,
                f"comes from {name}, which matches none of the repositories allowed in "
                f"namespace {self.namespace} ({_quote_all(rules.allowed)})",
                "use a ModelKit from an allowed repository, or ask the platform team to "
                f"allow this one in {self.policy.display}",
            )

    def tags(self, rules: TagRules) -> None:
        ref = self.ref
        if ref.tag_explicit or ref.digest is None:
            implied = "" if ref.tag_explicit else " (no tag means 'latest')"
            denied = next((g for g in rules.denied if g.matches(ref.tag)), None)
            if denied is not None:
                self.violation(
                    Rule.TAGS_DENIED,
                    Reason.TAG_DENIED,
                    f"uses the tag {ref.tag!r}{implied}, which is not allowed in namespace "
                    f"{self.namespace} (denied pattern {denied.pattern!r})",
                    f"pin a release tag or a digest ('{self.ev.site.prefix}{ref.name}"
                    "@sha256:<digest>')",
                )
            elif rules.allowed and not any(g.matches(ref.tag) for g in rules.allowed):
                self.violation(
                    Rule.TAGS_ALLOWED,
                    Reason.TAG_NOT_ALLOWED,
                    f"uses the tag {ref.tag!r}{implied}, which matches none of the tags "
                    f"allowed in namespace {self.namespace} ({_quote_all(rules.allowed)})",
                    "use an allowed tag, or reference the ModelKit by digest only "
                    f"('{self.ev.site.prefix}{ref.name}@sha256:<digest>')",
                )
        if rules.immutable and ref.digest is None:
            glob = rules.is_immutable(ref.tag)
            if glob is not None:
                self.immutable(glob)
        if rules.require_digest and ref.digest is None:
            self.violation(
                Rule.TAGS_REQUIRE_DIGEST,
                Reason.DIGEST_REQUIRED,
                f"has no digest, and namespace {self.namespace} accepts only references "
                "written with a digest",
                f"write '{self.ev.site.prefix}{ref.name}:{ref.tag}@sha256:<digest>' in the "
                f"manifest (`kitpin resolve '{ref}'` prints the digest)",
            )

    def immutable(self, glob: Glob) -> None:
        """Trust on first use: the tag's first recorded digest is the truth."""
        ref, resolution, first = self.ref, self.ev.resolution, self.ev.first_seen
        if resolution is None:
            self.skip(
                Rule.TAGS_IMMUTABLE, "the reference was not resolved, so its digest is unknown"
            )
            return
        if first is None or first.digest == resolution.digest:
            return  # first use (no record yet), or the digest it always had
        self.violation(
            Rule.TAGS_IMMUTABLE,
            Reason.IMMUTABLE_TAG_MOVED,
            _immutable_problem(ref, glob, first, resolution.digest, self.namespace),
            "the content behind an immutable tag must not change: push the new content "
            "under a new tag, or pin the digest you mean "
            f"('{self.ev.site.prefix}{ref.name}:{ref.tag}@{first.digest}'); if the new "
            "digest is the right one, delete the tag's ModelKitTag record (`kubectl get mkt`) "
            "so the next admission trusts it",
        )

    # -- the artifact --------------------------------------------------------------------

    def artifact_rules(self) -> None:
        rules = self.policy.artifacts
        names = [r for r in self.policy.rules if r.startswith(("artifacts.", "parents."))]
        resolution = self.ev.resolution
        if resolution is None:
            for rule in names:
                self.skip(rule, "the reference was not resolved, so the artifact is unknown")
            return
        manifest = resolution.manifest
        model_format = artifacts.model_format(manifest)
        if model_format is None:
            return  # not a model: the engine's own check (NotAModelKit) covers it
        if rules is not None and rules.formats and model_format not in rules.formats:
            self.formats(model_format, rules.formats)
        if (
            rules is not None
            and rules.mountable_image_volumes
            and self.ev.site.kind == "image-volume"
        ):
            unmountable = artifacts.image_volume_unmountable(manifest)
            if unmountable is not None:
                self.violation(
                    Rule.ARTIFACTS_MOUNTABLE_IMAGE_VOLUMES,
                    Reason.IMAGE_VOLUME_NOT_MOUNTABLE,
                    f"is {unmountable}",
                    artifacts.IMAGE_VOLUME_ADVICE,
                )
        if manifest.format == "oci-index":
            for rule in names:
                if rule not in (Rule.ARTIFACTS_FORMATS, Rule.ARTIFACTS_MOUNTABLE_IMAGE_VOLUMES):
                    self.violation(
                        rule,
                        Reason.UNCHECKABLE,
                        f"is an OCI image index ({resolution.digest}); kitpin cannot see the "
                        "layers and Kitfile behind an index, so this rule cannot be checked",
                        "reference the ModelKit's own manifest (its digest inside the index)",
                    )
            return
        kitfile = kitfile_of(self.ev)
        kitfile_known = kitfile is not None or model_format == "modelpack"
        parents = parent_references(kitfile) if kitfile is not None else ()
        if rules is not None and rules.required_layers:
            self.layers(manifest, rules.required_layers, parents, kitfile_known)
        if rules is not None and rules.licenses is not None:
            self.licenses(rules.licenses, kitfile, model_format)
        if self.policy.parents is not None:
            if not kitfile_known:
                self.skip(
                    Rule.PARENTS_REQUIRE_DIGEST,
                    "the Kitfile (config blob) was not fetched, so parent ModelKits are unknown",
                )
            else:
                self.parents(parents)

    def formats(
        self, model_format: types.ModelFormat, allowed: frozenset[types.ModelFormat]
    ) -> None:
        if "kitops-modelkit" in allowed:
            advice = "pack it with `kit pack` (without --use-model-pack)"
        else:
            advice = "pack it with `kit pack --use-model-pack`"
        names = artifacts.FORMAT_NAMES
        self.violation(
            Rule.ARTIFACTS_FORMATS,
            Reason.FORMAT_NOT_ALLOWED,
            f"is {names[model_format]}, but namespace {self.namespace} accepts only "
            + " or ".join(names[f] for f in artifacts.MODEL_FORMATS if f in allowed),
            advice,
        )

    def layers(
        self,
        manifest: Manifest,
        required: Sequence[str],
        parents: Sequence[ParentReference],
        kitfile_known: bool,
    ) -> None:
        kinds = artifacts.layer_kinds(manifest)
        missing = [k for k in required if k not in kinds]
        if artifacts.KIND_MODEL in missing:
            if any(p.field == "model.path" for p in parents):
                missing.remove(artifacts.KIND_MODEL)  # the parent ModelKit supplies it
            elif not kitfile_known:
                self.skip(
                    Rule.ARTIFACTS_REQUIRED_LAYERS,
                    "the ModelKit has no model layer of its own and its Kitfile was not "
                    "fetched, so kitpin cannot tell whether a parent ModelKit supplies it",
                )
                missing.remove(artifacts.KIND_MODEL)
        if not missing:
            return
        present = ", ".join(sorted(kinds)) or "none kitpin recognises"
        self.violation(
            Rule.ARTIFACTS_REQUIRED_LAYERS,
            Reason.LAYERS_MISSING,
            f"has no {' and no '.join(missing)} layer (its layers: {present}), but namespace "
            f"{self.namespace} requires {', '.join(required)}",
            "use a ModelKit that contains them (a Kitfile model section packs a model layer)",
        )

    def licenses(
        self,
        rules: LicenseRules,
        kitfile: Mapping[str, Any] | None,
        model_format: types.ModelFormat,
    ) -> None:
        if kitfile is not None:
            declared = declared_licenses(kitfile)
            source = "Kitfile"
        elif model_format == "modelpack" and isinstance(self.ev.config, Mapping):
            declared = modelpack_licenses(self.ev.config)
            source = "ModelPack config"
        else:
            what = "Kitfile" if model_format == "kitops-modelkit" else "ModelPack config"
            self.skip(
                Rule.ARTIFACTS_LICENSES,
                f"the {what} (config blob) was not fetched, so the licenses are unknown",
            )
            return
        approved_list = ", ".join(rules.allowed)
        if not declared:
            if not rules.allow_undeclared:
                self.violation(
                    Rule.ARTIFACTS_LICENSES,
                    Reason.LICENSE_UNDECLARED,
                    f"declares no license in its {source}, and namespace {self.namespace} "
                    f"accepts only approved licenses ({approved_list})",
                    "use a ModelKit whose Kitfile declares an approved license "
                    "(package.license or model.license)",
                )
            return
        approved = frozenset(a.casefold() for a in rules.allowed)
        # One violation per ModelKit: a license declared in several places (package.license
        # and model.license, say) is one problem, named with every place it was found.
        refused: dict[str, tuple[str, list[str]]] = {}
        for name, text in declared:
            if not license_approved(text, approved):
                key = text.strip().casefold()
                refused.setdefault(key, (text.strip(), []))[1].append(name)
        if not refused:
            return
        found = [f"{text!r} ({source} {_and(names)})" for text, names in refused.values()]
        if len(found) == 1:
            what = f"the license {found[0]}, which is"
        else:
            what = f"the licenses {_and(found)}, which are"
        self.violation(
            Rule.ARTIFACTS_LICENSES,
            Reason.LICENSE_NOT_ALLOWED,
            f"declares {what} not approved in namespace {self.namespace} "
            f"(approved: {approved_list})",
            "use a ModelKit under an approved license, or ask the platform team to "
            f"approve it in {self.policy.display}",
        )

    def parents(self, parents: Sequence[ParentReference]) -> None:
        """One violation per ModelKit, naming every parent that is not pinned by digest."""
        unpinned = [p for p in parents if p.reference is None or p.reference.digest is None]
        if not unpinned:
            return
        if len(unpinned) == 1:
            self.parent(unpinned[0])
            return
        local = any(p.reference is None for p in unpinned)
        named = [
            f"{p.text!r} (Kitfile {p.field}) "
            + (
                "without a registry host (kit's local storage, which a Pod does not have)"
                if p.reference is None
                else "by tag"
            )
            for p in unpinned
        ]
        fixes = [
            f"{p.field}: "
            + (
                "'registry/repository:tag@sha256:...'"
                if p.reference is None
                else f"'{p.reference.name}:{p.reference.tag}@sha256:<digest>'"
            )
            for p in unpinned
        ]
        self.violation(
            Rule.PARENTS_REQUIRE_DIGEST,
            Reason.PARENT_LOCAL if local else Reason.PARENT_NOT_PINNED,
            f"takes content from {len(unpinned)} parent ModelKits that are not pinned by "
            f"digest: {_and(named)}; `kit unpack` pulls them even though this ModelKit is "
            "pinned, so their content can change underneath (KitOps #899)",
            f"repack the ModelKit with {_and(fixes)} (`kitpin resolve REF` prints a tag's digest)",
        )

    def parent(self, parent: ParentReference) -> None:
        if parent.reference is None:
            self.violation(
                Rule.PARENTS_REQUIRE_DIGEST,
                Reason.PARENT_LOCAL,
                f"names the parent ModelKit {parent.text!r} (Kitfile {parent.field}) "
                "without a registry host, so kit would read it from its local storage, "
                "which a Pod does not have",
                f"repack the ModelKit with {parent.field} naming the registry and a "
                "digest ('registry/repository:tag@sha256:...')",
            )
            return
        ref = parent.reference
        self.violation(
            Rule.PARENTS_REQUIRE_DIGEST,
            Reason.PARENT_NOT_PINNED,
            f"takes content from the parent ModelKit {parent.text!r} (Kitfile "
            f"{parent.field}) by tag: `kit unpack` pulls that tag even though this "
            "ModelKit is pinned, so its content can change underneath (KitOps #899)",
            f"repack the ModelKit with {parent.field}: "
            f"'{ref.name}:{ref.tag}@sha256:<digest>' (`kitpin resolve "
            f"'{parent.text}'` prints the digest)",
        )


def _and(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _immutable_problem(
    ref: refs.Reference, glob: Glob, first: FirstSeen, digest: str, namespace: str
) -> str:
    return (
        f"uses the tag {ref.tag!r}, which is immutable in namespace {namespace} (pattern "
        f"{glob.pattern!r}), but it now resolves to {digest}; its first recorded digest was "
        f"{first.digest}, seen {types.rfc3339(first.at)}"
    )


def _quote_all(globs: Sequence[Glob]) -> str:
    return ", ".join(repr(g.pattern) for g in globs)
