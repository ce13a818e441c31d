"""What a manifest is: KitOps ModelKit, CNCF ModelPack, OCI index or something else. Pure.

Recognition follows the KitOps rules (see the ModelKit reference notes, §1):

=====================  =====================================================================
format                 recognised when
=====================  =====================================================================
``oci-index``          the body's ``mediaType`` (else the served Content-Type) is an OCI image
                       index or a Docker manifest list; with neither, a body that has a
                       ``manifests`` list and no ``layers``
``kitops-modelkit``    ``config.mediaType`` is :data:`KITOPS_CONFIG` or ``artifactType`` is
                       :data:`KITOPS_MANIFEST_ARTIFACT_TYPE`. Kit up to 1.7 writes NO
                       ``mediaType`` and NO ``artifactType`` into the body: the config decides.
``modelpack``          ``config.mediaType`` is :data:`MODELPACK_CONFIG` or ``artifactType`` is
                       :data:`MODELPACK_MANIFEST_ARTIFACT_TYPE`. A ModelPack packed by kit
                       also carries the Kitfile in the :data:`KITFILE_ANNOTATION` annotation.
``other``              anything else: a container image, a Helm chart, a signature, ...
=====================  =====================================================================

The KitOps rule is checked first, as kit itself does. Nothing here does I/O: the registry
client reads, size-checks and hashes the bytes, then calls :func:`parse_manifest`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, get_args

from controller import errors, types

# -- OCI and Docker manifest media types ------------------------------------------------------

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"

DOCKER_SCHEMA1_MEDIA_TYPES: Final = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
"""Docker image manifest schema 1: deprecated, unpullable by current runtimes, unsupported."""

MANIFEST_MEDIA_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_MEDIA_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})

ACCEPTED_MEDIA_TYPES: Final = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
"""What a client should list in ``Accept`` when fetching a manifest by tag, so the registry
serves the document whose digest the runtime will also see (never a converted one)."""

# -- KitOps --------------------------------------------------------------------------------

KITOPS_CONFIG: Final = "application/vnd.kitops.modelkit.config.v1+json"
"""Config media type of a KitOps ModelKit; the config blob is the Kitfile as JSON."""
KITOPS_MANIFEST_ARTIFACT_TYPE: Final = "application/vnd.kitops.modelkit.manifest.v1+json"
KITOPS_INDEX_ARTIFACT_TYPE: Final = "application/vnd.kitops.modelkit.index.v1+json"

KITOPS_LAYER_PREFIX: Final = "application/vnd.kitops.modelkit."
KITOPS_MCPB_LAYER: Final = "application/vnd.kitops.modelkit.mcpb.v1.raw"
"""An MCP bundle (``.mcpb``), stored as the verbatim ZIP archive."""

KITFILE_ANNOTATION: Final = "ml.kitops.modelkit.kitfile"
"""Manifest annotation holding the Kitfile JSON in a ModelPack packed by kit."""
CLI_VERSION_ANNOTATION: Final = "ml.kitops.modelkit.cli-version"
"""Manifest annotation: the kit version that packed the artifact."""
LAYER_SUBTYPE_ANNOTATION: Final = "ml.kitops.modelkit.layer-subtype"
"""Layer annotation; ``prompt`` marks prompts stored as code layers."""

# -- CNCF ModelPack ------------------------------------------------------------------------

MODELPACK_CONFIG: Final = "application/vnd.cncf.model.config.v1+json"
MODELPACK_MANIFEST_ARTIFACT_TYPE: Final = "application/vnd.cncf.model.manifest.v1+json"
MODELPACK_LAYER_PREFIX: Final = "application/vnd.cncf.model."

# -- layer kinds ---------------------------------------------------------------------------

KIND_MODEL: Final = "model"
KIND_MODELPART: Final = "modelpart"
KIND_DATASET: Final = "dataset"
KIND_CODE: Final = "code"
KIND_DOCS: Final = "docs"
KIND_MCPB: Final = "mcpb"
KIND_WEIGHT: Final = "weight"
KIND_WEIGHT_CONFIG: Final = "weight-config"

LAYER_FORMATS: Final = ("tar", "tar+gzip", "tar+zstd", "raw")
"""The ``.v1.<format>`` endings a layer media type may have (KitOps and ModelPack alike)."""

_KITOPS_LAYER_BASES: Final = {
    "model": KIND_MODEL,
    "modelpart": KIND_MODELPART,
    "dataset": KIND_DATASET,
    "code": KIND_CODE,
    "docs": KIND_DOCS,
}
_MODELPACK_LAYER_BASES: Final = {
    "weight": KIND_WEIGHT,
    "weight.config": KIND_WEIGHT_CONFIG,
    "doc": KIND_DOCS,
    "code": KIND_CODE,
    "dataset": KIND_DATASET,
}


def _layer_table() -> Mapping[str, str]:
    table = {
        f"{prefix}{base}.v1.{fmt}": kind
        for prefix, bases in (
            (KITOPS_LAYER_PREFIX, _KITOPS_LAYER_BASES),
            (MODELPACK_LAYER_PREFIX, _MODELPACK_LAYER_BASES),
        )
        for base, kind in bases.items()
        for fmt in LAYER_FORMATS
    }
    table[KITOPS_MCPB_LAYER] = KIND_MCPB
    return MappingProxyType(table)


LAYER_KINDS: Final = _layer_table()
"""Every layer media type kitpin knows, mapped to its kind (see :func:`layer_kind`)."""

IMPLIED_KINDS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        KIND_MODELPART: frozenset({KIND_MODEL}),
        KIND_WEIGHT: frozenset({KIND_MODEL}),
        KIND_WEIGHT_CONFIG: frozenset({KIND_MODELPART, KIND_MODEL}),
    }
)
"""Kinds a layer also counts as in :func:`layer_kinds`, so that one question ("does it carry
a model?") has one answer across both formats:

- KitOps ``modelpart`` (extra model files) is part of the model: also ``model``;
- ModelPack ``weight`` is what KitOps calls ``model``: also ``model``;
- ModelPack ``weight.config`` is what kit maps to ``modelpart`` when it unpacks a
  ModelPack: also ``modelpart`` and so ``model``.
"""

MODEL_FORMATS: Final[tuple[types.ModelFormat, ...]] = get_args(types.ModelFormat)
"""The formats kitpin pins, in the order messages name them."""

FORMAT_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {"kitops-modelkit": "a KitOps ModelKit", "modelpack": "a CNCF ModelPack"}
)

_GENERIC_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_SHA256_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def layer_kind(media_type: str) -> str | None:
    """The kind of a layer media type: ``model``, ``modelpart``, ``dataset``, ``code``,
    ``docs``, ``mcpb`` (KitOps), ``weight``, ``weight-config`` (ModelPack; its ``code``,
    ``dataset`` and ``doc`` map to ``code``, ``dataset`` and ``docs``), or None when the
    media type is neither KitOps nor ModelPack (e.g. a container image layer)."""
    return LAYER_KINDS.get(media_type)


def layer_kinds(manifest: types.Manifest) -> frozenset[str]:
    """The kinds of all layers of ``manifest``, with the :data:`IMPLIED_KINDS` added: a
    ModelPack with ``weight`` layers has kind ``model`` too. Unknown layers are left out."""
    kinds: set[str] = set()
    for layer in manifest.layers:
        kind = layer_kind(layer.media_type)
        if kind is not None:
            kinds.add(kind)
            kinds |= IMPLIED_KINDS.get(kind, frozenset())
    return frozenset(kinds)


def is_model_artifact(format: types.ArtifactFormat) -> bool:  # noqa: A002 - the field's name
    """Whether ``format`` is a model artifact (KitOps ModelKit or ModelPack), the things
    kitpin pins; an index or anything else is not."""
    return format in MODEL_FORMATS


def model_format(manifest: types.Manifest) -> types.ModelFormat | None:
    """The model format of ``manifest``, or None when it is not a model artifact. kit's
    ModelKit index (``kit pack`` of several platforms) counts as a KitOps ModelKit. This is
    the one "is this a ModelKit" rule: the webhook, ``kitpin pin``/``check`` and policy's
    ``artifacts.formats`` all ask it."""
    if manifest.format == "kitops-modelkit" or is_kit_index(manifest):
        return "kitops-modelkit"
    if manifest.format == "modelpack":
        return "modelpack"
    return None


def not_a_modelkit(manifest: types.Manifest) -> str | None:
    """What ``manifest`` is instead of a model artifact, for a denial ("an image index",
    "not a ModelKit (config media type ...)"), or None when it is one."""
    if model_format(manifest) is not None:
        return None
    if manifest.format == "oci-index":
        return "an image index (a multi-platform image or a list of artifacts)"
    return (
        f"not a ModelKit (config media type {manifest.config_media_type or 'unknown'!r}; "
        "a container image or another artifact)"
    )


IMAGE_VOLUME_ADVICE: Final = (
    "repack it as a CNCF ModelPack (`kit pack --use-model-pack`) and point the volume at that, "
    "or unpack it into an emptyDir with the kitops-init init container (env MODELKIT_REF) "
    "instead of an image volume"
)
"""What to do about an image volume the kubelet cannot mount (:func:`image_volume_unmountable`)."""


def image_volume_unmountable(manifest: types.Manifest) -> str | None:
    """What ``manifest`` is that the kubelet cannot mount as an image volume, or None as far
    as kitpin knows. A KitOps-format ModelKit (or kit's ModelKit index) is refused by the
    container runtime ("unsupported image-specific operation on artifact with type
    application/vnd.kitops.modelkit.config.v1+json", kitops #784): the Pod never starts. A
    CNCF ModelPack is an OCI artifact that runtimes with artifact support mount."""
    if model_format(manifest) != "kitops-modelkit":
        return None
    what = "a KitOps ModelKit index" if manifest.format == "oci-index" else "a KitOps ModelKit"
    return (
        f"{what}, which the kubelet cannot mount as an image volume (the container runtime "
        f"refuses config media type {KITOPS_CONFIG}: kitops #784), so the Pod will not start"
    )


def image_volume_problem(manifest: types.Manifest) -> str | None:
    """:func:`image_volume_unmountable` and what to do (the validating webhook's warning), or
    None."""
    what = image_volume_unmountable(manifest)
    return None if what is None else f"{what}; {IMAGE_VOLUME_ADVICE}"


def normalise_content_type(content_type: str) -> str:
    """A ``Content-Type`` header value without parameters or surrounding blanks, lowercased:
    ``application/vnd.oci.image.manifest.v1+json; charset=utf-8`` → the bare media type."""
    return content_type.split(";", 1)[0].strip().lower()


def classify(body: Mapping[str, object], content_type: str) -> types.ArtifactFormat:
    """The format of a manifest body as served with ``content_type`` (see the module table).

    Lenient on purpose: fields of the wrong type are ignored here (:func:`parse_manifest`
    is the one that rejects them)."""
    declared = body.get("mediaType")
    media_type = declared if isinstance(declared, str) else normalise_content_type(content_type)
    if media_type in INDEX_MEDIA_TYPES:
        return "oci-index"
    if media_type not in MANIFEST_MEDIA_TYPES and "layers" not in body:
        if isinstance(body.get("manifests"), list):
            return "oci-index"

    artifact_type = body.get("artifactType")
    config = body.get("config")
    config_type = config.get("mediaType") if isinstance(config, Mapping) else None
    if artifact_type == KITOPS_MANIFEST_ARTIFACT_TYPE or config_type == KITOPS_CONFIG:
        return "kitops-modelkit"
    if artifact_type == MODELPACK_MANIFEST_ARTIFACT_TYPE or config_type == MODELPACK_CONFIG:
        return "modelpack"
    return "other"


def kitfile_json(manifest: types.Manifest) -> str | None:
    """The Kitfile JSON a ModelPack packed by kit carries in its annotations, else None.
    (A KitOps ModelKit keeps its Kitfile in the config blob instead.)"""
    return manifest.annotations.get(KITFILE_ANNOTATION) or None


def is_kit_index(manifest: types.Manifest) -> bool:
    """Whether ``manifest`` is an OCI index that kit marked as a ModelKit index."""
    return manifest.format == "oci-index" and manifest.artifact_type == KITOPS_INDEX_ARTIFACT_TYPE


def parse_manifest(
    body: Mapping[str, object], *, digest: str, content_type: str, size: int
) -> types.Manifest:
    """Build a :class:`~controller.types.Manifest` from a decoded JSON body.

    ``digest`` and ``size`` describe the bytes the caller received (and verified);
    ``content_type`` is the served header. Raises :class:`controller.errors.BadResponseError`
    naming the field when the body does not have the shape of an OCI/Docker manifest or
    index. Pure: no I/O, nothing but the arguments is read.
    """
    return _ManifestParser(digest).parse(body, content_type=content_type, size=size)


_NO_ANNOTATIONS: Final[Mapping[str, str]] = MappingProxyType({})
"""Shared by every descriptor without annotations (most layers): parsed manifests live in the
resolver's cache, 10,000 of them in a large cluster, so each saved object counts."""


class _ManifestParser:
    """Field-by-field validation; every error names the manifest and the JSON path.

    Memory: the result is cached for the life of the process. Media types and annotation keys
    come from a small vocabulary, so they are interned (``sys.intern``; interned strings are
    freed with their last user) instead of being one copy per manifest; digests, sizes and
    annotation values are kept as they are."""

    def __init__(self, digest: str) -> None:
        self.digest = digest

    def fail(self, path: str, problem: str) -> errors.BadResponseError:
        return errors.BadResponseError(
            f"the registry's manifest {self.digest} is not usable: {path} {problem}; "
            "the registry or the pushing tool wrote a malformed manifest, push it again"
        )

    def parse(self, body: Mapping[str, object], *, content_type: str, size: int) -> types.Manifest:
        if not isinstance(body, Mapping):
            raise self.fail("the body", f"is {types.json_type(body)}, not a JSON object")
        schema_version = body.get("schemaVersion")
        if schema_version is not None and not types.is_int(schema_version):
            raise self.fail(
                "schemaVersion", f"is {types.json_type(schema_version)}, not an integer"
            )
        declared = self.optional_str(body, "mediaType")
        artifact_type = self.optional_str(body, "artifactType")
        annotations = self.annotations(body, "annotations", "annotations")
        media_type = sys.intern(normalise_content_type(content_type) or declared or "")
        if artifact_type is not None:
            artifact_type = sys.intern(artifact_type)
        if media_type in DOCKER_SCHEMA1_MEDIA_TYPES or declared in DOCKER_SCHEMA1_MEDIA_TYPES:
            raise errors.BadResponseError(
                f"the registry's manifest {self.digest} is a Docker schema 1 manifest "
                f"({media_type}), which kitpin does not support; push the artifact again "
                "with a current tool (it writes an OCI or Docker schema 2 manifest)"
            )
        artifact_format = classify(body, content_type)

        if artifact_format == "oci-index":
            manifests = body.get("manifests")
            if not isinstance(manifests, list):
                raise self.fail("manifests", _missing_or("a list", manifests))
            for index, item in enumerate(manifests):
                self.descriptor(item, f"manifests[{index}]")
            return types.Manifest(
                digest=self.digest,
                media_type=media_type,
                size=size,
                format=artifact_format,
                artifact_type=artifact_type,
                annotations=annotations,
            )

        config = self.descriptor(body.get("config"), "config")
        layers = body.get("layers")
        if not isinstance(layers, list):
            raise self.fail("layers", _missing_or("a list", layers))
        return types.Manifest(
            digest=self.digest,
            media_type=media_type,
            size=size,
            format=artifact_format,
            artifact_type=artifact_type,
            config_media_type=config.media_type,
            config_digest=config.digest,
            config_size=config.size,
            layers=tuple(self.descriptor(item, f"layers[{i}]") for i, item in enumerate(layers)),
            annotations=annotations,
        )

    def descriptor(self, value: object, path: str) -> types.Layer:
        if not isinstance(value, Mapping):
            raise self.fail(path, _missing_or("an object (a descriptor)", value))
        media_type = value.get("mediaType")
        if not isinstance(media_type, str) or not media_type:
            raise self.fail(f"{path}.mediaType", _missing_or("a non-empty string", media_type))
        media_type = sys.intern(media_type)
        digest = value.get("digest")
        if not isinstance(digest, str):
            raise self.fail(f"{path}.digest", _missing_or("a string", digest))
        if not _GENERIC_DIGEST_RE.fullmatch(digest) or (
            digest.startswith("sha256:") and not _SHA256_DIGEST_RE.fullmatch(digest)
        ):
            raise self.fail(
                f"{path}.digest", f"is {digest[:100]!r}, not a digest like 'sha256:<64 hex>'"
            )
        size = value.get("size")
        if not types.is_int(size) or size < 0:
            raise self.fail(f"{path}.size", _missing_or("a non-negative integer", size))
        return types.Layer(
            media_type=media_type,
            digest=digest,
            size=size,
            annotations=self.annotations(value, "annotations", f"{path}.annotations"),
        )

    def optional_str(self, body: Mapping[str, object], key: str) -> str | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(key, f"is {types.json_type(value)}, not a string")
        return value

    def annotations(self, body: Mapping[str, object], key: str, path: str) -> Mapping[str, str]:
        value = body.get(key)
        if not value:
            if value is None or isinstance(value, Mapping):
                return _NO_ANNOTATIONS
            raise self.fail(path, f"is {types.json_type(value)}, not an object of strings")
        if not isinstance(value, Mapping):
            raise self.fail(path, f"is {types.json_type(value)}, not an object of strings")
        result: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str):
                raise self.fail(f"{path}[{key!r}]", f"is {types.json_type(item)}, not a string")
            result[sys.intern(key)] = item
        return result


def _missing_or(expected: str, value: object) -> str:
    if value is None:
        return f"is missing (expected {expected})"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"is {value!r}, expected {expected}"
    return f"is {types.json_type(value)}, expected {expected}"
