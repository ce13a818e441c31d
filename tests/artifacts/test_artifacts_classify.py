"""artifacts: classify realistic manifests, layer kinds, and parse_manifest's validation."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from controller import artifacts, errors, types


def _digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


KITFILE = {
    "manifestVersion": "1.0.0",
    "package": {"name": "llama", "version": "3.1", "authors": ["jozu"]},
    "model": {"name": "llama", "path": "./model.gguf", "framework": "llama.cpp"},
    "datasets": [{"name": "eval", "path": "./data/eval.csv"}],
    "code": [{"path": "./src"}],
}

# kit <= 1.7: no mediaType, no artifactType in the body; the config says what it is.
KIT_1X_MODELKIT: dict[str, Any] = {
    "schemaVersion": 2,
    "config": {
        "mediaType": "application/vnd.kitops.modelkit.config.v1+json",
        "digest": _digest("kitfile"),
        "size": 412,
    },
    "layers": [
        {
            "mediaType": "application/vnd.kitops.modelkit.model.v1.tar+gzip",
            "digest": _digest("model"),
            "size": 4_368_439_584,
        },
        {
            "mediaType": "application/vnd.kitops.modelkit.dataset.v1.tar+gzip",
            "digest": _digest("dataset"),
            "size": 10_240,
        },
        {
            "mediaType": "application/vnd.kitops.modelkit.code.v1.tar+gzip",
            "digest": _digest("code"),
            "size": 2_048,
            "annotations": {"ml.kitops.modelkit.layer-subtype": "prompt"},
        },
        {
            "mediaType": "application/vnd.kitops.modelkit.docs.v1.tar+gzip",
            "digest": _digest("docs"),
            "size": 1_024,
        },
    ],
    "annotations": {"ml.kitops.modelkit.cli-version": "1.5.0"},
}

# Newer kit: artifactType set, config may be the empty descriptor, raw and mcpb layers.
KIT_NEW_MODELKIT: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "artifactType": "application/vnd.kitops.modelkit.manifest.v1+json",
    "config": {
        "mediaType": "application/vnd.kitops.modelkit.config.v1+json",
        "digest": _digest("kitfile2"),
        "size": 300,
    },
    "layers": [
        {
            "mediaType": "application/vnd.kitops.modelkit.model.v1.raw",
            "digest": _digest("m"),
            "size": 100,
        },
        {
            "mediaType": "application/vnd.kitops.modelkit.modelpart.v1.tar+zstd",
            "digest": _digest("mp"),
            "size": 10,
        },
        {
            "mediaType": "application/vnd.kitops.modelkit.mcpb.v1.raw",
            "digest": _digest("mcpb"),
            "size": 7,
        },
    ],
}

# A ModelPack as modctl writes it: artifactType and ModelPack config.
MODELPACK: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "artifactType": "application/vnd.cncf.model.manifest.v1+json",
    "config": {
        "mediaType": "application/vnd.cncf.model.config.v1+json",
        "digest": _digest("mpconfig"),
        "size": 617,
    },
    "layers": [
        {
            "mediaType": "application/vnd.cncf.model.weight.v1.raw",
            "digest": _digest("w1"),
            "size": 4_000_000_000,
            "annotations": {"org.cncf.model.filepath": "model-00001-of-00002.safetensors"},
        },
        {
            "mediaType": "application/vnd.cncf.model.weight.config.v1.raw",
            "digest": _digest("wc"),
            "size": 700,
            "annotations": {"org.cncf.model.filepath": "config.json"},
        },
        {
            "mediaType": "application/vnd.cncf.model.doc.v1.raw",
            "digest": _digest("readme"),
            "size": 5_000,
            "annotations": {"org.cncf.model.filepath": "README.md"},
        },
    ],
    "annotations": {"org.opencontainers.image.created": "2025-06-01T00:00:00Z"},
}

# A ModelPack packed by kit: the ModelPack rule plus the Kitfile in an annotation.
KIT_MODELPACK: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "artifactType": "application/vnd.cncf.model.manifest.v1+json",
    "config": {
        "mediaType": "application/vnd.cncf.model.config.v1+json",
        "digest": _digest("kmpconfig"),
        "size": 512,
    },
    "layers": [
        {
            "mediaType": "application/vnd.cncf.model.weight.v1.tar",
            "digest": _digest("kw"),
            "size": 1_000,
        },
        {
            "mediaType": "application/vnd.cncf.model.dataset.v1.tar+gzip",
            "digest": _digest("kd"),
            "size": 100,
        },
        {
            "mediaType": "application/vnd.cncf.model.code.v1.tar+zstd",
            "digest": _digest("kc"),
            "size": 10,
        },
    ],
    "annotations": {
        "ml.kitops.modelkit.kitfile": json.dumps(KITFILE),
        "ml.kitops.modelkit.cli-version": "1.8.0",
    },
}

OCI_INDEX: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": _digest("amd64"),
            "size": 1_234,
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": _digest("arm64"),
            "size": 1_234,
            "platform": {"architecture": "arm64", "os": "linux"},
        },
    ],
}

KIT_INDEX: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "artifactType": "application/vnd.kitops.modelkit.index.v1+json",
    "manifests": [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.kitops.modelkit.manifest.v1+json",
            "digest": _digest("kit-child"),
            "size": 900,
        }
    ],
}

DOCKER_LIST: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
    "manifests": [
        {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": _digest("d-amd64"),
            "size": 528,
            "platform": {"architecture": "amd64", "os": "linux"},
        }
    ],
}

CONTAINER_IMAGE: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": _digest("image-config"),
        "size": 7_023,
    },
    "layers": [
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": _digest("rootfs"),
            "size": 32_654,
        }
    ],
    "annotations": {"org.opencontainers.image.source": "https://github.com/example/app"},
}

DOCKER_V2: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "digest": _digest("docker-config"),
        "size": 1_469,
    },
    "layers": [
        {
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "digest": _digest("docker-layer"),
            "size": 2_479_165,
        }
    ],
}

OCI = "application/vnd.oci.image.manifest.v1+json"


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (KIT_1X_MODELKIT, OCI, "kitops-modelkit"),
        (KIT_1X_MODELKIT, "", "kitops-modelkit"),
        (KIT_NEW_MODELKIT, OCI, "kitops-modelkit"),
        (MODELPACK, OCI, "modelpack"),
        (KIT_MODELPACK, OCI, "modelpack"),
        (OCI_INDEX, "application/vnd.oci.image.index.v1+json", "oci-index"),
        (KIT_INDEX, "application/vnd.oci.image.index.v1+json", "oci-index"),
        (DOCKER_LIST, "application/vnd.docker.distribution.manifest.list.v2+json", "oci-index"),
        (CONTAINER_IMAGE, OCI, "other"),
        (DOCKER_V2, "application/vnd.docker.distribution.manifest.v2+json", "other"),
    ],
    ids=[
        "kit-1.x",
        "kit-1.x-no-content-type",
        "kit-new",
        "modelpack",
        "kit-modelpack",
        "oci-index",
        "kit-index",
        "docker-list",
        "container-image",
        "docker-v2",
    ],
)
def test_classify(body: dict[str, Any], content_type: str, expected: str) -> None:
    assert artifacts.classify(body, content_type) == expected


def test_classify_index_by_content_type_when_body_has_no_media_type() -> None:
    body = {key: value for key, value in OCI_INDEX.items() if key != "mediaType"}
    assert artifacts.classify(body, "application/vnd.oci.image.index.v1+json") == "oci-index"
    assert artifacts.classify(body, "Application/VND.oci.image.index.v1+json; x=y") == ("oci-index")
    # Neither a declared nor a served type: the shape decides.
    assert artifacts.classify(body, "") == "oci-index"


def test_classify_artifact_type_alone_is_enough() -> None:
    kit = {**CONTAINER_IMAGE, "artifactType": artifacts.KITOPS_MANIFEST_ARTIFACT_TYPE}
    pack = {**CONTAINER_IMAGE, "artifactType": artifacts.MODELPACK_MANIFEST_ARTIFACT_TYPE}
    assert artifacts.classify(kit, OCI) == "kitops-modelkit"
    assert artifacts.classify(pack, OCI) == "modelpack"


def test_classify_ignores_malformed_fields() -> None:
    assert artifacts.classify({"config": "nope", "artifactType": 3}, OCI) == "other"
    assert artifacts.classify({}, "") == "other"


def test_is_model_artifact() -> None:
    assert artifacts.is_model_artifact("kitops-modelkit")
    assert artifacts.is_model_artifact("modelpack")
    assert not artifacts.is_model_artifact("oci-index")
    assert not artifacts.is_model_artifact("other")


# --- layer kinds -----------------------------------------------------------------------


@pytest.mark.parametrize("base", ["model", "modelpart", "dataset", "code", "docs"])
@pytest.mark.parametrize("fmt", ["tar", "tar+gzip", "tar+zstd", "raw"])
def test_kitops_layer_kinds(base: str, fmt: str) -> None:
    assert artifacts.layer_kind(f"application/vnd.kitops.modelkit.{base}.v1.{fmt}") == base


@pytest.mark.parametrize(
    ("base", "kind"),
    [
        ("weight", "weight"),
        ("weight.config", "weight-config"),
        ("doc", "docs"),
        ("code", "code"),
        ("dataset", "dataset"),
    ],
)
@pytest.mark.parametrize("fmt", ["raw", "tar", "tar+gzip", "tar+zstd"])
def test_modelpack_layer_kinds(base: str, kind: str, fmt: str) -> None:
    assert artifacts.layer_kind(f"application/vnd.cncf.model.{base}.v1.{fmt}") == kind


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.kitops.modelkit.config.v1+json",
        "application/vnd.cncf.model.config.v1+json",
        "application/vnd.kitops.modelkit.model.v2.tar",
        "application/vnd.kitops.modelkit.model.v1.tar+bzip2",
        "application/vnd.kitops.modelkit.mcpb.v1.tar",
        "application/vnd.kitops.modelkit.prompt.v1.tar",
        "application/vnd.cncf.model.weight.v1.raw+gzip",
        "APPLICATION/VND.KITOPS.MODELKIT.MODEL.V1.TAR",
        "",
    ],
)
def test_unknown_layer_kinds(media_type: str) -> None:
    assert artifacts.layer_kind(media_type) is None


def test_mcpb_layer_kind() -> None:
    assert artifacts.layer_kind("application/vnd.kitops.modelkit.mcpb.v1.raw") == "mcpb"


def _parse(body: dict[str, Any], content_type: str = OCI) -> types.Manifest:
    raw = json.dumps(body).encode()
    return artifacts.parse_manifest(
        json.loads(raw),
        digest="sha256:" + hashlib.sha256(raw).hexdigest(),
        content_type=content_type,
        size=len(raw),
    )


@pytest.mark.parametrize(
    ("body", "kinds"),
    [
        (KIT_1X_MODELKIT, {"model", "dataset", "code", "docs"}),
        (KIT_NEW_MODELKIT, {"model", "modelpart", "mcpb"}),
        (MODELPACK, {"weight", "model", "weight-config", "modelpart", "docs"}),
        (KIT_MODELPACK, {"weight", "model", "dataset", "code"}),
        (CONTAINER_IMAGE, set()),
        (DOCKER_V2, set()),
        (OCI_INDEX, set()),
    ],
)
def test_layer_kinds(body: dict[str, Any], kinds: set[str]) -> None:
    assert artifacts.layer_kinds(_parse(body)) == frozenset(kinds)


# --- parse_manifest ----------------------------------------------------------------------


def test_parse_kit_1x_modelkit() -> None:
    raw = json.dumps(KIT_1X_MODELKIT).encode()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    manifest = artifacts.parse_manifest(
        json.loads(raw),
        digest=digest,
        content_type="application/vnd.oci.image.manifest.v1+json; charset=utf-8",
        size=len(raw),
    )
    assert manifest == types.Manifest(
        digest=digest,
        media_type=OCI,
        size=len(raw),
        format="kitops-modelkit",
        artifact_type=None,
        config_media_type="application/vnd.kitops.modelkit.config.v1+json",
        config_digest=_digest("kitfile"),
        config_size=412,
        layers=tuple(
            types.Layer(
                media_type=layer["mediaType"],
                digest=layer["digest"],
                size=layer["size"],
                annotations=layer.get("annotations", {}),
            )
            for layer in KIT_1X_MODELKIT["layers"]
        ),
        annotations={"ml.kitops.modelkit.cli-version": "1.5.0"},
    )
    assert artifacts.kitfile_json(manifest) is None


def test_parse_media_type_falls_back_to_the_body() -> None:
    assert _parse(MODELPACK, content_type="").media_type == OCI
    assert _parse(KIT_1X_MODELKIT, content_type="").media_type == ""


def test_parse_modelpack_made_by_kit_keeps_the_kitfile() -> None:
    manifest = _parse(KIT_MODELPACK)
    assert manifest.format == "modelpack"
    assert manifest.artifact_type == artifacts.MODELPACK_MANIFEST_ARTIFACT_TYPE
    kitfile = artifacts.kitfile_json(manifest)
    assert kitfile is not None
    assert json.loads(kitfile)["package"]["name"] == "llama"
    assert artifacts.kitfile_json(_parse(MODELPACK)) is None


def test_parse_indexes() -> None:
    index = _parse(OCI_INDEX, content_type="application/vnd.oci.image.index.v1+json")
    assert index.format == "oci-index"
    assert index.layers == ()
    assert index.config_digest is None
    assert not artifacts.is_kit_index(index)
    kit_index = _parse(KIT_INDEX, content_type="application/vnd.oci.image.index.v1+json")
    assert artifacts.is_kit_index(kit_index)
    assert kit_index.artifact_type == artifacts.KITOPS_INDEX_ARTIFACT_TYPE
    docker = _parse(DOCKER_LIST, "application/vnd.docker.distribution.manifest.list.v2+json")
    assert docker.format == "oci-index"


def test_parse_other_artifacts() -> None:
    image = _parse(CONTAINER_IMAGE)
    assert image.format == "other"
    assert image.config_media_type == "application/vnd.oci.image.config.v1+json"
    assert len(image.layers) == 1
    docker = _parse(DOCKER_V2, "application/vnd.docker.distribution.manifest.v2+json")
    assert docker.format == "other"
    assert docker.media_type == "application/vnd.docker.distribution.manifest.v2+json"


def test_parse_accepts_an_empty_layer_list() -> None:
    assert _parse({**CONTAINER_IMAGE, "layers": []}).layers == ()


def _with(body: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``body`` with the item at ``path`` replaced (or removed for ...)."""
    copy: Any = json.loads(json.dumps(body))
    target = copy
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return dict(copy)


BROKEN = [
    (_with(KIT_1X_MODELKIT, ("layers",), {"0": {}}), ("layers", "an object", "a list")),
    (_with(KIT_1X_MODELKIT, ("layers",), ...), ("layers", "missing")),
    (_with(KIT_1X_MODELKIT, ("layers", 1), "sha256:abc"), ("layers[1]", "a string", "object")),
    (_with(KIT_1X_MODELKIT, ("layers", 0, "digest"), 7), ("layers[0].digest", "is 7,")),
    (_with(KIT_1X_MODELKIT, ("layers", 0, "digest"), ...), ("layers[0].digest", "missing")),
    (
        _with(KIT_1X_MODELKIT, ("layers", 0, "digest"), "sha256:ABC"),
        ("layers[0].digest", "'sha256:ABC'", "not a digest"),
    ),
    (_with(KIT_1X_MODELKIT, ("layers", 0, "digest"), "latest"), ("layers[0].digest",)),
    (
        _with(KIT_1X_MODELKIT, ("layers", 2, "size"), -1),
        ("layers[2].size", "is -1,", "non-negative"),
    ),
    (_with(KIT_1X_MODELKIT, ("layers", 2, "size"), True), ("layers[2].size", "a boolean")),
    (_with(KIT_1X_MODELKIT, ("layers", 2, "size"), 1.5), ("layers[2].size", "is 1.5,")),
    (_with(KIT_1X_MODELKIT, ("layers", 2, "size"), "12"), ("layers[2].size", "a string")),
    (_with(KIT_1X_MODELKIT, ("layers", 3, "mediaType"), ...), ("layers[3].mediaType", "missing")),
    (_with(KIT_1X_MODELKIT, ("layers", 3, "mediaType"), ""), ("layers[3].mediaType",)),
    (
        _with(KIT_1X_MODELKIT, ("layers", 2, "annotations"), ["prompt"]),
        ("layers[2].annotations", "an array"),
    ),
    (
        _with(KIT_1X_MODELKIT, ("layers", 2, "annotations", "k"), 1),
        ("layers[2].annotations['k']", "a number"),
    ),
    (_with(KIT_1X_MODELKIT, ("config",), ...), ("config", "missing")),
    (_with(KIT_1X_MODELKIT, ("config",), []), ("config", "an array")),
    (_with(KIT_1X_MODELKIT, ("config", "size"), None), ("config.size", "missing")),
    (_with(KIT_1X_MODELKIT, ("annotations",), "x"), ("annotations", "a string")),
    (_with(KIT_1X_MODELKIT, ("annotations", "a"), None), ("annotations['a']", "null")),
    (_with(KIT_1X_MODELKIT, ("artifactType",), 1), ("artifactType", "not a string")),
    (_with(KIT_1X_MODELKIT, ("mediaType",), {}), ("mediaType", "not a string")),
    (_with(KIT_1X_MODELKIT, ("schemaVersion",), "2"), ("schemaVersion", "not an integer")),
    (_with(OCI_INDEX, ("manifests",), ...), ("manifests", "missing")),
    (_with(OCI_INDEX, ("manifests",), {}), ("manifests", "a list")),
    (_with(OCI_INDEX, ("manifests", 1, "size"), "big"), ("manifests[1].size",)),
    (
        {"schemaVersion": 1, "mediaType": "application/vnd.docker.distribution.manifest.v1+json"},
        ("schema 1", "does not support"),
    ),
]


@pytest.mark.parametrize(("body", "words"), BROKEN)
def test_parse_rejects_malformed_manifests(body: dict[str, Any], words: tuple[str, ...]) -> None:
    digest = _digest("broken")
    with pytest.raises(errors.BadResponseError) as caught:
        artifacts.parse_manifest(body, digest=digest, content_type="", size=10)
    assert digest in caught.value.message
    for word in words:
        assert word in caught.value.message


@pytest.mark.parametrize("body", [[], "manifest", 3, None])
def test_parse_rejects_a_body_that_is_not_an_object(body: Any) -> None:
    with pytest.raises(errors.BadResponseError, match="not a JSON object"):
        artifacts.parse_manifest(body, digest=_digest("x"), content_type=OCI, size=1)


def test_schema1_by_content_type() -> None:
    with pytest.raises(errors.BadResponseError, match="schema 1"):
        artifacts.parse_manifest(
            {"schemaVersion": 1, "fsLayers": []},
            digest=_digest("s1"),
            content_type="application/vnd.docker.distribution.manifest.v1+prettyjws",
            size=1,
        )


def test_accepted_media_types_cover_manifests_and_indexes() -> None:
    assert set(artifacts.ACCEPTED_MEDIA_TYPES) == (
        artifacts.MANIFEST_MEDIA_TYPES | artifacts.INDEX_MEDIA_TYPES
    )
