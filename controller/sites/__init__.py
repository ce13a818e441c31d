"""Every ModelKit reference in a Kubernetes object, and pinned values written back. Pure.

``sites.find(obj, settings)`` returns the :class:`Findings` of an object: the :class:`Site`
of every reference (an RFC 6901 JSON pointer to the string, its grammar, how to read it) and
every :class:`Unresolvable` place kitpin cannot see. ``sites.apply(obj, values)`` writes
pinned strings at those pointers (copy-on-write), ``sites.json_patch`` turns the same changes
into the JSON patch of an admission answer. Nothing here parses references
(:mod:`controller.refs`), does I/O, or knows about kopf.

Modules, each importable on its own; this package re-exports their public names:

- :mod:`~controller.sites.model`    — the values: ``Site``, ``Unresolvable``, ``Findings``;
- :mod:`~controller.sites.extra`    — a resource kitpin has no code for, declared in settings:
  ``ExtraSite`` and its path syntax;
- :mod:`~controller.sites.defaults` — the custom resources read out of the box:
  ``DEFAULT_SITES`` (LeaderWorkerSet, JobSet, Ray, Knative, LLMInferenceService, Kubeflow,
  Argo Rollouts, Volcano);
- :mod:`~controller.sites.settings` — what ``find`` looks for: ``SitesSettings``;
- :mod:`~controller.sites.finding`  — ``find``, with the documented list of every path it
  visits ("Paths visited", the user documentation of what kitpin pins), ``controller_owner``,
  ``is_template`` (the owner rule and pods-only), ``pod_specs``, ``pod_template_path``;
- :mod:`~controller.sites.pointers` — RFC 6901/6902: ``escape``, ``get``, ``apply``,
  ``json_patch``, ``patch``.
"""

from __future__ import annotations

from controller.sites.defaults import DEFAULT_SITES
from controller.sites.extra import ExtraSite
from controller.sites.finding import (
    controller_owner,
    find,
    is_template,
    pod_specs,
    pod_template_path,
)
from controller.sites.model import (
    EMPTY,
    KIT_URI_PREFIX,
    Findings,
    Site,
    SiteKind,
    Unresolvable,
)
from controller.sites.pointers import PatchOp, apply, escape, get, json_patch, patch
from controller.sites.settings import (
    DEFAULT_POD_KINDS,
    KSERVE_GROUP,
    SitesSettings,
    check_disabled_defaults,
    check_uri_prefixes,
)

__all__ = [
    "DEFAULT_POD_KINDS",
    "DEFAULT_SITES",
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
    "check_disabled_defaults",
    "check_uri_prefixes",
    "controller_owner",
    "escape",
    "find",
    "get",
    "is_template",
    "json_patch",
    "patch",
    "pod_specs",
    "pod_template_path",
]
