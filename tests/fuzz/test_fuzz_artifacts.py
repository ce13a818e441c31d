"""artifacts.parse_manifest on any decoded JSON a registry can send: a Manifest or a
BadResponseError naming the field, never another exception; and everything kitpin asks of a
parsed manifest (format, layer kinds, the Kitfile annotation) answers."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fuzz_helpers import JSON_SCALARS, documents, fuzz
from hypothesis import strategies as st

from controller import artifacts, errors, types

MEDIA_TYPES = st.sampled_from(
    [
        artifacts.OCI_MANIFEST, artifacts.OCI_INDEX, artifacts.DOCKER_MANIFEST,
        artifacts.DOCKER_MANIFEST_LIST, artifacts.KITOPS_CONFIG, artifacts.MODELPACK_CONFIG,
        artifacts.KITOPS_MANIFEST_ARTIFACT_TYPE, artifacts.MODELPACK_MANIFEST_ARTIFACT_TYPE,
        artifacts.KITOPS_INDEX_ARTIFACT_TYPE, artifacts.KITOPS_MCPB_LAYER,
        "application/vnd.kitops.modelkit.model.v1.tar", "application/vnd.cncf.model.weight.v1.raw",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.oci.image.config.v1+json", "application/json", "", "x/y; charset=utf-8",
    ]
)  # fmt: skip
DIGESTS = st.one_of(
    *[st.binary(min_size=32, max_size=32).map(lambda b: f"sha256:{b.hex()}")] * 6,
    st.sampled_from(["sha256:abc", "sha512:" + "a" * 128, "md5:x", "", "sha256:" + "A" * 64]),
    JSON_SCALARS,
)
ANNOTATIONS = st.dictionaries(
    st.sampled_from([artifacts.KITFILE_ANNOTATION, artifacts.LAYER_SUBTYPE_ANNOTATION])
    | st.text(max_size=8),
    st.text(max_size=16) | st.just('{"model": {"path": "m"}}'),
    max_size=3,
)


def sometimes(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``value`` mostly, one time in twenty any JSON: every field gets a wrong type, and
    many manifests are still valid, so the invariants of a parsed one are checked too."""
    return st.integers(0, 19).flatmap(lambda i: documents(leaves=4) if i == 19 else value)


DESCRIPTORS = st.fixed_dictionaries(
    {
        "mediaType": sometimes(MEDIA_TYPES),
        "digest": sometimes(DIGESTS),
        "size": sometimes(st.integers(-1, 2**64)),
    },
    optional={"annotations": sometimes(ANNOTATIONS), "artifactType": sometimes(MEDIA_TYPES)},
)
CONFIGS = st.fixed_dictionaries(
    {
        "mediaType": sometimes(
            st.sampled_from([artifacts.KITOPS_CONFIG, artifacts.MODELPACK_CONFIG]) | MEDIA_TYPES
        ),
        "digest": sometimes(DIGESTS),
        "size": sometimes(st.integers(-1, 2**64)),
    }
)
MANIFESTS = st.fixed_dictionaries(
    {
        "schemaVersion": sometimes(st.just(2)),
        "config": sometimes(CONFIGS),
        "layers": sometimes(st.lists(sometimes(DESCRIPTORS), max_size=4)),
    },
    optional={
        "mediaType": sometimes(MEDIA_TYPES),
        "artifactType": sometimes(MEDIA_TYPES),
        "annotations": sometimes(ANNOTATIONS),
        "subject": sometimes(DESCRIPTORS),
        "manifests": sometimes(st.lists(sometimes(DESCRIPTORS), max_size=3)),
    },
)
INDEXES = st.fixed_dictionaries(
    {
        "schemaVersion": sometimes(st.just(2)),
        "mediaType": sometimes(st.sampled_from(sorted(artifacts.INDEX_MEDIA_TYPES))),
        "manifests": sometimes(st.lists(sometimes(DESCRIPTORS), max_size=3)),
    },
    optional={
        "artifactType": sometimes(MEDIA_TYPES),
        "annotations": sometimes(ANNOTATIONS),
        "layers": sometimes(st.lists(sometimes(DESCRIPTORS), max_size=2)),
    },
)
BODIES = st.one_of(MANIFESTS, INDEXES, documents(leaves=20))
CONTENT_TYPES = st.one_of(
    MEDIA_TYPES, MEDIA_TYPES.map(lambda m: f" {m.upper()} ; charset=utf-8"), st.text(max_size=12)
)


@fuzz(body=BODIES, content_type=CONTENT_TYPES)
def test_parse_manifest_gives_a_manifest_or_a_bad_response_error(
    body: Any, content_type: str
) -> None:
    raw = json.dumps(body).encode()  # what the registry sent
    decoded = json.loads(raw)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    try:
        manifest = artifacts.parse_manifest(
            decoded, digest=digest, content_type=content_type, size=len(raw)
        )
    except errors.BadResponseError as e:
        assert e.reason in ("BadResponse", "ManifestTooLarge")
        assert digest in str(e)  # the message names the manifest
        return
    assert (manifest.digest, manifest.size) == (digest, len(raw))
    assert manifest.format == artifacts.classify(decoded, content_type)
    for layer in manifest.layers:
        assert isinstance(layer, types.Layer) and layer.size >= 0
    artifacts.layer_kinds(manifest)
    fmt = artifacts.model_format(manifest)
    problem = artifacts.not_a_modelkit(manifest)
    assert (problem is None) == (fmt is not None)
    # a model artifact, or kit's index of ModelKits (which counts as one)
    assert (problem is None) == (
        artifacts.is_model_artifact(manifest.format) or artifacts.is_kit_index(manifest)
    )
    artifacts.kitfile_json(manifest)
    artifacts.is_kit_index(manifest)
