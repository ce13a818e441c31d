"""A resource kitpin has no code for, declared in settings: :class:`ExtraSite`, and the path
syntax its ``paths`` and ``podSpecs`` are written in. Pure; validated at construction (problems
raise :class:`~controller.errors.ConfigError` naming the field as YAML spells it).

Path syntax (one rule for ``paths`` and ``podSpecs``), either form:

- dot-separated field names from the object's root, each optionally followed by ``[*]``
  (every item of a list) or ``[N]`` (item N, from 0), repeatedly; a whole segment ``*`` is
  every value of a mapping (or every item of a list): ``spec.models[*].source``,
  ``spec.pytorchReplicaSpecs.*.template.spec``. Field names cannot contain ``.``, ``[``,
  ``]``, ``*`` or whitespace.
- an RFC 6901 JSON pointer (it starts with ``/``) whose token ``*`` is every item of a list or
  every value of a mapping: ``/spec/replicatedJobs/*/template/spec/template/spec``. A token
  of digits is the item of that index in a list, the member of that name in a mapping.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from controller import errors, refs
from controller.sites import pointers

__all__ = ["ANY", "ANY_ITEM", "ExtraSite", "Step", "compile_path"]

ANY_ITEM: Final = -1
"""The ``[*]`` step: every item of a list (a mapping there ends the branch)."""
ANY: Final = -2
"""The ``*`` step: every item of a list, every value of a mapping."""
Step = str | int
"""A compiled path step: a member name (str; in a list, a canonical index in digits matches
too), an index (int >= 0), :data:`ANY_ITEM` or :data:`ANY`."""

_NAME = r"[^.\[\]*\s]+"
_SEGMENT = re.compile(rf"({_NAME}|\*)((?:\[(?:\*|0|[1-9][0-9]*)\])*)")
_INDEX = re.compile(r"\[(\*|[0-9]+)\]")
PATH_HELP: Final = (
    "a path is dot-separated field names, each optionally followed by [*] (every item of a "
    "list) or [N] (item N), with * for every value of a mapping (spec.models[*].source, "
    "spec.replicaSpecs.*.template.spec), or a JSON pointer with * tokens "
    "(/spec/replicaSpecs/*/template/spec)"
)


class InvalidError(Exception):
    """A settings problem, without the context the caller adds to its ConfigError."""


def compile_path(path: object, *, name: str = "paths") -> tuple[Step, ...]:
    """The steps of one path in either syntax (see the module docstring); :class:`InvalidError`
    naming the field ``name`` when it is not one."""
    if not isinstance(path, str) or not path:
        raise InvalidError(f'field "{name}": {path!r} is empty or not a string; {PATH_HELP}')
    steps: list[Step] = []
    if path.startswith("/"):
        try:
            tokens = pointers.split(path)
        except LookupError as e:
            raise InvalidError(f'field "{name}": {e}; {PATH_HELP}') from None
        if any(not token for token in tokens):
            raise InvalidError(f'field "{name}": {path!r} has an empty token; {PATH_HELP}')
        return tuple(ANY if token == "*" else token for token in tokens)
    for segment in path.split("."):
        m = _SEGMENT.fullmatch(segment)
        if m is None:
            raise InvalidError(f'field "{name}": {path!r} is not valid; {PATH_HELP}')
        steps.append(ANY if m.group(1) == "*" else m.group(1))
        for index in _INDEX.findall(m.group(2)):
            steps.append(ANY_ITEM if index == "*" else int(index))
    return tuple(steps)


def str_tuple(value: object, *, name: str, allow_empty: bool = True) -> tuple[str, ...]:
    """``value`` as a tuple of non-empty strings; :class:`InvalidError` naming ``name``."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidError(f"{name} must be a list of strings, got {value!r}")
    items = tuple(value)
    if not all(isinstance(item, str) and item for item in items):
        raise InvalidError(f"{name} must be a list of non-empty strings, got {list(items)!r}")
    if not allow_empty and not items:
        raise InvalidError(f"{name} must not be empty")
    return items


_KEYS: Final = {
    "group": "group",
    "kind": "kind",
    "versions": "versions",
    "paths": "paths",
    "podSpecs": "pod_specs",
    "grammar": "grammar",
    "prefix": "prefix",
    "expectsModelKit": "expects_modelkit",
}

_Checked = tuple[
    tuple[str, ...],
    tuple[str, ...],
    tuple[str, ...],
    tuple[tuple[Step, ...], ...],
    tuple[tuple[Step, ...], ...],
]


def _check(
    *,
    group: object,
    kind: object,
    versions: object = (),
    paths: object = (),
    pod_specs: object = (),
    grammar: object = "kit",
    prefix: object = "",
    expects_modelkit: object = True,
) -> _Checked:
    """Validate the fields of an :class:`ExtraSite`; return versions, paths, pod specs and
    both compiled. Messages name fields as they are spelled in YAML settings."""
    if not isinstance(group, str):
        raise InvalidError(f'field "group" must be a string ("" for the core group), got {group!r}')
    if not isinstance(kind, str) or not kind:
        raise InvalidError(f'field "kind" must be a non-empty string, got {kind!r}')
    if grammar not in ("kit", "image"):
        raise InvalidError(f'field "grammar" must be "kit" or "image", got {grammar!r}')
    if not isinstance(prefix, str):
        raise InvalidError(f'field "prefix" must be a string, got {prefix!r}')
    if not isinstance(expects_modelkit, bool):
        raise InvalidError(
            f'field "expectsModelKit" must be true or false, got {expects_modelkit!r}'
        )
    checked_versions = str_tuple(versions, name='field "versions"')
    checked_paths = str_tuple(paths, name='field "paths"')
    checked_pods = str_tuple(pod_specs, name='field "podSpecs"')
    if not checked_paths and not checked_pods:
        raise InvalidError(
            'field "paths" or "podSpecs" is required: where the references are, or where the '
            "pod specs are"
        )
    return (
        checked_versions,
        checked_paths,
        checked_pods,
        tuple(compile_path(p) for p in checked_paths),
        tuple(compile_path(p, name="podSpecs") for p in checked_pods),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class ExtraSite:
    """A resource that holds ModelKit references where kitpin has no code for it: a platform
    team's own CRD, or one of the shipped defaults (:mod:`controller.sites.defaults`).

    ``paths`` reach strings that are references; ``podSpecs`` reach pod specs, in which every
    pod-spec rule applies (``MODELKIT_REF`` env, kit CLI arguments, image volumes, ModelPack
    CSI volumes). Both use the path syntax of the module docstring. A path that reaches a
    missing field or the wrong type is skipped; so is a string that does not start with
    ``prefix`` or is empty. Invalid fields raise :class:`~controller.errors.ConfigError` at
    construction.

    A resource declared with ``podSpecs`` and no ``paths`` is a pod template (like a
    Deployment): left alone when it has a controller owner, and never rewritten in
    ``mode: pods-only``. With ``paths`` it is pinned where it is, like a KServe
    InferenceService.
    """

    group: str
    """API group of the resource, ``""`` for the core group (``apiVersion: v1``). Required."""

    kind: str
    """Kind of the resource, as in its ``kind:`` (``ModelDeployment``). Required."""

    versions: tuple[str, ...] = ()
    """API versions to match (``v1``, ``v1beta1``); empty means any."""

    paths: tuple[str, ...] = ()
    """Where the references are, from the object's root: dot-separated field names, each
    optionally followed by ``[*]`` (every item of a list) or ``[N]`` (item N), with ``*`` for
    every value of a mapping, e.g. ``spec.models[*].source``; or a JSON pointer with ``*``
    tokens (``/spec/models/*/source``). A path that reaches a missing field or a non-string
    is skipped. Default none; ``paths`` or ``podSpecs`` is required."""

    pod_specs: tuple[str, ...] = ()
    """Where the resource embeds pod specs (a ``PodSpec``, i.e. the ``spec`` of a pod
    template), in the syntax of ``paths``: ``/spec/template/spec``,
    ``/spec/workerGroupSpecs/*/template/spec``. Every pod-spec rule applies inside each
    (``MODELKIT_REF`` env, kit CLI arguments, image volumes, ModelPack CSI volumes). Default
    none."""

    grammar: refs.Grammar = "kit"
    """How the references at ``paths`` are written: ``kit`` (``MODELKIT_REF`` / ``kit
    pull``: a registry host is required) or ``image`` (a container image reference:
    ``docker.io`` is implied). Default ``kit``."""

    prefix: str = ""
    """Text before the references at ``paths``, e.g. ``kit://``; values without it are
    ignored, and a pinned value keeps it. With ``kit://``, the other spellings of
    ``sites.uriPrefixes`` count too. Default empty: the whole value is the reference."""

    expects_modelkit: bool = True
    """Whether the references at ``paths`` must name a ModelKit (or ModelPack): kitpin denies
    anything else, as it does for ``MODELKIT_REF``. Default true; false for a field that may
    also hold a plain container image (it is still pinned)."""

    _steps: tuple[tuple[Step, ...], ...] = field(init=False, repr=False, compare=False)
    """``paths`` compiled (:func:`compile_path`)."""
    _pod_steps: tuple[tuple[Step, ...], ...] = field(init=False, repr=False, compare=False)
    """``pod_specs`` compiled."""

    def __post_init__(self) -> None:
        try:
            versions, paths, pods, steps, pod_steps = _check(
                group=self.group,
                kind=self.kind,
                versions=self.versions,
                paths=self.paths,
                pod_specs=self.pod_specs,
                grammar=self.grammar,
                prefix=self.prefix,
                expects_modelkit=self.expects_modelkit,
            )
        except InvalidError as e:
            raise errors.ConfigError(f"extra site {self.group!r}/{self.kind!r}: {e}") from None
        object.__setattr__(self, "versions", versions)
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "pod_specs", pods)
        object.__setattr__(self, "_steps", steps)
        object.__setattr__(self, "_pod_steps", pod_steps)

    @classmethod
    def from_mapping(cls, data: object, *, context: str = "extra site") -> ExtraSite:
        """Build from YAML settings with camelCase keys (``group``, ``kind``, ``versions``,
        ``paths``, ``podSpecs``, ``grammar``, ``prefix``, ``expectsModelKit``). Any problem
        raises :class:`~controller.errors.ConfigError` whose message starts with ``context``
        (e.g. ``extraSites[2]``) and names the field."""
        if not isinstance(data, pointers.MAP):
            raise errors.ConfigError(f"{context}: must be a mapping, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in _KEYS)
        if unknown:
            raise errors.ConfigError(
                f"{context}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_KEYS)}"
            )
        for required in ("group", "kind"):
            if required not in data:
                hint = ' ("" for the core group)' if required == "group" else ""
                raise errors.ConfigError(f'{context}: field "{required}" is required{hint}')
        kwargs: dict[str, Any] = {_KEYS[k]: v for k, v in data.items()}
        try:
            for yaml_name, name in (
                ("versions", "versions"),
                ("paths", "paths"),
                ("podSpecs", "pod_specs"),
            ):
                if name in kwargs and not isinstance(kwargs[name], list):
                    raise InvalidError(
                        f'field "{yaml_name}" must be a list of strings, got {kwargs[name]!r}'
                    )
            _check(**kwargs)
        except InvalidError as e:
            raise errors.ConfigError(f"{context}: {e}") from None
        return cls(**kwargs)

    @property
    def template(self) -> bool:
        """Whether this declares a pod template: ``podSpecs`` and no ``paths``."""
        return bool(self.pod_specs) and not self.paths
