"""What :func:`controller.sites.find` looks for: :class:`SitesSettings` and the platform
team's own resources, :class:`ExtraSite`. Pure; built once per process by the settings loader,
validated at construction (problems raise :class:`~controller.errors.ConfigError`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from controller import errors, refs
from controller.sites import pointers

__all__ = [
    "DEFAULT_POD_KINDS",
    "DEFAULT_SETTINGS",
    "KSERVE_GROUP",
    "ExtraSite",
    "SitesSettings",
    "image_repository",
]

KSERVE_GROUP: Final = "serving.kserve.io"


def image_repository(image: str) -> str:
    """``host/repo`` of an image string: digest and tag removed, lowercased."""
    name = image.partition("@")[0]
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name = name[:colon]
    return name.lower()


ANY_ITEM: Final = -1  # the [*] step of an extra-site path
Step = str | int
_SEGMENT = re.compile(r"([^.\[\]*\s]+)((?:\[(?:\*|0|[1-9][0-9]*)\])*)")
_INDEX = re.compile(r"\[(\*|[0-9]+)\]")
_PATH_HELP = (
    "a path is dot-separated field names, each optionally followed by [*] (every item of "
    "a list) or [N] (item N), e.g. spec.models[*].source or spec.model.ref"
)


class _InvalidError(Exception):
    """A settings problem, without the context the caller adds to its ConfigError."""


def _compile_path(path: object) -> tuple[Step, ...]:
    if not isinstance(path, str) or not path:
        raise _InvalidError(f'field "paths": {path!r} is empty or not a string; {_PATH_HELP}')
    steps: list[Step] = []
    for segment in path.split("."):
        m = _SEGMENT.fullmatch(segment)
        if m is None:
            raise _InvalidError(f'field "paths": {path!r} is not valid; {_PATH_HELP}')
        steps.append(m.group(1))
        for index in _INDEX.findall(m.group(2)):
            steps.append(ANY_ITEM if index == "*" else int(index))
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
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[Step, ...], ...]]:
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
    """API group of the resource, ``""`` for the core group (``apiVersion: v1``). Required."""

    kind: str
    """Kind of the resource, as in its ``kind:`` (``ModelDeployment``). Required."""

    versions: tuple[str, ...] = ()
    """API versions to match (``v1``, ``v1beta1``); empty means any."""

    paths: tuple[str, ...]
    """Where the references are, one or more paths from the object's root: dot-separated field
    names, each optionally followed by ``[*]`` (every item of a list) or ``[N]`` (item N), e.g.
    ``spec.models[*].source``. A path that reaches a missing field or a non-string is
    skipped. Required."""

    grammar: refs.Grammar = "kit"
    """How the references are written: ``kit`` (``MODELKIT_REF`` / ``kit pull``: a registry
    host is required) or ``image`` (a container image reference: ``docker.io`` is implied).
    Default ``kit``."""

    prefix: str = ""
    """Text before the reference, e.g. ``kit://``; values without it are ignored, and a
    pinned value keeps it. Default empty: the whole value is the reference."""

    expects_modelkit: bool = True
    """Whether the reference must name a ModelKit (or ModelPack): kitpin denies anything
    else, as it does for ``MODELKIT_REF``. Default true; false for a field that may also
    hold a plain container image (it is still pinned)."""

    _steps: tuple[tuple[Step, ...], ...] = field(init=False, repr=False, compare=False)
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
        if not isinstance(data, pointers.MAP):
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
                image_repository(i) for i in _str_tuple(self.kit_cli_images, name="kit_cli_images")
            )
            drivers = _str_tuple(self.modelpack_csi_drivers, name="modelpack_csi_drivers")
        except _InvalidError as e:
            raise errors.ConfigError(f"sites settings: {e}") from None
        extra = tuple(self.extra_sites)
        if not all(isinstance(e, ExtraSite) for e in extra):
            raise errors.ConfigError("sites settings: extra_sites must hold ExtraSite values")
        if not isinstance(self.pod_kinds, pointers.MAP):
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
                pod_tokens = tuple(pointers.split(pointer))
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


DEFAULT_SETTINGS: Final = SitesSettings()
"""The settings of a process that was given none."""
