"""Builders for policy tests: policies from plain dicts (as the apiserver stores them), sites,
manifests with real media types and digests of the real shape, evidence."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from controller import artifacts, policy, refs, sites
from controller.types import ArtifactFormat, Layer, Manifest, Resolution

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
WHERE = 'initContainer "kitops-init" env MODELKIT_REF'
POINTER = "/spec/template/spec/initContainers/0/env/0/value"

KITOPS_LAYER = {
    "model": "application/vnd.kitops.modelkit.model.v1.tar",
    "modelpart": "application/vnd.kitops.modelkit.modelpart.v1.tar",
    "dataset": "application/vnd.kitops.modelkit.dataset.v1.tar+gzip",
    "code": "application/vnd.kitops.modelkit.code.v1.tar",
    "docs": "application/vnd.kitops.modelkit.docs.v1.tar",
    "mcpb": artifacts.KITOPS_MCPB_LAYER,
}
MODELPACK_LAYER = {
    "weight": "application/vnd.cncf.model.weight.v1.raw",
    "weight-config": "application/vnd.cncf.model.weight.config.v1.raw",
    "dataset": "application/vnd.cncf.model.dataset.v1.tar",
    "code": "application/vnd.cncf.model.code.v1.tar",
    "docs": "application/vnd.cncf.model.doc.v1.tar",
}


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def cluster(
    name: str = "prod-models", spec: Mapping[str, Any] | None = None, **metadata: Any
) -> policy.Policy:
    return policy.parse_policy(
        {
            "apiVersion": policy.API_VERSION,
            "kind": policy.CLUSTER_KIND,
            "metadata": {"name": name, **metadata},
            "spec": dict(spec or {}),
        }
    )


def namespaced(
    name: str = "strict", namespace: str = "ml", spec: Mapping[str, Any] | None = None
) -> policy.Policy:
    return policy.parse_policy(
        {
            "apiVersion": policy.API_VERSION,
            "kind": policy.NAMESPACED_KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(spec or {}),
        }
    )


def site(
    value: str,
    *,
    grammar: refs.Grammar = "kit",
    prefix: str = "",
    expects_modelkit: bool = True,
    where: str = WHERE,
    path: str = POINTER,
) -> sites.Site:
    return sites.Site(
        path=path,
        kind="env" if grammar == "kit" else "image-volume",
        grammar=grammar,
        prefix=prefix,
        value=value,
        expects_modelkit=expects_modelkit,
        where=where,
    )


def manifest(
    fmt: ArtifactFormat = "kitops-modelkit",
    layers: Sequence[str] = ("model",),
    *,
    kitfile: Mapping[str, Any] | None = None,
    artifact_type: str | None = None,
    seed: str = "m",
) -> Manifest:
    table = MODELPACK_LAYER if fmt == "modelpack" else KITOPS_LAYER
    config_type = {
        "kitops-modelkit": artifacts.KITOPS_CONFIG,
        "modelpack": artifacts.MODELPACK_CONFIG,
        "other": "application/vnd.oci.image.config.v1+json",
    }.get(fmt)
    annotations = {}
    if kitfile is not None:
        annotations[artifacts.KITFILE_ANNOTATION] = json.dumps(kitfile)
    if fmt == "oci-index":
        return Manifest(
            digest=sha(seed),
            media_type=artifacts.OCI_INDEX,
            size=300,
            format=fmt,
            artifact_type=artifact_type,
        )
    return Manifest(
        digest=sha(seed),
        media_type=artifacts.OCI_MANIFEST,
        size=600,
        format=fmt,
        artifact_type=artifact_type,
        config_media_type=config_type,
        config_digest=sha(seed + "#config"),
        config_size=200,
        layers=tuple(
            Layer(
                media_type=table.get(kind, "application/vnd.oci.image.layer.v1.tar+gzip"),
                digest=sha(f"{seed}#{i}"),
                size=1000,
            )
            for i, kind in enumerate(layers)
        ),
        annotations=annotations,
    )


def evidence(
    value: str,
    *,
    written: str | None = None,
    manifest: Manifest | None = None,
    config: Mapping[str, Any] | None = None,
    grammar: refs.Grammar = "kit",
    prefix: str = "",
    expects_modelkit: bool = True,
    path: str = POINTER,
) -> policy.Evidence:
    """Evidence for the site holding ``value``; ``written`` is what the user wrote when it
    differs (kitpin pinned the site)."""
    the_site = site(
        value, grammar=grammar, prefix=prefix, expects_modelkit=expects_modelkit, path=path
    )
    ref = refs.parse((written or value)[len(prefix) :], grammar=grammar)
    resolution = None
    if manifest is not None:
        resolution = Resolution(
            reference=ref,
            digest=manifest.digest,
            manifest=manifest,
            resolved_at=NOW,
            source="registry",
        )
    return policy.Evidence(
        site=the_site, reference=ref, resolution=resolution, config=config, written=written
    )


def kitfile(
    *,
    model_path: str = "model.gguf",
    package_license: str | None = "Apache-2.0",
    model_license: str | None = None,
    datasets: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "manifestVersion": "1.0.0",
        "package": {"name": "demo", "version": "1.0.0"},
        "model": {"name": "demo", "path": model_path},
    }
    if package_license is not None:
        doc["package"]["license"] = package_license
    if model_license is not None:
        doc["model"]["license"] = model_license
    if datasets:
        doc["datasets"] = [dict(d) for d in datasets]
    return doc


def evaluate(
    policies: Sequence[policy.Policy],
    *evidence_items: policy.Evidence,
    namespace: str = "ml",
    labels: Mapping[str, str] | None = None,
) -> policy.Verdict:
    return policy.evaluate(
        policies,
        namespace=namespace,
        namespace_labels=labels if labels is not None else {"env": "prod"},
        evidence=evidence_items,
    )
