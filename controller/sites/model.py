"""The values :func:`controller.sites.find` returns: :class:`Site`, :class:`Unresolvable`,
:class:`Findings`. Pure, frozen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from controller import refs

__all__ = ["EMPTY", "KIT_URI_PREFIX", "Findings", "Site", "SiteKind", "Unresolvable"]

SiteKind = Literal[
    "env", "kit-cli-args", "image-volume", "modelpack-csi", "kserve-storage-uri", "extra"
]

KIT_URI_PREFIX: Final = "kit://"
"""kit accepts this in front of a reference anywhere (and KServe's ``storageUri`` needs it)."""


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
