"""Policy ``signatures`` end to end: the real apiserver, the real distribution registry, the
real ``kitpin run --dev`` and the real ``cosign`` CLI (harness/cosign.py, the version
hack/tools.env pins) signing with keys, no transparency log.

A ``ClusterModelKitPolicy`` lists a cosign key; a ModelKit signed by it is pinned and the pin
record names the key, and ``cosign verify --key`` accepts the exact reference kitpin
admitted; an unsigned one is denied ``SignatureMissing``; one signed by another key, and one
carrying a valid signature copied from another digest, are denied ``SignatureInvalid``. A
``ModelKitPolicy`` reads its key from a Secret in its own namespace, never another's. A key
kitpin cannot use is refused by kitpin's policy webhook, naming the field. A ``signatures``
block in mode ``warn`` admits and pins an unsigned ModelKit with a ``Warning:`` naming
``SignatureMissing``; in mode ``audit`` it admits silently and kitpin posts an Event (reason
``SignatureMissing``) on the object. A registry that fails while kitpin fetches the
signatures (a fault proxy in front of the plain registry that answers 503 for the ``.sig``
tag, the referrers API and the tag-schema index, and passes the tag's manifest through) is a
denial ``SignatureUnavailable`` carrying the registry's error.

This module runs its own kitpin (``kitpin_server`` below: the conftest's, plus
``--plain-http-registry`` for the fault proxy, which starts before it).

Policies are cluster-wide and kitpin is shared by the module: each test has its own
namespace, and its cluster policy selects a label only that namespace carries. kitpin learns
policies through a watch: each test polls with a server-side dry run until its policy acts.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from controller import policy
from harness import modelkit, procs
from harness.controlplane import Clients, ControlPlane
from harness.cosign import Cosign, KeyPair
from harness.faultproxy import FaultProxy, Rule, Status
from harness.registry import RegistryServer
from tests.e2e.conftest import (
    POD_ENV,
    TIMEOUT,
    Kitpin,
    Registries,
    Result,
    at,
    denied_by,
    pinned_ref,
    pins,
    pod,
    ref_to,
)

pytestmark = pytest.mark.e2e

SELECTOR_LABEL = "e2e.kitpin.dev/signatures-test"
DENIED = f"denied by ModelKit policy ({policy.Reason.DENIED}): "
WHERE = 'initContainer "kitops-init" env MODELKIT_REF'
SIG_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
WARN_SUFFIX = " (mode warn: admitted for now)"
UNAVAILABLE = Status(
    status=503,
    body=b'{"errors":[{"code":"UNAVAILABLE","message":"signature storage is down"}]}',
    name="signatures down",
)
SIGNATURE_PATHS = (
    # cosign's .sig tag and the tag-schema index of the referrers fallback
    r"/v2/.+/manifests/sha256-[0-9a-f]{64}(\.sig)?",
    # the OCI 1.1 referrers API
    r"/v2/.+/referrers/.+",
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sig_proxy(registries: Registries) -> Iterator[FaultProxy]:
    """A fault proxy in front of the plain registry (no rules: everything passes through)
    until a test sets some; kitpin trusts it over plain HTTP."""
    with FaultProxy(registries.plain.url, name="signatures-proxy") as proxy:
        yield proxy


@dataclass(kw_only=True)
class _ProxiedKitpin(Kitpin):
    """The conftest's kitpin, also trusting ``extra_plain`` hosts over plain HTTP."""

    extra_plain: tuple[str, ...] = ()

    def argv(self, settings_file: Path) -> list[str]:
        return [
            *super().argv(settings_file),
            *(f"--plain-http-registry={host}" for host in self.extra_plain),
        ]


@pytest.fixture(scope="module")
def kitpin_server(
    tmp_path_factory: pytest.TempPathFactory,
    control_plane: ControlPlane,
    api: Clients,
    registries: Registries,
    crds: list[str],
    sig_proxy: FaultProxy,
) -> Iterator[Kitpin]:
    """As the conftest's ``kitpin_server``, with the fault proxy trusted over plain HTTP."""
    server = _ProxiedKitpin(
        control_plane=control_plane,
        api=api,
        registries=registries,
        workdir=tmp_path_factory.mktemp("kitpin"),
        extra_plain=(sig_proxy.host,),
    )
    try:
        server.start()
    except BaseException as e:
        report = server.diagnostics()
        server.stop()
        raise procs.HarnessError(f"kitpin did not start: {e}\n{report}") from e
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cosign(tmp_path_factory: pytest.TempPathFactory) -> Cosign:
    """The pinned cosign CLI in a throwaway home (built first when missing)."""
    return Cosign(tmp_path_factory.mktemp("cosign"))


@pytest.fixture(scope="module")
def release(cosign: Cosign) -> KeyPair:
    return cosign.generate_key_pair("release")


@pytest.fixture(scope="module")
def stranger(cosign: Cosign) -> KeyPair:
    return cosign.generate_key_pair("stranger")


@pytest.fixture
def objects(kitpin: Kitpin) -> Iterator[list[tuple[str, ...]]]:
    """kubectl arguments of the objects a test made outside its namespace, deleted after."""
    made: list[tuple[str, ...]] = []
    yield made
    for args in made:
        kitpin.kubectl("delete", *args, "--ignore-not-found", "--wait=false")


def signed_policy(
    kitpin: Kitpin,
    objects: list[tuple[str, ...]],
    label: Mapping[str, str],
    keys: list[dict[str, Any]],
    mode: str | None = None,
) -> str:
    """Create a ClusterModelKitPolicy requiring ``keys`` (in ``mode``, default the policy's:
    enforce) in the namespaces labelled ``label``; its name."""
    signatures: dict[str, Any] = {"keys": keys}
    if mode is not None:
        signatures["mode"] = mode
    name = f"e2e-signed-{secrets.token_hex(3)}"
    objects.append(("cmkp", name))
    created = kitpin.create(
        {
            "apiVersion": policy.API_VERSION,
            "kind": policy.CLUSTER_KIND,
            "metadata": {"name": name},
            "spec": {
                "namespaceSelector": {"matchLabels": dict(label)},
                "signatures": signatures,
            },
        }
    )
    assert created.ok, created.stderr
    return name


def denial_of(result: Result, handler_id: str) -> str:
    """The denial text of a refused admission, checked to come from ``handler_id``."""
    assert not result.ok, f"admitted:\n{result.stdout}"
    found = denied_by(handler_id).search(result.stderr)
    assert found and result.stderr[found.end() :].startswith(": "), result.stderr
    return result.stderr[found.end() + 2 :].strip()


def wait_denied(kitpin: Kitpin, manifest: Mapping[str, Any], words: str) -> str:
    """Dry-run ``manifest`` until kitpin denies it saying ``words`` (its policy is in force);
    the denial text."""

    def denied() -> str | None:
        result = kitpin.create(manifest, dry_run=True)
        return result.stderr if not result.ok and words in result.stderr else None

    found = procs.wait_until(
        denied,
        timeout=TIMEOUT,
        what=f"kitpin to deny with {words!r}",
        interval=0.3,
        on_timeout=kitpin.log_tail,
    )
    return str(found)


def push(registry: RegistryServer, repo: str, tag: str, seed: int) -> str:
    return modelkit.push_modelkit(registry, repo, tag, seed=seed)


def copy_signature(registry: RegistryServer, repo: str, source: str, target: str) -> None:
    """Put the ``.sig`` manifest cosign wrote for ``source`` where cosign looks for
    ``target``'s (the same repository: its blobs are there): a valid signature, of another
    digest."""
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        tag = source.replace(":", "-") + ".sig"
        got = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": SIG_MANIFEST})
        assert got.status_code == 200, got.text
        modelkit.put_manifest(
            client, repo, target.replace(":", "-") + ".sig", got.content, SIG_MANIFEST
        )


# --------------------------------------------------------------------------- tests


def test_a_modelkit_signed_by_the_listed_key_is_pinned_and_cosign_verifies_it(
    kitpin: Kitpin,
    new_namespace: Callable[..., str],
    objects: list[tuple[str, ...]],
    repo: str,
    cosign: Cosign,
    release: KeyPair,
) -> None:
    registry = kitpin.registries.plain
    label = {SELECTOR_LABEL: secrets.token_hex(4)}
    namespace = new_namespace(labels=label)
    digest = push(registry, f"{repo}/signed", "v1", seed=1)
    cosign.sign(f"{registry.host}/{repo}/signed@{digest}", release)
    push(registry, f"{repo}/probe", "v1", seed=2)  # unsigned: shows the policy in force

    signed_policy(kitpin, objects, label, [{"name": "release", "publicKey": release.public_pem}])
    probe = pod("probe", namespace, ref_to(registry, f"{repo}/probe", "v1"))
    wait_denied(kitpin, probe, "(SignatureMissing)")

    created = kitpin.create(pod("signed", namespace, ref_to(registry, f"{repo}/signed", "v1")))
    assert created.ok, created.stderr
    obj = created.obj
    admitted = at(obj, POD_ENV)
    assert admitted == pinned_ref(registry, f"{repo}/signed", "v1", digest)
    record = (pins(obj) or {})[POD_ENV]
    assert record["signedBy"] == "release"
    assert record["digest"] == digest
    assert record["from"] == ref_to(registry, f"{repo}/signed", "v1")
    assert not created.warnings

    # cosign agrees about the exact reference kitpin admitted (tag and digest)
    verified = cosign.verify(admitted, release.pub)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)[0]["critical"]["image"]["docker-manifest-digest"] == digest


def test_unsigned_foreign_and_copied_signatures_are_denied(
    kitpin: Kitpin,
    new_namespace: Callable[..., str],
    objects: list[tuple[str, ...]],
    repo: str,
    cosign: Cosign,
    release: KeyPair,
    stranger: KeyPair,
) -> None:
    registry = kitpin.registries.plain
    label = {SELECTOR_LABEL: secrets.token_hex(4)}
    namespace = new_namespace(labels=label)
    name = signed_policy(
        kitpin, objects, label, [{"name": "release", "publicKey": release.public_pem}]
    )
    display = f"{policy.CLUSTER_KIND}/{name}"

    unsigned = push(registry, f"{repo}/unsigned", "v1", seed=11)
    foreign = push(registry, f"{repo}/foreign", "v1", seed=12)
    cosign.sign(f"{registry.host}/{repo}/foreign@{foreign}", stranger)
    # Two ModelKits in one repository: v1 signed by the listed key, v2 not; then v1's
    # signature is copied to where cosign looks for v2's.
    original = push(registry, f"{repo}/copied", "v1", seed=13)
    target = push(registry, f"{repo}/copied", "v2", seed=14)
    cosign.sign(f"{registry.host}/{repo}/copied@{original}", release)
    copy_signature(registry, f"{repo}/copied", original, target)
    copied = cosign.verify(f"{registry.host}/{repo}/copied@{target}", release.pub)
    assert copied.returncode != 0  # cosign refuses it too

    missing = pod("unsigned", namespace, ref_to(registry, f"{repo}/unsigned", "v1"))
    wait_denied(kitpin, missing, "(SignatureMissing)")  # the policy is in force
    message = denial_of(kitpin.create(missing), "pin-pods")
    assert message.startswith(
        f"{DENIED}{display} rule signatures.keys: {WHERE} "
        f"'{registry.host}/{repo}/unsigned:v1' resolves to {unsigned}, which has no valid "
        f"signature (SignatureMissing): {registry.host}/{repo}/unsigned@{unsigned} is not "
        "signed: no cosign signature in the tag "
    ), message
    assert message.endswith(
        f"; namespace {namespace} accepts only ModelKits signed with one of the keys of "
        f"{display} (release)"
    ), message

    result = kitpin.create(pod("foreign", namespace, ref_to(registry, f"{repo}/foreign", "v1")))
    message = denial_of(result, "pin-pods")
    assert "which has no valid signature (SignatureInvalid)" in message, message
    assert "the signature does not verify with any of the keys (release)" in message

    result = kitpin.create(pod("copied", namespace, ref_to(registry, f"{repo}/copied", "v2")))
    message = denial_of(result, "pin-pods")
    assert f"resolves to {target}, which has no valid signature (SignatureInvalid)" in message
    assert f"signed by 'release' but its payload names {original}, not this digest" in message

    assert kitpin.list("pods", namespace) == []  # nothing was admitted


def test_a_namespaced_policy_reads_its_key_from_a_secret_in_its_own_namespace_only(
    kitpin: Kitpin,
    new_namespace: Callable[..., str],
    repo: str,
    cosign: Cosign,
    release: KeyPair,
) -> None:
    registry = kitpin.registries.plain
    namespace = new_namespace("keys")
    elsewhere = new_namespace("other")
    digest = push(registry, f"{repo}/signed", "v1", seed=21)
    cosign.sign(f"{registry.host}/{repo}/signed@{digest}", release)
    # As `cosign generate-key-pair k8s://<namespace>/cosign` lays it out (public part only)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "cosign", "namespace": elsewhere},
        "data": {"cosign.pub": base64.b64encode(release.pub.read_bytes()).decode()},
    }
    assert kitpin.create(secret).ok  # only in the other namespace, for now
    keys = {"keys": [{"name": "release", "secretRef": {"name": "cosign"}}]}
    made = kitpin.create(
        {
            "apiVersion": policy.API_VERSION,
            "kind": policy.NAMESPACED_KIND,
            "metadata": {"name": "signed", "namespace": namespace},
            "spec": {"signatures": keys},
        }
    )
    assert made.ok, made.stderr

    # A Secret of the same name in another namespace is never read.
    manifest = pod("signed", namespace, ref_to(registry, f"{repo}/signed", "v1"))
    text = wait_denied(kitpin, manifest, "SignatureUnavailable")
    assert (
        f"the key 'release' (spec.signatures.keys[0].secretRef: Secret {namespace}/cosign, "
        f"key cosign.pub) cannot be read: Secret {namespace}/cosign does not exist"
    ) in text

    assert kitpin.create({**secret, "metadata": {"name": "cosign", "namespace": namespace}}).ok

    def admitted() -> dict[str, Any] | None:  # kitpin re-reads the Secret within 30 s
        result = kitpin.create(manifest)
        return result.obj if result.ok else None

    obj = procs.wait_until(
        admitted, timeout=TIMEOUT, what="the pod admitted", interval=1.0, on_timeout=kitpin.log_tail
    )
    assert isinstance(obj, dict)
    assert at(obj, POD_ENV) == pinned_ref(registry, f"{repo}/signed", "v1", digest)
    assert (pins(obj) or {})[POD_ENV]["signedBy"] == "release"


def _public_pem(key: Any) -> str:
    return str(
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_a_key_kitpin_cannot_use_is_refused_by_the_policy_webhook_naming_the_field(
    kitpin: Kitpin, namespace: str, objects: list[tuple[str, ...]]
) -> None:
    cases = [
        (
            policy.CLUSTER_KIND,
            None,
            _public_pem(ec.generate_private_key(ec.SECP384R1())),
            "spec.signatures.keys[0].publicKey: is an ECDSA key on secp384r1; kitpin verifies "
            "ECDSA P-256 (cosign's default, `cosign generate-key-pair`), RSA and Ed25519 keys",
        ),
        (
            policy.NAMESPACED_KIND,
            namespace,
            _public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
            "spec.signatures.keys[0].publicKey: is a 1024-bit RSA key; kitpin accepts RSA keys "
            "of 2048 bits or more",
        ),
    ]
    plural = {
        policy.CLUSTER_KIND: "clustermodelkitpolicies",
        policy.NAMESPACED_KIND: "modelkitpolicies",
    }
    for kind, ns, pem, expected in cases:
        name = f"e2e-bad-key-{secrets.token_hex(3)}"
        metadata: dict[str, Any] = {"name": name}
        if ns is not None:
            metadata["namespace"] = ns
        else:
            objects.append(("cmkp", name))
        result = kitpin.create(
            {
                "apiVersion": policy.API_VERSION,
                "kind": kind,
                "metadata": metadata,
                "spec": {"signatures": {"keys": [{"name": "release", "publicKey": pem}]}},
            }
        )
        message = denial_of(result, f"check-{plural[kind]}")
        assert message == f"{kind}/{name} is invalid: {expected}", message

    # A private key never reaches kitpin: the CRD schema refuses it, naming the field.
    private = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    result = kitpin.create(
        {
            "apiVersion": policy.API_VERSION,
            "kind": policy.NAMESPACED_KIND,
            "metadata": {"name": "private", "namespace": namespace},
            "spec": {"signatures": {"keys": [{"name": "release", "publicKey": private}]}},
        }
    )
    assert not result.ok
    assert "spec.signatures.keys[0].publicKey" in result.stderr
    assert "holds a private key" in result.stderr
    assert "admission webhook" not in result.stderr


def kitpin_events(kitpin: Kitpin, namespace: str) -> list[Any]:
    """The Events kitpin wrote in ``namespace``."""
    events = kitpin.api.core.list_namespaced_event(namespace).items
    return [e for e in events if e.source is not None and e.source.component == "kitpin"]


def test_a_warn_rule_admits_an_unsigned_modelkit_pinned_with_a_warning(
    kitpin: Kitpin,
    new_namespace: Callable[..., str],
    objects: list[tuple[str, ...]],
    repo: str,
    release: KeyPair,
) -> None:
    registry = kitpin.registries.plain
    label = {SELECTOR_LABEL: secrets.token_hex(4)}
    namespace = new_namespace(labels=label)
    digest = push(registry, f"{repo}/unsigned", "v1", seed=31)
    tagged = ref_to(registry, f"{repo}/unsigned", "v1")
    name = signed_policy(
        kitpin, objects, label, [{"name": "release", "publicKey": release.public_pem}], "warn"
    )
    display = f"{policy.CLUSTER_KIND}/{name}"

    def warned() -> Result | None:  # the policy is in force
        result = kitpin.create(pod("probe", namespace, tagged), dry_run=True)
        return result if result.ok and "(SignatureMissing)" in result.stderr else None

    procs.wait_until(
        warned,
        timeout=TIMEOUT,
        what="kitpin to warn SignatureMissing",
        interval=0.3,
        on_timeout=kitpin.log_tail,
    )

    created = kitpin.create(pod("unsigned", namespace, tagged))
    assert created.ok, created.stderr
    assert at(created.obj, POD_ENV) == pinned_ref(registry, f"{repo}/unsigned", "v1", digest)
    record = (pins(created.obj) or {})[POD_ENV]
    assert record["digest"] == digest
    assert "signedBy" not in record  # nothing verified it
    (warning,) = created.warnings
    assert warning.startswith(
        f"{display} rule signatures.keys: {WHERE} '{tagged}' resolves to {digest}, which has "
        f"no valid signature (SignatureMissing): {registry.host}/{repo}/unsigned@{digest} is "
        "not signed: "
    ), warning
    assert warning.endswith(
        f"; namespace {namespace} accepts only ModelKits signed with one of the keys of "
        f"{display} (release){WARN_SUFFIX}"
    ), warning
    assert kitpin.exists("pod", "unsigned", namespace)


def test_an_audit_rule_admits_an_unsigned_modelkit_silently_with_an_event(
    kitpin: Kitpin,
    new_namespace: Callable[..., str],
    objects: list[tuple[str, ...]],
    repo: str,
    release: KeyPair,
) -> None:
    registry = kitpin.registries.plain
    label = {SELECTOR_LABEL: secrets.token_hex(4)}
    namespace = new_namespace(labels=label)
    digest = push(registry, f"{repo}/unsigned", "v1", seed=32)
    tagged = ref_to(registry, f"{repo}/unsigned", "v1")
    name = signed_policy(
        kitpin, objects, label, [{"name": "release", "publicKey": release.public_pem}], "audit"
    )
    display = f"{policy.CLUSTER_KIND}/{name}"

    def audited() -> Result | None:  # silent: kitpin's PolicyAudited outcome counter tells
        before = kitpin.admissions("validate", policy.Reason.AUDITED)
        result = kitpin.create(pod("probe", namespace, tagged), dry_run=True)
        after = kitpin.admissions("validate", policy.Reason.AUDITED)
        return result if result.ok and after > before else None

    procs.wait_until(
        audited,
        timeout=TIMEOUT,
        what="kitpin to audit the signature rule",
        interval=0.3,
        on_timeout=kitpin.log_tail,
    )
    assert kitpin_events(kitpin, namespace) == []  # dry runs are never audited

    created = kitpin.create(pod("unsigned", namespace, tagged))
    assert created.ok, created.stderr
    assert created.warnings == []  # silent
    assert at(created.obj, POD_ENV) == pinned_ref(registry, f"{repo}/unsigned", "v1", digest)
    assert "signedBy" not in (pins(created.obj) or {})[POD_ENV]

    # the audit trail posts its Events in the background
    def posted() -> list[Any] | None:
        events = kitpin_events(kitpin, namespace)
        return events or None

    events = procs.wait_until(
        posted,
        timeout=TIMEOUT,
        what=f"kitpin's Event in {namespace}",
        interval=0.5,
        on_timeout=kitpin.log_tail,
    )
    assert isinstance(events, list)
    (event,) = events
    assert (event.involved_object.kind, event.involved_object.name) == ("Pod", "unsigned")
    assert (event.type, event.reason) == ("Warning", policy.Reason.SIGNATURE_MISSING)
    assert event.message.startswith(
        f"{display} rule signatures.keys: {WHERE} '{tagged}' resolves to {digest}, which has "
        "no valid signature (SignatureMissing): "
    ), event.message


def test_a_registry_failure_while_fetching_the_signatures_denies_with_the_cause(
    kitpin: Kitpin,
    new_namespace: Callable[..., str],
    objects: list[tuple[str, ...]],
    repo: str,
    cosign: Cosign,
    release: KeyPair,
    sig_proxy: FaultProxy,
) -> None:
    """The tag resolves through the proxy; every place a signature could be answers 503. The
    ModelKit is signed: only the failure keeps kitpin from seeing it, and once the registry
    is well again the same Pod is admitted (an unavailable outcome is never cached)."""
    registry = kitpin.registries.plain
    label = {SELECTOR_LABEL: secrets.token_hex(4)}
    namespace = new_namespace(labels=label)
    digest = push(registry, f"{repo}/signed", "v1", seed=41)
    cosign.sign(f"{registry.host}/{repo}/signed@{digest}", release)
    push(registry, f"{repo}/probe", "v1", seed=42)  # unsigned: shows the policy in force
    name = signed_policy(
        kitpin, objects, label, [{"name": "release", "publicKey": release.public_pem}]
    )
    display = f"{policy.CLUSTER_KIND}/{name}"
    wait_denied(
        kitpin,
        pod("probe", namespace, ref_to(registry, f"{repo}/probe", "v1")),
        "(SignatureMissing)",
    )

    tagged = f"{sig_proxy.host}/{repo}/signed:v1"
    rules = [Rule(fault=UNAVAILABLE, path=path, method=None) for path in SIGNATURE_PATHS]
    sig_proxy.clear_records()
    with sig_proxy.rules(*rules):
        result = kitpin.create(pod("signed", namespace, tagged))
        hits = sig_proxy.hits()
    records = sig_proxy.records()
    report = sig_proxy.log_tail()

    message = denial_of(result, "pin-pods")
    assert message.startswith(
        "kitpin could not verify the signature of every ModelKit, so nothing was admitted: "
        f"{WHERE}: cannot verify the signature of '{tagged}' for {display} rule "
        "signatures.keys: SignatureUnavailable ("
    ), f"{message}\n{report}"
    assert f"{sig_proxy.host} failed with 503" in message, f"{message}\n{report}"
    assert "signature storage is down" in message, message  # the registry's own words
    assert not kitpin.exists("pod", "signed", namespace)
    # the manifest itself resolved through the proxy; the signature lookups got the fault
    manifest_path = f"/v2/{repo}/signed/manifests/v1"
    assert any(r.path == manifest_path and r.status == 200 for r in records), report
    assert hits[0] >= 1, report

    created = kitpin.create(pod("signed", namespace, tagged))
    assert created.ok, f"{created.stderr}\n{sig_proxy.log_tail()}"
    assert at(created.obj, POD_ENV) == f"{tagged}@{digest}"
    assert (pins(created.obj) or {})[POD_ENV]["signedBy"] == "release"
