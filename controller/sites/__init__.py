"""Every ModelKit reference in a Kubernetes object, and pinned values written back. Pure.

``sites.find(obj, settings)`` returns the :class:`Findings` of an object: the :class:`Site`
of every reference (an RFC 6901 JSON pointer to the string, its grammar, how to read it) and
every :class:`Unresolvable` place kitpin cannot see. ``sites.apply(obj, values)`` writes
pinned strings at those pointers (copy-on-write), ``sites.json_patch`` turns the same changes
into the JSON patch of an admission answer. Nothing here parses references
(:mod:`controller.refs`), does I/O, or knows about kopf.

Modules, each importable on its own; this package re-exports their public names:

- :mod:`~controller.sites.model`    — the values: ``Site``, ``Unresolvable``, ``Findings``;
- :mod:`~controller.sites.settings` — what ``find`` looks for: ``SitesSettings``, ``ExtraSite``;
- :mod:`~controller.sites.finding`  — ``find``, with the documented list of every path it
  visits ("Paths visited", the user documentation of what kitpin pins), ``controller_owner``,
  ``pod_template_path``;
- :mod:`~controller.sites.pointers` — RFC 6901/6902: ``escape``, ``get``, ``apply``,
  ``json_patch``, ``patch``.
"""

from __future__ import annotations

from controller.sites.finding import controller_owner, find, pod_template_path
from controller.sites.model import (
    EMPTY,
    KIT_URI_PREFIX,
    Findings,
    Site,
    SiteKind,
    Unresolvable,
)
from controller.sites.pointers import PatchOp, apply, escape, get, json_patch, patch
from controller.sites.settings import DEFAULT_POD_KINDS, KSERVE_GROUP, ExtraSite, SitesSettings

__all__ = [
    "DEFAULT_POD_KINDS",
    "EMPTY",
    "KIT_URI_PREFIX",
    "KSERVE_GROUP",
    "ExtraSite",
    "Findings",
    "PatchOp",
    "Site",
    "SiteKind",
    "SitesSettings",
    "Unresolvable",
    "apply",
    "controller_owner",
    "escape",
    "find",
    "get",
    "json_patch",
    "patch",
    "pod_template_path",
]
