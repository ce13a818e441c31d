"""Find every ModelKit reference in a Kubernetes object, and write pinned values back. Pure.

``find(obj, settings)`` looks at an object as it arrives in an AdmissionReview (plain
dicts and lists) and returns :class:`Findings`: the :class:`Site` of every reference
(an RFC 6901 JSON pointer to the string, which grammar it is written in, how to read it)
and every :class:`Unresolvable` place that holds a reference kitpin cannot see.
``apply(obj, values)`` returns a new object with pinned strings at those pointers; the
webhook diffs before/after to build its JSON patch. Nothing here parses references
(that is :mod:`controller.refs`), does I/O, or knows about kopf.

Paths visited
=============
This list is the user documentation of what kitpin pins. Anything not listed is not read.
``<pod>`` is the pod spec of the object's kind, ``[*]`` means every item of a list.

Pod specs (``SitesSettings.pod_kinds``; any version of the API group)::

    Pod                    v1         /spec
    PodTemplate            v1         /template/spec
    ReplicationController  v1         /spec/template/spec
    Deployment             apps       /spec/template/spec
    StatefulSet            apps       /spec/template/spec
    DaemonSet              apps       /spec/template/spec
    ReplicaSet             apps       /spec/template/spec
    Job                    batch      /spec/template/spec
    CronJob                batch      /spec/jobTemplate/spec/template/spec

In every pod spec, for each container of ``initContainers[*]``, ``containers[*]`` and
``ephemeralContainers[*]``:

``<pod>/<list>[*]/env[*]/value``  (kind ``env``, kit grammar)
    when the entry's ``name`` is one of ``SitesSettings.env_names`` (default
    ``MODELKIT_REF``, the KitOps init container's input). Any image: community charts
    use their own init images. An entry with ``valueFrom`` instead of ``value`` is
    reported as :class:`Unresolvable`. An empty value is not a reference and is skipped.
    A ``kitops-init`` container without such an entry but with ``envFrom`` is reported
    as :class:`Unresolvable` too (its reference comes from a ConfigMap or Secret).

``<pod>/<list>[*]/args[*]`` or ``.../command[*]``  (kind ``kit-cli-args``, kit grammar)
    in containers whose image repository (tag and digest ignored) is one of
    ``SitesSettings.kit_cli_images``: the argument after ``pull`` or ``unpack``. The
    argument vector is ``args`` when ``command`` is unset (the images' entrypoint is
    ``kit``), ``command + args`` when ``command`` runs ``kit``; any other ``command`` is
    not kit and is skipped. Flags are skipped as kit's parser would:
    ``--flag=value``; the flags that take a separate value (``--dir``/``-d``,
    ``--filter``/``-f``, ``--tls-cert``, ``--cert``, ``--key``, ``--concurrency``,
    ``--proxy``, and the global ``--config``, ``--log-level``, ``--progress``); every
    other flag is a switch (``-v``, ``-o``/``--overwrite``, ``-i``, ``--plain-http``,
    ``--tls-verify``, ...); ``--`` ends flags. If the argument is exactly ``$(NAME)``
    (Kubernetes expands it from the container's env), the site is that env entry's
    ``<pod>/<list>[*]/env[*]/value`` instead (unless NAME is one of ``env_names``, which
    is reported once, as ``env``). A ``command`` that is a shell script (``sh -c "kit pull ..."``)
    is reported as :class:`Unresolvable`.

``<pod>/volumes[*]/image/reference``  (kind ``image-volume``, container grammar)
    Kubernetes image volumes. ``expects_modelkit`` is False: any OCI artifact may be
    mounted this way, so kitpin pins it but does not insist on a ModelKit.

``<pod>/volumes[*]/csi/volumeAttributes/<driver>~1reference``  (kind ``modelpack-csi``,
container grammar) when ``csi.driver`` is one of ``SitesSettings.modelpack_csi_drivers``
    The ModelPack CSI driver reads the attribute ``<service name>/reference`` (default
    ``model.csi.modelpack.org/reference``) and hands it to modctl, which parses it with
    the distribution (container) reference grammar.

KServe ``InferenceService`` (``serving.kserve.io``, any version), for each component
``C`` of ``predictor``, ``transformer``, ``explainer`` (kind ``kserve-storage-uri``, kit
grammar, prefix ``kit://``; other schemes such as ``s3://``, ``gs://``, ``hf://``,
``pvc://`` and ``oci://`` modelcars are not ModelKits and are skipped)::

    /spec/C/<F>/storageUri        F = any mapping member of C (model, sklearn, pytorch,
                                  huggingface, art, ...) except workerSpec, labels,
                                  annotations, nodeSelector
    /spec/C/storageUris[*]/uri    (KServe's StorageUri objects: {uri, mountPath})
    /spec/C/<F>/storageUris[*]/uri
    /spec/C/<F>/env[*]/value      framework containers, same rule as ``env`` above
    /spec/C as a pod spec         (C inlines a PodSpec: containers, initContainers,
                                  volumes; every pod-spec rule above applies)
    /spec/predictor/workerSpec    as a pod spec

Extra sites (``SitesSettings.extra_sites``, kind ``extra``): for objects whose API group
and kind (and version, when listed) match an :class:`ExtraSite`, every string its
``paths`` reach (see :class:`ExtraSite` for the path syntax) that starts with its prefix.

Odd shapes
==========
``find`` never raises on a malformed object: a list where a mapping belongs, ``None``,
numbers, missing fields are skipped silently. The apiserver validates shape; kitpin only
reads what is well-formed. Unknown kinds return empty findings at the cost of one
dictionary lookup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from controller import errors, refs

__all__ = [
    "DEFAULT_POD_KINDS",
    "EMPTY",
    "KIT_URI_PREFIX",
    "KSERVE_GROUP",
    "ExtraSite",
    "Findings",
    "Site",
    "SiteKind",
    "SitesSettings",
    "Unresolvable",
    "apply",
    "controller_owner",
    "escape",
    "find",
    "get",
    "pod_template_path",
]

SiteKind = Literal[
    "env", "kit-cli-args", "image-volume", "modelpack-csi", "kserve-storage-uri", "extra"
]

KIT_URI_PREFIX: Final = "kit://"


def _kit_scheme(value: str) -> str:
    """kit accepts ``kit://`` in front of a reference anywhere; a site that has it keeps it, so
    the pinned value differs from what the user wrote only by ``@sha256:...``."""
    return KIT_URI_PREFIX if value.startswith(KIT_URI_PREFIX) else ""


KSERVE_GROUP: Final = "serving.kserve.io"

# isinstance() against a tuple that starts with the concrete JSON types is ~3x faster than
# against the Mapping ABC alone, and objects from an AdmissionReview are dicts and lists.
_MAP: Final = (dict, Mapping)
_SEQ: Final = (list, tuple)


# ---------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, kw_only=True, slots=True)
class Site:
    """One place in an object that holds a ModelKit (or, for image volumes, OCI) reference."""

    path: str
    """RFC 6901 JSON pointer to the string, e.g.
    ``/spec/template/spec/initContainers/0/env/2/value``."""

    kind: SiteKind

    grammar: refs.Grammar
    """How to parse :attr:`reference_text`: ``"kit"`` or ``"image"`` (container/CRI)."""

    prefix: str = ""
    """Text before the reference inside :attr:`value`, e.g. ``kit://``."""

    value: str
    """The raw string found at :attr:`path`."""

    expects_modelkit: bool
    """Whether anything but a ModelKit/ModelPack here is a mistake. False for image volumes."""

    where: str
    """Human text for messages: ``initContainer "kitops-init" env MODELKIT_REF``."""

    @property
    def reference_text(self) -> str:
        return self.value[len(self.prefix) :]

    def render(self, reference_text: str) -> str:
        """The string to write back at :attr:`path` for a new reference text."""
        return self.prefix + reference_text


@dataclass(frozen=True, kw_only=True, slots=True)
class Unresolvable:
    """A place that holds a reference kitpin cannot see, so cannot pin (the webhook warns)."""

    path: str
    where: str
    why: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Findings:
    """What :func:`find` returns: sites to pin, and places to warn about, in document order."""

    sites: tuple[Site, ...] = ()
    unresolvable: tuple[Unresolvable, ...] = ()


EMPTY: Final = Findings()
"""The findings of an object with no references (shared; compare with ``is`` if you like)."""


# ---------------------------------------------------------------------------------------
# JSON pointers


def escape(token: str) -> str:
    """Escape one JSON-pointer reference token (RFC 6901: ``~`` → ``~0``, ``/`` → ``~1``)."""
    if "~" in token or "/" in token:
        return token.replace("~", "~0").replace("/", "~1")
    return token


def _split_pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise LookupError(f"{pointer!r} is not a JSON pointer: it must be empty or start with /")
    tokens = pointer[1:].split("/")
    if "~" not in pointer:
        return tokens
    out = []
    for token in tokens:
        if "~" in token:
            if re.search(r"~(?![01])", token):
                raise LookupError(f"{pointer!r}: bad escape in {token!r} (only ~0 and ~1 exist)")
            token = token.replace("~1", "/").replace("~0", "~")
        out.append(token)
    return out


def _image_repository(image: str) -> str:
    """``host/repo`` of an image string: digest and tag removed, lowercased."""
    name = image.partition("@")[0]
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name = name[:colon]
    return name.lower()


# ---------------------------------------------------------------------------------------
# Settings

_ANY: Final = -1  # the [*] step of an extra-site path
_Step = str | int
_SEGMENT = re.compile(r"([^.\[\]*\s]+)((?:\[(?:\*|0|[1-9][0-9]*)\])*)")
_INDEX = re.compile(r"\[(\*|[0-9]+)\]")
_PATH_HELP = (
    "a path is dot-separated field names, each optionally followed by [*] (every item of "
    "a list) or [N] (item N), e.g. spec.models[*].source or spec.model.ref"
)


class _InvalidError(Exception):
    """A settings problem, without the context the caller adds to its ConfigError."""


def _compile_path(path: object) -> tuple[_Step, ...]:
    if not isinstance(path, str) or not path:
        raise _InvalidError(f'field "paths": {path!r} is empty or not a string; {_PATH_HELP}')
    steps: list[_Step] = []
    for segment in path.split("."):
        m = _SEGMENT.fullmatch(segment)
        if m is None:
            raise _InvalidError(f'field "paths": {path!r} is not valid; {_PATH_HELP}')
        steps.append(m.group(1))
        for index in _INDEX.findall(m.group(2)):
            steps.append(_ANY if index == "*" else int(index))
    return tuple(steps)


def _str_tuple(value: object, *, name: str, allow_empty: bool = True) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise _InvalidError(f"{name} must be a list of strings, got {value!r}")
    items = tuple(value)
    if not all(isinstance(item, str) and item for item in items):
        raise _InvalidError(f"{name} must be a list of non-empty strings, got {list(items)!r}")
    if not allow_empty and not items:
        raise _InvalidError(f"{name} must not be empty")
    return items


_EXTRA_SITE_KEYS: Final = {
    "group": "group",
    "kind": "kind",
    "versions": "versions",
    "paths": "paths",
    "grammar": "grammar",
    "prefix": "prefix",
    "expectsModelKit": "expects_modelkit",
}


def _check_extra_site(
    *,
    group: object,
    kind: object,
    versions: object = (),
    paths: object,
    grammar: object = "kit",
    prefix: object = "",
    expects_modelkit: object = True,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[_Step, ...], ...]]:
    """Validate the fields of an :class:`ExtraSite`; return versions, paths and compiled
    paths. Messages name fields as they are spelled in YAML settings."""
    if not isinstance(group, str):
        raise _InvalidError(
            f'field "group" must be a string ("" for the core group), got {group!r}'
        )
    if not isinstance(kind, str) or not kind:
        raise _InvalidError(f'field "kind" must be a non-empty string, got {kind!r}')
    if grammar not in ("kit", "image"):
        raise _InvalidError(f'field "grammar" must be "kit" or "image", got {grammar!r}')
    if not isinstance(prefix, str):
        raise _InvalidError(f'field "prefix" must be a string, got {prefix!r}')
    if not isinstance(expects_modelkit, bool):
        raise _InvalidError(
            f'field "expectsModelKit" must be true or false, got {expects_modelkit!r}'
        )
    checked_versions = _str_tuple(versions, name='field "versions"')
    checked_paths = _str_tuple(paths, name='field "paths"', allow_empty=False)
    return checked_versions, checked_paths, tuple(_compile_path(p) for p in checked_paths)


@dataclass(frozen=True, kw_only=True, slots=True)
class ExtraSite:
    """A platform team's own resource that holds ModelKit references, declared in settings.

    Path syntax: dot-separated field names; a field name may be followed by ``[*]`` (every
    item of the list) or ``[N]`` (item N, from 0), repeatedly: ``spec.models[*].source``,
    ``spec.model.ref``, ``spec.stages[*].inputs[*]``. Field names cannot contain ``.``,
    ``[``, ``]``, ``*`` or whitespace. A path that reaches a missing field or a non-string
    is skipped; so is a string that does not start with ``prefix`` or is empty.
    Invalid fields raise :class:`~controller.errors.ConfigError` at construction.
    """

    group: str
    """API group, ``""`` for the core group (``apiVersion: v1``)."""

    kind: str

    versions: tuple[str, ...] = ()
    """API versions to match; empty means any."""

    paths: tuple[str, ...]

    grammar: refs.Grammar = "kit"

    prefix: str = ""
    """Text before the reference, e.g. ``kit://``; values without it are ignored."""

    expects_modelkit: bool = True

    _steps: tuple[tuple[_Step, ...], ...] = field(init=False, repr=False, compare=False)
    """``paths`` compiled: field names (str), indexes (int >= 0), or -1 for ``[*]``."""

    def __post_init__(self) -> None:
        try:
            versions, paths, steps = _check_extra_site(
                group=self.group,
                kind=self.kind,
                versions=self.versions,
                paths=self.paths,
                grammar=self.grammar,
                prefix=self.prefix,
                expects_modelkit=self.expects_modelkit,
            )
        except _InvalidError as e:
            raise errors.ConfigError(f"extra site {self.group!r}/{self.kind!r}: {e}") from None
        object.__setattr__(self, "versions", versions)
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "_steps", steps)

    @classmethod
    def from_mapping(cls, data: object, *, context: str = "extra site") -> ExtraSite:
        """Build from YAML settings with camelCase keys (``group``, ``kind``, ``versions``,
        ``paths``, ``grammar``, ``prefix``, ``expectsModelKit``). Any problem raises
        :class:`~controller.errors.ConfigError` whose message starts with ``context``
        (e.g. ``extraSites[2]``) and names the field."""
        if not isinstance(data, _MAP):
            raise errors.ConfigError(f"{context}: must be a mapping, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in _EXTRA_SITE_KEYS)
        if unknown:
            raise errors.ConfigError(
                f"{context}: unknown field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(_EXTRA_SITE_KEYS)}"
            )
        for required in ("group", "kind", "paths"):
            if required not in data:
                hint = ' ("" for the core group)' if required == "group" else ""
                raise errors.ConfigError(f'{context}: field "{required}" is required{hint}')
        kwargs: dict[str, Any] = {_EXTRA_SITE_KEYS[k]: v for k, v in data.items()}
        try:
            for name in ("versions", "paths"):
                if name in kwargs and not isinstance(kwargs[name], list):
                    raise _InvalidError(
                        f'field "{name}" must be a list of strings, got {kwargs[name]!r}'
                    )
            _check_extra_site(**kwargs)
        except _InvalidError as e:
            raise errors.ConfigError(f"{context}: {e}") from None
        return cls(**kwargs)


DEFAULT_POD_KINDS: Final[Mapping[tuple[str, str], str]] = MappingProxyType(
    {
        ("", "Pod"): "/spec",
        ("", "PodTemplate"): "/template/spec",
        ("", "ReplicationController"): "/spec/template/spec",
        ("apps", "Deployment"): "/spec/template/spec",
        ("apps", "StatefulSet"): "/spec/template/spec",
        ("apps", "DaemonSet"): "/spec/template/spec",
        ("apps", "ReplicaSet"): "/spec/template/spec",
        ("batch", "Job"): "/spec/template/spec",
        ("batch", "CronJob"): "/spec/jobTemplate/spec/template/spec",
    }
)


def _default_pod_kinds() -> Mapping[tuple[str, str], str]:
    return DEFAULT_POD_KINDS


# A plan says what to walk for one (group, kind): pod spec pointer tokens (or None),
# whether it is a KServe InferenceService, and the extra sites declared for it.
_Plan = tuple[tuple[str, ...] | None, str, bool, tuple[ExtraSite, ...]]


@dataclass(frozen=True, kw_only=True, slots=True)
class SitesSettings:
    """What :func:`find` looks for. One per process, built by the settings loader."""

    env_names: tuple[str, ...] = ("MODELKIT_REF",)
    """Env var names that hold a kit-grammar reference. Default ``MODELKIT_REF``: the
    input of ``kitops-init``. Matched by name on every container whatever its image,
    because community charts wrap kit in their own init images."""

    kit_cli_images: tuple[str, ...] = (
        "ghcr.io/kitops-ml/kitops",
        "ghcr.io/jozu-ai/kitops",
        "ghcr.io/jozu-ai/kit",
    )
    """Repositories of the plain kit CLI image (entrypoint ``kit``), compared with the
    container image minus tag and digest. Default: the current KitOps image and its two
    older names. The ``-init`` images are not listed: they read ``env_names``."""

    modelpack_csi_drivers: tuple[str, ...] = ("model.csi.modelpack.org",)
    """CSI driver names of the ModelPack CSI driver; the reference is the volume attribute
    ``<driver>/reference``. Default: the driver's default service name; add yours if you
    installed it under another ``serviceName``."""

    pod_kinds: Mapping[tuple[str, str], str] = field(default_factory=_default_pod_kinds, hash=False)
    """(API group, kind) → JSON pointer of the pod spec. Default: the built-in workload
    kinds (see the module docstring). Add a CRD here when it embeds a full PodTemplateSpec
    and every pod-spec rule should apply to it."""

    extra_sites: tuple[ExtraSite, ...] = ()
    """A platform team's own resources. Default none."""

    _plans: Mapping[tuple[str, str], _Plan] = field(init=False, repr=False, compare=False)
    _env_name_set: frozenset[str] = field(init=False, repr=False, compare=False)
    _kit_image_set: frozenset[str] = field(init=False, repr=False, compare=False)
    _kit_image_prefixes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _csi_driver_set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            env_names = _str_tuple(self.env_names, name="env_names")
            kit_images = tuple(
                _image_repository(i) for i in _str_tuple(self.kit_cli_images, name="kit_cli_images")
            )
            drivers = _str_tuple(self.modelpack_csi_drivers, name="modelpack_csi_drivers")
        except _InvalidError as e:
            raise errors.ConfigError(f"sites settings: {e}") from None
        extra = tuple(self.extra_sites)
        if not all(isinstance(e, ExtraSite) for e in extra):
            raise errors.ConfigError("sites settings: extra_sites must hold ExtraSite values")
        if not isinstance(self.pod_kinds, _MAP):
            raise errors.ConfigError("sites settings: pod_kinds must be a mapping")
        plans: dict[tuple[str, str], _Plan] = {}
        for key, pointer in self.pod_kinds.items():
            if (
                not isinstance(key, tuple)
                or len(key) != 2
                or not all(isinstance(k, str) for k in key)
                or not isinstance(pointer, str)
                or not pointer.startswith("/")
            ):
                raise errors.ConfigError(
                    f"sites settings: pod_kinds entry {key!r}: {pointer!r} must map (group, kind) "
                    'to a JSON pointer such as "/spec/template/spec"'
                )
            try:
                pod_tokens = tuple(_split_pointer(pointer))
            except LookupError as e:
                raise errors.ConfigError(f"sites settings: pod_kinds entry {key!r}: {e}") from None
            plans[key] = (pod_tokens, pointer, False, ())
        kserve = (KSERVE_GROUP, "InferenceService")
        tokens, pointer, _, ex = plans.get(kserve, (None, "", False, ()))
        plans[kserve] = (tokens, pointer, True, ex)
        for site in extra:
            key = (site.group, site.kind)
            tokens, pointer, is_kserve, ex = plans.get(key, (None, "", False, ()))
            plans[key] = (tokens, pointer, is_kserve, (*ex, site))
        object.__setattr__(self, "env_names", env_names)
        object.__setattr__(self, "kit_cli_images", kit_images)
        object.__setattr__(self, "modelpack_csi_drivers", drivers)
        object.__setattr__(self, "extra_sites", extra)
        object.__setattr__(self, "_plans", MappingProxyType(plans))
        object.__setattr__(self, "_env_name_set", frozenset(env_names))
        object.__setattr__(self, "_kit_image_set", frozenset(kit_images))
        object.__setattr__(self, "_kit_image_prefixes", kit_images)
        object.__setattr__(self, "_csi_driver_set", frozenset(drivers))


_DEFAULT_SETTINGS: Final = SitesSettings()


# ---------------------------------------------------------------------------------------
# JSON pointers


def _step(container: object, token: str, pointer: str) -> object:
    if isinstance(container, _MAP):
        if token in container:
            return container[token]
        raise LookupError(f"{pointer}: no member {token!r}")
    if isinstance(container, _SEQ):
        if token.isascii() and token.isdigit() and (token == "0" or token[0] != "0"):
            index = int(token)
            if index < len(container):
                return container[index]
        raise LookupError(f"{pointer}: no item {token!r} in a list of {len(container)}")
    raise LookupError(f"{pointer}: {token!r} is below a {type(container).__name__}")


def get(obj: object, pointer: str) -> object:
    """The value at RFC 6901 ``pointer`` in ``obj``; :class:`LookupError` if there is none."""
    current = obj
    for token in _split_pointer(pointer):
        current = _step(current, token, pointer)
    return current


def apply(obj: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """A new object with the string at each JSON pointer of ``values`` replaced.

    Copy-on-write: only the mappings and lists along the changed paths are copied; every
    other branch is shared with ``obj``, which is never mutated. A pointer that does not
    exist or does not point at a string raises :class:`LookupError`: callers pass paths
    that :func:`find` returned, so this is a programming error, not bad user input.
    """
    root: dict[str, Any] = dict(obj)
    fresh: set[int] = {id(root)}
    for pointer, new in values.items():
        tokens = _split_pointer(pointer)
        if not tokens:
            raise LookupError("the empty pointer names the whole object, not a string")
        parent: Any = root
        for token in tokens[:-1]:
            child = _step(parent, token, pointer)
            if id(child) not in fresh:
                if isinstance(child, _MAP):
                    child = dict(child)
                elif isinstance(child, _SEQ):
                    child = list(child)
                else:
                    raise LookupError(f"{pointer}: {token!r} is a {type(child).__name__}")
                fresh.add(id(child))
                parent[int(token) if isinstance(parent, list) else token] = child
            parent = child
        last = tokens[-1]
        current = _step(parent, last, pointer)
        if not isinstance(current, str):
            raise LookupError(f"{pointer}: holds a {type(current).__name__}, not a string")
        if not isinstance(new, str):
            raise TypeError(f"{pointer}: the new value must be a string, got {type(new).__name__}")
        parent[int(last) if isinstance(parent, list) else last] = new
    return root


def controller_owner(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference with ``controller: true`` (the Deployment of a ReplicaSet, ...)."""
    metadata = obj.get("metadata") if isinstance(obj, _MAP) else None
    owners = metadata.get("ownerReferences") if isinstance(metadata, _MAP) else None
    if isinstance(owners, _SEQ):
        for owner in owners:
            if isinstance(owner, _MAP) and owner.get("controller") is True:
                return owner
    return None


def _group_kind(obj: Mapping[str, Any]) -> tuple[str, str, str] | None:
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if type(api_version) is not str or type(kind) is not str:
        return None
    group, _, version = api_version.rpartition("/")
    return group, version, kind


def pod_template_path(
    obj: Mapping[str, Any], settings: SitesSettings = _DEFAULT_SETTINGS
) -> str | None:
    """JSON pointer of the object's pod spec (``/spec/template/spec`` for a Deployment), or
    None when its kind has none (unknown kinds, InferenceService, extra sites)."""
    if not isinstance(obj, _MAP):
        return None
    gvk = _group_kind(obj)
    if gvk is None:
        return None
    return settings.pod_kinds.get((gvk[0], gvk[2]))


# ---------------------------------------------------------------------------------------
# Finding


def _who(label: str, item: Mapping[str, Any], index: int) -> str:
    """Human name of a list item for messages: ``initContainer "kitops-init"``; built only
    when something is reported (this runs on every admission)."""
    if index < 0:
        return label
    name = item.get("name")
    return f'{label} "{name}"' if type(name) is str else f"{label} #{index}"


_CONTAINER_LISTS: Final = (
    ("initContainers", "initContainer"),
    ("containers", "container"),
    ("ephemeralContainers", "ephemeralContainer"),
)
_KIT_SUBCOMMANDS: Final = frozenset({"pull", "unpack"})
# Flags of `kit`, `kit pull` and `kit unpack` that take a separate value (kitops-ml/kitops:
# cmd/root.go, pkg/cmd/options/network.go, pkg/cmd/unpack/cmd.go). All others are switches.
_KIT_VALUE_FLAGS: Final = frozenset(
    {
        "--config",
        "--log-level",
        "--progress",
        "--tls-cert",
        "--cert",
        "--key",
        "--concurrency",
        "--proxy",
        "--dir",
        "--filter",
    }
)
_KIT_VALUE_SHORT: Final = frozenset("df")
_SHELLS: Final = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh"})
_KSERVE_COMPONENTS: Final = ("predictor", "transformer", "explainer")
_KSERVE_NOT_FRAMEWORK: Final = frozenset({"workerSpec", "labels", "annotations", "nodeSelector"})


class _Out:
    __slots__ = ("cfg", "sites", "unresolvable")

    def __init__(self, cfg: SitesSettings) -> None:
        self.cfg = cfg
        self.sites: list[Site] = []
        self.unresolvable: list[Unresolvable] = []


def find(obj: Mapping[str, Any], settings: SitesSettings = _DEFAULT_SETTINGS) -> Findings:
    """Every ModelKit reference site in ``obj`` (see the module docstring for the paths).

    Never raises on odd shapes; unknown kinds give :data:`EMPTY`.
    """
    if not isinstance(obj, _MAP):
        return EMPTY
    gvk = _group_kind(obj)
    if gvk is None:
        return EMPTY
    group, version, kind = gvk
    plan = settings._plans.get((group, kind))
    if plan is None:
        return EMPTY
    pod_tokens, pod_pointer, is_kserve, extra = plan
    out = _Out(settings)
    if pod_tokens is not None:
        spec: object = obj
        for token in pod_tokens:
            spec = spec.get(token) if isinstance(spec, _MAP) else None
        if isinstance(spec, _MAP):
            _walk_pod_spec(spec, pod_pointer, "", out)
    if is_kserve:
        _walk_inference_service(obj, kind, out)
    if extra:
        seen = {s.path for s in out.sites}
        for site in extra:
            if not site.versions or version in site.versions:
                for steps in site._steps:
                    _follow(obj, steps, 0, "", "", site, seen, out)
    if not out.sites and not out.unresolvable:
        return EMPTY
    return Findings(sites=tuple(out.sites), unresolvable=tuple(out.unresolvable))


def _walk_pod_spec(spec: Mapping[str, Any], base: str, label: str, out: _Out) -> None:
    for list_name, word in _CONTAINER_LISTS:
        items = spec.get(list_name)
        if not isinstance(items, _SEQ):
            continue
        list_base = f"{base}/{list_name}/"
        list_label = label + word
        for i, container in enumerate(items):
            if isinstance(container, _MAP):
                _walk_container(container, list_base + str(i), list_label, i, out)
    volumes = spec.get("volumes")
    if isinstance(volumes, _SEQ):
        volume_label = label + "volume"
        for i, volume in enumerate(volumes):
            if isinstance(volume, _MAP):
                _walk_volume(volume, f"{base}/volumes/{i}", volume_label, i, out)


def _walk_env(container: Mapping[str, Any], base: str, label: str, index: int, out: _Out) -> int:
    """Report env sites of one container; return how many env entries matched."""
    env = container.get("env")
    if not isinstance(env, _SEQ):
        return 0
    names = out.cfg._env_name_set
    matched = 0
    for j, entry in enumerate(env):
        if not isinstance(entry, _MAP):
            continue
        name = entry.get("name")
        if type(name) is not str or name not in names:
            continue
        matched += 1
        who = _who(label, container, index)
        value = entry.get("value")
        if type(value) is str and value:
            out.sites.append(
                Site(
                    path=f"{base}/env/{j}/value",
                    kind="env",
                    grammar="kit",
                    prefix=_kit_scheme(value),
                    value=value,
                    expects_modelkit=True,
                    where=f"{who} env {name}",
                )
            )
        elif entry.get("valueFrom") is not None and not value:
            out.unresolvable.append(
                Unresolvable(
                    path=f"{base}/env/{j}/valueFrom",
                    where=f"{who} env {name}",
                    why=f"{name} is set with valueFrom: kitpin cannot see, so cannot pin, "
                    "that value; write the reference in the manifest (value:) to have it pinned",
                )
            )
    return matched


def _walk_container(
    container: Mapping[str, Any], base: str, label: str, index: int, out: _Out
) -> None:
    matched = _walk_env(container, base, label, index, out)
    image = container.get("image")
    if type(image) is not str:
        return
    cfg = out.cfg
    prefixes = cfg._kit_image_prefixes
    if (
        image.startswith(prefixes) or (not image.islower() and image.lower().startswith(prefixes))
    ) and _image_repository(image) in cfg._kit_image_set:
        _walk_kit_cli(container, base, _who(label, container, index), out)
    elif not matched and container.get("envFrom") and "kitops-init" in image:
        if _image_repository(image).endswith("/kitops-init"):
            out.unresolvable.append(
                Unresolvable(
                    path=f"{base}/envFrom",
                    where=f"{_who(label, container, index)} envFrom",
                    why="this kitops-init container has no "
                    f"{' or '.join(cfg.env_names)} env value, so its reference comes from "
                    "envFrom (a ConfigMap or Secret) that kitpin cannot see or pin",
                )
            )


def _kit_reference_index(argv: Sequence[object], start: int) -> tuple[str, int] | None:
    """(subcommand, index) of the reference of ``kit pull|unpack`` in ``argv[start:]``."""
    subcommand: str | None = None
    flags_done = False
    i, n = start, len(argv)
    while i < n:
        arg = argv[i]
        if type(arg) is not str:
            return None
        if not flags_done and len(arg) > 1 and arg[0] == "-":
            if arg == "--":
                flags_done = True
            elif arg[1] == "-":
                if "=" not in arg and arg in _KIT_VALUE_FLAGS:
                    i += 1  # the value is the next argument
            else:
                shorts = arg[1:]
                for k, char in enumerate(shorts):
                    if char in _KIT_VALUE_SHORT:
                        if k == len(shorts) - 1:
                            i += 1  # -d DIR; -dDIR and -d=DIR carry their value
                        break
            i += 1
            continue
        if subcommand is None:
            if arg not in _KIT_SUBCOMMANDS:
                return None
            subcommand = arg
        else:
            return subcommand, i
        i += 1
    return None


def _walk_kit_cli(container: Mapping[str, Any], base: str, who: str, out: _Out) -> None:
    command = container.get("command")
    args = container.get("args")
    if args is None:
        args = ()
    if not isinstance(args, _SEQ):
        return
    if command:
        if not isinstance(command, _SEQ) or type(command[0]) is not str:
            return
        program = command[0].rpartition("/")[2]
        if program != "kit":
            if program in _SHELLS:
                script = " ".join(a for a in (*command[1:], *args) if type(a) is str)
                if "kit" in script and ("pull" in script or "unpack" in script):
                    out.unresolvable.append(
                        Unresolvable(
                            path=f"{base}/command",
                            where=f"{who} command",
                            why="the kit container runs a shell script: kitpin cannot pin a "
                            "reference inside a script; use args: [unpack, REF, ...] or the "
                            "MODELKIT_REF env of kitops-init",
                        )
                    )
            return
        argv: Sequence[object] = (*command, *args)
        found = _kit_reference_index(argv, 1)
    else:
        argv = args
        found = _kit_reference_index(argv, 0)
    if found is None:
        return
    subcommand, index = found
    if command and index < len(command):
        field_name, position = "command", index
    else:
        field_name, position = "args", index - (len(command) if command else 0)
    value = argv[index]
    assert isinstance(value, str)
    where = f"{who} {field_name}[{position}] (kit {subcommand})"
    if "$(" in value:
        _kit_cli_variable(
            container, base, who, where, value, f"{base}/{field_name}/{position}", out
        )
        return
    out.sites.append(
        Site(
            path=f"{base}/{field_name}/{position}",
            kind="kit-cli-args",
            grammar="kit",
            prefix=_kit_scheme(value),
            value=value,
            expects_modelkit=True,
            where=where,
        )
    )


def _kit_cli_variable(
    container: Mapping[str, Any], base: str, who: str, where: str, value: str, path: str, out: _Out
) -> None:
    """The kit reference argument is ``$(NAME)``: Kubernetes expands it from env."""
    name = value[2:-1] if value.startswith("$(") and value.endswith(")") else ""
    if not name or "$" in name or "(" in name or ")" in name:
        out.unresolvable.append(
            Unresolvable(
                path=path,
                where=where,
                why=f"the reference {value!r} is built from variables: kitpin can pin only a "
                "plain reference or exactly $(NAME) with NAME set by value in this container",
            )
        )
        return
    if name in out.cfg._env_name_set:
        return  # already reported as an env site
    env = container.get("env")
    found: tuple[int, Mapping[str, Any]] | None = None
    if isinstance(env, _SEQ):
        for j, entry in enumerate(env):
            if isinstance(entry, _MAP) and entry.get("name") == name:
                found = (j, entry)  # the last definition wins, as in Kubernetes
    if found is None:
        out.unresolvable.append(
            Unresolvable(
                path=path,
                where=where,
                why=f"the reference is $({name}) but this container has no env {name}",
            )
        )
        return
    j, entry = found
    env_value = entry.get("value")
    if type(env_value) is str and env_value:
        out.sites.append(
            Site(
                path=f"{base}/env/{j}/value",
                kind="kit-cli-args",
                grammar="kit",
                prefix=_kit_scheme(env_value),
                value=env_value,
                expects_modelkit=True,
                where=f"{who} env {name} (used by {where.removeprefix(who + ' ')})",
            )
        )
    else:
        out.unresolvable.append(
            Unresolvable(
                path=f"{base}/env/{j}",
                where=f"{who} env {name}",
                why=f"the kit reference comes from env {name}, which has no literal value "
                "(valueFrom?): kitpin cannot see, so cannot pin, it",
            )
        )


def _walk_volume(volume: Mapping[str, Any], base: str, label: str, index: int, out: _Out) -> None:
    image = volume.get("image")
    if image is not None and isinstance(image, _MAP):
        reference = image.get("reference")
        if type(reference) is str and reference:
            out.sites.append(
                Site(
                    path=f"{base}/image/reference",
                    kind="image-volume",
                    grammar="image",
                    value=reference,
                    expects_modelkit=False,
                    where=f"{_who(label, volume, index)} image.reference",
                )
            )
    csi = volume.get("csi")
    if csi is not None and isinstance(csi, _MAP):
        driver = csi.get("driver")
        if type(driver) is str and driver in out.cfg._csi_driver_set:
            attributes = csi.get("volumeAttributes")
            if isinstance(attributes, _MAP):
                key = driver + "/reference"
                reference = attributes.get(key)
                if type(reference) is str and reference:
                    out.sites.append(
                        Site(
                            path=f"{base}/csi/volumeAttributes/{escape(key)}",
                            kind="modelpack-csi",
                            grammar="image",
                            value=reference,
                            expects_modelkit=True,
                            where=f"{_who(label, volume, index)} csi volumeAttributes[{key}]",
                        )
                    )


def _kit_uri(value: object, path: str, where: str, out: _Out) -> None:
    if type(value) is str and value.startswith(KIT_URI_PREFIX):
        out.sites.append(
            Site(
                path=path,
                kind="kserve-storage-uri",
                grammar="kit",
                prefix=KIT_URI_PREFIX,
                value=value,
                expects_modelkit=True,
                where=where,
            )
        )


def _storage_uris(holder: Mapping[str, Any], base: str, label: str, out: _Out) -> None:
    uris = holder.get("storageUris")
    if not isinstance(uris, _SEQ):
        return
    for i, entry in enumerate(uris):
        if isinstance(entry, _MAP):
            _kit_uri(
                entry.get("uri"),
                f"{base}/storageUris/{i}/uri",
                f"{label}.storageUris[{i}].uri",
                out,
            )
        else:  # tolerate a list of plain strings
            _kit_uri(entry, f"{base}/storageUris/{i}", f"{label}.storageUris[{i}]", out)


def _walk_inference_service(obj: Mapping[str, Any], kind: str, out: _Out) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, _MAP):
        return
    for name in _KSERVE_COMPONENTS:
        component = spec.get(name)
        if not isinstance(component, _MAP):
            continue
        base = f"/spec/{name}"
        label = f"{kind} {name}"
        _storage_uris(component, base, label, out)
        for key, member in component.items():
            if type(key) is not str or key in _KSERVE_NOT_FRAMEWORK or not isinstance(member, _MAP):
                continue
            member_base = f"{base}/{escape(key)}"
            member_label = f"{label}.{key}"
            _kit_uri(
                member.get("storageUri"),
                f"{member_base}/storageUri",
                f"{member_label}.storageUri",
                out,
            )
            _storage_uris(member, member_base, member_label, out)
            _walk_env(member, member_base, member_label, -1, out)
        _walk_pod_spec(component, base, f"{name} ", out)
        if name == "predictor":
            worker = component.get("workerSpec")
            if isinstance(worker, _MAP):
                _walk_pod_spec(worker, f"{base}/workerSpec", "predictor workerSpec ", out)


def _follow(
    node: object,
    steps: tuple[_Step, ...],
    at: int,
    pointer: str,
    human: str,
    site: ExtraSite,
    seen: set[str],
    out: _Out,
) -> None:
    if at == len(steps):
        if type(node) is str and node and node.startswith(site.prefix) and pointer not in seen:
            seen.add(pointer)
            out.sites.append(
                Site(
                    path=pointer,
                    kind="extra",
                    grammar=site.grammar,
                    prefix=site.prefix,
                    value=node,
                    expects_modelkit=site.expects_modelkit,
                    where=f"{site.kind} {human}",
                )
            )
        return
    step = steps[at]
    if type(step) is str:
        if isinstance(node, _MAP) and step in node:
            dot = "." if human else ""
            _follow(
                node[step],
                steps,
                at + 1,
                f"{pointer}/{escape(step)}",
                f"{human}{dot}{step}",
                site,
                seen,
                out,
            )
    elif isinstance(node, _SEQ):
        assert isinstance(step, int)
        indexes = range(len(node)) if step == _ANY else (step,) if step < len(node) else ()
        for i in indexes:
            _follow(node[i], steps, at + 1, f"{pointer}/{i}", f"{human}[{i}]", site, seen, out)
