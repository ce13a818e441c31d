"""ModelKit policies: ``ClusterModelKitPolicy`` and ``ModelKitPolicy`` objects, parsed and
evaluated. Pure: no kopf, no Kubernetes client, no HTTP, no clock (callers pass ``now``).

Callers import the package and call through it (``from controller import policy`` …
``policy.evaluate(...)``); it re-exports the public names of its modules, one concern each:

    ==============  ==================================================================
    module          what
    ==============  ==================================================================
    ``model``       the values: :class:`Policy` and its rule blocks, :class:`Glob`,
                    :class:`LabelSelector`, :class:`Evidence`, :class:`Violation`,
                    :class:`Unchecked`, :class:`Verdict`, :class:`Rule`, :class:`Reason`,
                    :func:`policy_order`, the CRD's names and limits
    ``kitfile``     reading a Kitfile: :func:`kitfile_of`, :func:`parent_references`,
                    :func:`declared_licenses`, license matching
    ``parse``       :func:`parse_policy`, :func:`parse_policies` (the parser)
    ``evaluation``  :func:`matching`, :func:`evaluate`, :func:`needs_resolution`,
                    :func:`needs_kitfile`, :func:`needs_config`
    ``status``      :func:`accepted_status`, :func:`rejected_status`,
                    :func:`record_violations`
    ==============  ==================================================================

    Dependencies (a module imports only those to its left): ``model ← kitfile ← evaluation``,
    ``model ← parse``, ``model ← status``. Below the package: ``controller.artifacts`` (the one
    "is this a ModelKit" rule, :func:`~controller.artifacts.model_format`), ``types``, ``refs``,
    ``sites``, ``errors``.

Design note
===========

The model
    A policy (:class:`Policy`) is one object of the ``kitpin.dev/v1alpha1`` CRDs in
    ``deploy/crds/``. A ``ClusterModelKitPolicy`` applies in every namespace its
    ``namespaceSelector`` matches (absent or empty: all namespaces); a ``ModelKitPolicy``
    applies in its own namespace only. A policy has a ``mode`` and up to five rule blocks,
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
    ``signatures``    ``signatures.keys``: the resolved digest has no cosign signature
                      (``SignatureMissing``) or none by a listed key over this digest
                      (``SignatureInvalid``); keys inline (parsed here) or in a Secret
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
    Here: :func:`parse_policy` in ``parse`` (everything the CRD schema cannot check: glob
    syntax, label selector syntax, dead or contradictory rules), :func:`matching`,
    :func:`evaluate`, :func:`needs_resolution` / :func:`needs_kitfile` / :func:`needs_config`
    in ``evaluation`` (so the engine fetches a config blob only when a rule reads the Kitfile),
    and the status builders :func:`accepted_status`, :func:`rejected_status`,
    :func:`record_violations` in ``status``.

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
    :class:`~controller.types.Resolution`, the config blob and the signature check's
    outcome per policy (:mod:`controller.admission.signing` verifies; here is only what the
    outcome means). A rule that needs data that is absent is reported as :class:`Unchecked`,
    never guessed: the engine runs :func:`evaluate` once before resolving (reference rules
    only: cheap, and a ``requireDigest`` denial must come before any pinning), once after
    resolving with ``blocks={"signatures"}`` (a signature denial must come before pinning
    too) and once with the artifacts. A signature check that could not be made is
    :class:`Unchecked`; in mode ``enforce`` the engine also treats it as a failure that
    follows the ``failure`` setting (:func:`signature_failures`).
"""

from __future__ import annotations

from controller.artifacts import MODEL_FORMATS
from controller.policy.evaluation import (
    evaluate,
    immutable_tag,
    matching,
    needs_config,
    needs_first_seen,
    needs_kitfile,
    needs_resolution,
    signature_failures,
    signature_policies,
)
from controller.policy.kitfile import (
    ParentReference,
    declared_licenses,
    kitfile_of,
    parent_references,
)
from controller.policy.model import (
    API_VERSION,
    CLUSTER_KIND,
    DEFAULT_MODE,
    DEFAULT_SECRET_KEY,
    DEFAULT_SIGNATURE_REQUIREMENT,
    GROUP,
    KINDS,
    LAYER_KINDS,
    MAX_LICENSE_LENGTH,
    MAX_LICENSES,
    MAX_PATTERNS,
    MAX_REPOSITORY_PATTERN_LENGTH,
    MAX_SECRET_KEY_LENGTH,
    MAX_SECRET_NAME_LENGTH,
    MAX_SELECTOR_TERMS,
    MAX_SELECTOR_VALUES,
    MAX_SIGNATURE_KEYS,
    MAX_TAG_PATTERN_LENGTH,
    MODES,
    NAMESPACED_KIND,
    READY,
    RECENT_VIOLATIONS_KEPT,
    SIGNATURE_REQUIREMENTS,
    SUMMARY_LENGTH,
    VERSION,
    ArtifactRules,
    Evidence,
    FirstSeen,
    Glob,
    LabelSelector,
    LicenseRules,
    Mode,
    Outcome,
    ParentRules,
    Policy,
    PolicyKind,
    PolicyRef,
    Reason,
    RepositoryRules,
    Requirement,
    Rule,
    SecretKeyRef,
    SignatureKey,
    SignatureRequirement,
    SignatureRules,
    TagRules,
    Unchecked,
    Verdict,
    Violation,
    policy_order,
)
from controller.policy.parse import parse_policies, parse_policy
from controller.policy.status import accepted_status, record_violations, rejected_status
from controller.types import ModelFormat

__all__ = [
    "API_VERSION",
    "CLUSTER_KIND",
    "DEFAULT_MODE",
    "DEFAULT_SECRET_KEY",
    "DEFAULT_SIGNATURE_REQUIREMENT",
    "GROUP",
    "KINDS",
    "LAYER_KINDS",
    "MAX_LICENSES",
    "MAX_LICENSE_LENGTH",
    "MAX_PATTERNS",
    "MAX_REPOSITORY_PATTERN_LENGTH",
    "MAX_SECRET_KEY_LENGTH",
    "MAX_SECRET_NAME_LENGTH",
    "MAX_SELECTOR_TERMS",
    "MAX_SELECTOR_VALUES",
    "MAX_SIGNATURE_KEYS",
    "MAX_TAG_PATTERN_LENGTH",
    "MODEL_FORMATS",
    "MODES",
    "NAMESPACED_KIND",
    "READY",
    "RECENT_VIOLATIONS_KEPT",
    "SIGNATURE_REQUIREMENTS",
    "SUMMARY_LENGTH",
    "VERSION",
    "ArtifactRules",
    "Evidence",
    "FirstSeen",
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
    "SecretKeyRef",
    "SignatureKey",
    "SignatureRequirement",
    "SignatureRules",
    "TagRules",
    "Unchecked",
    "Verdict",
    "Violation",
    "accepted_status",
    "declared_licenses",
    "evaluate",
    "immutable_tag",
    "kitfile_of",
    "matching",
    "needs_config",
    "needs_first_seen",
    "needs_kitfile",
    "needs_resolution",
    "parent_references",
    "parse_policies",
    "parse_policy",
    "policy_order",
    "record_violations",
    "rejected_status",
    "signature_failures",
    "signature_policies",
]
