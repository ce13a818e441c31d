"""Fakes at the engine's seams and test data shared by the admission engine's tests.

The fake resolver's digests have the real shape (sha256 of the canonical reference plus a
version), so "the tag moved" is a version bump and every assertion compares real-looking
digests.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import yaml

from controller import errors, policy, refs, signatures, sites
from controller.admission import pinning
from controller.types import ArtifactFormat, Credential, Manifest, Resolution

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


class FakeResolver:
    """A :class:`pinning.Resolver` that answers every tag with a digest of the real shape;
    ``formats``, ``failures`` and ``stale`` change the answer per repository."""

    def __init__(self) -> None:
        self.version: dict[str, int] = {}
        self.formats: dict[str, ArtifactFormat] = {}
        self.failures: dict[str, errors.RegistryError] = {}
        self.stale: set[str] = set()
        self.calls: list[tuple[str, Credential | None]] = []

    def digest(self, canonical_tag: str) -> str:
        seed = f"{canonical_tag}#{self.version.get(canonical_tag, 0)}"
        return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()

    def move(self, canonical_tag: str) -> None:
        self.version[canonical_tag] = self.version.get(canonical_tag, 0) + 1

    def peek(
        self, ref: refs.Reference, *, credential: Credential | None = None
    ) -> Resolution | None:
        return None  # nothing is cached: every reference goes through resolve()

    async def resolve(
        self,
        ref: refs.Reference,
        *,
        credential: Credential | None = None,
        deadline: float | None = None,
    ) -> Resolution:
        self.calls.append((ref.canonical, credential))
        if ref.canonical_name in self.failures:
            raise self.failures[ref.canonical_name]
        digest = ref.digest or self.digest(f"{ref.canonical_name}:{ref.tag}")
        fmt = self.formats.get(ref.canonical_name, "kitops-modelkit")
        stale = ref.canonical_name in self.stale
        return Resolution(
            reference=ref,
            digest=digest,
            manifest=Manifest(
                digest=digest,
                media_type="application/vnd.oci.image.manifest.v1+json",
                size=100,
                format=fmt,
                config_media_type="application/vnd.oci.image.config.v1+json"
                if fmt == "other"
                else None,
            ),
            resolved_at=NOW,
            stale=stale,
            source="stale" if stale else "registry",
            stale_reason="connection refused" if stale else None,
        )


class RecordingCredentials:
    """A :class:`pinning.Credentials` that gives ``credential`` and records every lookup."""

    def __init__(self, credential: Credential | None = None) -> None:
        self.credential = credential
        self.calls: list[tuple[str, str, bool]] = []
        self.pod_specs: list[Mapping[str, Any] | None] = []

    def lookup_cached(
        self,
        *,
        namespace: str,
        registry: str,
        repository: str,
        pod_spec: Mapping[str, Any] | None,
    ) -> tuple[bool, Credential | None]:
        return False, None  # nothing is cached: every lookup is recorded

    async def lookup(
        self,
        *,
        namespace: str,
        registry: str,
        repository: str,
        pod_spec: Mapping[str, Any] | None,
    ) -> Credential | None:
        self.calls.append((namespace, f"{registry}/{repository}", pod_spec is not None))
        self.pod_specs.append(pod_spec)
        return self.credential


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: llama, namespace: ml}
spec:
  replicas: 2
  selector: {matchLabels: {app: llama}}
  template:
    metadata: {labels: {app: llama}}
    spec:
      initContainers:
        - name: kitops-init
          image: ghcr.io/kitops-ml/kitops-init:v1.7.0
          env:
            - {name: UNPACK_PATH, value: /models}
            - {name: MODELKIT_REF, value: reg.example.com/llama:production}
      containers:
        - {name: server, image: vllm/vllm-openai:v0.9.0}
"""
ENV_PATH = "/spec/template/spec/initContainers/0/env/1/value"
CANONICAL = "reg.example.com/llama:production"


def load(text: str) -> dict[str, Any]:
    obj = yaml.safe_load(text)
    assert isinstance(obj, dict)
    return obj


def with_values(obj: Mapping[str, Any], decision: pinning.Decision) -> dict[str, Any]:
    """The object the apiserver stores: values and annotations applied."""
    new = sites.apply(obj, decision.values)
    annotations = new.setdefault("metadata", {}).setdefault("annotations", {})
    for key, value in decision.annotations.items():
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value
    return new


def cluster_policy(name: str, spec: Mapping[str, Any]) -> policy.Policy:
    return policy.parse_policy(
        {
            "apiVersion": "kitpin.dev/v1alpha1",
            "kind": "ClusterModelKitPolicy",
            "metadata": {"name": name, "generation": 1},
            "spec": dict(spec),
        }
    )


class FakeConfigs:
    """A :class:`controller.resolver.ConfigSource` whose every config blob is ``kitfile``."""

    def __init__(self, kitfile: Mapping[str, Any]) -> None:
        self.kitfile = kitfile
        self.calls = 0

    async def get_config(
        self, ref: refs.Reference, manifest: Manifest, *, credential: Credential | None = None
    ) -> Mapping[str, Any]:
        self.calls += 1
        return self.kitfile


class FakeVerifier:
    """A :class:`signing.SignatureVerifier`: ``signed[digest]`` are the names of the keys
    that signed it (a key is known by its name here); ``unavailable`` digests fail."""

    def __init__(self) -> None:
        self.signed: dict[str, set[str]] = {}
        self.unavailable: set[str] = set()
        self.calls: list[tuple[str, tuple[str, ...], Credential | None]] = []
        self.delay = 0.0

    def peek(
        self,
        ref: refs.Reference,
        digest: str,
        keys: signatures.KeySet,
        *,
        credential: Credential | None = None,
    ) -> signatures.Outcome | None:
        return None  # no cache: every check is a recorded verify

    async def verify(
        self,
        ref: refs.Reference,
        digest: str,
        keys: signatures.KeySet,
        *,
        credential: Credential | None = None,
    ) -> signatures.Outcome:
        self.calls.append((digest, tuple(k.name for k in keys.keys), credential))
        if self.delay:
            await asyncio.sleep(self.delay)
        subject = f"{ref.canonical_name}@{digest}"
        if digest in self.unavailable:
            return signatures.SignatureUnavailable(
                subject=subject,
                digest=digest,
                error_reason="Unreachable",
                message=f"the signatures of {subject} could not all be fetched",
            )
        signers = self.signed.get(digest)
        if not signers:
            return signatures.SignatureMissing(
                subject=subject, digest=digest, message=f"{subject} is not signed"
            )
        good = [k.name for k in keys.keys if k.name in signers]
        if not good:
            return signatures.SignatureInvalid(
                subject=subject,
                digest=digest,
                problems=("signed by another key",),
                message=f"{subject} has 1 signature(s), none valid with the keys {keys.names}",
            )
        return signatures.Verified(
            subject=subject,
            digest=digest,
            key=good[0],
            where="tag x.sig layer 0",
            log="absent",
            message=f"{subject} is signed by the key {good[0]!r}",
        )


class FakeSecrets:
    """A :class:`signing.KeySecrets` over ``values[(namespace, name, key)]``."""

    def __init__(self, values: Mapping[tuple[str, str, str], bytes] | None = None) -> None:
        self.values = dict(values or {})
        self.reads: list[tuple[str, str, str]] = []

    def peek(self, namespace: str, name: str, key: str) -> bytes | errors.ConfigError | None:
        return None

    async def read(self, namespace: str, name: str, key: str) -> bytes:
        self.reads.append((namespace, name, key))
        value = self.values.get((namespace, name, key))
        if value is None:
            raise errors.ConfigError(f"Secret {namespace}/{name} does not exist")
        return value
