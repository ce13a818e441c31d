"""The policy model: what a parsed ``ClusterModelKitPolicy`` / ``ModelKitPolicy`` is, what
:func:`~controller.policy.evaluation.evaluate` is given (:class:`Evidence`) and what it returns
(:class:`Violation`, :class:`Unchecked`, :class:`Verdict`), the CRD's names and limits, and the
constant rule names and reasons. Values only: the bottom module of the package.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

from controller import artifacts, refs, sites, types
from controller.signatures import REASON_INVALID, REASON_MISSING, PublicKey
from controller.signatures import Outcome as SignatureOutcome
from controller.signatures.keys import MAX_KEYS
from controller.types import Resolution

GROUP: Final = "kitpin.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

PolicyKind = Literal["ClusterModelKitPolicy", "ModelKitPolicy"]
CLUSTER_KIND: Final = "ClusterModelKitPolicy"
NAMESPACED_KIND: Final = "ModelKitPolicy"
KINDS: Final[tuple[PolicyKind, ...]] = get_args(PolicyKind)

Mode = Literal["enforce", "warn", "audit"]
MODES: Final[tuple[Mode, ...]] = get_args(Mode)
DEFAULT_MODE: Final[Mode] = "enforce"

_RANK: Final[Mapping[str, int]] = MappingProxyType({"audit": 1, "warn": 2, "enforce": 3})

Outcome = Literal["allow", "audit", "warn", "deny"]
_OUTCOME_OF_MODE: Final[Mapping[Mode, Outcome]] = MappingProxyType(
    {"enforce": "deny", "warn": "warn", "audit": "audit"}
)

LAYER_KINDS: Final[tuple[str, ...]] = (
    artifacts.KIND_MODEL,
    artifacts.KIND_MODELPART,
    artifacts.KIND_DATASET,
    artifacts.KIND_CODE,
    artifacts.KIND_DOCS,
    artifacts.KIND_MCPB,
    artifacts.KIND_WEIGHT,
    artifacts.KIND_WEIGHT_CONFIG,
)
"""The layer kinds ``artifacts.requiredLayers`` may name (see :func:`artifacts.layer_kind`)."""


RECENT_VIOLATIONS_KEPT: Final = 10
"""How many entries ``status.recentViolations`` keeps (newest first)."""

SUMMARY_LENGTH: Final = 250
"""Longest ``status.summary`` (the CRD allows 256)."""

READY: Final = "Ready"
"""The condition type in ``status.conditions``: the policy was parsed and is in force."""

# The CRD's limits (``maxItems``/``maxLength`` in ``deploy/crds/``), checked by the parser.
MAX_PATTERNS: Final = 64
MAX_REPOSITORY_PATTERN_LENGTH: Final = 255
MAX_TAG_PATTERN_LENGTH: Final = 128
MAX_LICENSES: Final = 64
MAX_LICENSE_LENGTH: Final = 128
MAX_SELECTOR_TERMS: Final = 32
MAX_SELECTOR_VALUES: Final = 64
MAX_SIGNATURE_KEYS: Final = MAX_KEYS
MAX_SECRET_NAME_LENGTH: Final = 253
MAX_SECRET_KEY_LENGTH: Final = 253
DEFAULT_SECRET_KEY: Final = "cosign.pub"
"""The Secret data key a ``secretRef`` reads when it names none: where ``cosign
generate-key-pair k8s://<namespace>/<name>`` puts the public key."""

SignatureRequirement = Literal["any", "all"]
SIGNATURE_REQUIREMENTS: Final[tuple[SignatureRequirement, ...]] = get_args(SignatureRequirement)
DEFAULT_SIGNATURE_REQUIREMENT: Final[SignatureRequirement] = "any"


class Rule:
    """The rule names a violation reports: the field under ``spec`` that states the rule."""

    REPOSITORIES_DENIED: Final = "repositories.denied"
    REPOSITORIES_ALLOWED: Final = "repositories.allowed"
    TAGS_DENIED: Final = "tags.denied"
    TAGS_ALLOWED: Final = "tags.allowed"
    TAGS_REQUIRE_DIGEST: Final = "tags.requireDigest"
    TAGS_IMMUTABLE: Final = "tags.immutable"
    ARTIFACTS_FORMATS: Final = "artifacts.formats"
    ARTIFACTS_REQUIRED_LAYERS: Final = "artifacts.requiredLayers"
    ARTIFACTS_LICENSES: Final = "artifacts.licenses"
    ARTIFACTS_MOUNTABLE_IMAGE_VOLUMES: Final = "artifacts.mountableImageVolumes"
    PARENTS_REQUIRE_DIGEST: Final = "parents.requireDigest"
    SIGNATURES_KEYS: Final = "signatures.keys"


class Reason:
    """Named outcomes (constant, for Events, metrics and logs)."""

    # one per violation
    REPOSITORY_DENIED: Final = "RepositoryDenied"
    REPOSITORY_NOT_ALLOWED: Final = "RepositoryNotAllowed"
    TAG_DENIED: Final = "TagDenied"
    TAG_NOT_ALLOWED: Final = "TagNotAllowed"
    DIGEST_REQUIRED: Final = "DigestRequired"
    IMMUTABLE_TAG_MOVED: Final = "ImmutableTagMoved"
    FORMAT_NOT_ALLOWED: Final = "FormatNotAllowed"
    LAYERS_MISSING: Final = "RequiredLayersMissing"
    LICENSE_NOT_ALLOWED: Final = "LicenseNotAllowed"
    LICENSE_UNDECLARED: Final = "LicenseUndeclared"
    IMAGE_VOLUME_NOT_MOUNTABLE: Final = "ImageVolumeNotMountable"
    """``artifacts.mountableImageVolumes``: an image volume names what the kubelet cannot
    mount (a KitOps-format ModelKit, kitops #784)."""
    PARENT_NOT_PINNED: Final = "ParentNotPinned"
    PARENT_LOCAL: Final = "ParentInLocalStorage"
    SIGNATURE_MISSING: Final = REASON_MISSING
    """``signatures.keys``: no signature of the digest was found."""
    SIGNATURE_INVALID: Final = REASON_INVALID
    """``signatures.keys``: signatures were found, none by a listed key over this digest."""
    UNCHECKABLE: Final = "Uncheckable"
    # one per verdict
    DENIED: Final = "PolicyDenied"
    WARNED: Final = "PolicyWarned"
    AUDITED: Final = "PolicyAudited"
    ALLOWED: Final = "PolicyAllowed"
    # status.conditions[type=Ready].reason
    ACCEPTED: Final = "Accepted"
    INVALID: Final = "Invalid"


# ---------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, kw_only=True)
class Glob:
    """One validated glob pattern; build it with :func:`parse_policy`."""

    pattern: str
    regex: re.Pattern[str] = field(repr=False, compare=False)

    @property
    def literal(self) -> bool:
        """Whether the pattern has no wildcard (matches exactly one text)."""
        return not any(c in self.pattern for c in "*?")

    def matches(self, text: str) -> bool:
        return self.regex.fullmatch(text) is not None


SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
SELECTOR_OPERATORS: Final[tuple[SelectorOperator, ...]] = get_args(SelectorOperator)


@dataclass(frozen=True, kw_only=True)
class Requirement:
    """One ``matchExpressions`` term, with Kubernetes label-selector semantics."""

    key: str
    operator: SelectorOperator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values  # NotIn

    def __str__(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        op = "in" if self.operator == "In" else "notin"
        return f"{self.key} {op} ({','.join(sorted(self.values))})"


@dataclass(frozen=True, kw_only=True)
class LabelSelector:
    """``matchLabels`` and ``matchExpressions``, ANDed; an empty selector matches all."""

    match_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.match_expressions
        )

    def __str__(self) -> str:
        terms = [f"{k}={v}" for k, v in sorted(self.match_labels.items())]
        terms.extend(str(r) for r in self.match_expressions)
        return ",".join(terms) or "<all namespaces>"


@dataclass(frozen=True, kw_only=True)
class RepositoryRules:
    """``spec.repositories``: where ModelKits may come from. Deny wins."""

    allowed: tuple[Glob, ...] = ()
    """Empty: any repository not denied."""
    denied: tuple[Glob, ...] = ()
    mode: Mode | None = None
    """None: the policy's mode."""


@dataclass(frozen=True, kw_only=True)
class TagRules:
    """``spec.tags``. Tag rules read the tag as written; a digest-only reference
    (``name@sha256:...``) has no tag and passes ``denied``/``allowed``. A reference without
    a tag means ``latest``."""

    allowed: tuple[Glob, ...] = ()
    denied: tuple[Glob, ...] = ()
    require_digest: bool = False
    immutable: tuple[Glob, ...] = ()
    """Content tags: the first digest recorded for a matching tag (its ModelKitTag's
    first-seen digest) is the truth; a resolution to another digest is a violation. A
    reference written with a digest is pinned by its writer and passes."""
    mode: Mode | None = None

    def is_immutable(self, tag: str) -> Glob | None:
        """The ``immutable`` pattern ``tag`` matches, or None."""
        return next((g for g in self.immutable if g.matches(tag)), None)


@dataclass(frozen=True, kw_only=True)
class LicenseRules:
    """``spec.artifacts.licenses``: every license the Kitfile declares must be approved."""

    allowed: tuple[str, ...]
    """SPDX identifiers (or any text the Kitfiles use), compared case-insensitively."""
    allow_undeclared: bool = False
    """Whether a ModelKit that declares no license at all passes."""


@dataclass(frozen=True, kw_only=True)
class ArtifactRules:
    """``spec.artifacts``: what the referenced artifact must be."""

    formats: frozenset[types.ModelFormat] = frozenset()
    """Allowed formats; empty: both."""
    required_layers: tuple[str, ...] = ()
    licenses: LicenseRules | None = None
    mountable_image_volumes: bool = False
    """Whether an image volume must name an artifact the kubelet can mount (not a
    KitOps-format ModelKit: :func:`artifacts.image_volume_unmountable`); without the rule
    kitpin only warns."""
    mode: Mode | None = None


@dataclass(frozen=True, kw_only=True)
class ParentRules:
    """``spec.parents``: parent ModelKits named in a Kitfile must be pinned by digest."""

    mode: Mode | None = None


@dataclass(frozen=True, kw_only=True)
class SecretKeyRef:
    """``secretRef``: a public key kept in a Secret (``cosign generate-key-pair
    k8s://<namespace>/<name>`` writes one). The Secret is read where the policy lives: the
    policy's own namespace for a ``ModelKitPolicy``, kitpin's own namespace for a
    ``ClusterModelKitPolicy`` (never a namespace the policy names: there is no such field)."""

    name: str
    key: str = DEFAULT_SECRET_KEY
    """The Secret's data key holding the PEM."""
    namespace: str | None = None
    """The policy's namespace (``ModelKitPolicy``); None: kitpin's own namespace, which only
    the running controller knows (``ClusterModelKitPolicy``)."""


@dataclass(frozen=True, kw_only=True)
class SignatureKey:
    """One entry of ``signatures.keys``: a named public key, inline or in a Secret (exactly
    one of :attr:`public_key` and :attr:`secret`)."""

    name: str
    """Reported when the key verifies a signature (and in the ``kitpin.dev/pinned`` record)."""
    field: str
    """Where it is in the policy, for messages: ``spec.signatures.keys[1]``."""
    public_key: PublicKey | None = None
    """The parsed inline ``publicKey``."""
    secret: SecretKeyRef | None = None


@dataclass(frozen=True, kw_only=True)
class SignatureRules:
    """``spec.signatures``: the digest kitpin pins must carry a cosign signature made with
    the listed keys (:mod:`controller.signatures`)."""

    keys: tuple[SignatureKey, ...]
    require: SignatureRequirement = DEFAULT_SIGNATURE_REQUIREMENT
    """``any``: one listed key's signature is enough; ``all``: every listed key must have
    signed the digest."""
    log_keys: tuple[PublicKey, ...] = ()
    """Transparency-log (Rekor) public keys: a signature's log entry is verified offline
    against them (see :class:`controller.signatures.KeySet`)."""
    require_log_entry: bool = False
    """Refuse signatures without a log entry (needs :attr:`log_keys`)."""
    mode: Mode | None = None

    @property
    def names(self) -> str:
        """The keys' names, for messages: ``release, ci``."""
        return ", ".join(k.name for k in self.keys)


@dataclass(frozen=True, kw_only=True, order=True)
class PolicyRef:
    """Which policy object: the key of the policy index and of status updates."""

    kind: PolicyKind
    namespace: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, kw_only=True)
class Policy:
    """One parsed policy object. Build it with :func:`parse_policy`."""

    kind: PolicyKind
    name: str
    namespace: str | None = None
    """The namespace of a ``ModelKitPolicy``; None for a ``ClusterModelKitPolicy``."""
    generation: int | None = None
    """``metadata.generation`` parsed (for ``status.observedGeneration``)."""
    mode: Mode = DEFAULT_MODE
    namespace_selector: LabelSelector | None = None
    """Cluster policies only; None (or empty) matches every namespace."""
    repositories: RepositoryRules | None = None
    tags: TagRules | None = None
    artifacts: ArtifactRules | None = None
    parents: ParentRules | None = None
    signatures: SignatureRules | None = None

    @property
    def ref(self) -> PolicyRef:
        return PolicyRef(kind=self.kind, namespace=self.namespace, name=self.name)

    @property
    def display(self) -> str:
        """``ClusterModelKitPolicy/prod-models``: how messages name the policy."""
        return str(self.ref)

    def applies_to(self, namespace: str, namespace_labels: Mapping[str, str]) -> bool:
        if self.kind == NAMESPACED_KIND:
            return self.namespace == namespace
        return self.namespace_selector is None or self.namespace_selector.matches(namespace_labels)

    @property
    def rules(self) -> tuple[str, ...]:
        """The names of the rules this policy states (see :class:`Rule`)."""
        names: list[str] = []
        if r := self.repositories:
            names += [Rule.REPOSITORIES_DENIED] if r.denied else []
            names += [Rule.REPOSITORIES_ALLOWED] if r.allowed else []
        if t := self.tags:
            names += [Rule.TAGS_DENIED] if t.denied else []
            names += [Rule.TAGS_ALLOWED] if t.allowed else []
            names += [Rule.TAGS_REQUIRE_DIGEST] if t.require_digest else []
            names += [Rule.TAGS_IMMUTABLE] if t.immutable else []
        if a := self.artifacts:
            names += [Rule.ARTIFACTS_FORMATS] if a.formats else []
            names += [Rule.ARTIFACTS_REQUIRED_LAYERS] if a.required_layers else []
            names += [Rule.ARTIFACTS_LICENSES] if a.licenses else []
            names += [Rule.ARTIFACTS_MOUNTABLE_IMAGE_VOLUMES] if a.mountable_image_volumes else []
        if self.parents:
            names.append(Rule.PARENTS_REQUIRE_DIGEST)
        if self.signatures:
            names.append(Rule.SIGNATURES_KEYS)
        return tuple(names)

    @property
    def summary(self) -> str:
        """One line for ``status.summary`` (``kubectl get -o wide``), e.g.
        ``repositories: allow ghcr.io/acme/**; tags: deny latest, digest required [warn]``."""
        blocks: list[str] = []

        def block(name: str, mode: Mode | None, items: list[str]) -> None:
            if items:
                suffix = f" [{mode}]" if mode is not None and mode != self.mode else ""
                blocks.append(f"{name}: {', '.join(items)}{suffix}")

        if r := self.repositories:
            items = [f"allow {_join_patterns(r.allowed)}"] if r.allowed else []
            items += [f"deny {_join_patterns(r.denied)}"] if r.denied else []
            block("repositories", r.mode, items)
        if t := self.tags:
            items = [f"deny {_join_patterns(t.denied)}"] if t.denied else []
            items += [f"allow {_join_patterns(t.allowed)}"] if t.allowed else []
            items += ["digest required"] if t.require_digest else []
            items += [f"immutable {_join_patterns(t.immutable)}"] if t.immutable else []
            block("tags", t.mode, items)
        if a := self.artifacts:
            items = [f"formats {' '.join(sorted(a.formats))}"] if a.formats else []
            items += [f"layers {' '.join(a.required_layers)}"] if a.required_layers else []
            items += [f"licenses {' '.join(a.licenses.allowed)}"] if a.licenses else []
            items += ["mountable image volumes"] if a.mountable_image_volumes else []
            block("artifacts", a.mode, items)
        if self.parents:
            block("parents", self.parents.mode, ["pinned by digest"])
        if sig := self.signatures:
            how = "signed by " + ("all of" if sig.require == "all" else "any of")
            block("signatures", sig.mode, [f"{how} {' '.join(k.name for k in sig.keys)}"])
        text = "; ".join(blocks) or "no rules"
        return text if len(text) <= SUMMARY_LENGTH else text[: SUMMARY_LENGTH - 3] + "..."

    def mode_of(self, rule: str) -> Mode:
        """The mode a violation of ``rule`` has: its block's, else the policy's."""
        block = {
            "repositories": self.repositories,
            "tags": self.tags,
            "artifacts": self.artifacts,
            "parents": self.parents,
            "signatures": self.signatures,
        }.get(rule.partition(".")[0])
        mode = getattr(block, "mode", None)
        return mode if mode is not None else self.mode


def _join_patterns(globs: Sequence[Glob]) -> str:
    return ",".join(g.pattern for g in globs)


def policy_order(policy: Policy) -> tuple[int, str, str]:
    """The order policies are evaluated and listed in: cluster policies first, then by
    namespace and name."""
    return (0 if policy.kind == CLUSTER_KIND else 1, policy.namespace or "", policy.name)


@dataclass(frozen=True, kw_only=True)
class FirstSeen:
    """The first digest recorded for a tag (its ``ModelKitTag``'s ``status.firstSeen``) and
    when: the truth for a tag under ``tags.immutable`` (trust on first use)."""

    digest: str
    at: datetime


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """What the engine knows about one reference in the object under review."""

    site: sites.Site
    reference: refs.Reference
    """Parsed from what the USER wrote (tag-only or with a digest). After kitpin pinned the
    site, pass the ``from`` of its ``kitpin.dev/pinned`` record: ``tags.requireDigest`` must
    not be satisfied by kitpin's own pin."""
    resolution: Resolution | None = None
    """The manifest (format, layers, annotations); None when not resolved (yet)."""
    config: Mapping[str, Any] | None = None
    """The config blob as JSON (``RegistryClient.get_config``): the Kitfile of a KitOps
    ModelKit, the model config of a ModelPack. Fetch it only when :func:`needs_config`."""
    written: str | None = None
    """The site's text as the user wrote it, when kitpin has since pinned it (messages quote
    this, not kitpin's own pin). None: the site's current value is what the user wrote."""
    first_seen: FirstSeen | None = None
    """The first digest recorded for the reference's tag (``tags.immutable``); None when no
    record is known (first use: nothing to compare with) or none was asked for."""
    signatures: Mapping[PolicyRef, SignatureOutcome] | None = None
    """What the signature check of the resolved digest came to, for each policy with a
    ``signatures`` block (:mod:`controller.admission.signing`); a policy absent from it was
    not checked (offline, not resolved)."""


@dataclass(frozen=True, kw_only=True)
class Violation:
    """One rule of one policy broken by one reference: at most one per rule and reference
    (a license declared in several places of one Kitfile, or several parents by tag, are
    one violation whose message names every place)."""

    policy: PolicyRef
    rule: str
    """A :class:`Rule` name, e.g. ``tags.denied``."""
    reason: str
    """A :class:`Reason` constant, e.g. ``TagDenied`` (Event reason, metric label)."""
    mode: Mode
    path: str
    """JSON pointer of the site."""
    where: str
    """The site's human description."""
    reference: str
    """The value at the site."""
    message: str
    """Names policy and rule, says what is wrong and what to do."""


@dataclass(frozen=True, kw_only=True)
class Unchecked:
    """A rule that could not be evaluated for one reference because data was missing (the
    reference was not resolved, or the config blob was not fetched)."""

    policy: PolicyRef
    rule: str
    mode: Mode
    path: str
    where: str
    reference: str
    why: str

    @property
    def message(self) -> str:
        return f"{self.policy} rule {self.rule}: {self.where} '{self.reference}': {self.why}"


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What :func:`evaluate` decided: every violation, and the strictest outcome."""

    violations: tuple[Violation, ...] = ()
    unchecked: tuple[Unchecked, ...] = ()
    policies: tuple[PolicyRef, ...] = ()
    """The policies that applied to the namespace (whether or not they were violated)."""

    @property
    def outcome(self) -> Outcome:
        if not self.violations:
            return "allow"
        strictest = max((v.mode for v in self.violations), key=_RANK.__getitem__)
        return _OUTCOME_OF_MODE[strictest]

    @property
    def allowed(self) -> bool:
        return self.outcome != "deny"

    @property
    def reason(self) -> str:
        return {
            "deny": Reason.DENIED,
            "warn": Reason.WARNED,
            "audit": Reason.AUDITED,
            "allow": Reason.ALLOWED,
        }[self.outcome]

    def of_mode(self, mode: Mode) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.mode == mode)

    @property
    def denials(self) -> tuple[Violation, ...]:
        return self.of_mode("enforce")

    @property
    def warnings(self) -> tuple[Violation, ...]:
        return self.of_mode("warn")

    @property
    def audits(self) -> tuple[Violation, ...]:
        return self.of_mode("audit")

    def denial_message(self) -> str:
        """The admission denial text (empty when nothing is enforced). It names its reason
        (``PolicyDenied``), the admission metrics' ``outcome`` label for it."""
        if not self.denials:
            return ""
        return f"denied by ModelKit policy ({Reason.DENIED}): " + "; ".join(
            v.message for v in self.denials
        )

    def warning_messages(self) -> tuple[str, ...]:
        """Admission warnings for ``warn`` violations (``audit`` ones are silent)."""
        return tuple(f"{v.message} (mode warn: admitted for now)" for v in self.warnings)

    def by_policy(self) -> Mapping[PolicyRef, tuple[Violation, ...]]:
        """Violations grouped per policy, for status updates."""
        grouped: dict[PolicyRef, list[Violation]] = {}
        for v in self.violations:
            grouped.setdefault(v.policy, []).append(v)
        return MappingProxyType({k: tuple(v) for k, v in grouped.items()})
