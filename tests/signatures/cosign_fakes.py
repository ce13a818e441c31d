"""Test doubles for the signature tests: keys that sign as cosign does, the artifacts cosign
stores (``.sig`` manifests, sigstore bundles as OCI 1.1 referrers, Rekor entries), and an
in-memory OCI registry behind ``httpx.MockTransport`` that serves them to the real
:class:`controller.registry.RegistryClient` (manifests, blobs, the referrers API or, when
``referrers_api=False``, a 404 there and the ``sha256-<hex>`` tag-schema index).

The shapes follow cosign v2.6 (``pkg/oci/remote/write.go``, ``pkg/cosign/bundle``,
``pkg/types``); the integration tests check the same code against the real cosign CLI.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from Crypto.Hash import SHA512
from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from controller import refs, registry
from controller.signatures import payloads

REGISTRY = "reg.example"
REPOSITORY = "team/model"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
KIT_CONFIG = "application/vnd.kitops.modelkit.config.v1+json"

KeyKind = Literal["ecdsa", "rsa", "ed25519", "ed25519-pure"]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ref(tag: str = "v1") -> refs.Reference:
    return refs.parse(f"{REGISTRY}/{REPOSITORY}:{tag}", grammar="kit")


# -- keys -------------------------------------------------------------------------------------


@dataclass
class Signer:
    """A private key that signs the way ``cosign sign --key`` does with it."""

    kind: KeyKind
    private: Any

    @classmethod
    def make(cls, kind: KeyKind = "ecdsa") -> Signer:
        if kind == "ecdsa":
            return cls(kind, ec.generate_private_key(ec.SECP256R1()))
        if kind == "rsa":
            return cls(kind, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return cls(kind, ed25519.Ed25519PrivateKey.generate())

    @property
    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def sign(self, message: bytes) -> bytes:
        if self.kind == "ecdsa":
            return bytes(self.private.sign(message, ec.ECDSA(hashes.SHA256())))
        if self.kind == "rsa":
            return bytes(self.private.sign(message, padding.PKCS1v15(), hashes.SHA256()))
        raw = self.private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        signer = eddsa.new(ECC.import_key(raw), "rfc8032")
        if self.kind == "ed25519":  # cosign 2.x: Ed25519ph
            return bytes(signer.sign(SHA512.new(message)))
        return bytes(signer.sign(message))


# -- what cosign stores -------------------------------------------------------------------------


def simple_signing_payload(digest: str, repository: str = f"{REGISTRY}/{REPOSITORY}") -> bytes:
    """cosign's payload (``pkg/payload``), as Go's json.Marshal writes it."""
    return compact(
        {
            "critical": {
                "identity": {"docker-reference": repository},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    )


def statement(digest: str, predicate_type: str = payloads.COSIGN_SIGN_PREDICATE) -> bytes:
    algorithm, _, hex_digest = digest.partition(":")
    return compact(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"digest": {algorithm: hex_digest}}],
            "predicateType": predicate_type,
        }
    )


@dataclass
class Log:
    """A transparency log's key, issuing entries (signed entry timestamps) as Rekor does."""

    signer: Signer = field(default_factory=Signer.make)
    index: int = 1000

    @property
    def log_id(self) -> str:
        der = self.signer.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()

    def promise(self, body: bytes, integrated_time: int, log_index: int) -> bytes:
        canonical = compact(
            {
                "body": b64(body),
                "integratedTime": integrated_time,
                "logID": self.log_id,
                "logIndex": log_index,
            }
        )
        return self.signer.sign(canonical)

    def hashedrekord(self, *, payload: bytes, signature: bytes, public_pem: str) -> dict[str, Any]:
        """The ``dev.sigstore.cosign/bundle`` annotation of a ``.sig`` layer."""
        body = compact(
            {
                "apiVersion": "0.0.1",
                "kind": "hashedrekord",
                "spec": {
                    "data": {"hash": {"algorithm": "sha256", "value": sha256(payload)[7:]}},
                    "signature": {
                        "content": b64(signature),
                        "publicKey": {"content": b64(public_pem.encode())},
                    },
                },
            }
        )
        self.index += 1
        when = 1_750_000_000
        return {
            "SignedEntryTimestamp": b64(self.promise(body, when, self.index)),
            "Payload": {
                "body": b64(body),
                "integratedTime": when,
                "logIndex": self.index,
                "logID": self.log_id,
            },
        }

    def dsse_entry(self, *, payload: bytes, signature: bytes, public_pem: str) -> dict[str, Any]:
        """A sigstore bundle's ``verificationMaterial.tlogEntries`` item."""
        body = compact(
            {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {"algorithm": "sha256", "value": "0" * 64},
                    "payloadHash": {"algorithm": "sha256", "value": sha256(payload)[7:]},
                    "signatures": [
                        {"signature": b64(signature), "verifier": b64(public_pem.encode())}
                    ],
                },
            }
        )
        self.index += 1
        when = 1_750_000_000
        return {
            "logIndex": str(self.index),
            "logId": {"keyId": b64(bytes.fromhex(self.log_id))},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
            "integratedTime": str(when),
            "inclusionPromise": {"signedEntryTimestamp": b64(self.promise(body, when, self.index))},
            "canonicalizedBody": b64(body),
        }


def bundle(
    signer: Signer,
    digest: str,
    *,
    predicate_type: str = payloads.COSIGN_SIGN_PREDICATE,
    log: Log | None = None,
    tamper: bool = False,
) -> bytes:
    """What ``cosign sign --new-bundle-format --key`` stores (``MakeNewBundle``)."""
    payload = statement(digest, predicate_type)
    signature = signer.sign(payloads.pae(payloads.IN_TOTO_PAYLOAD_TYPE, payload))
    if tamper:
        payload = payload.replace(b"Statement/v1", b"Statement/v0.1")
    material: dict[str, Any] = {"publicKey": {"hint": "irrelevant"}}
    if log is not None:
        material["tlogEntries"] = [
            log.dsse_entry(payload=payload, signature=signature, public_pem=signer.public_pem)
        ]
    return compact(
        {
            "mediaType": payloads.BUNDLE_V03,
            "verificationMaterial": material,
            "dsseEnvelope": {
                "payload": b64(payload),
                "payloadType": payloads.IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": b64(signature)}],
            },
        }
    )


# -- an in-memory registry ------------------------------------------------------------------------


@dataclass
class Store:
    """One repository's manifests, tags and blobs, served over the OCI distribution API."""

    referrers_api: bool = True
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, bytes] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    """Path regex → status to answer instead (a failing registry)."""
    requests: list[str] = field(default_factory=list)

    # -- content

    def blob(self, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        digest = sha256(data)
        self.blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def manifest(self, document: Mapping[str, Any], tag: str | None = None) -> str:
        body = compact(document)
        digest = sha256(body)
        self.manifests[digest] = body
        if tag is not None:
            self.tags[tag] = digest
        return digest

    def modelkit(self, tag: str = "v1", seed: int = 0) -> str:
        """Push a ModelKit-shaped manifest; its digest."""
        config = self.blob(compact({"manifestVersion": "1.0", "seed": seed}), KIT_CONFIG)
        layer = self.blob(b"weights %d" % seed, "application/vnd.kitops.modelkit.model.v1.tar")
        return self.manifest(
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]},
            tag,
        )

    def sign_legacy(
        self,
        digest: str,
        signer: Signer,
        *,
        payload: bytes | None = None,
        log: Log | None = None,
        signature: bytes | None = None,
        annotations: Mapping[str, str] | None = None,
        onto: str | None = None,
    ) -> None:
        """Append a signature layer to the ``.sig`` manifest of ``onto`` (default: ``digest``),
        as ``cosign sign --key`` does; ``payload`` defaults to one naming ``digest``."""
        payload = simple_signing_payload(digest) if payload is None else payload
        signature = signer.sign(payload) if signature is None else signature
        extra: dict[str, str] = {payloads.SIGNATURE_ANNOTATION: b64(signature)}
        if log is not None:
            extra[payloads.REKOR_BUNDLE_ANNOTATION] = json.dumps(
                log.hashedrekord(payload=payload, signature=signature, public_pem=signer.public_pem)
            )
        if annotations is not None:
            extra = dict(annotations)
        layer = self.blob(payload, payloads.SIMPLE_SIGNING, annotations=extra)
        tag = (onto or digest).replace(":", "-") + ".sig"
        layers: list[Any] = []
        if tag in self.tags:
            layers = json.loads(self.manifests[self.tags[tag]])["layers"]
        config = self.blob(
            compact({"architecture": "", "os": "", "config": {}}),
            "application/vnd.oci.image.config.v1+json",
        )
        self.manifest(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config,
                "layers": [*layers, layer],
            },
            tag,
        )

    def referrer(
        self,
        subject: str,
        artifact_type: str,
        layers: Sequence[dict[str, Any]],
        annotations: Mapping[str, str] | None = None,
    ) -> str:
        """Push a manifest whose subject is ``subject`` (cosign's ``WriteReferrer``)."""
        config = self.blob(b"{}", "application/vnd.oci.empty.v1+json")
        body = self.manifests[subject]
        document: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": config,
            "layers": list(layers),
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(body)},
        }
        if annotations:
            document["annotations"] = dict(annotations)
        digest = self.manifest(document)
        if not self.referrers_api:  # what go-containerregistry maintains without the API
            self.tags[subject.replace(":", "-")] = self.manifest(self.index_of(subject, ggcr=True))
        return digest

    def sign_bundle(self, digest: str, signer: Signer, **kwargs: Any) -> str:
        predicate_type = kwargs.get("predicate_type", payloads.COSIGN_SIGN_PREDICATE)
        layer = self.blob(bundle(signer, digest, **kwargs), payloads.BUNDLE_V03)
        return self.referrer(
            digest,
            payloads.BUNDLE_V03,
            [layer],
            {
                "dev.sigstore.bundle.content": "dsse-envelope",
                payloads.BUNDLE_PREDICATE_ANNOTATION: predicate_type,
            },
        )

    def index_of(self, subject: str, *, ggcr: bool = False) -> dict[str, Any]:
        """The referrers of ``subject``; ``ggcr``: as go-containerregistry writes the
        tag-schema index (``artifactType`` from the config's media type, no annotations)."""
        descriptors = []
        for digest, body in self.manifests.items():
            document = json.loads(body)
            if document.get("subject", {}).get("digest") != subject:
                continue
            descriptor = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body)}
            if ggcr:
                descriptor["artifactType"] = document["config"]["mediaType"]
                descriptors.append(descriptor)
                continue
            if "artifactType" in document:
                descriptor["artifactType"] = document["artifactType"]
            if "annotations" in document:
                descriptor["annotations"] = document["annotations"]
            descriptors.append(descriptor)
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}

    # -- serving

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(f"{request.method} {path}")
        for pattern, status in self.failures.items():
            if re.search(pattern, path):
                return httpx.Response(status, json={"errors": [{"code": "UNAVAILABLE"}]})
        if path == "/v2/":
            return httpx.Response(200, json={})
        prefix = f"/v2/{REPOSITORY}/"
        if not path.startswith(prefix):
            return httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN"}]})
        kind, _, name = path[len(prefix) :].partition("/")
        if kind == "manifests":
            digest = name if name.startswith("sha256:") else self.tags.get(name)
            if digest is None or digest not in self.manifests:
                return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
            body = self.manifests[digest]
            media_type = json.loads(body).get("mediaType", OCI_MANIFEST)
            return httpx.Response(
                200,
                content=body,
                headers={"Content-Type": media_type, "Docker-Content-Digest": digest},
            )
        if kind == "blobs":
            if name not in self.blobs:
                return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
            return httpx.Response(200, content=self.blobs[name])
        if kind == "referrers" and self.referrers_api:
            return httpx.Response(
                200, content=compact(self.index_of(name)), headers={"Content-Type": OCI_INDEX}
            )
        return httpx.Response(404, text="404 page not found")


async def _dns(host: str, port: int) -> Sequence[str]:
    return ["10.0.0.7"]


def client(store: Store, **kwargs: Any) -> registry.RegistryClient:
    return registry.RegistryClient(transport=httpx.MockTransport(store), resolve=_dns, **kwargs)


Handler = Callable[[httpx.Request], httpx.Response]
