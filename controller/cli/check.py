"""``kitpin check``: evaluate ModelKit policies against Kubernetes YAML without changing it,
as the validating webhook would (for CI). The evidence policy judges comes from
:func:`controller.admission.evidence.build`, the webhook's own: an object kitpin pinned is
judged as the user wrote it (its ``kitpin.dev/pinned`` records), a forged record is not.

Nothing passes silently: like Kyverno's CLI, every reference gets one result (``pass``,
``fail``, ``warn``, ``skip`` or ``error``, see :func:`_result`), every policy says which
objects it applied to or why it was skipped (a namespaceSelector that matched none of the
namespaces checked, with the ``--namespace-labels`` that would match), and
``--fail-on-skip`` turns anything not judged into exit code 1.

Signatures (a policy's ``signatures`` block) are verified online through
:class:`controller.admission.signing.Signing`, the webhook's own path: the keys a
``secretRef`` names come from the ``Secret`` objects among the ``--policy`` files (a cluster
policy's in ``--kitpin-namespace``), never from a cluster."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from controller import errors, manifests, policy, refs, signatures, sites
from controller.admission import evidence, pinning, signing
from controller.cli import common

if TYPE_CHECKING:
    from controller.types import Resolution

logger = logging.getLogger(__name__)

DESCRIPTION: Final = """\
Evaluate ModelKit policies (ClusterModelKitPolicy and ModelKitPolicy objects, read from the
--policy files) against Kubernetes YAML without changing it: the same evaluation, with the
same messages, as kitpin's validating webhook. Every violation is printed with its file,
line, document, object, JSON path and rule; the exit code says whether the webhook would
admit the objects (for CI: fail a pull request that names a ModelKit by a denied tag).

Input: -f FILE, -f DIR (-R for subdirectories) or -f - for stdin, repeatable, as for `kitpin
pin`. Every reference is checked, including ones that already carry a digest. An object
kitpin pinned (`kubectl get -o yaml`) is judged as the webhook judges it: each reference as
the user wrote it, read from kitpin's own kitpin.dev/pinned record.

Namespaces: each object is checked in its metadata.namespace, else --namespace, else
`default`; a ModelKitPolicy without metadata.namespace belongs to that same namespace. A
ClusterModelKitPolicy's namespaceSelector is matched against --namespace-labels (KEY=VALUE
for every namespace, NS:KEY=VALUE for namespace NS only), plus
kubernetes.io/metadata.name=<namespace>, which Kubernetes sets on every namespace. Objects
in namespaces the webhook ignores (kube-system, kube-public, kube-node-lease, settings
ignoredNamespaces, label kitpin.dev/ignore=true) are not checked, as the webhook ignores them.

Results: every reference is pass (every rule that applies was checked and holds), fail (an
enforce violation), warn (warn or audit violations only), skip (no policy applies in its
namespace, or a rule could not be checked) or error (invalid, not a ModelKit, or the
registry failed). Every policy is listed with the objects it applied to, or as skipped with
the reason (e.g. its namespaceSelector matched none of the namespaces checked: give their
labels with --namespace-labels).

--offline asks no registry: rules on the references themselves (repositories.*, tags.*) are
evaluated; artifact and parent rules need the manifest or the Kitfile and are reported as
not checked (their reference is a skip), and a non-ModelKit where a ModelKit is expected goes
unnoticed.
Without --offline, a reference is resolved where a ModelKit is expected or where a policy
reads the artifact, and its Kitfile is read only when a rule needs it; a registry that cannot
answer is an error (exit 1): the check could not complete.

Signatures (a policy's signatures block) are verified online, as the webhook verifies them:
the digest's cosign signature must verify with the policy's keys. A key kept in a Secret
(secretRef) is read from the Secret objects in the --policy files (`kubectl get secret NAME
-o yaml`), in the policy's namespace, or for a ClusterModelKitPolicy in --kitpin-namespace;
a signature that cannot be checked under an enforce rule is an error (exit 1), as the
webhook denies it.

Exit codes: 0 no enforce-mode violation and no error (warn and audit violations are printed
but pass; so do skips, unless --fail-on-skip); 1 an enforce-mode violation, an invalid
reference, a non-ModelKit where a ModelKit is expected, or a registry failure, and with
--fail-on-skip anything not judged: a skipped reference, a policy that applied to no object,
a reference kitpin cannot see (valueFrom); 2 usage, an invalid policy, unreadable or invalid
YAML.
"""

DEFAULT_NAMESPACE: Final = "default"
DEFAULT_KITPIN_NAMESPACE: Final = "kitpin"
"""Where kitpin runs when installed as docs/install.md does (``helm install -n kitpin``)."""
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
"""The label Kubernetes puts on every namespace, holding its name."""

Result = Literal["pass", "fail", "warn", "skip", "error"]
RESULTS: Final[tuple[Result, ...]] = get_args(Result)
"""What a reference's check came to (:func:`_result`), in the order the summary lists them."""

OBJECTS_LISTED: Final = 5
"""How many objects a policy's text line names before "and N more" (JSON lists all)."""


def add_parser(sub: Any) -> None:
    p = common.add_manifest_parser(
        sub,
        "check",
        summary="evaluate ModelKit policies against Kubernetes YAML (for CI); changes nothing",
        description=DESCRIPTION,
    )
    p.add_argument(
        "--policy",
        metavar="FILE|DIR",
        action="append",
        default=[],
        help="ClusterModelKitPolicy/ModelKitPolicy YAML (several documents, or a kind: List as "
        "kubectl get prints), or a directory of such files (repeatable; -R for subdirectories)",
    )
    p.add_argument(
        "-n",
        "--namespace",
        metavar="NS",
        default=None,
        help="namespace of objects and ModelKitPolicies that do not name one (default: default)",
    )
    p.add_argument(
        "--namespace-labels",
        metavar="[NS:]KEY=VALUE,...",
        action="append",
        default=[],
        help="labels to assume for the namespaces, for the namespaceSelector of cluster "
        "policies: KEY=VALUE,... for every namespace, NS:KEY=VALUE,... for namespace NS only "
        "(repeatable, merged; kubernetes.io/metadata.name=<namespace> is always added)",
    )
    p.add_argument(
        "--fail-on-skip",
        action="store_true",
        help="exit 1 when anything was not judged: a reference no policy applies to or with a "
        "rule that could not be checked, a policy that applied to no object, a reference "
        "kitpin cannot see (for CI: no false green)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="ask no registry: check only rules on the references themselves (repositories, "
        "tags, requireDigest); the others are reported as not checked",
    )
    p.add_argument(
        "--kitpin-namespace",
        metavar="NS",
        default=DEFAULT_KITPIN_NAMESPACE,
        help="the namespace kitpin runs in, where a ClusterModelKitPolicy's signature key "
        f"Secrets (secretRef) are (default: {DEFAULT_KITPIN_NAMESPACE}); the Secrets "
        "themselves come from the --policy files",
    )
    p.add_argument(
        "--output",
        "-o",
        choices=("text", "json"),
        default="text",
        help="text: one line per finding, one per policy, and a summary (default); json: "
        "one object (docs/check.md)",
    )
    common.add_resolution_flags(p)


@dataclass(frozen=True, kw_only=True)
class _Labels:
    """The namespace labels ``--namespace-labels`` says to assume."""

    every: Mapping[str, str] = field(default_factory=dict)
    """``KEY=VALUE``: on every namespace."""
    by_namespace: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """``NS:KEY=VALUE``: on namespace NS only (over ``every``)."""

    def of(self, namespace: str) -> dict[str, str]:
        """The labels of ``namespace``, with the name label Kubernetes sets on every one."""
        return {
            **self.every,
            **self.by_namespace.get(namespace, {}),
            NAMESPACE_NAME_LABEL: namespace,
        }


def _namespace_labels(given: Sequence[str]) -> _Labels:
    """``--namespace-labels team=ml,env=prod`` and ``--namespace-labels ml:env=prod``
    (repeatable, merged). A ``NS:`` prefix applies to the whole value; label keys, values
    and namespace names hold no ':', so the prefix is unambiguous."""
    every: dict[str, str] = {}
    by_namespace: dict[str, dict[str, str]] = {}
    for text in given:
        namespace, colon, pairs = text.partition(":")
        if colon and "=" not in namespace:
            namespace = namespace.strip()
            if not namespace:
                raise errors.ConfigError(
                    f"--namespace-labels {text!r}: the namespace before ':' is empty "
                    "(write ml:env=prod, or env=prod for every namespace)"
                )
            labels = by_namespace.setdefault(namespace, {})
        else:
            pairs, labels = text, every
        for item in pairs.split(","):
            key, eq, value = item.strip().partition("=")
            if not eq or not key.strip() or ":" in key:
                raise errors.ConfigError(
                    f"--namespace-labels {text!r}: {item.strip()!r} is not KEY=VALUE "
                    "(write team=ml,env=prod, or ml:env=prod for namespace ml only)"
                )
            labels[key.strip()] = value.strip()
    return _Labels(every=every, by_namespace=by_namespace)


def _policy_documents(obj: object) -> list[object]:
    """A document, or the items of a ``kind: List`` (what ``kubectl get cmkp -o yaml`` prints)."""
    if (
        isinstance(obj, Mapping)
        and obj.get("kind") == "List"
        and isinstance(obj.get("items"), list)
    ):
        return list(obj["items"])
    return [obj]


class _FileSecrets:
    """:class:`signing.KeySecrets` over the ``Secret`` objects of the ``--policy`` files: a
    policy's key Secret is given beside the policy, never read from a cluster."""

    def __init__(self, found: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
        self._found = found

    def peek(self, namespace: str, name: str, key: str) -> bytes | errors.ConfigError | None:
        secret = self._found.get((namespace, name))
        where = f"Secret {namespace}/{name}"
        if secret is None:
            return errors.ConfigError(
                f"{where} is not among the --policy files: add it there (`kubectl get secret "
                f"-n {namespace} {name} -o yaml`, or a Secret with stringData {key}: <PEM>)"
            )
        string_data = secret.get("stringData")
        data = secret.get("data")
        value: bytes | None = None
        if isinstance(string_data, Mapping) and isinstance(string_data.get(key), str):
            value = string_data[key].encode()
        elif isinstance(data, Mapping) and isinstance(data.get(key), str):
            try:
                value = base64.b64decode(data[key], validate=True)
            except ValueError:
                return errors.ConfigError(f"{where} key {key!r} is not base64")
        if value is None:
            return errors.ConfigError(f"{where} has no key {key!r}; set secretRef.key")
        if b"PRIVATE KEY" in value:
            return errors.ConfigError(
                f"{where} key {key!r} holds a private key; point secretRef.key at the public key"
            )
        return value

    async def read(self, namespace: str, name: str, key: str) -> bytes:
        value = self.peek(namespace, name, key)
        if isinstance(value, errors.ConfigError):
            raise value
        assert value is not None
        return value


def _secret_documents(
    obj: object, default_namespace: str
) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The ``Secret`` objects among ``obj`` (a document or a ``kind: List``), by namespace
    and name."""
    found: dict[tuple[str, str], Mapping[str, Any]] = {}
    for doc in _policy_documents(obj):
        if not isinstance(doc, Mapping) or doc.get("kind") != "Secret":
            continue
        metadata = doc.get("metadata")
        if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
            continue
        namespace = metadata.get("namespace")
        namespace = namespace if isinstance(namespace, str) and namespace else default_namespace
        found[(namespace, metadata["name"])] = doc
    return found


def _load_policies(
    args: argparse.Namespace,
) -> tuple[tuple[policy.Policy, ...], list[str], _FileSecrets]:
    """The policies of the ``--policy`` files, every problem found in them (with file and
    line, and the field the parser names), and the Secrets among them (signature keys)."""
    if common.STDIN in args.policy:
        raise manifests.ManifestError(
            "--policy - : policies are read from files or directories, not from stdin"
        )
    loaded = common.load_manifests(args, None, names=args.policy)
    default_namespace = args.namespace or DEFAULT_NAMESPACE
    found: dict[policy.PolicyRef, tuple[str, policy.Policy]] = {}
    problems: list[str] = []
    secrets: dict[tuple[str, str], Mapping[str, Any]] = {}
    for source, manifest in loaded:
        for document in manifest.documents:
            at = f"{source.name}:{document.line}"
            secrets.update(_secret_documents(document.obj, default_namespace))
            try:
                parsed = policy.parse_policies(
                    _policy_documents(document.obj), default_namespace=default_namespace
                )
            except errors.ConfigError as e:
                problems.append(f"{at}: {e}")
                continue
            for p in parsed:
                first = found.get(p.ref)
                if first is not None:
                    problems.append(
                        f"{at}: {p.display} is defined twice (first at {first[0]}); a cluster "
                        "holds one object per name"
                    )
                    continue
                found[p.ref] = (at, p)
    if not found and not problems:
        problems.append(
            f"no {policy.CLUSTER_KIND} or {policy.NAMESPACED_KIND} (apiVersion "
            f"{policy.API_VERSION}) in --policy {' '.join(args.policy)}"
        )
    return tuple(p for _, p in found.values()), problems, _FileSecrets(secrets)


@dataclass(kw_only=True)
class _Checked:
    """One reference of a reviewed object, and what the registry said about it."""

    located: manifests.Located
    ref: refs.Reference | None
    """None when the text is not a valid reference (``problems`` says why)."""
    applicable: tuple[policy.Policy, ...]
    resolve: bool = False
    resolution: Resolution | None = None
    config: Mapping[str, Any] | None = None
    signatures: Mapping[policy.PolicyRef, signatures.Outcome] | None = None
    """The signature check of the resolved digest, per policy with a ``signatures`` block."""
    problems: list[tuple[str, str]] = field(default_factory=list)
    """(reason, message) of each error: invalid, not a ModelKit, registry failures."""


@dataclass(frozen=True, kw_only=True)
class _Reviewed:
    """One object with references, checked as the validating webhook reviews it."""

    order: int
    """Index of its input (output follows the input order)."""
    file: str
    document: int
    """Index of its document, from 0."""
    line: int
    """Line of its first reference."""
    obj: Mapping[str, Any]
    """The object itself: its ``kitpin.dev/pinned`` records say what the user wrote."""
    kind: str
    name: str | None
    namespace: str
    labels: Mapping[str, str]
    applicable: tuple[policy.Policy, ...]
    references: tuple[_Checked, ...]

    def finding(self, located: manifests.Located, text: str, **details: object) -> _Finding:
        """A finding at ``located``: where it is (the fields every finding has), then
        ``details``; ``text`` is what its text line says after the location."""
        where = {
            "file": located.source,
            "line": located.line,
            "document": located.document + 1,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "path": located.pointer,
            "where": located.site.where,
            "reference": located.site.value,
        }
        return _Finding(
            order=(self.order, located.document, located.line, located.column),
            fields={**where, **details},
            text=text,
        )

    @property
    def display(self) -> str:
        return f"{self.kind}/{self.name}" if self.name else self.kind

    def identity(self) -> dict[str, Any]:
        """The object in JSON: where it is and what it is."""
        return {
            "file": self.file,
            "line": self.line,
            "document": self.document + 1,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
        }


def _object_at(document: object, base: str) -> Mapping[str, Any]:
    """The object at ``base``: the document, or an item of a list."""
    item = sites.get(document, base)
    return item if isinstance(item, Mapping) else {}


def _identity(
    document: object, base: str, obj: Mapping[str, Any]
) -> tuple[str, str | None, str | None]:
    """Kind, name and namespace of ``obj``, the object at ``base`` (the document, or a list
    item; an item of a typed list such as DeploymentList takes its kind from the list)."""
    kind = obj.get("kind")
    if not isinstance(kind, str) and "/items/" in base:
        parent = sites.get(document, base[: base.rfind("/items/")])
        list_kind = parent.get("kind") if isinstance(parent, Mapping) else None
        kind = list_kind.removesuffix("List") if isinstance(list_kind, str) else None
    metadata = obj.get("metadata")
    meta: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
    name, namespace = meta.get("name"), meta.get("namespace")
    return (
        kind if isinstance(kind, str) and kind else "object",
        name if isinstance(name, str) and name else None,
        namespace if isinstance(namespace, str) and namespace else None,
    )


def _review(
    loaded: Sequence[tuple[common.Input, manifests.Manifest]],
    policies: Sequence[policy.Policy],
    *,
    namespace: str,
    labels: _Labels,
    ignored_namespaces: frozenset[str],
    offline: bool,
) -> tuple[list[_Reviewed], int]:
    """Every object that has references, with the policies that apply to it and which of its
    references need the registry; and how many objects were skipped (ignored namespaces)."""
    reviewed: list[_Reviewed] = []
    skipped = 0
    for order, (_, manifest) in enumerate(loaded):
        for document in manifest.documents:
            by_object: dict[str, list[manifests.Located]] = {}
            for located in document.located:
                base = located.pointer[: len(located.pointer) - len(located.site.path)]
                by_object.setdefault(base, []).append(located)
            for base, located_sites in by_object.items():
                obj = _object_at(document.obj, base)
                kind, name, own_namespace = _identity(document.obj, base, obj)
                ns = own_namespace or namespace
                ns_labels = labels.of(ns)
                if ns in ignored_namespaces or ns_labels.get(pinning.IGNORE_LABEL) == "true":
                    logger.info("%s: skipped: namespace %s is ignored", located_sites[0], ns)
                    skipped += 1
                    continue
                applicable = policy.matching(policies, namespace=ns, namespace_labels=ns_labels)
                reads_artifact = not offline and policy.needs_resolution(applicable)
                checked: list[_Checked] = []
                for located in located_sites:
                    site = located.site
                    try:
                        ref = refs.parse(site.reference_text, grammar=site.grammar)
                    except errors.ReferenceError as e:
                        checked.append(
                            _Checked(
                                located=located,
                                ref=None,
                                applicable=applicable,
                                problems=[(e.reason, str(e))],
                            )
                        )
                        continue
                    resolve = not offline and (site.expects_modelkit or reads_artifact)
                    checked.append(
                        _Checked(located=located, ref=ref, applicable=applicable, resolve=resolve)
                    )
                reviewed.append(
                    _Reviewed(
                        order=order,
                        file=located_sites[0].source,
                        document=located_sites[0].document,
                        line=located_sites[0].line,
                        obj=obj,
                        kind=kind,
                        name=name,
                        namespace=ns,
                        labels=ns_labels,
                        applicable=applicable,
                        references=tuple(checked),
                    )
                )
    return reviewed, skipped


async def _look_up(
    wanted: Sequence[_Checked],
    access: common.Access,
    *,
    secrets: signing.KeySecrets | None = None,
    kitpin_namespace: str | None = None,
) -> None:
    """Resolve ``wanted`` (deduplicated, concurrently, within the deadline), flag
    non-ModelKits where a ModelKit is expected, read the config blob (Kitfile) of those
    whose policies need it (:func:`policy.needs_config`) and verify the signatures their
    policies ask for (:class:`signing.Signing`, as the webhook does: the key Secrets from
    ``secrets``, a cluster policy's in ``kitpin_namespace``); failures go into ``problems``."""
    from controller.resolver import ConfigCache

    async with common.registry(access) as (client, resolver):
        references = [c.ref for c in wanted if c.ref is not None]
        results = await common.resolve_all(resolver, references, access)
        for checked, result in zip(wanted, results, strict=True):
            value = checked.located.site.value
            if isinstance(result, errors.RegistryError):
                checked.problems.append((result.reason, f"cannot check '{value}': {result}"))
                continue
            checked.resolution = result
            problem = pinning.not_a_modelkit_message(checked.located.site, result)
            if problem is not None:
                checked.problems.append((pinning.Reason.NOT_A_MODELKIT, problem))

        configs = ConfigCache(client)
        limit = asyncio.Semaphore(common.CONCURRENCY)

        async def read_config(
            checked: _Checked, ref: refs.Reference, resolution: Resolution
        ) -> None:
            value = checked.located.site.value
            async with limit:
                try:
                    async with asyncio.timeout(access.deadline):
                        checked.config = await configs.get_config(
                            ref, resolution.manifest, credential=access.credential(ref)
                        )
                except TimeoutError:
                    checked.problems.append(
                        (
                            errors.RegistryTimeoutError.reason,
                            f"reading the Kitfile of '{value}' took longer than the "
                            f"{access.deadline:g}s deadline",
                        )
                    )
                except errors.RegistryError as e:
                    shown = common.for_cli(e, plain_http_registry=True)
                    checked.problems.append(
                        (e.reason, f"cannot read the Kitfile of '{value}': {shown}")
                    )

        signer = signing.Signing(
            common.signature_verifier(client), secrets=secrets, own_namespace=kitpin_namespace
        )

        async def verify(checked: _Checked, ref: refs.Reference, resolution: Resolution) -> None:
            async with limit:
                checked.signatures = outcomes = await signer.outcomes(
                    checked.applicable,
                    ref,
                    resolution.digest,
                    credential=access.credential(ref),
                    timeout=access.deadline,
                )
            # As the webhook denies it (failure: deny): an enforce rule that cannot be checked.
            for p, outcome in policy.signature_failures(checked.applicable, outcomes):
                checked.problems.append(
                    (
                        pinning.Reason.SIGNATURE_UNAVAILABLE,
                        f"cannot verify the signature of '{checked.located.site.value}' for "
                        f"{p.display} rule {policy.Rule.SIGNATURES_KEYS}: {outcome.reason} "
                        f"({outcome.error_reason}): "
                        + common.cli_advice(outcome.message, registry=ref.registry),
                    )
                )

        await asyncio.gather(
            *(
                read_config(c, c.ref, c.resolution)
                for c in wanted
                if c.ref is not None
                and c.resolution is not None
                and policy.needs_config(c.applicable, c.resolution.manifest)
            ),
            *(
                verify(c, c.ref, c.resolution)
                for c in wanted
                if c.ref is not None
                and c.resolution is not None
                and policy.signature_policies(c.applicable)
            ),
        )


@dataclass(frozen=True, kw_only=True)
class _Finding:
    order: tuple[int, int, int, int]
    fields: dict[str, Any]
    text: str
    """What the text line says after the location."""

    @property
    def line(self) -> str:
        f = self.fields
        obj = f"{f['kind']}/{f['name']}" if f["name"] else f["kind"]
        return f"{f['file']}:{f['line']}: doc {f['document']} {obj} {f['path']}: {self.text}"


@dataclass(kw_only=True)
class _Tally:
    """What one policy did: the objects it applied to, and its result per reference."""

    policy: policy.Policy
    objects: list[_Reviewed] = field(default_factory=list)
    results: dict[Result, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))


@dataclass(kw_only=True)
class _Report:
    violations: list[_Finding] = field(default_factory=list)
    errors: list[_Finding] = field(default_factory=list)
    unchecked: list[_Finding] = field(default_factory=list)
    references: list[_Finding] = field(default_factory=list)
    """One per reference: its result (and why, for a skip)."""
    tallies: list[_Tally] = field(default_factory=list)
    """One per policy, in policy order."""

    def count(self, result: Result) -> int:
        return sum(f.fields["result"] == result for f in self.references)


def _rule_finding(
    obj: _Reviewed,
    at: Mapping[str, manifests.Located],
    item: policy.Violation | policy.Unchecked,
    tag: str,
    text: str,
    *,
    message: str,
) -> _Finding:
    """A violation (with its reason) or a rule not checked: policy, rule, mode, message."""
    details: dict[str, object] = {"policy": str(item.policy), "rule": item.rule}
    if isinstance(item, policy.Violation):
        details["reason"] = item.reason
    return obj.finding(
        at[item.path],
        f"[{tag}] {item.policy} rule {item.rule}: {text}",
        **details,
        mode=item.mode,
        message=message,
    )


def _result(
    violations: Sequence[policy.Violation],
    unchecked: Sequence[policy.Unchecked],
    *,
    problems: bool,
    judged: bool,
) -> Result:
    """What one reference's check came to, for the policies that applied to it (or one of
    them): ``fail`` an enforce violation; ``error`` the reference is invalid, not a
    ModelKit, or the registry failed; ``skip`` no policy judged it (``judged`` False) or a
    rule could not be checked, so kitpin cannot say it passes (its warn and audit
    violations are still reported); ``warn`` warn or audit violations only; ``pass`` every
    rule that applies was checked and holds."""
    if any(v.mode == "enforce" for v in violations):
        return "fail"
    if problems:
        return "error"
    if not judged or unchecked:
        return "skip"
    if violations:
        return "warn"
    return "pass"


def _findings(
    objects: Sequence[_Reviewed], policies: Sequence[policy.Policy], *, offline: bool
) -> _Report:
    """Evaluate every object's policies (:func:`policy.evaluate`, as the webhook does) and
    turn violations, errors and rules not checked into findings, in input order; give every
    reference its result, and every policy its tally."""
    report = _Report()
    tallies = {p.ref: _Tally(policy=p) for p in sorted(policies, key=policy.policy_order)}
    note = " (offline)" if offline else ""
    for obj in objects:
        for checked in obj.references:
            for reason, message in checked.problems:
                report.errors.append(
                    obj.finding(
                        checked.located,
                        f"[error] {reason}: {message}",
                        reason=reason,
                        message=message,
                    )
                )
        found = [
            evidence.Found(site=c.located.site, ref=c.ref)
            for c in obj.references
            if c.ref is not None
        ]
        verdict = policy.Verdict()
        if obj.applicable and found:
            # What the webhook's policy sees: each reference as the user wrote it (the
            # object's kitpin.dev/pinned records), with what the registry said.
            judged = evidence.build(
                obj.obj,
                found,
                resolutions={
                    c.located.site.path: c.resolution
                    for c in obj.references
                    if c.resolution is not None
                },
                configs={
                    c.located.site.path: c.config for c in obj.references if c.config is not None
                },
                verified={
                    c.located.site.path: c.signatures
                    for c in obj.references
                    if c.signatures is not None
                },
            )
            verdict = policy.evaluate(
                obj.applicable,
                namespace=obj.namespace,
                namespace_labels=obj.labels,
                evidence=judged,
            )
        at = {c.located.site.path: c.located for c in obj.references}
        for v in verdict.violations:
            said = v.message.removeprefix(f"{v.policy} rule {v.rule}: ")
            report.violations.append(_rule_finding(obj, at, v, v.mode, said, message=v.message))
        for u in verdict.unchecked:
            text = f"not checked{note}: {u.why}"
            report.unchecked.append(_rule_finding(obj, at, u, "unchecked", text, message=u.why))
        for p in obj.applicable:
            tallies[p.ref].objects.append(obj)
        for c in obj.references:
            path = c.located.site.path
            mine = [v for v in verdict.violations if v.path == path]
            missing = [u for u in verdict.unchecked if u.path == path]
            result = _result(mine, missing, problems=bool(c.problems), judged=bool(obj.applicable))
            why = None
            if result == "skip" and not obj.applicable:
                why = (
                    f"no policy applies in namespace {obj.namespace} "
                    f"(labels {_labels_text(obj.labels)})"
                    if policies
                    else "no --policy given: only the reference itself was checked"
                )
            elif result == "skip":
                why = f"not checked{note}: " + ", ".join(f"{u.policy} {u.rule}" for u in missing)
            report.references.append(
                obj.finding(
                    c.located,
                    f"[skip] {why}",
                    result=result,
                    policies=[str(p.ref) for p in obj.applicable],
                    message=why,
                )
            )
            for p in obj.applicable:
                tallies[p.ref].results[
                    _result(
                        [v for v in mine if v.policy == p.ref],
                        [u for u in missing if u.policy == p.ref],
                        problems=bool(c.problems),
                        judged=True,
                    )
                ] += 1
    report.tallies = list(tallies.values())
    for findings in (report.violations, report.errors, report.unchecked, report.references):
        findings.sort(key=lambda f: f.order)
    return report


def _labels_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _why_skipped(p: policy.Policy, objects: Sequence[_Reviewed], given_labels: bool) -> str:
    """Why policy ``p`` applied to none of ``objects``, and what would make it apply."""
    if not objects:
        return "no object with ModelKit references was checked"
    namespaces: dict[str, Mapping[str, str]] = {}
    for o in objects:  # input order: the first object's namespace is the example
        namespaces.setdefault(o.namespace, o.labels)
    if p.kind == policy.NAMESPACED_KIND:
        return (
            f"it applies in namespace {p.namespace} only, and none of the objects checked is "
            f"there (checked: {', '.join(namespaces)}; an object is checked in its "
            "metadata.namespace, else --namespace)"
        )
    if given_labels:
        shown = list(namespaces.items())[:OBJECTS_LISTED]
        seen = "; ".join(f"{ns}: {_labels_text(labels)}" for ns, labels in shown)
        if len(namespaces) > OBJECTS_LISTED:
            seen += "; ..."
    else:
        seen = (
            f"{', '.join(namespaces)}; without --namespace-labels a namespace has only the "
            f"label {NAMESPACE_NAME_LABEL}=<its name>"
        )
    selector = p.namespace_selector
    example = next(iter(namespaces))
    if selector is not None and selector.match_labels and not selector.match_expressions:
        wanted = _labels_text(selector.match_labels)
        hint = (
            f"--namespace-labels {wanted} (every namespace) or --namespace-labels "
            f"{example}:{wanted} (namespace {example} only)"
        )
    else:
        hint = (
            "--namespace-labels [NS:]KEY=VALUE,... giving labels the selector matches "
            f"(e.g. --namespace-labels {example}:KEY=VALUE)"
        )
    return (
        f"its namespaceSelector {selector} matches none of the namespaces checked ({seen}); "
        f"kitpin check cannot read namespace labels from a cluster: assume them with {hint}"
    )


def _objects_text(objects: Sequence[_Reviewed]) -> str:
    """``Deployment/llama, Pod/eval in ml; Pod/x in default`` (at most
    :data:`OBJECTS_LISTED` objects, then "and N more")."""
    by_namespace: dict[str, list[str]] = {}
    for o in objects[:OBJECTS_LISTED]:
        by_namespace.setdefault(o.namespace, []).append(o.display)
    text = "; ".join(f"{', '.join(names)} in {ns}" for ns, names in by_namespace.items())
    if len(objects) > OBJECTS_LISTED:
        text += f"; and {len(objects) - OBJECTS_LISTED} more"
    return text


def _results_text(results: Mapping[Result, int]) -> str:
    return ", ".join(f"{results[r]} {r}" for r in RESULTS)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def run(args: argparse.Namespace) -> int:
    config = common.load_settings(args)
    deadline = common.deadline_seconds(args, config)
    labels = _namespace_labels(args.namespace_labels)
    policies: tuple[policy.Policy, ...] = ()
    secrets = _FileSecrets({})
    if args.policy:
        policies, problems, secrets = _load_policies(args)
        for problem in problems:
            print(f"kitpin: invalid policy: {problem}", file=sys.stderr)
        if problems:
            return common.EXIT_USAGE
    loaded = common.load_manifests(args, config.admission.sites)
    objects, ignored = _review(
        loaded,
        policies,
        namespace=args.namespace or DEFAULT_NAMESPACE,
        labels=labels,
        ignored_namespaces=config.admission.ignored_namespaces,
        offline=args.offline,
    )
    wanted = [c for obj in objects for c in obj.references if c.resolve]
    if wanted:
        access = common.registry_access(args, config, deadline, (c.ref for c in wanted if c.ref))
        asyncio.run(
            _look_up(
                wanted,
                access,
                secrets=secrets,
                kitpin_namespace=args.kitpin_namespace,
            )
        )
    report = _findings(objects, policies, offline=args.offline)
    unresolvable = [
        {
            "file": u.source,
            "line": u.line,
            "document": document.index + 1,
            "object": u.obj,
            "path": u.unresolvable.path,
            "where": u.unresolvable.where,
            "message": u.unresolvable.why,
        }
        for _, manifest in loaded
        for document in manifest.documents
        for u in document.unresolvable
    ]
    given_labels = bool(labels.every or labels.by_namespace)
    skipped_policies = {
        t.policy.ref: _why_skipped(t.policy, objects, given_labels)
        for t in report.tallies
        if not t.objects
    }

    modes: dict[str, int] = {
        mode: sum(f.fields["mode"] == mode for f in report.violations) for mode in policy.MODES
    }
    results = {r: report.count(r) for r in RESULTS}
    not_judged = results["skip"] + len(skipped_policies) + len(unresolvable)
    code = common.EXIT_OK
    if modes["enforce"] or report.errors or (args.fail_on_skip and not_judged):
        code = common.EXIT_FAILED
    summary: dict[str, object] = {
        "references": len(report.references),
        "objects": len(objects),
        "results": results,
        "violations": len(report.violations),
        **modes,
        "errors": len(report.errors),
        "unchecked": len(report.unchecked),
        "unresolvable": len(unresolvable),
        "ignored": ignored,
        "policies": len(policies),
        "policiesSkipped": len(skipped_policies),
        "offline": bool(args.offline),
        "failOnSkip": bool(args.fail_on_skip),
        "exitCode": code,
    }
    if args.output == "json":
        print(
            json.dumps(
                {
                    "violations": [f.fields for f in report.violations],
                    "errors": [f.fields for f in report.errors],
                    "unchecked": [f.fields for f in report.unchecked],
                    "references": [f.fields for f in report.references],
                    "policies": [
                        {
                            "policy": str(t.policy.ref),
                            "kind": t.policy.kind,
                            "name": t.policy.name,
                            "namespace": t.policy.namespace,
                            "result": "skipped" if t.policy.ref in skipped_policies else "applied",
                            "objects": [o.identity() for o in t.objects],
                            "results": t.results,
                            "message": skipped_policies.get(t.policy.ref),
                        }
                        for t in report.tallies
                    ],
                    "unresolvable": unresolvable,
                    "summary": summary,
                },
                indent=2,
            )
        )
        return code

    for u in unresolvable:
        common.warn(f"{u['file']}:{u['line']}: {u['object']}: {u['where']}: {u['message']}")
    for finding in sorted([*report.violations, *report.errors], key=lambda f: f.order):
        print(finding.line)
    # What was not judged: rules not checked, and references no policy applies to (with
    # --policy; without it every reference is a skip, which the summary says once).
    unjudged = [
        f for f in report.references if f.fields["result"] == "skip" and not f.fields["policies"]
    ]
    for finding in sorted([*report.unchecked, *(unjudged if policies else [])], key=_by_order):
        print(finding.line)
    for t in report.tallies:
        why = skipped_policies.get(t.policy.ref)
        if why is not None:
            print(f"policy {t.policy.ref}: skipped: {why}")
        else:
            print(
                f"policy {t.policy.ref}: applied to {_plural(len(t.objects), 'object')} "
                f"({_objects_text(t.objects)}): {_results_text(t.results)}"
            )
    parts = [
        f"{_plural(len(report.references), 'reference')} in {_plural(len(objects), 'object')}: "
        + _results_text(results),
        f"{_plural(len(report.violations), 'violation')} ({modes['enforce']} enforce, "
        f"{modes['warn']} warn, {modes['audit']} audit)",
        _plural(len(policies), "policy", "policies")
        + (f" ({len(skipped_policies)} skipped)" if skipped_policies else ""),
    ]
    if report.unchecked:
        parts.append(
            f"{_plural(len(report.unchecked), 'rule')} not checked"
            f"{' (offline)' if args.offline else ''}"
        )
    if unresolvable:
        parts.append(f"{_plural(len(unresolvable), 'reference')} kitpin cannot see")
    if ignored:
        parts.append(f"{_plural(ignored, 'object')} in ignored namespaces")
    print("; ".join(parts))
    if not_judged and not args.fail_on_skip:
        common.warn(
            "not everything was judged ("
            + ", ".join(
                text
                for n, text in (
                    (results["skip"], f"{_plural(results['skip'], 'reference')} skipped"),
                    (
                        len(skipped_policies),
                        f"{_plural(len(skipped_policies), 'policy', 'policies')} applied to "
                        "nothing",
                    ),
                    (len(unresolvable), f"{len(unresolvable)} kitpin cannot see"),
                )
                if n
            )
            + "); --fail-on-skip makes that fail the check"
        )
    return code


def _by_order(f: _Finding) -> tuple[int, int, int, int]:
    return f.order
