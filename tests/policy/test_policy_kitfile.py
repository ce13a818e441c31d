"""Kitfile reading (parent references, licenses) and what the engine must fetch."""

from __future__ import annotations

import json
from typing import Any

import pytest
from policy_fakes import cluster, evidence, kitfile, manifest, sha

from controller import artifacts, policy
from controller.types import Manifest

DIGEST = sha("parent")


@pytest.mark.parametrize(
    ("path", "parent", "registry", "digest"),
    [
        ("ghcr.io/acme/base:v1", True, "ghcr.io", None),
        (f"ghcr.io/acme/base:v1@{DIGEST}", True, "ghcr.io", DIGEST),
        (f"ghcr.io/acme/base@{DIGEST}", True, "ghcr.io", DIGEST),
        ("localhost:5000/base:v1", True, "localhost:5000", None),
        ("docker.io/kit-org/kit-repo:latest", True, "docker.io", None),
        ("acme/base:v1", True, None, None),  # kit's local storage
        ("base:v1", True, None, None),
        ("model.gguf", False, None, None),  # a file: no ':' or '@'
        ("ghcr.io/acme/base", False, None, None),  # kit needs ':' or '@' to see a reference
        ("models/llama", False, None, None),
        ("s3://bucket/key", False, None, None),
        ("kit://ghcr.io/acme/base:v1", False, None, None),  # kit does not strip kit://
        ("./weights:v2.bin", False, None, None),  # does not parse: a path
        ("C:\\models\\x", False, None, None),
        ("", False, None, None),
    ],
)
def test_model_path_parent_detection(
    path: str, parent: bool, registry: str | None, digest: str | None
) -> None:
    found = policy.parent_references(kitfile(model_path=path))
    if not parent:
        assert found == ()
        return
    (ref,) = found
    assert ref.field == "model.path" and ref.text == path
    if registry is None:
        assert ref.reference is None
    else:
        assert ref.reference is not None
        assert ref.reference.registry == registry
        assert ref.reference.digest == digest


def test_dataset_parents() -> None:
    doc = kitfile(
        datasets=[
            {"path": "data/a", "remotePath": "ghcr.io/acme/data:v1"},
            {"path": "data/b", "remotePath": "s3://bucket/key", "remoteHash": "x"},
            {"path": "ghcr.io/acme/other:v2"},
            {"path": "data/c"},
        ]
    )
    found = policy.parent_references(doc)
    assert [(p.field, p.text) for p in found] == [
        ("datasets[0].remotePath", "ghcr.io/acme/data:v1"),
        ("datasets[2].path", "ghcr.io/acme/other:v2"),
    ]


def test_declared_licenses() -> None:
    doc: dict[str, Any] = kitfile(package_license="Apache-2.0", model_license="MIT")
    doc["model"]["parts"] = [{"license": "BSD-3-Clause"}, {"license": ""}, "x"]
    doc["datasets"] = [{"license": "CC-BY-4.0"}]
    doc["code"] = [{"license": "MIT"}, {}]
    doc["docs"] = [{"license": "ignored: docs have no license in kit"}]
    assert policy.declared_licenses(doc) == (
        ("package.license", "Apache-2.0"),
        ("model.license", "MIT"),
        ("model.parts[0].license", "BSD-3-Clause"),
        ("datasets[0].license", "CC-BY-4.0"),
        ("code[0].license", "MIT"),
    )
    assert policy.declared_licenses({}) == ()


def test_kitfile_of() -> None:
    doc = kitfile()
    assert policy.kitfile_of(evidence("r.io/m:v1")) is None
    assert policy.kitfile_of(evidence("r.io/m:v1", manifest=manifest(), config=doc)) == doc
    assert policy.kitfile_of(evidence("r.io/m:v1", manifest=manifest())) is None
    by_kit = manifest("modelpack", ["weight"], kitfile=doc)
    assert policy.kitfile_of(evidence("r.io/m:v1", manifest=by_kit, config={"x": 1})) == doc
    plain = manifest("modelpack", ["weight"])
    assert policy.kitfile_of(evidence("r.io/m:v1", manifest=plain, config={"x": 1})) is None
    broken = Manifest(
        digest=plain.digest,
        media_type=plain.media_type,
        size=plain.size,
        format="modelpack",
        annotations={artifacts.KITFILE_ANNOTATION: "{not json"},
    )
    assert policy.kitfile_of(evidence("r.io/m:v1", manifest=broken)) is None
    listed = Manifest(
        digest=plain.digest,
        media_type=plain.media_type,
        size=plain.size,
        format="modelpack",
        annotations={artifacts.KITFILE_ANNOTATION: json.dumps([1])},
    )
    assert policy.kitfile_of(evidence("r.io/m:v1", manifest=listed)) is None
    image = manifest("other", ["x"])
    assert policy.kitfile_of(evidence("r.io/m:v1", manifest=image, config=doc)) is None


def test_kitfile_of_a_deeply_nested_annotation_is_none_not_a_recursion_error() -> None:
    """The annotation comes from the registry: 100,000 levels must not reach json's recursion."""
    plain = manifest("modelpack", ["weight"])
    deep = Manifest(
        digest=plain.digest,
        media_type=plain.media_type,
        size=plain.size,
        format="modelpack",
        annotations={artifacts.KITFILE_ANNOTATION: "[" * 100_000 + "]" * 100_000},
    )
    assert policy.kitfile_of(evidence("r.io/m:v1", manifest=deep)) is None


# -- what the engine must fetch -------------------------------------------------------------

REFERENCE_ONLY = cluster(
    "ref", {"repositories": {"denied": ["docker.io/**"]}, "tags": {"denied": ["latest"]}}
)
FORMATS = cluster("formats", {"artifacts": {"formats": ["modelpack"]}})
MODEL_LAYER = cluster("layers", {"artifacts": {"requiredLayers": ["model"]}})
DOCS_LAYER = cluster("docs", {"artifacts": {"requiredLayers": ["docs"]}})
LICENSES = cluster("licenses", {"artifacts": {"licenses": {"allowed": ["MIT"]}}})
PARENTS = cluster("parents", {"parents": {}})


def test_needs_resolution_and_kitfile() -> None:
    assert not policy.needs_resolution([])
    assert not policy.needs_resolution([REFERENCE_ONLY])
    assert policy.needs_resolution([REFERENCE_ONLY, FORMATS])
    assert policy.needs_resolution([PARENTS])
    assert not policy.needs_kitfile([REFERENCE_ONLY, FORMATS, MODEL_LAYER])
    assert policy.needs_kitfile([LICENSES])
    assert policy.needs_kitfile([PARENTS])


@pytest.mark.parametrize(
    ("policies", "the_manifest", "needed"),
    [
        ([REFERENCE_ONLY, FORMATS], manifest(), False),
        ([LICENSES], manifest(), True),
        ([PARENTS], manifest(), True),
        ([MODEL_LAYER], manifest("kitops-modelkit", ["model"]), False),
        # no model layer of its own: the Kitfile may name a parent that supplies it
        ([MODEL_LAYER], manifest("kitops-modelkit", ["code"]), True),
        ([DOCS_LAYER], manifest("kitops-modelkit", ["code"]), False),
        ([LICENSES], manifest("modelpack", ["weight"]), True),  # descriptor.licenses
        ([LICENSES], manifest("modelpack", ["weight"], kitfile=kitfile()), False),  # annotation
        ([PARENTS], manifest("modelpack", ["weight"]), False),  # no parents in a plain ModelPack
        ([PARENTS, LICENSES], manifest("other", ["x"]), False),
        (
            [PARENTS, LICENSES],
            manifest("oci-index", artifact_type=artifacts.KITOPS_INDEX_ARTIFACT_TYPE),
            False,
        ),
        ([], manifest(), False),
    ],
)
def test_needs_config(policies: list[policy.Policy], the_manifest: Manifest, needed: bool) -> None:
    assert policy.needs_config(policies, the_manifest) is needed
