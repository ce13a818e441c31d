"""Parsing policy objects: :func:`parse_policy` and :func:`parse_policies`.

One concern, the longest module of the package: :class:`_PolicyParser` checks everything the
CRD schema checks (a file given to ``kitpin check`` never met the apiserver) and what it cannot
(glob and label-selector syntax, rules that can never match or contradict each other), and
reports every problem at once, each with its field path. Its methods follow the shape of a
policy (metadata, namespaceSelector, the five rule blocks, glob patterns); splitting them
would only scatter one walk over one object.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, TypeVar, cast

from controller import artifacts, errors, refs, signatures, types
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
    SELECTOR_OPERATORS,
    SIGNATURE_REQUIREMENTS,
    ArtifactRules,
    Glob,
    LabelSelector,
    LicenseRules,
    Mode,
    ParentRules,
    Policy,
    PolicyKind,
    RepositoryRules,
    Requirement,
    SecretKeyRef,
    SignatureKey,
    SignatureRequirement,
    SignatureRules,
    TagRules,
    policy_order,
)

_T = TypeVar("_T")


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
    return tuple(sorted(policies, key=policy_order))


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
_SECRET_KEY_RE: Final = re.compile(r"[-._a-zA-Z0-9]+")

_SPEC_FIELDS: Final = (
    "mode",
    "namespaceSelector",
    "repositories",
    "tags",
    "artifacts",
    "parents",
    "signatures",
)
_SELECTOR_FIELDS: Final = ("matchLabels", "matchExpressions")
_EXPRESSION_FIELDS: Final = ("key", "operator", "values")
_REPOSITORY_FIELDS: Final = ("allowed", "denied", "mode")
_TAG_FIELDS: Final = ("allowed", "denied", "requireDigest", "immutable", "mode")
_ARTIFACT_FIELDS: Final = ("formats", "requiredLayers", "licenses", "mountableImageVolumes", "mode")
_LICENSE_FIELDS: Final = ("allowed", "allowUndeclared")
_PARENT_FIELDS: Final = ("requireDigest", "mode")
_SIGNATURE_FIELDS: Final = ("keys", "require", "logKeys", "requireLogEntry", "mode")
_SIGNATURE_KEY_FIELDS: Final = ("name", "publicKey", "secretRef")
_SECRET_REF_FIELDS: Final = ("name", "key")

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


class _PolicyParser:
    """One parse of one object; collects every problem with its field path."""

    def __init__(self, obj: Mapping[str, Any], default_namespace: str | None) -> None:
        self.obj = obj
        self.default_namespace = default_namespace
        self.problems: list[str] = []
        self.label = "policy"
        self.kind: PolicyKind = CLUSTER_KIND
        self.namespace: str | None = None

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
        self.kind, self.namespace = policy_kind, namespace

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
        signature_rules = self.block(spec, "signatures", self.signatures)
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
            signatures=signature_rules,
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
        if operator not in SELECTOR_OPERATORS:
            self.problem(
                f"{path}.operator",
                f"is {operator!r}; write one of {', '.join(SELECTOR_OPERATORS)}",
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
        immutable = self.globs(value, "immutable", path, self.tag_glob)
        require_digest = self.boolean(value, "requireDigest", f"{path}.requireDigest", False)
        if (
            not require_digest
            and not allowed
            and not denied
            and not immutable
            and "allowed" not in value
            and "denied" not in value
            and "immutable" not in value
        ):
            self.problem(
                path,
                "states no rule; list allowed, denied or immutable tags, set "
                "requireDigest: true, or remove it",
            )
        self.dead_allowed(allowed, denied, path, what="tag")
        return TagRules(
            allowed=tuple(g for _, g in allowed),
            denied=tuple(g for _, g in denied),
            require_digest=require_digest,
            immutable=tuple(g for _, g in immutable),
            mode=mode,
        )

    def artifacts(self, value: Mapping[str, Any], path: str) -> ArtifactRules | None:
        self.unknown_fields(value, path, _ARTIFACT_FIELDS)
        mode = self.mode(value, f"{path}.mode")
        formats: set[types.ModelFormat] = set()
        for item_path, text in self.strings(
            value, "formats", f"{path}.formats", limit=len(artifacts.MODEL_FORMATS)
        ):
            if text not in artifacts.MODEL_FORMATS:
                self.problem(
                    item_path, f"is {text!r}; write one of {', '.join(artifacts.MODEL_FORMATS)}"
                )
            else:
                formats.add(text)
        layers: list[str] = []
        for item_path, text in self.strings(
            value, "requiredLayers", f"{path}.requiredLayers", limit=len(LAYER_KINDS)
        ):
            if text not in LAYER_KINDS:
                self.problem(item_path, f"is {text!r}; write one of {', '.join(LAYER_KINDS)}")
                continue
            possible = [
                f for f in (formats or artifacts.MODEL_FORMATS) if text in _FORMAT_LAYER_KINDS[f]
            ]
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
        mountable = value.get("mountableImageVolumes", False)
        if not isinstance(mountable, bool):
            self.problem(
                f"{path}.mountableImageVolumes",
                f"expected true or false, got {types.json_type(mountable)}",
            )
            mountable = False
        if (
            not formats
            and not layers
            and licenses is None
            and not mountable
            and not self.has_problems_under(path)
        ):
            self.problem(
                path,
                "states no rule; list formats, requiredLayers or licenses, or set "
                "mountableImageVolumes, or remove it",
            )
        return ArtifactRules(
            formats=frozenset(formats),
            required_layers=tuple(layers),
            licenses=licenses,
            mountable_image_volumes=mountable,
            mode=mode,
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

    def signatures(self, value: Mapping[str, Any], path: str) -> SignatureRules | None:
        self.unknown_fields(value, path, _SIGNATURE_FIELDS)
        mode = self.mode(value, f"{path}.mode")
        require: SignatureRequirement = DEFAULT_SIGNATURE_REQUIREMENT
        raw_require = value.get("require")
        if raw_require is not None:
            if raw_require not in SIGNATURE_REQUIREMENTS:
                self.problem(
                    f"{path}.require",
                    f"is {raw_require!r}; write any (one listed key's signature is enough) or "
                    "all (every listed key must have signed)",
                )
            else:
                require = cast(SignatureRequirement, raw_require)
        keys = self.signature_keys(value.get("keys"), f"{path}.keys")
        log_keys: tuple[signatures.PublicKey, ...] = ()
        raw_log = value.get("logKeys")
        if raw_log is not None:
            try:
                log_keys = signatures.parse_keys(raw_log, field=f"{path}.logKeys")
            except signatures.SignatureKeyError as e:
                self.problems.append(str(e))
        require_log = self.boolean(value, "requireLogEntry", f"{path}.requireLogEntry", False)
        if require_log and raw_log is None:
            self.problem(
                f"{path}.requireLogEntry",
                "is true but no logKeys are listed: a log entry can only be verified with the "
                "transparency log's public key; list it in logKeys, or remove requireLogEntry",
            )
        if not keys:
            return None
        return SignatureRules(
            keys=keys,
            require=require,
            log_keys=log_keys,
            require_log_entry=require_log,
            mode=mode,
        )

    def signature_keys(self, items: object, path: str) -> tuple[SignatureKey, ...]:
        """``signatures.keys``: 1 to :data:`MAX_SIGNATURE_KEYS` named keys, each inline
        (``publicKey``, parsed here: a key kitpin cannot use is refused now, naming the
        field) or in a Secret (``secretRef``, read at admission)."""
        if items is None:
            self.problem(path, "is missing; list the public keys signatures must verify with")
            return ()
        if not isinstance(items, list):
            self.problem(
                path, f"is {types.json_type(items)}, expected a list of {{name, publicKey}}"
            )
            return ()
        if not items:
            self.problem(path, "is empty; list at least one key, or remove spec.signatures")
            return ()
        if len(items) > MAX_SIGNATURE_KEYS:
            self.problem(
                path,
                f"lists {len(items)} keys, more than {MAX_SIGNATURE_KEYS}; each signature is "
                "tried with each key",
            )
            return ()
        keys: list[SignatureKey] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            where = f"{path}[{index}]"
            if not isinstance(item, Mapping):
                self.problem(
                    where,
                    f"is {types.json_type(item)}, expected an object {{name, publicKey}} or "
                    "{name, secretRef}",
                )
                continue
            self.unknown_fields(item, where, _SIGNATURE_KEY_FIELDS)
            name = item.get("name")
            if not isinstance(name, str) or not name.strip():
                self.problem(
                    f"{where}.name",
                    f"is {types.json_type(name)}, expected a non-empty name (reported when the "
                    "key verifies a signature)",
                )
                name = None
            elif len(name) > 253 or not name.isprintable():
                self.problem(f"{where}.name", "must be 1 to 253 printable characters")
                name = None
            elif name in seen:
                self.problem(
                    f"{where}.name",
                    f"{name!r} is also the name of {path}[{seen[name]}]; names must be unique "
                    "(a verified signature is reported by its key's name)",
                )
                name = None
            else:
                seen[name] = index
            inline, secret = item.get("publicKey"), item.get("secretRef")
            if (inline is None) == (secret is None):
                self.problem(
                    where,
                    "give exactly one of publicKey (the PEM of cosign.pub) and secretRef (a "
                    "Secret holding it)",
                )
                continue
            if name is None:
                continue
            if inline is not None:
                if not isinstance(inline, str):
                    self.problem(
                        f"{where}.publicKey",
                        f"is {types.json_type(inline)}, expected the PEM of the public key "
                        "(cosign.pub)",
                    )
                    continue
                try:
                    key = signatures.parse_public_key(name, inline, field=f"{where}.publicKey")
                except signatures.SignatureKeyError as e:
                    self.problems.append(str(e))
                    continue
                keys.append(SignatureKey(name=name, field=where, public_key=key))
                continue
            ref = self.secret_ref(secret, f"{where}.secretRef")
            if ref is not None:
                keys.append(SignatureKey(name=name, field=where, secret=ref))
        return tuple(keys)

    def secret_ref(self, value: object, path: str) -> SecretKeyRef | None:
        if not isinstance(value, Mapping):
            self.problem(path, f"is {types.json_type(value)}, expected an object {{name, key}}")
            return None
        if "namespace" in value:
            where = (
                "the policy's own namespace"
                if self.kind == NAMESPACED_KIND
                else "kitpin's own namespace"
            )
            self.problem(
                f"{path}.namespace",
                f"a {self.kind}'s key Secret is read in {where}, never in another: remove "
                "the field and keep the Secret there",
            )
        self.unknown_fields(
            {k: v for k, v in value.items() if k != "namespace"}, path, _SECRET_REF_FIELDS
        )
        name = value.get("name")
        if (
            not isinstance(name, str)
            or len(name) > MAX_SECRET_NAME_LENGTH
            or not _KUBE_NAME_RE.fullmatch(name)
        ):
            self.problem(
                f"{path}.name",
                f"{name!r} is not a Secret name (lowercase letters, digits, '-' and '.', at "
                f"most {MAX_SECRET_NAME_LENGTH} characters)",
            )
            return None
        key = value.get("key", DEFAULT_SECRET_KEY)
        if (
            not isinstance(key, str)
            or len(key) > MAX_SECRET_KEY_LENGTH
            or not _SECRET_KEY_RE.fullmatch(key)
        ):
            self.problem(
                f"{path}.key",
                f"{key!r} is not a Secret data key (letters, digits, '-', '_' and '.'; "
                f"default {DEFAULT_SECRET_KEY})",
            )
            return None
        namespace = self.namespace if self.kind == NAMESPACED_KIND else None
        return SecretKeyRef(name=name, key=key, namespace=namespace)

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
