"""A ModelKit packer and pusher that writes what ``kit pack`` + ``kit push`` write on the wire.

The real ``kit`` CLI is not served by the Go module proxy, so the tools cache cannot build it:
the tests pack ModelKits themselves, faithfully, and push them to the real registry through the
OCI distribution API (blob upload by ``POST /v2/<repo>/blobs/uploads/`` + ``PUT ?digest=``, then
``PUT /v2/<repo>/manifests/<tag>``). Where a ``kit`` binary is found (:mod:`harness.kit`),
``tests/kit/`` checks that this packer writes what ``kit pack`` writes (docs/kit.md).

What kit produces (KitOps source, ``kitops-ml/kitops``):

* ``pkg/lib/kitfile/local-storage.go`` (≤ v1.7; ``pkg/lib/filesystem/local-storage.go`` later):
  layers are saved first in Kitfile order (model, model parts, code, datasets, docs), each
  element's ``digest``/``diffId`` written back into the Kitfile; then the config blob is the
  Kitfile marshalled with Go's ``encoding/json``; then the manifest is ``json.Marshal`` of an
  ``ocispec.Manifest`` with ``schemaVersion: 2``, config, layers and the single annotation
  ``ml.kitops.modelkit.cli-version``. No ``mediaType`` and no ``artifactType`` in the body
  (kit added the top-level ``mediaType`` only in 2026, kitops PR #1218: ``oci_media_type=True``).
* ``pkg/artifact/kitfile.go``: the Kitfile's JSON field order and ``omitempty`` rules
  (``package`` is a struct and always present; ``docs[].path`` is never omitted; the layer
  ``digest``/``diffId`` are promoted from an embedded struct and come last in each element).
* ``pkg/lib/constants/mediaType.go`` / ``mediatype/*.go``: layer media types
  ``application/vnd.kitops.modelkit.<model|modelpart|code|dataset|docs>.v1.tar`` (default
  compression ``none``), ModelPack ``application/vnd.cncf.model.<weight|weight.config|code|
  dataset|doc>.v1.tar``, artifact type ``application/vnd.cncf.model.manifest.v1+json``.
* ``kit pack --use-model-pack`` (kitops PR #1000, v1.10): ``artifactType`` set, config is a
  model-spec ``Model`` (``descriptor``/``modelfs``/``config``; ``KitFile.ToModelPackConfig``),
  the Kitfile JSON rides in the manifest annotation ``ml.kitops.modelkit.kitfile``, and newer
  kit adds ``org.opencontainers.image.created``. Layers carry ``org.cncf.model.filepath``
  (model-spec ``AnnotationFilepath``).
* A Kitfile ``model.path`` that is itself a ModelKit reference (``host/repo:tag``) produces no
  model layer: kit resolves the parent at unpack time (``util.IsModelKitReference``).

Go's ``json.Marshal`` is compact, keeps struct field order, sorts map keys and escapes
``<``, ``>``, ``&``, U+2028 and U+2029: :func:`go_json` reproduces that byte for byte.
Layer tars are byte for byte kit's for regular files (:func:`tar_layer`; zero mtime, uid 1000,
gid 0, no user/group names), so a ModelKit packed here has the digest ``kit pack`` gives the
same Kitfile and files (at mode ``0644``) when ``cli_version`` is that kit's version.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import urllib.parse
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

Format = Literal["kitops", "modelpack"]

MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_KIT_CONFIG = "application/vnd.kitops.modelkit.config.v1+json"
MEDIA_TYPE_MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
MEDIA_TYPE_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_IMAGE_LAYER = "application/vnd.oci.image.layer.v1.tar"
ARTIFACT_TYPE_KIT_MANIFEST = "application/vnd.kitops.modelkit.manifest.v1+json"
ARTIFACT_TYPE_MODELPACK_MANIFEST = "application/vnd.cncf.model.manifest.v1+json"
ARTIFACT_TYPE_KIT_INDEX = "application/vnd.kitops.modelkit.index.v1+json"

ANNOTATION_CLI_VERSION = "ml.kitops.modelkit.cli-version"
ANNOTATION_KITFILE = "ml.kitops.modelkit.kitfile"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_FILEPATH = "org.cncf.model.filepath"
ANNOTATION_LAYER_SUBTYPE = "ml.kitops.modelkit.layer-subtype"

DEFAULT_CLI_VERSION = "1.7.0"
"""What goreleaser stamps into ``constants.Version`` (the tag without ``v``)."""
DEFAULT_CREATED = "2025-11-01T00:00:00Z"
"""ModelPack creation time; fixed so that a push is deterministic for a given seed."""

# Kitfile layer kinds, in the order kit saves them, with their media-type base names.
KIT_LAYER_TYPES = {
    "model": "model",
    "modelpart": "modelpart",
    "code": "code",
    "dataset": "dataset",
    "docs": "docs",
}
MODELPACK_LAYER_TYPES = {
    "model": "weight",
    "modelpart": "weight.config",
    "code": "code",
    "dataset": "dataset",
    "docs": "doc",
}

# Kitfile JSON field order (pkg/artifact/kitfile.go); "always" fields have no omitempty.
_KITFILE_FIELDS = ("manifestVersion", "package", "model", "code", "datasets", "docs", "prompts")
_PACKAGE_FIELDS = ("name", "version", "description", "license", "authors")
_MODEL_FIELDS = (
    "name",
    "path",
    "license",
    "framework",
    "format",
    "version",
    "description",
    "parts",
    "parameters",
)
_PART_FIELDS = ("name", "path", "license", "type")
_CODE_FIELDS = ("path", "description", "license")
_DATASET_FIELDS = ("name", "path", "description", "license", "parameters")
_DOCS_FIELDS = ("path", "description")
_PROMPT_FIELDS = ("path", "description")
_LAYER_INFO = ("digest", "diffId")


class PackError(ValueError):
    """The Kitfile or arguments are not something kit would pack."""


class PushError(RuntimeError):
    """The registry refused or mangled a push."""


# ---------------------------------------------------------------------------- JSON like Go


def go_json(value: Any) -> bytes:
    """Serialise like Go's ``json.Marshal``: compact, dict order kept (build dicts in struct
    field order; use :func:`_sorted` for Go maps), HTML-safe escaping."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for char, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text.encode()


def _sorted(value: Any) -> Any:
    """A Go ``map``/``any`` value: keys sorted at every level."""
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(v) for v in value]
    return value


def _empty(value: Any) -> bool:
    """Go's ``omitempty``: false, 0, "", nil, empty slice/map."""
    return (
        value is None or value is False or value == 0 or value == "" or value == [] or value == {}
    )


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- references


def is_modelkit_reference(path: str) -> bool:
    """kit's ``util.IsModelKitReference``: contains ``:`` or ``@`` and parses as a reference."""
    if ":" not in path and "@" not in path:
        return False
    return _REFERENCE.fullmatch(path) is not None


_REFERENCE = re.compile(
    r"[a-z0-9.-]+(:\d+)?/[a-z0-9._/-]+(:\w[\w.-]{0,127})?(@sha256:[0-9a-f]{64})?"
)


# ---------------------------------------------------------------------------- Kitfile


def default_kitfile(
    name: str = "demo-model",
    *,
    version: str = "1.0.0",
    model_path: str = "model.bin",
    with_dataset: bool = True,
    with_code: bool = True,
    with_docs: bool = True,
) -> dict[str, Any]:
    """A typical small Kitfile (as the dict ``yaml.safe_load`` would give)."""
    kitfile: dict[str, Any] = {
        "manifestVersion": "1.0.0",
        "package": {
            "name": name,
            "version": version,
            "description": f"{name} packed by the kitpin test harness",
            "license": "Apache-2.0",
            "authors": ["kitpin tests"],
        },
        "model": {
            "name": name,
            "path": model_path,
            "license": "Apache-2.0",
            "framework": "pytorch",
            "format": "safetensors",
            "version": version,
        },
    }
    if with_code:
        kitfile["code"] = [{"path": "src/train.py", "description": "training script"}]
    if with_dataset:
        kitfile["datasets"] = [
            {"name": "train", "path": "data/train.csv", "description": "training data"}
        ]
    if with_docs:
        kitfile["docs"] = [{"path": "README.md", "description": "model card"}]
    return kitfile


def _struct(
    obj: Mapping[str, Any], fields: Sequence[str], where: str, always: Iterable[str] = ()
) -> dict[str, Any]:
    unknown = set(obj) - set(fields) - set(_LAYER_INFO)
    if unknown:
        # kit decodes Kitfiles with KnownFields(true): unknown keys are an error.
        raise PackError(f"unknown Kitfile field(s) in {where}: {', '.join(sorted(unknown))}")
    keep_always = set(always)
    out: dict[str, Any] = {}
    for f in fields:
        value = obj.get(f)
        if f == "parameters" and value is not None:
            value = _sorted(value)
        if f in keep_always or not _empty(value):
            out[f] = "" if value is None else value
    return out


@dataclass(frozen=True, kw_only=True)
class LayerSpec:
    kind: str
    """model, modelpart, code, dataset or docs."""
    path: str
    element: dict[str, Any]
    """The normalised Kitfile element the layer's digest/diffId are written into."""
    prompt: bool = False
    """Prompts are stored as code layers marked ``ml.kitops.modelkit.layer-subtype: prompt``."""


def normalise_kitfile(kitfile: Mapping[str, Any]) -> tuple[dict[str, Any], list[LayerSpec]]:
    """The Kitfile in Go field order with empties dropped, and its layers in kit's order."""
    top = _struct(kitfile, _KITFILE_FIELDS, "the Kitfile", always=("manifestVersion",))
    if not top.get("manifestVersion"):
        raise PackError("the Kitfile needs manifestVersion")
    # `package` is a struct, not a pointer: encoding/json always writes it, `{}` when empty.
    top["package"] = _struct(kitfile.get("package") or {}, _PACKAGE_FIELDS, "package")
    ordered: dict[str, Any] = {}
    for f in _KITFILE_FIELDS:
        if f in top:
            ordered[f] = top[f]
    layers: list[LayerSpec] = []
    model_layers: list[LayerSpec] = []
    if "model" in ordered:
        model = _struct(ordered["model"], _MODEL_FIELDS, "model")
        if model.get("path") and not is_modelkit_reference(model["path"]):
            model_layers.append(LayerSpec(kind="model", path=model["path"], element=model))
        if "parts" in model:
            parts = [_struct(p, _PART_FIELDS, "model.parts[]") for p in model["parts"]]
            model["parts"] = parts
            model_layers += [LayerSpec(kind="modelpart", path=p["path"], element=p) for p in parts]
        ordered["model"] = model
    layers += model_layers
    sections = (
        ("code", "code", _CODE_FIELDS, ()),
        ("datasets", "dataset", _DATASET_FIELDS, ()),
        ("docs", "docs", _DOCS_FIELDS, ("path",)),
        ("prompts", "code", _PROMPT_FIELDS, ()),
    )
    for key, kind, fields, always in sections:
        if key not in ordered:
            continue
        elements = [_struct(e, fields, f"{key}[]", always=always) for e in ordered[key]]
        ordered[key] = elements
        for e in elements:
            if not e.get("path"):
                raise PackError(f"{key}[] entries need a path")
            layers.append(LayerSpec(kind=kind, path=e["path"], element=e, prompt=key == "prompts"))
    if not layers and not (ordered.get("model") or {}).get("path"):
        raise PackError("the Kitfile packs nothing: give a model, code, datasets or docs")
    return ordered, layers


def _with_layer_info(element: dict[str, Any], digest: str, diff_id: str) -> None:
    element.pop("digest", None)
    element.pop("diffId", None)
    element["digest"] = digest
    element["diffId"] = diff_id


# ---------------------------------------------------------------------------- layers


def payload(path: str, seed: int, size: int = 4096) -> bytes:
    """Deterministic filler bytes for ``path``; a different ``seed`` gives different bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}\0{path}\0{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def tar_layer(path: str, content: bytes) -> bytes:
    """An uncompressed tar holding ``path`` (with its parent directories), byte for byte as
    kit writes it with Go's ``archive/tar`` (checked against ``kit pack`` by
    ``tests/kit/test_kit_conformance.py``): USTAR headers, zero mtime, uid 1000, gid 0, no
    owner names, directories ``0755`` named without a trailing ``/``, the file ``0644`` (kit
    keeps a file's own permission bits; the packer has no file on disk), device numbers
    written as octal zeros, then two zero blocks and no padding to a 10 KiB record.

    The headers are written here, not by :mod:`tarfile`: its bytes differ from Go's (a ``/``
    after directory names, NUL device fields) and between CPython releases."""
    parts = path.strip("/").split("/")
    out = bytearray()
    for i in range(1, len(parts)):
        out += _tar_header("/".join(parts[:i]), mode=0o755, size=0, typeflag=b"5")
    out += _tar_header("/".join(parts), mode=0o644, size=len(content), typeflag=b"0")
    out += content + b"\0" * (-len(content) % _TAR_BLOCK)
    return bytes(out + b"\0" * (2 * _TAR_BLOCK))


_TAR_BLOCK = 512


def _tar_octal(value: int, width: int) -> bytes:
    """A numeric header field as Go writes it: zero-padded octal digits, then a NUL."""
    digits = f"{value:o}".rjust(width - 1, "0")
    if len(digits) >= width:
        raise PackError(f"{value} does not fit a {width}-byte USTAR field (kit would use PAX)")
    return digits.encode() + b"\0"


def _tar_header(name: str, *, mode: int, size: int, typeflag: bytes) -> bytes:
    """One USTAR header block (POSIX.1-1988 layout)."""
    raw = name.encode()
    if len(raw) > 100 or not name.isascii():
        raise PackError(
            f"layer path {name!r}: the packer writes names of up to 100 ASCII bytes only "
            "(kit writes longer or non-ASCII names with a USTAR prefix or PAX records)"
        )
    header = b"".join(
        [
            raw.ljust(100, b"\0"),  # name
            _tar_octal(mode, 8),
            _tar_octal(1000, 8),  # uid
            _tar_octal(0, 8),  # gid
            _tar_octal(size, 12),
            _tar_octal(0, 12),  # mtime
            b" " * 8,  # checksum, computed over the block with these blanks
            typeflag,
            b"\0" * 100,  # linkname
            b"ustar\x0000",  # magic + version
            b"\0" * 32,  # uname
            b"\0" * 32,  # gname
            _tar_octal(0, 8),  # devmajor
            _tar_octal(0, 8),  # devminor
            b"\0" * 155,  # prefix
        ]
    ).ljust(_TAR_BLOCK, b"\0")
    checksum = f"{sum(header):06o}".encode() + b"\0 "
    return header[:148] + checksum + header[156:]


def _content_for(spec: LayerSpec, files: Mapping[str, bytes], seed: int) -> bytes:
    if spec.path in files:
        return files[spec.path]
    if spec.kind in files:
        return files[spec.kind]
    if spec.kind == "dataset" and "datasets" in files:
        return files["datasets"]
    return payload(spec.path, seed)


# ---------------------------------------------------------------------------- packing


@dataclass(frozen=True, kw_only=True)
class Blob:
    media_type: str
    data: bytes
    annotations: Mapping[str, str] | None = None

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    def descriptor(self) -> dict[str, Any]:
        """An ``ocispec.Descriptor`` in Go field order."""
        d: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
        }
        if self.annotations:
            d["annotations"] = _sorted(dict(self.annotations))
        return d


@dataclass(frozen=True, kw_only=True)
class Packed:
    """A packed artifact: the exact bytes to push."""

    manifest: bytes
    media_type: str
    config: Blob
    layers: tuple[Blob, ...]
    kitfile: dict[str, Any] | None = None
    """The Kitfile as kit stores it (with layer digests), for ModelKits."""

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (*self.layers, self.config)


def _manifest(
    *,
    config: Blob,
    layers: Sequence[Blob],
    annotations: Mapping[str, str] | None,
    media_type: str | None,
    artifact_type: str | None,
) -> bytes:
    """``json.Marshal(ocispec.Manifest{...})``: schemaVersion, mediaType, artifactType, config,
    layers, subject, annotations (omitempty all but schemaVersion, config, layers)."""
    m: dict[str, Any] = {"schemaVersion": 2}
    if media_type:
        m["mediaType"] = media_type
    if artifact_type:
        m["artifactType"] = artifact_type
    m["config"] = config.descriptor()
    m["layers"] = [layer.descriptor() for layer in layers]
    if annotations:
        m["annotations"] = _sorted(dict(annotations))
    return go_json(m)


def pack_modelkit(
    *,
    kitfile: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
    fmt: Format = "kitops",
    seed: int = 0,
    cli_version: str = DEFAULT_CLI_VERSION,
    created: str = DEFAULT_CREATED,
    oci_media_type: bool = False,
) -> Packed:
    """Pack like ``kit pack`` (``fmt="modelpack"``: ``kit pack --use-model-pack``).

    ``files`` maps a Kitfile path (``data/train.csv``) or a layer kind (``model``,
    ``modelpart``, ``code``, ``dataset``, ``docs``) to the bytes of that file; anything not
    given gets :func:`payload` bytes derived from ``seed``. ``oci_media_type`` adds the
    top-level ``mediaType`` that kit writes since kitops PR #1218.
    """
    kf, specs = normalise_kitfile(kitfile if kitfile is not None else default_kitfile())
    files = files or {}
    kinds = KIT_LAYER_TYPES if fmt == "kitops" else MODELPACK_LAYER_TYPES
    if fmt not in ("kitops", "modelpack"):
        raise PackError(f"unknown format {fmt!r}: use 'kitops' or 'modelpack'")
    layers: list[Blob] = []
    for spec in specs:
        data = tar_layer(spec.path, _content_for(spec, files, seed))
        media_type = (
            f"application/vnd.kitops.modelkit.{kinds[spec.kind]}.v1.tar"
            if fmt == "kitops"
            else f"application/vnd.cncf.model.{kinds[spec.kind]}.v1.tar"
        )
        annotations: dict[str, str] | None = None
        if fmt == "modelpack":
            annotations = {ANNOTATION_FILEPATH: spec.path}
        elif spec.prompt:
            annotations = {ANNOTATION_LAYER_SUBTYPE: "prompt"}
        blob = Blob(media_type=media_type, data=data, annotations=annotations)
        # Uncompressed: the diffId (digest of the tar) is the layer digest.
        _with_layer_info(spec.element, blob.digest, blob.digest)
        layers.append(blob)
    kitfile_json = go_json(kf)
    manifest_media_type = MEDIA_TYPE_MANIFEST if oci_media_type else None
    if fmt == "kitops":
        config = Blob(media_type=MEDIA_TYPE_KIT_CONFIG, data=kitfile_json)
        manifest = _manifest(
            config=config,
            layers=layers,
            annotations={ANNOTATION_CLI_VERSION: cli_version},
            media_type=manifest_media_type,
            artifact_type=None,
        )
    else:
        config = Blob(
            media_type=MEDIA_TYPE_MODELPACK_CONFIG,
            data=go_json(_modelpack_config(kf, [b.digest for b in layers], created)),
        )
        manifest = _manifest(
            config=config,
            layers=layers,
            annotations={
                ANNOTATION_CLI_VERSION: cli_version,
                ANNOTATION_KITFILE: kitfile_json.decode(),
                ANNOTATION_CREATED: created,
            },
            media_type=manifest_media_type,
            artifact_type=ARTIFACT_TYPE_MODELPACK_MANIFEST,
        )
    return Packed(
        manifest=manifest,
        media_type=MEDIA_TYPE_MANIFEST,
        config=config,
        layers=tuple(layers),
        kitfile=kf,
    )


def _modelpack_config(kf: Mapping[str, Any], diff_ids: list[str], created: str) -> dict[str, Any]:
    """model-spec ``Model`` as kit's ``ToModelPackConfig`` fills it (Go field order)."""
    package = kf.get("package", {})
    model = kf.get("model") or {}
    licenses = sorted(
        {
            lic
            for lic in [
                package.get("license"),
                model.get("license"),
                *[p.get("license") for p in model.get("parts", [])],
                *[d.get("license") for d in kf.get("datasets", [])],
                *[c.get("license") for c in kf.get("code", [])],
            ]
            if lic
        }
    )
    descriptor: dict[str, Any] = {
        "createdAt": created,
        "authors": package.get("authors"),
        "name": package.get("name"),
        "version": package.get("version"),
        "licenses": licenses,
        "title": package.get("name"),
        "description": package.get("description"),
    }
    config: dict[str, Any] = {}
    if model.get("format"):
        config["format"] = model["format"]
    return {
        "descriptor": {k: v for k, v in descriptor.items() if not _empty(v)},
        "modelfs": {"type": "layers", "diffIds": diff_ids},
        "config": config,
    }


def pack_image(*, seed: int = 0, content: bytes | None = None) -> Packed:
    """A minimal OCI container image (one layer): not a ModelKit."""
    layer = Blob(
        media_type=MEDIA_TYPE_IMAGE_LAYER,
        data=tar_layer("app/hello.txt", content if content is not None else payload("image", seed)),
    )
    config_obj = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/app/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    }
    config = Blob(media_type=MEDIA_TYPE_IMAGE_CONFIG, data=go_json(config_obj))
    manifest = _manifest(
        config=config,
        layers=[layer],
        annotations=None,
        media_type=MEDIA_TYPE_MANIFEST,
        artifact_type=None,
    )
    return Packed(manifest=manifest, media_type=MEDIA_TYPE_MANIFEST, config=config, layers=(layer,))


# ---------------------------------------------------------------------------- pushing


class _HasURL(Protocol):
    @property
    def url(self) -> str: ...

    def client_ssl_context(self) -> ssl.SSLContext | None: ...


Registry = str | _HasURL
Auth = tuple[str, str] | httpx.Auth | None


class ChallengeAuth(httpx.Auth):
    """Answers a registry's 401 like ``docker``/``oras`` do: Basic credentials for a Basic
    challenge; for a Bearer challenge, a token from the realm (``service`` + ``scope``) fetched
    with the credentials (anonymously when there are none), cached per scope.

    Sync clients only: the token is fetched with a client of its own, so the realm may be
    served by another host with another CA (``token_verify``) than the registry."""

    requires_response_body = True

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        token_verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.username = username
        self.password = password
        self.token_verify = token_verify
        self._tokens: dict[str, str] = {}
        self._basic = False

    def _basic_header(self) -> str:
        raw = f"{self.username or ''}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        scope = _scope_for(request)
        if self._basic and self.username is not None:
            request.headers["Authorization"] = self._basic_header()
        elif scope in self._tokens:
            request.headers["Authorization"] = f"Bearer {self._tokens[scope]}"
        response = yield request
        if response.status_code != 401:
            return
        kind, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if kind == "basic" and self.username is not None:
            self._basic = True
            request.headers["Authorization"] = self._basic_header()
            yield request
        elif kind == "bearer" and "realm" in params:
            token = self._fetch_token(params, params.get("scope") or scope)
            if token is None:
                return
            self._tokens[scope] = token
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def _fetch_token(self, params: Mapping[str, str], scope: str) -> str | None:
        query = {"service": params.get("service", "")}
        if scope:
            query["scope"] = scope
        headers = {"Authorization": self._basic_header()} if self.username is not None else {}
        with httpx.Client(verify=self.token_verify, timeout=30) as client:
            answer = client.get(params["realm"], params=query, headers=headers)
        if answer.status_code != 200:
            return None
        body = answer.json()
        token = body.get("token") or body.get("access_token")
        return token if isinstance(token, str) else None


def _scope_for(request: httpx.Request) -> str:
    m = re.match(r"^/v2/(.+)/(manifests|blobs|tags)/", request.url.path)
    if not m:
        return ""
    actions = "pull" if request.method in ("GET", "HEAD") else "pull,push"
    return f"repository:{m.group(1)}:{actions}"


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    kind, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return kind.lower(), params


def _client(
    registry: Registry, auth: Auth, ssl_context: ssl.SSLContext | None
) -> tuple[httpx.Client, str]:
    if isinstance(registry, str):
        base = (
            registry
            if "://" in registry
            else (f"https://{registry}" if ssl_context is not None else f"http://{registry}")
        )
        verify: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
    else:
        base = registry.url
        ctx = ssl_context or registry.client_ssl_context()
        verify = ctx if ctx is not None else True
    if isinstance(auth, tuple):
        auth = ChallengeAuth(*auth)
    elif auth is None:
        auth = ChallengeAuth()
    return httpx.Client(base_url=base.rstrip("/"), auth=auth, verify=verify, timeout=30), base


def _check(response: httpx.Response, expected: int, what: str) -> None:
    if response.status_code != expected:
        raise PushError(
            f"{what}: {response.request.method} {response.request.url} answered "
            f"{response.status_code} (expected {expected}): {response.text[:500]}"
        )


def push_blob(client: httpx.Client, repo: str, blob: Blob) -> None:
    """Upload one blob monolithically unless the registry already has it (as oras does)."""
    head = client.head(f"/v2/{repo}/blobs/{blob.digest}")
    if head.status_code == 200:
        return
    start = client.post(f"/v2/{repo}/blobs/uploads/")
    _check(start, 202, f"starting the upload of {blob.digest}")
    location = start.headers["Location"]
    separator = "&" if "?" in location else "?"
    url = f"{location}{separator}digest={urllib.parse.quote(blob.digest)}"
    done = client.put(
        url,
        content=blob.data,
        headers={"Content-Type": "application/octet-stream"},
    )
    _check(done, 201, f"uploading {blob.digest}")


def put_manifest(
    client: httpx.Client, repo: str, reference: str, manifest: bytes, media_type: str
) -> str:
    """PUT the exact ``manifest`` bytes; return their digest (checked against the registry's)."""
    digest = sha256_digest(manifest)
    response = client.put(
        f"/v2/{repo}/manifests/{reference}",
        content=manifest,
        headers={"Content-Type": media_type},
    )
    _check(response, 201, f"pushing the manifest {repo}:{reference}")
    served = response.headers.get("Docker-Content-Digest")
    if served and served != digest:
        raise PushError(f"the registry says {served} for a manifest that hashes to {digest}")
    return digest


def push_packed(
    registry: Registry,
    repo: str,
    tag: str,
    packed: Packed,
    *,
    auth: Auth = None,
    ssl_context: ssl.SSLContext | None = None,
) -> str:
    """Push blobs then the manifest under ``tag``; the manifest digest."""
    client, _ = _client(registry, auth, ssl_context)
    with client:
        for blob in packed.blobs:
            push_blob(client, repo, blob)
        return put_manifest(client, repo, tag, packed.manifest, packed.media_type)


def push_modelkit(
    registry: Registry,
    repo: str,
    tag: str,
    *,
    kitfile: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
    fmt: Format = "kitops",
    seed: int = 0,
    auth: Auth = None,
    ssl_context: ssl.SSLContext | None = None,
    cli_version: str = DEFAULT_CLI_VERSION,
    oci_media_type: bool = False,
) -> str:
    """``kit pack`` + ``kit push`` of ``kitfile`` to ``registry``/``repo``:``tag``; returns
    the manifest digest computed from the exact bytes PUT.

    ``registry`` is a URL (``http://127.0.0.1:5000``), a ``host:port`` (HTTPS when an
    ``ssl_context`` is given, else HTTP) or a :class:`RegistryServer`. ``auth`` is
    ``(user, password)`` (Basic or token flow, whichever the registry asks for) or an
    ``httpx.Auth``. Re-pushing with another ``seed`` changes every layer and the digest.
    """
    packed = pack_modelkit(
        kitfile=kitfile,
        files=files,
        fmt=fmt,
        seed=seed,
        cli_version=cli_version,
        oci_media_type=oci_media_type,
    )
    return push_packed(registry, repo, tag, packed, auth=auth, ssl_context=ssl_context)


def push_image(
    registry: Registry,
    repo: str,
    tag: str,
    *,
    seed: int = 0,
    auth: Auth = None,
    ssl_context: ssl.SSLContext | None = None,
) -> str:
    """Push a plain one-layer OCI container image (not a ModelKit); its manifest digest."""
    return push_packed(
        registry, repo, tag, pack_image(seed=seed), auth=auth, ssl_context=ssl_context
    )


def push_index(
    registry: Registry,
    repo: str,
    tag: str,
    manifests: Sequence[str],
    *,
    artifact_type: str | None = ARTIFACT_TYPE_KIT_INDEX,
    auth: Auth = None,
    ssl_context: ssl.SSLContext | None = None,
) -> str:
    """Push an OCI image index over ``manifests`` (digests or tags already in ``repo``);
    ``artifact_type`` defaults to the ModelKit index type. Returns the index digest."""
    client, _ = _client(registry, auth, ssl_context)
    with client:
        entries = []
        for ref in manifests:
            head = client.head(
                f"/v2/{repo}/manifests/{ref}",
                headers={"Accept": f"{MEDIA_TYPE_MANIFEST}, {MEDIA_TYPE_INDEX}"},
            )
            _check(head, 200, f"looking up {repo}:{ref} for the index")
            entries.append(
                {
                    "mediaType": head.headers["Content-Type"],
                    "digest": head.headers["Docker-Content-Digest"],
                    "size": int(head.headers["Content-Length"]),
                }
            )
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX}
        if artifact_type:
            index["artifactType"] = artifact_type
        index["manifests"] = entries
        return put_manifest(client, repo, tag, go_json(index), MEDIA_TYPE_INDEX)


def tag(
    registry: Registry,
    repo: str,
    existing: str,
    new_tag: str,
    *,
    auth: Auth = None,
    ssl_context: ssl.SSLContext | None = None,
) -> str:
    """Point ``new_tag`` at the manifest ``existing`` (a tag or digest) by re-PUTting its exact
    bytes: what ``kit tag`` + ``kit push`` or ``oras tag`` do, i.e. "moving a tag"."""
    client, _ = _client(registry, auth, ssl_context)
    with client:
        got = client.get(
            f"/v2/{repo}/manifests/{existing}",
            headers={"Accept": f"{MEDIA_TYPE_MANIFEST}, {MEDIA_TYPE_INDEX}"},
        )
        _check(got, 200, f"fetching {repo}:{existing}")
        media_type = got.headers["Content-Type"].split(";")[0].strip()
        return put_manifest(client, repo, new_tag, got.content, media_type)


def fetch_manifest(
    registry: Registry,
    repo: str,
    reference: str,
    *,
    auth: Auth = None,
    ssl_context: ssl.SSLContext | None = None,
) -> bytes:
    """The manifest bytes the registry serves for ``reference`` (harness-side check)."""
    client, _ = _client(registry, auth, ssl_context)
    with client:
        got = client.get(
            f"/v2/{repo}/manifests/{reference}",
            headers={"Accept": f"{MEDIA_TYPE_MANIFEST}, {MEDIA_TYPE_INDEX}"},
        )
        _check(got, 200, f"fetching {repo}:{reference}")
        return got.content
