"""What :func:`controller.sites.find` looks for: :class:`SitesSettings`. Pure; built once per
process by the settings loader, validated at construction (problems raise
:class:`~controller.errors.ConfigError`). The resources kitpin has no code for are
:class:`~controller.sites.extra.ExtraSite` values: the shipped defaults
(:mod:`controller.sites.defaults`) and the platform team's own (``extra_sites``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from controller import errors
from controller.sites import pointers
from controller.sites.defaults import DEFAULT_SITES
from controller.sites.extra import ExtraSite, InvalidError, str_tuple
from controller.sites.model import KIT_URI_PREFIX

__all__ = [
    "DEFAULT_POD_KINDS",
    "DEFAULT_SETTINGS",
    "KSERVE_GROUP",
    "KSERVE_SCHEMES",
    "SitesSettings",
    "check_disabled_defaults",
    "check_uri_prefixes",
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


KSERVE_SCHEMES: Final = frozenset(
    {"gs://", "s3://", "pvc://", "hf://", "oci://", "hdfs://", "webhdfs://", "http://", "https://"}
)
"""URI schemes KServe's storage initializer serves itself: never a kit URI prefix."""

_URI_PREFIX = re.compile(r"[a-z][a-z0-9+.-]*://")


def _default_pod_kinds() -> Mapping[tuple[str, str], str]:
    return DEFAULT_POD_KINDS


@dataclass(frozen=True, slots=True)
class _Plan:
    """What :func:`find` walks for one (group, kind)."""

    pod_tokens: tuple[str, ...] | None
    """Pointer tokens of the pod spec of ``pod_kinds`` (None: the kind has none there)."""
    pod_pointer: str
    kserve: bool
    """A KServe InferenceService (its storage URIs and components)."""
    extra: tuple[ExtraSite, ...]
    """Shipped defaults and extra sites declared for this kind, in order."""
    template: bool
    """A pod template: its pod specs hold every reference (the owner rule, pods-only)."""


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
    kinds (:data:`DEFAULT_POD_KINDS`). Custom resources that embed pod specs are declared
    with ``podSpecs`` (:class:`ExtraSite`) instead."""

    uri_prefixes: tuple[str, ...] = ()
    """URI schemes besides ``kit://`` that a KServe ``ClusterStorageContainer`` serves with
    kit (its ``supportedUriFormats`` prefix), e.g. ``modelkit://``. Wherever kitpin reads a
    ``kit://`` URI (InferenceService ``storageUri``/``storageUris``, LLMInferenceService model
    and adapter URIs, extra sites whose ``prefix`` is ``kit://``), a value with one of these
    is read and pinned the same way, keeping its prefix. Each must be a lowercase scheme
    ending in ``://`` and not one KServe serves itself (``s3://``, ``gs://``, ``hf://``,
    ``oci://``, ``pvc://``, ``http(s)://``, ``(web)hdfs://``). Default none."""

    disabled_defaults: tuple[str, ...] = ()
    """Shipped custom resources (docs/sites.md) not to read, by resource name:
    ``rayjobs.ray.io``, ``services.serving.knative.dev``, ... Default none: all of them are
    read. An ``extra`` entry with the group and kind of a default replaces that default
    instead."""

    extra_sites: tuple[ExtraSite, ...] = ()
    """A platform team's own resources. Default none."""

    _active: tuple[ExtraSite, ...] = field(init=False, repr=False, compare=False)
    _plans: Mapping[tuple[str, str], _Plan] = field(init=False, repr=False, compare=False)
    _env_name_set: frozenset[str] = field(init=False, repr=False, compare=False)
    _kit_image_set: frozenset[str] = field(init=False, repr=False, compare=False)
    _kit_image_prefixes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _csi_driver_set: frozenset[str] = field(init=False, repr=False, compare=False)
    _kit_uri_prefixes: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            env_names = str_tuple(self.env_names, name="env_names")
            kit_images = tuple(
                image_repository(i) for i in str_tuple(self.kit_cli_images, name="kit_cli_images")
            )
            drivers = str_tuple(self.modelpack_csi_drivers, name="modelpack_csi_drivers")
        except InvalidError as e:
            raise errors.ConfigError(f"sites settings: {e}") from None
        try:
            uri_prefixes = check_uri_prefixes(self.uri_prefixes)
            disabled = check_disabled_defaults(self.disabled_defaults)
        except errors.ConfigError as e:
            raise errors.ConfigError(f"sites settings: {e}") from None
        extra = tuple(self.extra_sites)
        if not all(isinstance(e, ExtraSite) for e in extra):
            raise errors.ConfigError("sites settings: extra_sites must hold ExtraSite values")
        if not isinstance(self.pod_kinds, pointers.MAP):
            raise errors.ConfigError("sites settings: pod_kinds must be a mapping")
        pod_kinds: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {}
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
                pod_kinds[key] = (tuple(pointers.split(pointer)), pointer)
            except LookupError as e:
                raise errors.ConfigError(f"sites settings: pod_kinds entry {key!r}: {e}") from None
        replaced = {(s.group, s.kind) for s in extra}
        active = (
            *(
                site
                for name, site in DEFAULT_SITES.items()
                if name not in disabled and (site.group, site.kind) not in replaced
            ),
            *extra,
        )
        object.__setattr__(self, "env_names", env_names)
        object.__setattr__(self, "kit_cli_images", kit_images)
        object.__setattr__(self, "modelpack_csi_drivers", drivers)
        object.__setattr__(self, "uri_prefixes", uri_prefixes)
        object.__setattr__(self, "disabled_defaults", disabled)
        object.__setattr__(self, "extra_sites", extra)
        object.__setattr__(self, "_active", active)
        object.__setattr__(self, "_plans", _plans(pod_kinds, active))
        object.__setattr__(self, "_env_name_set", frozenset(env_names))
        object.__setattr__(self, "_kit_image_set", frozenset(kit_images))
        object.__setattr__(self, "_kit_image_prefixes", kit_images)
        object.__setattr__(self, "_csi_driver_set", frozenset(drivers))
        object.__setattr__(self, "_kit_uri_prefixes", (KIT_URI_PREFIX, *uri_prefixes))

    @property
    def active_sites(self) -> tuple[ExtraSite, ...]:
        """Every :class:`ExtraSite` in force: the shipped defaults that are neither disabled
        nor replaced by an ``extra`` entry of their group and kind, then ``extra_sites``."""
        return self._active


def check_uri_prefixes(value: object) -> tuple[str, ...]:
    """``uri_prefixes`` checked (:class:`~controller.errors.ConfigError` saying what is
    wrong), without duplicates or ``kit://`` itself."""
    try:
        prefixes = str_tuple(value, name="uri_prefixes")
    except InvalidError as e:
        raise errors.ConfigError(str(e)) from None
    for prefix in prefixes:
        if not _URI_PREFIX.fullmatch(prefix):
            raise errors.ConfigError(
                f"uri_prefixes: {prefix!r} is not a URI scheme: write it as the "
                "supportedUriFormats prefix of a ClusterStorageContainer, lowercase and ending "
                'in "://", such as "modelkit://"'
            )
        if prefix in KSERVE_SCHEMES:
            raise errors.ConfigError(
                f"uri_prefixes: {prefix!r} is a scheme KServe serves itself, not with kit: "
                "kitpin must not read those URIs as ModelKits"
            )
    return tuple(dict.fromkeys(p for p in prefixes if p != KIT_URI_PREFIX))


def check_disabled_defaults(value: object) -> tuple[str, ...]:
    """``disabled_defaults`` checked (:class:`~controller.errors.ConfigError` naming the
    unknown names and the known ones), without duplicates."""
    try:
        names = str_tuple(value, name="disabled_defaults")
    except InvalidError as e:
        raise errors.ConfigError(str(e)) from None
    unknown = [n for n in names if n not in DEFAULT_SITES]
    if unknown:
        raise errors.ConfigError(
            f"disabled_defaults: {', '.join(map(repr, unknown))} is not a shipped default "
            f"(a resource name <plural>.<group>); the defaults are {', '.join(DEFAULT_SITES)}"
        )
    return tuple(dict.fromkeys(names))


def _plans(
    pod_kinds: Mapping[tuple[str, str], tuple[tuple[str, ...], str]],
    active: tuple[ExtraSite, ...],
) -> Mapping[tuple[str, str], _Plan]:
    by_kind: dict[tuple[str, str], list[ExtraSite]] = {}
    for site in active:
        by_kind.setdefault((site.group, site.kind), []).append(site)
    kserve = (KSERVE_GROUP, "InferenceService")
    plans: dict[tuple[str, str], _Plan] = {}
    for key in (*pod_kinds, kserve, *by_kind):
        if key in plans:
            continue
        tokens, pointer = pod_kinds.get(key, (None, ""))
        extra = tuple(by_kind.get(key, ()))
        is_kserve = key == kserve
        has_pods = tokens is not None or any(s.pod_specs for s in extra)
        has_paths = is_kserve or any(s.paths for s in extra)
        template = has_pods and not has_paths and key != ("", "Pod")
        plans[key] = _Plan(tokens, pointer, is_kserve, extra, template)
    return MappingProxyType(plans)


DEFAULT_SETTINGS: Final = SitesSettings()
"""The settings of a process that was given none."""
