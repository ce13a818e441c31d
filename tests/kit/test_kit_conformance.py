"""Conformance: the harness packer (``harness/modelkit.py``) writes what the real ``kit pack``
writes, so every test that packs with the harness tests kitpin against real ModelKits.

Each case packs one Kitfile and the same file bytes twice: with ``kit pack`` (read back byte for
byte from kit's local storage, an OCI image layout) and with
:func:`harness.modelkit.pack_modelkit` (``cli_version`` = the kit's own version), then compares
what must match: the manifest's ``mediaType``/``artifactType`` (kit <= 1.7 writes neither), the
config media type, the layer media types in kit's order, the annotations kitpin reads, the
config (the Kitfile as JSON, field order included), what kitpin's own parsers read from both,
and finally the bytes: layers, config, manifest and so the digest.

Known differences, each explained (docs/kit.md keeps the same table):

================================  ===========================================================
difference                        why, and what the tests do about it
================================  ===========================================================
``ml.kitops.modelkit.cli-version``  kit stamps its own version; the packer writes
                                  ``cli_version`` (default ``1.7.0``). The tests pass kit's
                                  version, so the manifests are byte-identical.
file permission bits              kit records each file's mode in the layer tar; the packer
                                  has no file on disk and writes ``0644`` (directories
                                  ``0755``). ``write_context`` creates files with those modes;
                                  :func:`test_kit_keeps_a_files_permission_bits` shows a
                                  ``0600`` file differs in the mode (and checksum) only.
a Kitfile path naming a directory  kit tars the whole tree; the packer packs one file per
                                  path (not in the matrix).
layer compression                 ``kit pack --compression gzip`` writes ``...v1.tar+gzip``
                                  layers (diffId != digest); the packer writes kit's default,
                                  ``none``, only.
``prompts``                       kit 1.7 refuses the field (``field prompts not found``);
                                  newer kit stores prompts as code layers with
                                  ``ml.kitops.modelkit.layer-subtype: prompt``, as the packer
                                  does. Checked only with a kit that knows them.
ModelPack (``--use-model-pack``)  kit 1.10+ only; checked only with a kit that has the flag.
                                  Its ``org.opencontainers.image.created`` is the pack time
                                  (the packer's is fixed), so those manifests never match
                                  byte for byte.
parent ModelKit                   kit resolves ``model.path: host/repo:tag`` at pack time
                                  (local storage first, then the registry over HTTPS: ``kit
                                  pack`` has no ``--plain-http``), so the parent is packed
                                  into kit's storage first; neither writes a model layer.
================================  ===========================================================
"""

from __future__ import annotations

import io
import json
import secrets
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller import artifacts
from controller.policy import kitfile as kitfiles
from harness import kit as harness_kit
from harness import modelkit
from harness.registry import RegistryServer

TAG = "kit.invalid/conformance/model:v1"
"""Where kit stores the packed ModelKit locally (``.invalid``: never resolvable, never pushed)."""
PARENT_REF = "kit.invalid/conformance/parent:v1"
"""The parent of the ``parent-reference`` case, packed into kit's local storage first."""


# --------------------------------------------------------------------------- the matrix


def _model_only() -> dict[str, Any]:
    return {
        "manifestVersion": "1.0.0",
        "package": {"name": "solo"},
        "model": {"name": "solo", "path": "model.safetensors"},
    }


def _everything() -> dict[str, Any]:
    return modelkit.default_kitfile("full-model")  # model + code + datasets + docs


def _model_parts() -> dict[str, Any]:
    return {
        "manifestVersion": "1.0.0",
        "package": {"name": "parts", "version": "2.0.0", "license": "Apache-2.0"},
        "model": {
            "name": "parts",
            "path": "weights/model.gguf",
            "format": "gguf",
            "parts": [
                {"name": "tokenizer", "path": "tokenizer/tokenizer.json", "type": "tokenizer"},
                {"name": "projector", "path": "mmproj.gguf", "license": "MIT"},
            ],
        },
        "code": [{"path": "src/pkg/infer.py", "license": "MIT"}],
    }


def _parent_reference() -> dict[str, Any]:
    return {
        "manifestVersion": "1.0.0",
        "package": {"name": "child", "version": "1.1.0"},
        "model": {"name": "child", "path": PARENT_REF, "description": "fine-tuned parent"},
        "datasets": [{"name": "tune", "path": "data/tune.jsonl"}],
        "docs": [{"path": "README.md"}],
    }


def _go_json_escapes() -> dict[str, Any]:
    """Go's ``json.Marshal`` rules: HTML-safe escapes, U+2028/9, map keys sorted, UTF-8 kept."""
    return {
        "manifestVersion": "1.0.0",
        "package": {
            "name": "escapes",
            "version": "0.1.0",
            "description": "<b>café</b> & co\u2028next\u2029end",
            "license": "MIT OR Apache-2.0",
            "authors": ["Zoë <zoe@example.com>", "kitpin"],
        },
        "model": {
            "name": "escapes",
            "path": "weights/model.gguf",
            "framework": "llama.cpp",
            "format": "gguf",
            "parameters": {
                "zeta": 1,
                "alpha": {"b": [1, 2.5, True, None], "a": "x"},
                "mid": "日本",
            },
        },
        "datasets": [
            {
                "name": "eval",
                "path": "data/eval.jsonl",
                "license": "CC-BY-4.0",
                "parameters": {"split": "test", "rows": 10},
            }
        ],
    }


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "model-only": _model_only,
    "model+datasets+code+docs": _everything,
    "model-parts": _model_parts,
    "parent-reference": _parent_reference,
    "go-json-escapes": _go_json_escapes,
}


@dataclass(frozen=True, kw_only=True)
class Packs:
    """One Kitfile packed by kit and by the harness packer."""

    kitfile: dict[str, Any]
    kit_manifest: bytes
    kit_config: bytes
    kit_layers: tuple[bytes, ...]
    harness: modelkit.Packed

    @property
    def kit_body(self) -> dict[str, Any]:
        return dict(json.loads(self.kit_manifest))

    @property
    def harness_body(self) -> dict[str, Any]:
        return dict(json.loads(self.harness.manifest))


def pack_both(
    kit: harness_kit.Kit, kit_version: str, directory: Path, kitfile: dict[str, Any]
) -> Packs:
    if kitfile["model"]["path"] == PARENT_REF:
        parent = _model_only()
        files = harness_kit.context_files(parent, seed=99)
        kit.pack(harness_kit.write_context(directory / "parent", parent, files), PARENT_REF)
    files = harness_kit.context_files(kitfile, seed=7)
    digest = kit.pack(harness_kit.write_context(directory / "context", kitfile, files), TAG)
    manifest = kit.local_blob(digest)
    body = json.loads(manifest)
    return Packs(
        kitfile=kitfile,
        kit_manifest=manifest,
        kit_config=kit.local_blob(body["config"]["digest"]),
        kit_layers=tuple(kit.local_blob(layer["digest"]) for layer in body["layers"]),
        harness=modelkit.pack_modelkit(kitfile=kitfile, files=files, cli_version=kit_version),
    )


@pytest.fixture(params=sorted(CASES))
def packs(
    request: pytest.FixtureRequest, kit: harness_kit.Kit, kit_version: str, tmp_path: Path
) -> Packs:
    return pack_both(kit, kit_version, tmp_path, CASES[request.param]())


def _ordered(data: bytes) -> Any:
    """JSON with every object as a list of (key, value) pairs: field order is compared too."""
    return json.loads(data, object_pairs_hook=list)


def _without_layer_info(value: Any) -> Any:
    """A Kitfile (as :func:`_ordered` gives it) without the layers' ``digest``/``diffId``."""
    if isinstance(value, list) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return [(k, _without_layer_info(v)) for k, v in value if k not in ("digest", "diffId")]
    if isinstance(value, list):
        return [_without_layer_info(v) for v in value]
    return value


# --------------------------------------------------------------------------- what must match


def test_manifest_fields_match(packs: Packs, kit_version: str) -> None:
    kit_body, ours = packs.kit_body, packs.harness_body
    # kit <= 1.7 writes neither: kitpin recognises a ModelKit by its config media type.
    assert kit_body.get("mediaType") == ours.get("mediaType")
    assert kit_body.get("artifactType") == ours.get("artifactType")
    assert kit_body["schemaVersion"] == ours["schemaVersion"] == 2
    assert kit_body["config"]["mediaType"] == ours["config"]["mediaType"]
    assert kit_body["config"]["mediaType"] == artifacts.KITOPS_CONFIG
    kinds = [layer["mediaType"] for layer in kit_body["layers"]]
    assert kinds == [layer["mediaType"] for layer in ours["layers"]], "layer types or order"
    assert [layer.get("annotations") for layer in kit_body["layers"]] == [
        layer.get("annotations") for layer in ours["layers"]
    ]
    assert kit_body.get("annotations") == ours.get("annotations")
    assert kit_body["annotations"][artifacts.CLI_VERSION_ANNOTATION] == kit_version
    assert [key for key, _ in _ordered(packs.kit_manifest)] == [
        key for key, _ in _ordered(packs.harness.manifest)
    ], "manifest field order"


def test_config_is_the_same_kitfile(packs: Packs) -> None:
    """The config blob is the Kitfile as JSON: same fields, same order, same omissions; the
    layer digests written into it are compared with the bytes below."""
    assert _without_layer_info(_ordered(packs.kit_config)) == _without_layer_info(
        _ordered(packs.harness.config.data)
    )


def test_kitpin_reads_the_same(packs: Packs) -> None:
    """What kitpin's own parsers take from each: format, layer kinds, parents, licenses."""
    parsed = [
        artifacts.parse_manifest(
            json.loads(data),
            digest=modelkit.sha256_digest(data),
            content_type=artifacts.OCI_MANIFEST,
            size=len(data),
        )
        for data in (packs.kit_manifest, packs.harness.manifest)
    ]
    for manifest in parsed:
        assert manifest.format == "kitops-modelkit"
        assert artifacts.model_format(manifest) == "kitops-modelkit"
    kit_manifest, ours = parsed
    assert kit_manifest.config_media_type == ours.config_media_type
    assert [artifacts.layer_kind(layer.media_type) for layer in kit_manifest.layers] == [
        artifacts.layer_kind(layer.media_type) for layer in ours.layers
    ]
    assert dict(kit_manifest.annotations) == dict(ours.annotations)
    kit_kitfile, our_kitfile = json.loads(packs.kit_config), json.loads(packs.harness.config.data)
    assert kitfiles.parent_references(kit_kitfile) == kitfiles.parent_references(our_kitfile)
    assert kitfiles.declared_licenses(kit_kitfile) == kitfiles.declared_licenses(our_kitfile)
    if packs.kitfile["model"]["path"] == PARENT_REF:
        (parent,) = kitfiles.parent_references(kit_kitfile)
        assert parent.field == "model.path" and parent.text == PARENT_REF
        assert "model" not in [artifacts.layer_kind(x.media_type) for x in kit_manifest.layers]


def test_bytes_match(packs: Packs) -> None:
    """Byte for byte: every layer tar, the config, the manifest, hence the digest kitpin pins."""
    assert len(packs.kit_layers) == len(packs.harness.layers)
    for i, (theirs, ours) in enumerate(zip(packs.kit_layers, packs.harness.layers, strict=True)):
        assert theirs == ours.data, (
            f"layer {i} ({ours.media_type}): {_tar_difference(theirs, ours.data)}"
        )
    assert packs.kit_config == packs.harness.config.data
    assert packs.kit_manifest == packs.harness.manifest
    assert modelkit.sha256_digest(packs.kit_manifest) == packs.harness.digest


def _tar_difference(theirs: bytes, ours: bytes) -> str:
    """The first header field that differs, for a readable failure."""
    with tarfile.open(fileobj=io.BytesIO(theirs)) as a, tarfile.open(fileobj=io.BytesIO(ours)) as b:
        for x, y in zip(a.getmembers(), b.getmembers(), strict=False):
            for attr in ("name", "mode", "uid", "gid", "size", "mtime", "type", "uname", "gname"):
                if getattr(x, attr) != getattr(y, attr):
                    return f"{x.name}: {attr} kit={getattr(x, attr)!r} packer={getattr(y, attr)!r}"
    first = next((i for i, (p, q) in enumerate(zip(theirs, ours, strict=False)) if p != q), None)
    return f"same members; lengths {len(theirs)}/{len(ours)}, first differing byte at {first}"


# --------------------------------------------------------------------------- known differences


def test_kit_keeps_a_files_permission_bits(
    kit: harness_kit.Kit, kit_version: str, tmp_path: Path
) -> None:
    """kit records a file's own mode; the packer always writes 0644. Nothing else differs."""
    kitfile = _model_only()
    files = harness_kit.context_files(kitfile)
    context = harness_kit.write_context(tmp_path / "context", kitfile, files)
    (context / "model.safetensors").chmod(0o600)
    body = json.loads(kit.local_blob(kit.pack(context, TAG)))
    theirs = kit.local_blob(body["layers"][0]["digest"])
    ours = modelkit.pack_modelkit(kitfile=kitfile, files=files, cli_version=kit_version)

    assert theirs != ours.layers[0].data
    with tarfile.open(fileobj=io.BytesIO(theirs)) as a:
        (member,) = a.getmembers()
    with tarfile.open(fileobj=io.BytesIO(ours.layers[0].data)) as b:
        (expected,) = b.getmembers()
    assert (member.mode, expected.mode) == (0o600, 0o644)
    # Header bytes 100-107 hold the mode and 148-155 the checksum; the rest is identical.
    differing = {
        i for i, (p, q) in enumerate(zip(theirs, ours.layers[0].data, strict=False)) if p != q
    }
    assert differing and differing <= set(range(100, 108)) | set(range(148, 156))


def test_prompts_with_a_kit_that_knows_them(
    kit: harness_kit.Kit, kit_version: str, tmp_path: Path
) -> None:
    kitfile = _model_only()
    kitfile["prompts"] = [{"path": "prompts/system.md", "description": "system prompt"}]
    files = harness_kit.context_files(kitfile)
    context = harness_kit.write_context(tmp_path / "context", kitfile, files)
    result = kit.run("pack", str(context), "-t", TAG, check=False)
    if result.returncode != 0 and "prompts" in result.stdout + result.stderr:
        pytest.skip(
            f"kit {kit_version} does not know the Kitfile field `prompts` (newer kit does): the "
            "packer's prompt layers (code layers marked ml.kitops.modelkit.layer-subtype: "
            "prompt) are not checked against kit"
        )
    assert result.returncode == 0, result.stdout + result.stderr
    kit_body = json.loads(kit.local_blob(kit.digest(TAG)))
    ours = json.loads(
        modelkit.pack_modelkit(kitfile=kitfile, files=files, cli_version=kit_version).manifest
    )
    assert [(x["mediaType"], x.get("annotations")) for x in kit_body["layers"]] == [
        (x["mediaType"], x.get("annotations")) for x in ours["layers"]
    ]


def test_modelpack_with_a_kit_that_packs_it(
    kit: harness_kit.Kit, kit_version: str, tmp_path: Path
) -> None:
    if not kit.supports("pack", "--use-model-pack"):
        pytest.skip(
            f"kit {kit_version} has no `kit pack --use-model-pack` (added in kit 1.10): the "
            "packer's ModelPack format (fmt='modelpack') is not checked against kit"
        )
    kitfile = _everything()
    files = harness_kit.context_files(kitfile)
    context = harness_kit.write_context(tmp_path / "context", kitfile, files)
    kit_body = json.loads(kit.local_blob(kit.pack(context, TAG, extra=["--use-model-pack"])))
    ours = json.loads(
        modelkit.pack_modelkit(
            kitfile=kitfile, files=files, fmt="modelpack", cli_version=kit_version
        ).manifest
    )
    assert kit_body.get("artifactType") == ours["artifactType"]
    assert kit_body["config"]["mediaType"] == ours["config"]["mediaType"]
    assert [(x["mediaType"], x.get("annotations")) for x in kit_body["layers"]] == [
        (x["mediaType"], x.get("annotations")) for x in ours["layers"]
    ]
    # The created time differs (kit's is the pack time); the Kitfile rides in an annotation.
    assert artifacts.KITFILE_ANNOTATION in kit_body["annotations"]
    assert _without_layer_info(
        _ordered(kit_body["annotations"][artifacts.KITFILE_ANNOTATION].encode())
    ) == _without_layer_info(_ordered(ours["annotations"][artifacts.KITFILE_ANNOTATION].encode()))


# --------------------------------------------------------------------------- on the wire


@pytest.mark.integration
def test_kit_push_and_harness_push_serve_the_same_manifest(
    kit: harness_kit.Kit, kit_version: str, registry: RegistryServer, tmp_path: Path
) -> None:
    """Through a real registry: ``kit push`` serves the bytes ``kit pack`` stored, and
    :func:`harness.modelkit.push_packed` of the same Kitfile and files serves the same digest."""
    kitfile = _everything()
    files = harness_kit.context_files(kitfile, seed=3)
    repo = f"kit/conformance-{secrets.token_hex(3)}"
    ref = f"{registry.host}/{repo}:v1"
    packed_digest = kit.pack(harness_kit.write_context(tmp_path / "context", kitfile, files), ref)

    pushed = kit.push(ref)
    ours = modelkit.push_packed(
        registry,
        f"{repo}-harness",
        "v1",
        modelkit.pack_modelkit(kitfile=kitfile, files=files, cli_version=kit_version),
    )

    served = modelkit.fetch_manifest(registry, repo, "v1")
    assert pushed == packed_digest == modelkit.sha256_digest(served)
    assert served == kit.local_blob(packed_digest)
    assert modelkit.fetch_manifest(registry, f"{repo}-harness", "v1") == served
    assert ours == pushed


@pytest.mark.integration
def test_kit_unpacks_what_the_harness_pushed(
    kit: harness_kit.Kit, registry: RegistryServer, tmp_path: Path
) -> None:
    """Every other test pushes with the harness packer: kit itself accepts those ModelKits."""
    kitfile = _model_parts()
    files = harness_kit.context_files(kitfile, seed=5)
    repo = f"kit/harness-{secrets.token_hex(3)}"
    digest = modelkit.push_modelkit(registry, repo, "v1", kitfile=kitfile, files=files)

    unpacked = kit.unpack(f"{registry.host}/{repo}@{digest}", tmp_path / "out")

    assert unpacked.sha256() == {
        path: modelkit.sha256_digest(data).removeprefix("sha256:") for path, data in files.items()
    }
    assert kit.digest(f"{registry.host}/{repo}:v1", remote=True) == digest
