"""Finding the signatures of a digest in its repository, through the registry client.

The places cosign stores them (:mod:`.payloads`), looked up concurrently:

1. the manifest tagged ``sha256-<hex>.sig``: each layer of ``mediaType``
   :data:`~.payloads.SIMPLE_SIGNING` is fetched (the payload whose bytes are signed);
2. the referrers of the digest (the OCI 1.1 referrers API, else the ``sha256-<hex>`` tag
   schema, :meth:`controller.registry.RegistryClient.get_referrers`): each referrer whose
   ``artifactType`` is a cosign signature or a sigstore bundle (attestations of another
   predicate type are skipped unread) is fetched, then its signature or bundle layers; a
   referrer listed without a type (the tag-schema index cosign's library writes) is
   fetched and judged by its manifest's own ``artifactType``.

Nothing is judged here (:mod:`.judging` does, without I/O): what comes back is every
:class:`Candidate` found and every registry error met on the way (a source that failed may
have held the signature that verifies, so the judge cannot call it missing). Costs are
bounded: at most :data:`MAX_REFERRERS` referrers and :data:`MAX_LAYERS` layers per manifest
are read, each blob at most :data:`MAX_BLOB_BYTES`, all through the client's host policy,
credentials, size caps and bounded JSON.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from controller import errors, refs, types
from controller.signatures import payloads

__all__ = [
    "MAX_BLOB_BYTES",
    "MAX_LAYERS",
    "MAX_REFERRERS",
    "Candidate",
    "Found",
    "SignatureRegistry",
    "find",
    "signature_tag",
]

MAX_REFERRERS: Final = 16
"""Signature referrers read per digest; a digest signed more often is unusual."""
MAX_LAYERS: Final = 16
"""Signature layers read per manifest (cosign appends one per signature to the ``.sig``
manifest)."""
MAX_BLOB_BYTES: Final = 256 * 1024
"""A simple-signing payload is ~250 bytes, a bundle a few KiB (with a certificate chain)."""

_SHA256: Final = re.compile(r"sha256:[0-9a-f]{64}")
_UNTYPED: Final = frozenset({None, "application/vnd.oci.empty.v1+json"})
"""The ``artifactType`` of a referrer listed without its type: go-containerregistry (cosign's
registry library) writes the tag-schema index from the config's media type, which is the
empty one for a sigstore bundle, and drops the annotations. Such a referrer is fetched and
judged by its manifest's own ``artifactType``."""


def _signature_predicate(annotations: object) -> bool:
    """False for a bundle whose annotations say it holds an attestation, not a signature."""
    if not isinstance(annotations, Mapping):
        return True
    predicate = annotations.get(payloads.BUNDLE_PREDICATE_ANNOTATION)
    return predicate is None or predicate == payloads.COSIGN_SIGN_PREDICATE


class SignatureRegistry(Protocol):
    """The registry calls a lookup makes (:class:`controller.registry.RegistryClient`)."""

    async def get_manifest(
        self, ref: refs.Reference, *, credential: types.Credential | None = None
    ) -> types.Manifest: ...

    async def get_referrers(
        self, ref: refs.Reference, digest: str, *, credential: types.Credential | None = None
    ) -> Mapping[str, object]: ...

    async def get_blob(
        self,
        ref: refs.Reference,
        digest: str,
        *,
        max_bytes: int,
        credential: types.Credential | None = None,
    ) -> bytes: ...


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A stored signature as found, not yet judged: one layer and its bytes."""

    where: str
    """For messages: ``tag sha256-<hex>.sig layer 0``, ``referrer sha256:… layer 0``."""
    media_type: str
    """:data:`~.payloads.SIMPLE_SIGNING` or a sigstore bundle media type."""
    blob: bytes
    annotations: Mapping[str, str]


@dataclass(frozen=True, kw_only=True)
class Found:
    """Every signature found for a digest and every registry error met looking."""

    candidates: tuple[Candidate, ...]
    failures: tuple[errors.RegistryError, ...]
    skipped: tuple[str, ...] = ()
    """What was not read (over a bound), for messages."""


def signature_tag(digest: str) -> str:
    """cosign's tag for the signatures of ``digest``: ``sha256-<hex>.sig``."""
    return digest.replace(":", "-") + ".sig"


async def find(
    registry: SignatureRegistry,
    ref: refs.Reference,
    digest: str,
    *,
    credential: types.Credential | None = None,
) -> Found:
    """The signatures stored for ``digest`` in ``ref``'s repository (``ref``'s tag and
    digest are not used). Never raises a :class:`errors.RegistryError`: they are collected
    in :attr:`Found.failures`."""
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"{digest!r} is not a sha256 digest")
    lookup = _Lookup(registry, ref, digest, credential)
    await asyncio.gather(lookup.signature_tag(), lookup.referrers())
    return Found(
        candidates=tuple(lookup.from_tag + lookup.from_referrers),
        failures=tuple(lookup.failures),
        skipped=tuple(lookup.skipped),
    )


class _Lookup:
    def __init__(
        self,
        registry: SignatureRegistry,
        ref: refs.Reference,
        digest: str,
        credential: types.Credential | None,
    ) -> None:
        self.registry = registry
        self.ref = dataclasses.replace(ref, digest=None)
        self.digest = digest
        self.credential = credential
        self.from_tag: list[Candidate] = []
        self.from_referrers: list[Candidate] = []
        self.failures: list[errors.RegistryError] = []
        self.skipped: list[str] = []

    async def signature_tag(self) -> None:
        tag = signature_tag(self.digest)
        sig_ref = dataclasses.replace(self.ref, tag=tag, tag_explicit=True)
        try:
            manifest = await self.registry.get_manifest(sig_ref, credential=self.credential)
        except errors.NotFoundError:
            return
        except errors.RegistryError as e:
            self.failures.append(e)
            return
        self.from_tag.extend(await self.layers(manifest, f"tag {tag}"))

    async def referrers(self) -> None:
        try:
            index = await self.registry.get_referrers(
                self.ref, self.digest, credential=self.credential
            )
        except errors.RegistryError as e:
            self.failures.append(e)
            return
        listed = index.get("manifests")
        if not isinstance(listed, list):
            self.failures.append(
                errors.BadResponseError(
                    f"the referrers of {self.ref.canonical_name}@{self.digest}: the index has "
                    f"no manifests list ({types.json_type(listed)}); the registry is "
                    "misbehaving",
                    registry=self.ref.registry,
                    repository=self.ref.repository,
                )
            )
            return
        wanted: list[str] = []
        for item in listed:
            if not isinstance(item, dict):
                continue
            artifact_type = item.get("artifactType")
            digest = item.get("digest")
            if (
                artifact_type not in payloads.SIGNATURE_ARTIFACT_TYPES
                and artifact_type not in _UNTYPED
            ):
                continue  # an SBOM, an attestation, ...: not read
            if not _signature_predicate(item.get("annotations")):
                continue  # an attestation (SLSA provenance, ...) in a bundle
            if isinstance(digest, str) and _SHA256.fullmatch(digest) and digest not in wanted:
                wanted.append(digest)
        if len(wanted) > MAX_REFERRERS:
            self.skipped.append(
                f"{len(wanted) - MAX_REFERRERS} of {len(wanted)} signature referrers (kitpin "
                f"reads {MAX_REFERRERS})"
            )
        found = await asyncio.gather(*(self.referrer(d) for d in wanted[:MAX_REFERRERS]))
        for candidates in found:
            self.from_referrers.extend(candidates)

    async def referrer(self, digest: str) -> list[Candidate]:
        try:
            manifest = await self.registry.get_manifest(
                self.ref.with_digest(digest), credential=self.credential
            )
        except errors.RegistryError as e:
            self.failures.append(e)
            return []
        if (
            manifest.artifact_type not in payloads.SIGNATURE_ARTIFACT_TYPES
            and manifest.config_media_type != payloads.COSIGN_SIG_ARTIFACT
        ) or not _signature_predicate(manifest.annotations):
            return []  # listed without its type (the tag schema), and not a signature
        return await self.layers(manifest, f"referrer {digest}")

    async def layers(self, manifest: types.Manifest, where: str) -> list[Candidate]:
        chosen = [
            (i, layer)
            for i, layer in enumerate(manifest.layers)
            if layer.media_type == payloads.SIMPLE_SIGNING
            or layer.media_type in payloads.BUNDLE_MEDIA_TYPES
        ]
        if len(chosen) > MAX_LAYERS:
            self.skipped.append(
                f"{len(chosen) - MAX_LAYERS} of {len(chosen)} signature layers of {where} "
                f"(kitpin reads {MAX_LAYERS})"
            )
        results = await asyncio.gather(
            *(self.blob(layer, f"{where} layer {i}") for i, layer in chosen[:MAX_LAYERS])
        )
        return [c for c in results if c is not None]

    async def blob(self, layer: types.Layer, where: str) -> Candidate | None:
        if layer.size > MAX_BLOB_BYTES:
            self.skipped.append(
                f"{where} ({layer.size} bytes, more than the {MAX_BLOB_BYTES}-byte limit for a "
                "signature)"
            )
            return None
        try:
            blob = await self.registry.get_blob(
                self.ref, layer.digest, max_bytes=MAX_BLOB_BYTES, credential=self.credential
            )
        except errors.RegistryError as e:
            self.failures.append(e)
            return None
        return Candidate(
            where=where, media_type=layer.media_type, blob=blob, annotations=layer.annotations
        )
