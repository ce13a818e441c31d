"""Reading a Kitfile for policy: where it is (:func:`kitfile_of`), which parent ModelKits it
names (:func:`parent_references`), which licenses it declares (:func:`declared_licenses`, and a
ModelPack config's, :func:`modelpack_licenses`), and whether a declared SPDX expression is
approved (:func:`license_approved`). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller import artifacts, errors, jsonlimits, refs
from controller.policy.model import Evidence


@dataclass(frozen=True, kw_only=True)
class ParentReference:
    """A Kitfile field that names another ModelKit (kit pulls it when unpacking)."""

    field: str
    """``model.path`` or ``datasets[i].remotePath`` (``datasets[i].path``)."""
    text: str
    reference: refs.Reference | None
    """Parsed in the kit grammar; None when it has no registry host (kit's local storage)."""


def kitfile_of(evidence: Evidence) -> Mapping[str, Any] | None:
    """The Kitfile of the referenced artifact, when the evidence holds it: the config blob
    of a KitOps ModelKit, or the ``ml.kitops.modelkit.kitfile`` annotation of a ModelPack
    packed by kit. None when unknown, absent (a ModelPack not made by kit) or malformed."""
    if evidence.resolution is None:
        return None
    manifest = evidence.resolution.manifest
    if manifest.format == "kitops-modelkit":
        return evidence.config if isinstance(evidence.config, Mapping) else None
    if manifest.format == "modelpack":
        text = artifacts.kitfile_json(manifest)
        if text is None:
            return None
        try:
            data = jsonlimits.loads(text)  # bounded: the registry wrote it
        except ValueError:
            return None
        return data if isinstance(data, Mapping) else None
    return None


def _looks_like_reference(text: str) -> bool:
    """Kit's own test (``IsModelKitReference``): a ':' or '@', no URL scheme, and the text
    parses as a reference. kitpin's parser is stricter than kit's, never looser."""
    return ("://" not in text) and (":" in text or "@" in text)


def parent_references(kitfile: Mapping[str, Any]) -> tuple[ParentReference, ...]:
    """Every parent ModelKit a Kitfile names: ``model.path`` and ``datasets[].remotePath``
    (and, defensively, ``datasets[].path``) when they look like a ModelKit reference as kit
    decides it: containing ':' or '@' and parsing as a reference. A reference without a
    registry host is reported too (``reference`` None): kit would read it from local
    storage. Anything else (a file path, an ``s3://`` URL) is not a parent."""
    candidates: list[tuple[str, object]] = []
    model = kitfile.get("model")
    if isinstance(model, Mapping):
        candidates.append(("model.path", model.get("path")))
    datasets = kitfile.get("datasets")
    if isinstance(datasets, list):
        for i, dataset in enumerate(datasets):
            if isinstance(dataset, Mapping):
                candidates.append((f"datasets[{i}].remotePath", dataset.get("remotePath")))
                candidates.append((f"datasets[{i}].path", dataset.get("path")))
    found: list[ParentReference] = []
    for name, value in candidates:
        if not isinstance(value, str) or not _looks_like_reference(value):
            continue
        try:
            ref = refs.parse(value, grammar="kit")
        except errors.LocalReferenceError:
            found.append(ParentReference(field=name, text=value, reference=None))
            continue
        except errors.ReferenceError:
            continue
        found.append(ParentReference(field=name, text=value, reference=ref))
    return tuple(found)


def declared_licenses(kitfile: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """``(field, license)`` for every license a Kitfile declares: ``package.license``,
    ``model.license``, ``model.parts[].license``, ``datasets[].license``, ``code[].license``
    (the fields kit itself collects into a ModelPack's licenses). Blank values are skipped."""
    found: list[tuple[str, str]] = []

    def add(name: str, holder: object) -> None:
        if isinstance(holder, Mapping):
            value = holder.get("license")
            if isinstance(value, str) and value.strip():
                found.append((name, value))

    add("package.license", kitfile.get("package"))
    model = kitfile.get("model")
    add("model.license", model)
    if isinstance(model, Mapping) and isinstance(model.get("parts"), list):
        for i, part in enumerate(model["parts"]):
            add(f"model.parts[{i}].license", part)
    for section in ("datasets", "code"):
        items = kitfile.get(section)
        if isinstance(items, list):
            for i, item in enumerate(items):
                add(f"{section}[{i}].license", item)
    return tuple(found)


def modelpack_licenses(config: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """``(field, license)`` for every license a ModelPack config declares
    (``descriptor.licenses[]``). Blank values are skipped."""
    descriptor = config.get("descriptor")
    if not isinstance(descriptor, Mapping):
        return ()
    licenses = descriptor.get("licenses")
    if not isinstance(licenses, list):
        return ()
    return tuple(
        (f"descriptor.licenses[{i}]", text)
        for i, text in enumerate(licenses)
        if isinstance(text, str) and text.strip()
    )


def license_approved(expression: str, approved: frozenset[str]) -> bool:
    """Whether an SPDX license expression is covered by the approved identifiers: the whole
    text approved as is, or (without parentheses) ``A OR B`` with one alternative approved,
    ``A AND B`` with all approved. ``WITH`` exceptions are part of an identifier."""
    text = expression.strip()
    if text.casefold() in approved:
        return True
    if "(" in text or ")" in text:
        return False
    alternatives = text.split(" OR ")
    if len(alternatives) > 1:
        return any(license_approved(a, approved) for a in alternatives)
    conjuncts = text.split(" AND ")
    if len(conjuncts) > 1:
        return all(c.strip().casefold() in approved for c in conjuncts)
    return False
