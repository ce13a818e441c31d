"""What policy judges: one :class:`policy.Evidence` per reference of an object. Pure, no I/O.

The admission engine (:meth:`controller.admission.pinning.Engine.mutate` and ``validate``)
and ``kitpin check`` build their evidence here, so the webhook and the CLI reach the same
verdict on the same object. Resolving references and reading Kitfiles (I/O, deadlines) stay
with the callers; they hand in what they found.

The rule: policy judges each reference *as the user wrote it*. For a site kitpin pinned,
that is the ``from`` of its ``kitpin.dev/pinned`` record (:mod:`controller.admission.pins`),
so kitpin's own digest never satisfies ``tags.requireDigest``. Annotations are
user-writable, so a record counts only when it could be kitpin's (:func:`as_written`): the
site still holds the record's digest, the record says the user wrote no digest, and it names
the same registry, repository and tag (kitpin's pins keep them). Any other record is forged
or stale and ignored: the site's value itself is judged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller import errors, policy, refs, signatures, sites
from controller.admission import pins
from controller.types import Resolution


@dataclass(frozen=True, kw_only=True)
class Found:
    """One reference of the object: its site and the site's reference, parsed."""

    site: sites.Site
    ref: refs.Reference


def as_written(found: Found, record: Mapping[str, str] | None) -> tuple[refs.Reference, str | None]:
    """The reference the user wrote at ``found`` and, when kitpin has since pinned it, the
    text they wrote (else None: the site's value is what they wrote), given the site's
    ``kitpin.dev/pinned`` record (see the module docstring for when a record counts)."""
    site, ref = found.site, found.ref
    if not record or ref.digest is None or record.get("digest") != ref.digest:
        return ref, None
    original = record.get("from", "")
    if not original.startswith(site.prefix):
        return ref, None
    try:
        claimed = refs.parse(original[len(site.prefix) :], grammar=site.grammar)
    except errors.ReferenceError:
        return ref, None
    # A record may only say that the user wrote no digest; one naming another registry,
    # repository or tag could steer repository and tag rules to a reference never used.
    if (
        claimed.digest is None
        and claimed.canonical_name == ref.canonical_name
        and claimed.tag == ref.tag
    ):
        return claimed, original
    return ref, None


def build(
    obj: Mapping[str, Any],
    found: Iterable[Found],
    *,
    resolutions: Mapping[str, Resolution] | None = None,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    first_seen: Callable[[refs.Reference], policy.FirstSeen | None] | None = None,
    verified: Mapping[str, Mapping[policy.PolicyRef, signatures.Outcome]] | None = None,
) -> list[policy.Evidence]:
    """The evidence policy judges for the references ``found`` in ``obj``: each as the user
    wrote it (``obj``'s pin records), with its resolution, its config blob (the Kitfile) and
    the outcome of its digest's signature check per policy
    (:mod:`controller.admission.signing`) when the caller has them (all three by the site's
    JSON pointer, relative to ``obj``), and for a reference the user wrote without a digest
    the first digest recorded for its tag (``first_seen``, the ModelKitTag records:
    ``tags.immutable``)."""
    records = pins.read(obj)
    resolutions = resolutions or {}
    configs = configs or {}
    verified = verified or {}
    evidence: list[policy.Evidence] = []
    for f in found:
        reference, written = as_written(f, records.get(f.site.path))
        first = (
            first_seen(reference) if first_seen is not None and reference.digest is None else None
        )
        evidence.append(
            policy.Evidence(
                site=f.site,
                reference=reference,
                resolution=resolutions.get(f.site.path),
                config=configs.get(f.site.path),
                written=written,
                first_seen=first,
                signatures=verified.get(f.site.path),
            )
        )
    return evidence
