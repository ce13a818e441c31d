"""ModelKit policies: ``ClusterModelKitPolicy`` and ``ModelKitPolicy`` objects, parsed and
evaluated. Pure: no kopf, no Kubernetes client, no HTTP, no clock (callers pass ``now``).

Design note
===========

The model
    A policy (:class:`Policy`) is one object of the ``kitpin.dev/v1alpha1`` CRDs in
    ``deploy/crds/``. A ``ClusterModelKitPolicy`` applies in every namespace its
    ``namespaceSelector`` matches (absent or empty: all namespaces); a ``ModelKitPolicy``
    applies in its own namespace only. A policy has a ``mode`` and up to four rule blocks,
    each of which may override the mode for its own rules:

    ================  ================================================================
    block             rules (the ``rule`` named in every violation)
    ================  ================================================================
    ``repositories``  ``repositories.denied``, ``repositories.allowed``: glob patterns
                      over ``registry/repository``; deny wins
    ``tags``          ``tags.denied``, ``tags.allowed`` (glob patterns over the tag; deny
                      wins), ``tags.requireDigest`` (refuse tag-only references instead of
                      pinning them)
    ``artifacts``     ``artifacts.formats`` (KitOps ModelKit and/or ModelPack),
                      ``artifacts.requiredLayers`` (layer kinds, e.g. ``model``),
                      ``artifacts.licenses`` (licenses declared in the Kitfile)
    ``parents``       ``parents.requireDigest``: a Kitfile whose ``model.path`` (or a
                      dataset's ``remotePath``) names a parent ModelKit by tag
    ================  ================================================================

    Glob patterns: ``*`` matches within one path component, ``**`` (a whole component)
    matches any number of components, ``?`` one character. Repository patterns always start
    with a registry host (``ghcr.io/acme/**``), because a reference's full name is matched.

How modes combine
    Every matching policy is evaluated against every reference; nothing a policy says can
    relax another (a ``ModelKitPolicy`` only adds rules to the cluster's). Each violation
    carries the mode of its block (else its policy). The outcome of a :class:`Verdict` is the
    strictest mode among its violations: any ``enforce`` violation denies; otherwise any
    ``warn`` violation admits with admission warnings; otherwise ``audit`` violations admit
    silently and are only recorded. Every violation is kept (not only the strictest) so the
    audit trail counts warn/audit violations even when another policy denies.

What is pure (here) and what the webhook layer does
    Here: :func:`parse_policy` (everything the CRD schema cannot check: glob syntax, label
    selector syntax, dead or contradictory rules), :func:`matching`, :func:`evaluate`,
    :func:`needs_resolution` / :func:`needs_kitfile` / :func:`needs_config` (so the engine
    fetches a config blob only when a rule reads the Kitfile), and the status builders
    :func:`accepted_status`, :func:`rejected_status`, :func:`record_violations`.

    The webhook/operator layer: keeps a kopf index of parsed policies (re-parsed on every
    change, never fetched per admission), validates policy objects in a validating webhook
    with :func:`parse_policy`, writes ``status`` (conditions, ruleCount, summary, violation
    counters, recent violations), emits a Kubernetes Event on each offending object for
    warn/audit violations, and counts violations by policy, rule and mode in metrics.

Evidence
    The engine hands over one :class:`Evidence` per reference: the :class:`~controller.sites.Site`,
    the reference *as the user wrote it* (tag-only or with a digest: ``requireDigest``
    depends on it, so after kitpin pinned a site the engine passes the ``from`` value of
    the ``kitpin.dev/pinned`` record, not the pinned text), and when available the
    :class:`~controller.types.Resolution` and the config blob. A rule that needs data that
    is absent is reported as :class:`Unchecked`, never guessed: the engine runs
    :func:`evaluate` once before resolving (reference rules only: cheap, and a
    ``requireDigest`` denial must come before any pinning) and once with the artifacts.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar, cast, get_args

from controller import artifacts, errors, refs, sites, types
from controller.types import Manifest, Resolution

__all__ = [
    "API_VERSION",
    "CLUSTER_KIND",
    "DEFAULT_MODE",
    "GROUP",
    "KINDS",
    "LAYER_KINDS",
    "MODEL_FORMATS",
    "MODES",
    "NAMESPACED_KIND",
    "READY",
    "RECENT_VIOLATIONS_KEPT",
    "SUMMARY_LENGTH",
    "VERSION",
    "ArtifactRules",
    "Evidence",
    "Glob",
    "LabelSelector",
    "LicenseRules",
    "Mode",
    "ModelFormat",
    "Outcome",
    "ParentReference",
    "ParentRules",
    "Policy",
    "PolicyKind",
    "PolicyRef",
    "Reason",
    "RepositoryRules",
    "Requirement",
    "Rule",
    "TagRules",
    "Unchecked",
    "Verdict",
    "Violation",
    "accepted_status",
    "declared_licenses",
    "evaluate",
    "kitfile_of",
    "matching",
    "needs_config",
    "needs_kitfile",
    "needs_resolution",
    "parent_references",
    "parse_policies",
    "parse_policy",
    "record_violations",
    "rejected_status",
]

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
_T = TypeVar("_T")

_RANK: Final[Mapping[str, int]] = MappingProxyType({"audit": 1, "warn": 2, "enforce": 3})

Outcome = Literal["allow", "audit", "warn", "deny"]
_OUTCOME_OF_MODE: Final[Mapping[Mode, Outcome]] = MappingProxyType(
    {"enforce": "deny", "warn": "warn", "audit": "audit"}
)

ModelFormat = Literal["kitops-modelkit", "modelpack"]
MODEL_FORMATS: Final[tuple[ModelFormat, ...]] = get_args(ModelFormat)
_FORMAT_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {"kitops-modelkit": "a KitOps ModelKit", "modelpack": "a CNCF ModelPack"}
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

_FORMAT_LAYER_KINDS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "kitops-modelkit": frozenset(
            {
                artifacts.KIND_MODEL,
                artifacts.KIND_MODELPART,
                artifacts.KIND_DATASET,
                artifacts.KIND_CODE,
                artifacts.KIND_DOCS,
                artifacts.KIND_MCPB,
            }
        ),
        "modelpack": frozenset(
            {
                artifacts.KIND_WEIGHT,
                artifacts.KIND_WEIGHT_CONFIG,
                artifacts.KIND_MODEL,  # implied by weight
                artifacts.KIND_MODELPART,  # implied by weight.config
                artifacts.KIND_DATASET,
                artifacts.KIND_CODE,
                artifacts.KIND_DOCS,
            }
        ),
    }
)
"""Which kinds a manifest of each format can have (with :data:`artifacts.IMPLIED_KINDS`)."""

RECENT_VIOLATIONS_KEPT: Final = 10
"""How many entries ``status.recentViolations`` keeps (newest first)."""

SUMMARY_LENGTH: Final = 250
"""Longest ``status.summary`` (the CRD allows 256)."""

READY: Final = "Ready"
"""The condition type in ``status.conditions``: the policy was parsed and is in force."""

MAX_PATTERNS: Final = 64
MAX_REPOSITORY_PATTERN_LENGTH: Final = 255
MAX_TAG_PATTERN_LENGTH: Final = 128
MAX_LICENSES: Final = 64
MAX_LICENSE_LENGTH: Final = 128
MAX_SELECTOR_TERMS: Final = 32
MAX_SELECTOR_VALUES: Final = 64


class Rule:
    """The rule names a violation reports: the field under ``spec`` that states the rule."""

    REPOSITORIES_DENIED: Final = "repositories.denied"
    REPOSITORIES_ALLOWED: Final = "repositories.allowed"
    TAGS_DENIED: Final = "tags.denied"
    TAGS_ALLOWED: Final = "tags.allowed"
    TAGS_REQUIRE_DIGEST: Final = "tags.requireDigest"
    ARTIFACTS_FORMATS: Final = "artifacts.formats"
    ARTIFACTS_REQUIRED_LAYERS: Final = "artifacts.requiredLayers"
    ARTIFACTS_LICENSES: Final = "artifacts.licenses"
    PARENTS_REQUIRE_DIGEST: Final = "parents.requireDigest"


class Reason:
    """Named outcomes (constant, for Events, metrics and logs)."""

    # one per violation
    REPOSITORY_DENIED: Final = "RepositoryDenied"
    REPOSITORY_NOT_ALLOWED: Final = "RepositoryNotAllowed"
    TAG_DENIED: Final = "TagDenied"
    TAG_NOT_ALLOWED: Final = "TagNotAllowed"
    DIGEST_REQUIRED: Final = "DigestRequired"
    FORMAT_NOT_ALLOWED: Final = "FormatNotAllowed"
    LAYERS_MISSING: Final = "RequiredLayersMissing"
    LICENSE_NOT_ALLOWED: Final = "LicenseNotAllowed"
    LICENSE_UNDECLARED: Final = "LicenseUndeclared"
    PARENT_NOT_PINNED: Final = "ParentNotPinned"
    PARENT_LOCAL: Final = "ParentInLocalStorage"
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
_SELECTOR_OPERATORS: Final[tuple[SelectorOperator, ...]] = get_args(SelectorOperator)


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
    mode: Mode | None = None


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

    formats: frozenset[ModelFormat] = frozenset()
    """Allowed formats; empty: both."""
    required_layers: tuple[str, ...] = ()
    licenses: LicenseRules | None = None
    mode: Mode | None = None


@dataclass(frozen=True, kw_only=True)
class ParentRules:
    """``spec.parents``: parent ModelKits named in a Kitfile must be pinned by digest."""

    mode: Mode | None = None


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
        if a := self.artifacts:
            names += [Rule.ARTIFACTS_FORMATS] if a.formats else []
            names += [Rule.ARTIFACTS_REQUIRED_LAYERS] if a.required_layers else []
            names += [Rule.ARTIFACTS_LICENSES] if a.licenses else []
        if self.parents:
            names.append(Rule.PARENTS_REQUIRE_DIGEST)
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
            block("tags", t.mode, items)
        if a := self.artifacts:
            items = [f"formats {' '.join(sorted(a.formats))}"] if a.formats else []
            items += [f"layers {' '.join(a.required_layers)}"] if a.required_layers else []
            items += [f"licenses {' '.join(a.licenses.allowed)}"] if a.licenses else []
            block("artifacts", a.mode, items)
        if self.parents:
            block("parents", self.parents.mode, ["pinned by digest"])
        text = "; ".join(blocks) or "no rules"
        return text if len(text) <= SUMMARY_LENGTH else text[: SUMMARY_LENGTH - 3] + "..."

    def mode_of(self, rule: str) -> Mode:
        """The mode a violation of ``rule`` has: its block's, else the policy's."""
        block = {
            "repositories": self.repositories,
            "tags": self.tags,
            "artifacts": self.artifacts,
            "parents": self.parents,
        }.get(rule.partition(".")[0])
        mode = getattr(block, "mode", None)
        return mode if mode is not None else self.mode


def _join_patterns(globs: Sequence[Glob]) -> str:
    return ",".join(g.pattern for g in globs)


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


@dataclass(frozen=True, kw_only=True)
class Violation:
    """One rule of one policy broken by one reference."""

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
        """The admission denial text (empty when nothing is enforced)."""
        if not self.denials:
            return ""
        return "denied by ModelKit policy: " + "; ".join(v.message for v in self.denials)

    def warning_messages(self) -> tuple[str, ...]:
        """Admission warnings for ``warn`` violations (``audit`` ones are silent)."""
        return tuple(f"{v.message} (mode warn: admitted for now)" for v in self.warnings)

    def by_policy(self) -> Mapping[PolicyRef, tuple[Violation, ...]]:
        """Violations grouped per policy, for status updates."""
        grouped: dict[PolicyRef, list[Violation]] = {}
        for v in self.violations:
            grouped.setdefault(v.policy, []).append(v)
        return MappingProxyType({k: tuple(v) for k, v in grouped.items()})


# ---------------------------------------------------------------------------------------
# Parsing


def parse_policies(
    documents: Iterable[object], *, default_namespace: str | None = None
) -> tuple[Policy, ...]:
    """Parse every kitpin policy among ``documents`` (e.g. all YAML documents of the files
    given to ``kitpin check``); other documents (and None, an empty YAML document) are
    skipped. Raises one :class:`~controller.errors.ConfigError` listing every problem."""
    policies: list[Policy] = []
    problems: list[str] = []
    for doc in documents:
        if not isinstance(doc, Mapping) or doc.get("kind") not in KINDS:
            continue
        api_version = doc.get("apiVersion")
        if not isinstance(api_version, str) or api_version.partition("/")[0] != GROUP:
            continue
        try:
            policies.append(parse_policy(doc, default_namespace=default_namespace))
        except errors.ConfigError as e:
            problems.append(str(e))
    if problems:
        raise errors.ConfigError("; ".join(problems))
    return tuple(sorted(policies, key=_policy_order))


def parse_policy(obj: Mapping[str, Any], *, default_namespace: str | None = None) -> Policy:
    """Parse and validate one policy object (as the apiserver or a YAML file has it).

    Checks everything the CRD schema checks too (an offline file never met the apiserver),
    and what it cannot: glob syntax, label-selector syntax, rules that can never match or
    contradict each other. Raises :class:`~controller.errors.ConfigError` naming the policy
    and each offending field (``spec.tags.denied[2]: ...``); every problem is reported at
    once. ``default_namespace`` is used for a ``ModelKitPolicy`` without
    ``metadata.namespace`` (a file meant for ``kubectl apply -n``).
    """
    return _PolicyParser(obj, default_namespace).parse()


_KUBE_NAME_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_LABEL_NAME_RE: Final = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_PREFIX_RE: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_LABEL_VALUE_RE: Final = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_REPO_PATTERN_CHARS_RE: Final = re.compile(r"[a-z0-9._:/*?\[\]-]+")
_HOST_PATTERN_RE: Final = re.compile(r"[a-z0-9.:*?\[\]-]+")
_PATH_PATTERN_RE: Final = re.compile(r"[a-z0-9._*?-]+")
_TAG_PATTERN_RE: Final = re.compile(r"[A-Za-z0-9_.*?-]+")

_SPEC_FIELDS: Final = ("mode", "namespaceSelector", "repositories", "tags", "artifacts", "parents")
_SELECTOR_FIELDS: Final = ("matchLabels", "matchExpressions")
_EXPRESSION_FIELDS: Final = ("key", "operator", "values")
_REPOSITORY_FIELDS: Final = ("allowed", "denied", "mode")
_TAG_FIELDS: Final = ("allowed", "denied", "requireDigest", "mode")
_ARTIFACT_FIELDS: Final = ("formats", "requiredLayers", "licenses", "mode")
_LICENSE_FIELDS: Final = ("allowed", "allowUndeclared")
_PARENT_FIELDS: Final = ("requireDigest", "mode")


class _PolicyParser:
    """One parse of one object; collects every problem with its field path."""

    def __init__(self, obj: Mapping[str, Any], default_namespace: str | None) -> None:
        self.obj = obj
        self.default_namespace = default_namespace
        self.problems: list[str] = []
        self.label = "policy"

    def problem(self, path: str, text: str) -> None:
        self.problems.append(f"{path}: {text}")

    def fail(self) -> errors.ConfigError:
        return errors.ConfigError(f"{self.label} is invalid: " + "; ".join(self.problems))

    # -- top level -----------------------------------------------------------------------

    def parse(self) -> Policy:
        obj = self.obj
        if not isinstance(obj, Mapping):
            raise errors.ConfigError(
                f"a policy must be an object, got {types.json_type(obj)}; write a "
                f"{CLUSTER_KIND} or {NAMESPACED_KIND} (apiVersion {API_VERSION})"
            )
        kind = obj.get("kind")
        if kind not in KINDS:
            raise errors.ConfigError(
                f"kind: {kind!r} is not a kitpin policy; write {CLUSTER_KIND!r} or "
                f"{NAMESPACED_KIND!r}"
            )
        policy_kind: PolicyKind = CLUSTER_KIND if kind == CLUSTER_KIND else NAMESPACED_KIND
        metadata = obj.get("metadata")
        if not isinstance(metadata, Mapping):
            metadata = {}
        name = metadata.get("name")
        self.label = f"{policy_kind}/{name}" if isinstance(name, str) and name else policy_kind
        api_version = obj.get("apiVersion")
        if api_version != API_VERSION:
            self.problem("apiVersion", f"is {api_version!r}; write {API_VERSION!r}")
        if not isinstance(name, str) or not name:
            self.problem("metadata.name", "is missing; every policy needs a name")
            name = ""
        elif len(name) > 253 or not _KUBE_NAME_RE.fullmatch(name):
            self.problem(
                "metadata.name",
                f"{name!r} is not a valid object name (lowercase letters, digits, '-' and "
                "'.', at most 253 characters)",
            )
        namespace: str | None = None
        if policy_kind == NAMESPACED_KIND:
            ns = metadata.get("namespace") or self.default_namespace
            if not isinstance(ns, str) or not ns:
                self.problem(
                    "metadata.namespace",
                    f"is missing; a {NAMESPACED_KIND} applies to its own namespace: set it "
                    f"(or use a {CLUSTER_KIND} with a namespaceSelector)",
                )
            else:
                namespace = ns
        generation = metadata.get("generation")
        if not types.is_int(generation):
            generation = None

        spec = obj.get("spec")
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            self.problem("spec", f"is {types.json_type(spec)}, expected an object")
            spec = {}
        self.unknown_fields(spec, "spec", _SPEC_FIELDS)
        mode = self.mode(spec, "spec.mode") or DEFAULT_MODE
        selector: LabelSelector | None = None
        if "namespaceSelector" in spec and spec["namespaceSelector"] is not None:
            if policy_kind == NAMESPACED_KIND:
                self.problem(
                    "spec.namespaceSelector",
                    f"only a {CLUSTER_KIND} has a namespaceSelector; a {NAMESPACED_KIND} "
                    "applies to its own namespace: remove the field",
                )
            else:
                selector = self.selector(spec["namespaceSelector"], "spec.namespaceSelector")

        repositories = self.block(spec, "repositories", self.repositories)
        tags = self.block(spec, "tags", self.tags)
        artifact_rules = self.block(spec, "artifacts", self.artifacts)
        parents = self.block(spec, "parents", self.parents)
        if self.problems:
            raise self.fail()
        return Policy(
            kind=policy_kind,
            name=name,
            namespace=namespace,
            generation=generation,
            mode=mode,
            namespace_selector=selector,
            repositories=repositories,
            tags=tags,
            artifacts=artifact_rules,
            parents=parents,
        )

    def block(
        self, spec: Mapping[str, Any], key: str, parse: Callable[[Mapping[str, Any], str], _T]
    ) -> _T | None:
        value = spec.get(key)
        if value is None:
            return None
        path = f"spec.{key}"
        if not isinstance(value, Mapping):
            self.problem(path, f"is {types.json_type(value)}, expected an object")
            return None
        return parse(value, path)

    # -- helpers -------------------------------------------------------------------------

    def unknown_fields(self, value: Mapping[str, Any], path: str, known: Sequence[str]) -> None:
        for key in value:
            if key in known:
                continue
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
            self.problem(f"{path}.{key}", f"unknown field{hint}")

    def mode(self, value: Mapping[str, Any], path: str) -> Mode | None:
        mode = value.get("mode")
        if mode is None:
            return None
        if mode not in MODES:
            self.problem(path, f"is {mode!r}; write one of {', '.join(MODES)}")
            return None
        return cast(Mode, mode)

    def boolean(self, value: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        flag = value.get(key)
        if flag is None:
            return default
        if not isinstance(flag, bool):
            self.problem(path, f"is {types.json_type(flag)} {flag!r}, expected true or false")
            return default
        return flag

    def strings(
        self, value: Mapping[str, Any], key: str, path: str, *, limit: int
    ) -> list[tuple[str, str]]:
        """``[(item path, text)]`` of a list of strings; None/absent is an empty list;
        an explicitly empty list is refused (it states nothing)."""
        items = value.get(key)
        if items is None:
            return []
        if not isinstance(items, list):
            self.problem(path, f"is {types.json_type(items)}, expected a list of strings")
            return []
        if not items:
            self.problem(path, "is empty; list at least one entry or remove the field")
            return []
        if len(items) > limit:
            self.problem(path, f"has {len(items)} entries; at most {limit} are allowed")
            return []
        out: list[tuple[str, str]] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            item_path = f"{path}[{i}]"
            if not isinstance(item, str):
                self.problem(item_path, f"is {types.json_type(item)}, expected a string")
                continue
            if item in seen:
                self.problem(item_path, f"{item!r} repeats {path}[{seen[item]}]; remove it")
                continue
            seen[item] = i
            out.append((item_path, item))
        return out

    # -- namespaceSelector ---------------------------------------------------------------

    def selector(self, value: object, path: str) -> LabelSelector | None:
        if not isinstance(value, Mapping):
            self.problem(path, f"is {types.json_type(value)}, expected an object")
            return None
        self.unknown_fields(value, path, _SELECTOR_FIELDS)
        labels: dict[str, str] = {}
        match_labels = value.get("matchLabels")
        if match_labels is not None:
            if not isinstance(match_labels, Mapping):
                self.problem(
                    f"{path}.matchLabels",
                    f"is {types.json_type(match_labels)}, expected an object of label values",
                )
            else:
                for key, val in match_labels.items():
                    item = f"{path}.matchLabels[{key!r}]"
                    if self.label_key(key, item) and self.label_value(val, item):
                        labels[key] = val
        requirements: list[Requirement] = []
        expressions = value.get("matchExpressions")
        if expressions is not None:
            if not isinstance(expressions, list):
                self.problem(
                    f"{path}.matchExpressions",
                    f"is {types.json_type(expressions)}, expected a list",
                )
            elif len(expressions) > MAX_SELECTOR_TERMS:
                self.problem(
                    f"{path}.matchExpressions",
                    f"has {len(expressions)} terms; at most {MAX_SELECTOR_TERMS} are allowed",
                )
            else:
                for i, expr in enumerate(expressions):
                    req = self.requirement(expr, f"{path}.matchExpressions[{i}]")
                    if req is not None:
                        requirements.append(req)
        for req in requirements:
            if req.operator == "In" and req.key in labels and labels[req.key] not in req.values:
                self.problem(
                    path,
                    f"matchLabels requires {req.key}={labels[req.key]} but matchExpressions "
                    f"requires {req}: no namespace can match; fix one of them",
                )
            if req.operator == "DoesNotExist" and req.key in labels:
                self.problem(
                    path,
                    f"matchLabels requires the label {req.key!r} but matchExpressions requires "
                    "it to be absent: no namespace can match; fix one of them",
                )
        return LabelSelector(
            match_labels=MappingProxyType(labels), match_expressions=tuple(requirements)
        )

    def requirement(self, expr: object, path: str) -> Requirement | None:
        if not isinstance(expr, Mapping):
            self.problem(path, f"is {types.json_type(expr)}, expected an object")
            return None
        self.unknown_fields(expr, path, _EXPRESSION_FIELDS)
        key = expr.get("key")
        operator = expr.get("operator")
        ok = self.label_key(key, f"{path}.key")
        if operator not in _SELECTOR_OPERATORS:
            self.problem(
                f"{path}.operator",
                f"is {operator!r}; write one of {', '.join(_SELECTOR_OPERATORS)}",
            )
            return None
        raw_values = expr.get("values")
        values: list[str] = []
        if raw_values is not None and not isinstance(raw_values, list):
            self.problem(f"{path}.values", f"is {types.json_type(raw_values)}, expected a list")
            return None
        for i, item in enumerate(raw_values or []):
            if self.label_value(item, f"{path}.values[{i}]"):
                values.append(item)
        if operator in ("In", "NotIn") and not raw_values:
            self.problem(f"{path}.values", f"must list at least one value for {operator}")
            return None
        if operator in ("Exists", "DoesNotExist") and raw_values:
            self.problem(f"{path}.values", f"must be empty for {operator}; remove it")
            return None
        if raw_values is not None and len(raw_values) > MAX_SELECTOR_VALUES:
            self.problem(f"{path}.values", f"has more than {MAX_SELECTOR_VALUES} values")
            return None
        if not ok or not isinstance(key, str):
            return None
        return Requirement(key=key, operator=operator, values=frozenset(values))

    def label_key(self, key: object, path: str) -> bool:
        if not isinstance(key, str) or not key:
            self.problem(path, f"the label key {key!r} must be a non-empty string")
            return False
        prefix, slash, name = key.rpartition("/")
        if (
            (slash and (not prefix or len(prefix) > 253 or not _LABEL_PREFIX_RE.fullmatch(prefix)))
            or len(name) > 63
            or not _LABEL_NAME_RE.fullmatch(name)
        ):
            self.problem(
                path,
                f"{key!r} is not a valid label key ([prefix/]name: name up to 63 letters, "
                "digits, '-', '_', '.', starting and ending alphanumeric; prefix a DNS "
                "subdomain)",
            )
            return False
        return True

    def label_value(self, value: object, path: str) -> bool:
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE_RE.fullmatch(value):
            self.problem(
                path,
                f"{value!r} is not a valid label value (a string of up to 63 letters, digits, "
                "'-', '_', '.', starting and ending alphanumeric, or empty)",
            )
            return False
        return True

    # -- rule blocks ---------------------------------------------------------------------

    def repositories(self, value: Mapping[str, Any], path: str) -> RepositoryRules | None:
        self.unknown_fields(value, path, _REPOSITORY_FIELDS)
        mode = self.mode(value, f"{path}.mode")
        allowed = self.globs(value, "allowed", path, self.repository_glob)
        denied = self.globs(value, "denied", path, self.repository_glob)
        if not allowed and not denied and "allowed" not in value and "denied" not in value:
            self.problem(path, "states no rule; list allowed or denied patterns, or remove it")
        self.dead_allowed(allowed, denied, path, what="repository")
        return RepositoryRules(
            allowed=tuple(g for _, g in allowed), denied=tuple(g for _, g in denied), mode=mode
        )

    def tags(self, value: Mapping[str, Any], path: str) -> TagRules | None:
        self.unknown_fields(value, path, _TAG_FIELDS)
        mode = self.mode(value, f"{path}.mode")
        allowed = self.globs(value, "allowed", path, self.tag_glob)
        denied = self.globs(value, "denied", path, self.tag_glob)
        require_digest = self.boolean(value, "requireDigest", f"{path}.requireDigest", False)
        if (
            not require_digest
            and not allowed
            and not denied
            and "allowed" not in value
            and "denied" not in value
        ):
            self.problem(
                path,
                "states no rule; list allowed or denied tags, set requireDigest: true, "
                "or remove it",
            )
        self.dead_allowed(allowed, denied, path, what="tag")
        return TagRules(
            allowed=tuple(g for _, g in allowed),
            denied=tuple(g for _, g in denied),
            require_digest=require_digest,
            mode=mode,
        )

    def artifacts(self, value: Mapping[str, Any], path: str) -> ArtifactRules | None:
        self.unknown_fields(value, path, _ARTIFACT_FIELDS)
        mode = self.mode(value, f"{path}.mode")
        formats: set[ModelFormat] = set()
        for item_path, text in self.strings(
            value, "formats", f"{path}.formats", limit=len(MODEL_FORMATS)
        ):
            if text not in MODEL_FORMATS:
                self.problem(item_path, f"is {text!r}; write one of {', '.join(MODEL_FORMATS)}")
            else:
                formats.add(text)
        layers: list[str] = []
        for item_path, text in self.strings(
            value, "requiredLayers", f"{path}.requiredLayers", limit=len(LAYER_KINDS)
        ):
            if text not in LAYER_KINDS:
                self.problem(item_path, f"is {text!r}; write one of {', '.join(LAYER_KINDS)}")
                continue
            possible = [f for f in (formats or MODEL_FORMATS) if text in _FORMAT_LAYER_KINDS[f]]
            if not possible:
                only = sorted(formats)
                self.problem(
                    item_path,
                    f"{text!r} layers cannot occur in {' or '.join(only)} artifacts, which "
                    f"{path}.formats allows exclusively: nothing could ever pass; remove it, "
                    "or allow a format that has such layers",
                )
                continue
            layers.append(text)
        licenses: LicenseRules | None = None
        raw_licenses = value.get("licenses")
        if raw_licenses is not None:
            licenses = self.licenses(raw_licenses, f"{path}.licenses")
        if not formats and not layers and licenses is None and not self.has_problems_under(path):
            self.problem(
                path, "states no rule; list formats, requiredLayers or licenses, or remove it"
            )
        return ArtifactRules(
            formats=frozenset(formats), required_layers=tuple(layers), licenses=licenses, mode=mode
        )

    def licenses(self, value: object, path: str) -> LicenseRules | None:
        if not isinstance(value, Mapping):
            self.problem(path, f"is {types.json_type(value)}, expected an object")
            return None
        self.unknown_fields(value, path, _LICENSE_FIELDS)
        allowed: list[str] = []
        seen: set[str] = set()
        for item_path, text in self.strings(
            value, "allowed", f"{path}.allowed", limit=MAX_LICENSES
        ):
            if not text.strip() or text != text.strip() or len(text) > MAX_LICENSE_LENGTH:
                self.problem(
                    item_path,
                    f"{text!r} is not a license identifier; write an SPDX identifier such as "
                    f"'Apache-2.0' (no surrounding blanks, at most {MAX_LICENSE_LENGTH} "
                    "characters)",
                )
                continue
            if text.casefold() in seen:
                self.problem(item_path, f"{text!r} is listed twice (case does not matter)")
                continue
            seen.add(text.casefold())
            allowed.append(text)
        if "allowed" not in value:
            self.problem(
                f"{path}.allowed",
                "is missing; list the approved licenses (e.g. Apache-2.0, MIT)",
            )
        allow_undeclared = self.boolean(value, "allowUndeclared", f"{path}.allowUndeclared", False)
        if not allowed:
            return None
        return LicenseRules(allowed=tuple(allowed), allow_undeclared=allow_undeclared)

    def parents(self, value: Mapping[str, Any], path: str) -> ParentRules | None:
        self.unknown_fields(value, path, _PARENT_FIELDS)
        mode = self.mode(value, f"{path}.mode")
        if not self.boolean(value, "requireDigest", f"{path}.requireDigest", True):
            self.problem(
                f"{path}.requireDigest",
                "is false, which leaves the parents block with nothing to check; remove "
                f"{path} instead",
            )
            return None
        return ParentRules(mode=mode)

    def has_problems_under(self, path: str) -> bool:
        return any(p.startswith(path) for p in self.problems)

    # -- globs ---------------------------------------------------------------------------

    def globs(
        self,
        value: Mapping[str, Any],
        key: str,
        path: str,
        compile_one: Callable[[str, str], Glob | None],
    ) -> list[tuple[str, Glob]]:
        out: list[tuple[str, Glob]] = []
        for item_path, text in self.strings(value, key, f"{path}.{key}", limit=MAX_PATTERNS):
            glob = compile_one(text, item_path)
            if glob is not None:
                out.append((item_path, glob))
        return out

    def dead_allowed(
        self,
        allowed: Sequence[tuple[str, Glob]],
        denied: Sequence[tuple[str, Glob]],
        path: str,
        *,
        what: str,
    ) -> None:
        """An allowed entry that a denied pattern always overrides is a contradiction."""
        for allowed_path, glob in allowed:
            for denied_path, deny in denied:
                if glob.pattern == deny.pattern or (glob.literal and deny.matches(glob.pattern)):
                    self.problem(
                        allowed_path,
                        f"the {what} {glob.pattern!r} is also matched by {denied_path} "
                        f"{deny.pattern!r}, and deny wins, so allowing it has no effect; "
                        "remove it from one of the lists",
                    )
                    break

    def repository_glob(self, text: str, path: str) -> Glob | None:
        def bad(problem: str) -> None:
            self.problem(path, f"{text!r} {problem}")

        if len(text) > MAX_REPOSITORY_PATTERN_LENGTH:
            bad(f"is longer than {MAX_REPOSITORY_PATTERN_LENGTH} characters")
            return None
        if text != text.lower() and _REPO_PATTERN_CHARS_RE.fullmatch(text.lower()):
            bad(
                "has uppercase letters; registry hosts are compared lowercased and "
                f"repositories are lowercase: write {text.lower()!r}"
            )
            return None
        if not _REPO_PATTERN_CHARS_RE.fullmatch(text):
            bad(
                "may contain only lowercase letters, digits, '.', '_', '-', ':', '/', the "
                "wildcards '*', '**', '?' and '[' ']' around an IPv6 host"
            )
            return None
        parts = text.split("/")
        if len(parts) < 2 or not parts[0]:
            bad(
                "has no registry host; patterns match the full name 'registry/repository': "
                f"write e.g. '{parts[0] or refs.EXAMPLE_REGISTRY}/**' for every repository "
                "of a registry, or 'docker.io/<org>/**' for Docker Hub"
            )
            return None
        if "" in parts:
            bad("has an empty path component ('//', or a leading or trailing '/')")
            return None
        host, path_parts = parts[0], parts[1:]
        if "**" in host or not _HOST_PATTERN_RE.fullmatch(host):
            bad(
                "has an invalid registry host part; write a host[:port] (wildcards '*' and "
                "'?' allowed, '**' only as a whole path component after the host)"
            )
            return None
        if not any(c in host for c in ".:*?[") and host != refs.LOCALHOST:
            bad(
                f"starts with {host!r}, which is not a registry host (no '.' or ':'); "
                "references are matched by their full name 'registry/repository': write "
                f"'docker.io/{text}' for Docker Hub, or put the registry host first"
            )
            return None
        if host in refs.DOCKER_HUB_ALIASES:
            bad(
                f"names Docker Hub as {host!r}; references are normalised to "
                f"{refs.DOCKER_HUB!r}: write {'/'.join([refs.DOCKER_HUB, *path_parts])!r}"
            )
            return None
        regex = _glob_component(host)
        for i, part in enumerate(path_parts):
            if part == "**":
                last = i == len(path_parts) - 1
                regex += "(?:/[^/]+)+" if last else "(?:/[^/]+)*"
                continue
            if "**" in part:
                bad(f"uses '**' inside the component {part!r}; '**' must be a whole component")
                return None
            if not _PATH_PATTERN_RE.fullmatch(part):
                bad(
                    f"has an invalid repository component {part!r} (lowercase letters, "
                    "digits, '.', '_', '-' and the wildcards '*' '?')"
                )
                return None
            regex += "/" + _glob_component(part)
        return Glob(pattern=text, regex=re.compile(regex))

    def tag_glob(self, text: str, path: str) -> Glob | None:
        if len(text) > MAX_TAG_PATTERN_LENGTH or not _TAG_PATTERN_RE.fullmatch(text):
            self.problem(
                path,
                f"{text!r} is not a tag pattern: up to {MAX_TAG_PATTERN_LENGTH} characters "
                "from A-Z a-z 0-9 '_' '.' '-' and the wildcards '*' (any characters) and "
                "'?' (one character)",
            )
            return None
        if text[0] in ".-":
            self.problem(path, f"{text!r} can never match: a tag cannot start with '.' or '-'")
            return None
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
        return Glob(pattern=text, regex=re.compile(regex))


def _glob_component(part: str) -> str:
    """Regex of one path component: ``*`` stays within the component, ``?`` is one char."""
    return "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in part)


# ---------------------------------------------------------------------------------------
# Matching


def _policy_order(policy: Policy) -> tuple[int, str, str]:
    return (0 if policy.kind == CLUSTER_KIND else 1, policy.namespace or "", policy.name)


def matching(
    policies: Iterable[Policy], *, namespace: str, namespace_labels: Mapping[str, str]
) -> tuple[Policy, ...]:
    """The policies that apply in ``namespace``: cluster policies whose selector matches its
    labels, and the namespace's own policies; cluster policies first, then by name."""
    return tuple(
        sorted(
            (p for p in policies if p.applies_to(namespace, namespace_labels)),
            key=_policy_order,
        )
    )


def needs_resolution(policies: Iterable[Policy]) -> bool:
    """Whether any rule reads the manifest (artifact or parent rules). Without one, the
    reference itself (repository, tag, digest) is all the policies look at."""
    return any(p.artifacts is not None or p.parents is not None for p in policies)


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
    model_format = _model_format(manifest)
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


# ---------------------------------------------------------------------------------------
# Kitfiles


@dataclass(frozen=True, kw_only=True)
class ParentReference:
    """A Kitfile field that names another ModelKit (kit pulls it when unpacking)."""

    field: str
    """``model.path`` or ``datasets[i].remotePath`` (``datasets[i].path``)."""
    text: str
    reference: refs.Reference | None
    """Parsed in the kit grammar; None when it has no registry host (kit's local storage)."""


def kitfile_of(evidence: Evidence) -> Mapping[str, Any] | None:
    """The Kitfile of the referenced artifact, when the evidence holds it: the config blob
    of a KitOps ModelKit, or the ``ml.kitops.modelkit.kitfile`` annotation of a ModelPack
    packed by kit. None when unknown, absent (a ModelPack not made by kit) or malformed."""
    if evidence.resolution is None:
        return None
    manifest = evidence.resolution.manifest
    if manifest.format == "kitops-modelkit":
        return evidence.config if isinstance(evidence.config, Mapping) else None
    if manifest.format == "modelpack":
        text = artifacts.kitfile_json(manifest)
        if text is None:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return data if isinstance(data, Mapping) else None
    return None


def _looks_like_reference(text: str) -> bool:
    """Kit's own test (``IsModelKitReference``): a ':' or '@', no URL scheme, and the text
    parses as a reference. kitpin's parser is stricter than kit's, never looser."""
    return ("://" not in text) and (":" in text or "@" in text)


def parent_references(kitfile: Mapping[str, Any]) -> tuple[ParentReference, ...]:
    """Every parent ModelKit a Kitfile names: ``model.path`` and ``datasets[].remotePath``
    (and, defensively, ``datasets[].path``) when they look like a ModelKit reference as kit
    decides it: containing ':' or '@' and parsing as a reference. A reference without a
    registry host is reported too (``reference`` None): kit would read it from local
    storage. Anything else (a file path, an ``s3://`` URL) is not a parent."""
    candidates: list[tuple[str, object]] = []
    model = kitfile.get("model")
    if isinstance(model, Mapping):
        candidates.append(("model.path", model.get("path")))
    datasets = kitfile.get("datasets")
    if isinstance(datasets, list):
        for i, dataset in enumerate(datasets):
            if isinstance(dataset, Mapping):
                candidates.append((f"datasets[{i}].remotePath", dataset.get("remotePath")))
                candidates.append((f"datasets[{i}].path", dataset.get("path")))
    found: list[ParentReference] = []
    for name, value in candidates:
        if not isinstance(value, str) or not _looks_like_reference(value):
            continue
        try:
            ref = refs.parse(value, grammar="kit")
        except errors.LocalReferenceError:
            found.append(ParentReference(field=name, text=value, reference=None))
            continue
        except errors.ReferenceError:
            continue
        found.append(ParentReference(field=name, text=value, reference=ref))
    return tuple(found)


def declared_licenses(kitfile: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """``(field, license)`` for every license a Kitfile declares: ``package.license``,
    ``model.license``, ``model.parts[].license``, ``datasets[].license``, ``code[].license``
    (the fields kit itself collects into a ModelPack's licenses). Blank values are skipped."""
    found: list[tuple[str, str]] = []

    def add(name: str, holder: object) -> None:
        if isinstance(holder, Mapping):
            value = holder.get("license")
            if isinstance(value, str) and value.strip():
                found.append((name, value))

    add("package.license", kitfile.get("package"))
    model = kitfile.get("model")
    add("model.license", model)
    if isinstance(model, Mapping) and isinstance(model.get("parts"), list):
        for i, part in enumerate(model["parts"]):
            add(f"model.parts[{i}].license", part)
    for section in ("datasets", "code"):
        items = kitfile.get(section)
        if isinstance(items, list):
            for i, item in enumerate(items):
                add(f"{section}[{i}].license", item)
    return tuple(found)


def _modelpack_licenses(config: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    descriptor = config.get("descriptor")
    if not isinstance(descriptor, Mapping):
        return ()
    licenses = descriptor.get("licenses")
    if not isinstance(licenses, list):
        return ()
    return tuple(
        (f"descriptor.licenses[{i}]", text)
        for i, text in enumerate(licenses)
        if isinstance(text, str) and text.strip()
    )


def _license_approved(expression: str, approved: frozenset[str]) -> bool:
    """Whether an SPDX license expression is covered by the approved identifiers: the whole
    text approved as is, or (without parentheses) ``A OR B`` with one alternative approved,
    ``A AND B`` with all approved. ``WITH`` exceptions are part of an identifier."""
    text = expression.strip()
    if text.casefold() in approved:
        return True
    if "(" in text or ")" in text:
        return False
    alternatives = text.split(" OR ")
    if len(alternatives) > 1:
        return any(_license_approved(a, approved) for a in alternatives)
    conjuncts = text.split(" AND ")
    if len(conjuncts) > 1:
        return all(c.strip().casefold() in approved for c in conjuncts)
    return False


def _model_format(manifest: Manifest) -> ModelFormat | None:
    if manifest.format == "kitops-modelkit" or artifacts.is_kit_index(manifest):
        return "kitops-modelkit"
    if manifest.format == "modelpack":
        return "modelpack"
    return None


# ---------------------------------------------------------------------------------------
# Evaluation


def evaluate(
    policies: Sequence[Policy],
    *,
    namespace: str,
    namespace_labels: Mapping[str, str],
    evidence: Sequence[Evidence],
) -> Verdict:
    """Evaluate every policy that applies in ``namespace`` against every reference.

    Pure and total: never raises for any evidence. Violations come in evidence (document)
    order, then policy order (cluster policies by name, then the namespace's by name).
    Rules whose data is absent are returned as :class:`Unchecked`; rules that do not apply
    to a reference (artifact rules for an artifact that is not a model, e.g. a container
    image in an image volume) are skipped. See :class:`Verdict` for the outcome.
    """
    applicable = matching(policies, namespace=namespace, namespace_labels=namespace_labels)
    violations: list[Violation] = []
    unchecked: list[Unchecked] = []
    for ev in evidence:
        for policy in applicable:
            _Check(policy, ev, namespace, violations, unchecked).run()
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

    def run(self) -> None:
        if self.policy.repositories is not None:
            self.repositories(self.policy.repositories)
        if self.policy.tags is not None:
            self.tags(self.policy.tags)
        if self.policy.artifacts is not None or self.policy.parents is not None:
            self.artifact_rules()

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
        if rules.require_digest and ref.digest is None:
            self.violation(
                Rule.TAGS_REQUIRE_DIGEST,
                Reason.DIGEST_REQUIRED,
                f"has no digest, and namespace {self.namespace} accepts only references "
                "written with a digest",
                f"write '{self.ev.site.prefix}{ref.name}:{ref.tag}@sha256:<digest>' in the "
                f"manifest (`kitpin resolve '{ref}'` prints the digest)",
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
        model_format = _model_format(manifest)
        if model_format is None:
            return  # not a model: the engine's own check (NotAModelKit) covers it
        if rules is not None and rules.formats and model_format not in rules.formats:
            self.formats(model_format, rules.formats)
        if manifest.format == "oci-index":
            for rule in names:
                if rule != Rule.ARTIFACTS_FORMATS:
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

    def formats(self, model_format: ModelFormat, allowed: frozenset[ModelFormat]) -> None:
        if "kitops-modelkit" in allowed:
            advice = "pack it with `kit pack` (without --use-model-pack)"
        else:
            advice = "pack it with `kit pack --use-model-pack`"
        self.violation(
            Rule.ARTIFACTS_FORMATS,
            Reason.FORMAT_NOT_ALLOWED,
            f"is {_FORMAT_NAMES[model_format]}, but namespace {self.namespace} accepts only "
            + " or ".join(_FORMAT_NAMES[f] for f in MODEL_FORMATS if f in allowed),
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
        model_format: ModelFormat,
    ) -> None:
        if kitfile is not None:
            declared = declared_licenses(kitfile)
            source = "Kitfile"
        elif model_format == "modelpack" and isinstance(self.ev.config, Mapping):
            declared = _modelpack_licenses(self.ev.config)
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
        for name, text in declared:
            if not _license_approved(text, approved):
                self.violation(
                    Rule.ARTIFACTS_LICENSES,
                    Reason.LICENSE_NOT_ALLOWED,
                    f"declares the license {text!r} ({source} {name}), which is not approved "
                    f"in namespace {self.namespace} (approved: {approved_list})",
                    "use a ModelKit under an approved license, or ask the platform team to "
                    f"approve it in {self.policy.display}",
                )

    def parents(self, parents: Sequence[ParentReference]) -> None:
        for parent in parents:
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
            elif parent.reference.digest is None:
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


def _quote_all(globs: Sequence[Glob]) -> str:
    return ", ".join(repr(g.pattern) for g in globs)


# ---------------------------------------------------------------------------------------
# Status


def _ready_condition(
    previous: Mapping[str, Any] | None,
    *,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """``status.conditions`` with the Ready condition set; ``lastTransitionTime`` moves only
    when the condition's status changes. Other condition types are kept."""
    conditions = []
    transition = types.rfc3339(now)
    for cond in (previous or {}).get("conditions") or []:
        if not isinstance(cond, Mapping):
            continue
        if cond.get("type") == READY:
            if cond.get("status") == status and isinstance(cond.get("lastTransitionTime"), str):
                transition = cond["lastTransitionTime"]
            continue
        conditions.append(dict(cond))
    ready: dict[str, Any] = {
        "type": READY,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": transition,
    }
    if generation is not None:
        ready["observedGeneration"] = generation
    return [ready, *conditions]


def accepted_status(
    policy: Policy, *, now: datetime, previous: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``status`` fields to merge when ``policy`` was parsed and is in force: Ready=True,
    ``observedGeneration``, ``ruleCount``, ``summary``. Counters are left alone."""
    return {
        "observedGeneration": policy.generation,
        "ruleCount": len(policy.rules),
        "summary": policy.summary,
        "conditions": _ready_condition(
            previous,
            status="True",
            reason=Reason.ACCEPTED,
            message=f"in force in mode {policy.mode}: {policy.summary}",
            generation=policy.generation,
            now=now,
        ),
    }


def rejected_status(
    error: errors.ConfigError | str,
    *,
    generation: int | None,
    now: datetime,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``status`` fields to merge when a stored policy does not parse (it got past the
    webhook, e.g. while kitpin was down): Ready=False with the parse error; it is not in
    force and the index must not contain it."""
    return {
        "observedGeneration": generation,
        "ruleCount": 0,
        "summary": "invalid: not in force",
        "conditions": _ready_condition(
            previous,
            status="False",
            reason=Reason.INVALID,
            message=str(error),
            generation=generation,
            now=now,
        ),
    }


def record_violations(
    previous: Mapping[str, Any] | None,
    violations: Sequence[Violation],
    *,
    object_ref: str,
    namespace: str,
    now: datetime,
    keep: int = RECENT_VIOLATIONS_KEPT,
) -> dict[str, Any]:
    """The ``status`` fields to merge after one object violated one policy: ``violations``
    (total) and ``violationsByRule`` incremented, ``recentViolations`` with the new entries
    first, trimmed to ``keep``. ``object_ref`` is ``Kind/name`` of the offending object.
    Pass the violations of ONE policy (:meth:`Verdict.by_policy`)."""
    previous = previous or {}
    total = previous.get("violations")
    by_rule_prev = previous.get("violationsByRule")
    by_rule: dict[str, int] = {
        k: v for k, v in (by_rule_prev or {}).items() if isinstance(k, str) and types.is_int(v)
    }
    for v in violations:
        by_rule[v.rule] = by_rule.get(v.rule, 0) + 1
    stamp = types.rfc3339(now)
    recent = [
        {
            "object": object_ref,
            "namespace": namespace,
            "rule": v.rule,
            "mode": v.mode,
            "reference": v.reference[:512],
            "time": stamp,
        }
        for v in violations
    ]
    old = previous.get("recentViolations")
    if isinstance(old, list):
        recent.extend(dict(e) for e in old if isinstance(e, Mapping))
    return {
        "violations": (total if types.is_int(total) else 0) + len(violations),
        "violationsByRule": by_rule,
        "recentViolations": recent[:keep],
    }
