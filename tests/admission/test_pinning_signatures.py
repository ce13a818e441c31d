"""Policy ``signatures`` in the engine: mutate verifies the digest it is about to pin (and
names the key in the pin record, or refuses), validate verifies what it admits; missing and
invalid signatures follow the rule's mode, a check that cannot be made follows ``failure``
under an enforce rule; key Secrets are read in the policy's namespace or kitpin's; all
within the review's deadline. The last tests use the real verifier and registry client over
an in-memory registry: a warm review costs no registry request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controller import policy, signatures
from controller.admission import pinning, pins, signing
from controller.resolver import Resolver
from controller.types import Credential
from tests.admission.pinning_fakes import (
    CANONICAL,
    DEPLOYMENT,
    ENV_PATH,
    FakeResolver,
    FakeSecrets,
    FakeVerifier,
    RecordingCredentials,
    cluster_policy,
    load,
    with_values,
)


def pem() -> str:
    return str(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


RELEASE, CI = pem(), pem()
DENIED = f"denied by ModelKit policy ({policy.Reason.DENIED}): "


def keys_spec(*names: str, mode: str | None = None, **extra: Any) -> dict[str, Any]:
    pems = {"release": RELEASE, "ci": CI}
    block: dict[str, Any] = {
        "keys": [{"name": n, "publicKey": pems[n]} for n in names],
        **extra,
    }
    if mode is not None:
        block["mode"] = mode
    return {"signatures": block}


def engine(
    resolver: FakeResolver,
    verifier: FakeVerifier,
    *,
    failure: pinning.FailureMode = "deny",
    secrets: signing.KeySecrets | None = None,
    own_namespace: str | None = "kitpin",
    deadline: float = 8.0,
    credentials: RecordingCredentials | None = None,
) -> pinning.Engine:
    return pinning.Engine(
        resolver,
        credentials=credentials,
        settings=pinning.AdmissionSettings(failure=failure, deadline=deadline),
        signatures=signing.Signing(verifier, secrets=secrets, own_namespace=own_namespace),
    )


def review(obj: Mapping[str, Any], policies: list[policy.Policy]) -> pinning.Review:
    return pinning.Review(operation="CREATE", namespace="ml", obj=obj, policies=policies)


# -- mutate and validate --------------------------------------------------------------------------


async def test_a_signed_digest_is_pinned_and_the_record_names_the_key() -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    digest = resolver.digest(CANONICAL)
    verifier.signed[digest] = {"release"}
    credential = Credential(username="u", password="p")
    eng = engine(resolver, verifier, credentials=RecordingCredentials(credential))
    signed = cluster_policy("signed", keys_spec("ci", "release"))

    decision = await eng.mutate(review(load(DEPLOYMENT), [signed]))
    assert decision.allowed and decision.reason == pinning.Reason.PINNED
    assert decision.values[ENV_PATH] == f"{CANONICAL}@{digest}"
    record = json.loads(decision.annotations[pins.PINNED_ANNOTATION] or "")[ENV_PATH]
    assert record["signedBy"] == "release"
    assert record["digest"] == digest and record["from"] == CANONICAL
    # one check of the digest being pinned, with the workload's own credential
    assert verifier.calls == [(digest, ("ci", "release"), credential)]

    pinned = with_values(load(DEPLOYMENT), decision)
    validated = await eng.validate(review(pinned, [signed]))
    assert validated.allowed and validated.reason == policy.Reason.ALLOWED
    assert not validated.warnings


@pytest.mark.parametrize(
    ("signers", "reason"), [(set(), "SignatureMissing"), ({"stranger"}, "SignatureInvalid")]
)
async def test_enforce_refuses_to_pin_an_unsigned_or_foreign_signed_digest(
    signers: set[str], reason: str
) -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    digest = resolver.digest(CANONICAL)
    verifier.signed[digest] = signers
    eng = engine(resolver, verifier)
    signed = cluster_policy("signed", keys_spec("release"))

    decision = await eng.mutate(review(load(DEPLOYMENT), [signed]))
    assert decision.denial is not None and not decision.values
    assert decision.reason == policy.Reason.DENIED
    assert decision.denial.message.startswith(
        f"{DENIED}ClusterModelKitPolicy/signed rule signatures.keys: "
        f"initContainer \"kitops-init\" env MODELKIT_REF '{CANONICAL}' resolves to {digest}, "
        f"which has no valid signature ({reason}): "
    ), decision.denial.message
    assert [(v.rule, v.reason, v.mode) for v in decision.violations] == [
        ("signatures.keys", reason, "enforce")
    ]
    # validate reaches the same verdict on the same object (validate-only, pods-only, ...)
    validated = await eng.validate(review(load(DEPLOYMENT), [signed]))
    assert validated.denial is not None
    assert validated.denial.message == decision.denial.message


async def test_warn_pins_then_validate_warns_and_audit_records_silently() -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    eng = engine(resolver, verifier)
    for mode, warned in (("warn", True), ("audit", False)):
        signed = cluster_policy(f"signed-{mode}", keys_spec("release", mode=mode))
        decision = await eng.mutate(review(load(DEPLOYMENT), [signed]))
        assert decision.allowed and decision.reason == pinning.Reason.PINNED
        record = json.loads(decision.annotations[pins.PINNED_ANNOTATION] or "")[ENV_PATH]
        assert "signedBy" not in record
        pinned = with_values(load(DEPLOYMENT), decision)
        validated = await eng.validate(review(pinned, [signed]))
        assert validated.allowed
        assert [(v.reason, v.mode) for v in validated.violations] == [("SignatureMissing", mode)]
        assert bool(validated.warnings) == warned
        if warned:
            (warning,) = validated.warnings
            assert "rule signatures.keys" in warning and "(SignatureMissing)" in warning


async def test_a_digest_the_user_wrote_is_verified_by_validation() -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    eng = engine(resolver, verifier)
    own = load(DEPLOYMENT)
    digest = resolver.digest("reg.example.com/llama:other")
    own["spec"]["template"]["spec"]["initContainers"][0]["env"][1]["value"] = (
        f"{CANONICAL}@{digest}"
    )
    signed = cluster_policy("signed", keys_spec("release"))
    mutated = await eng.mutate(review(own, [signed]))
    assert mutated.allowed and not mutated.values  # a written digest is never rewritten
    assert verifier.calls == []
    validated = await eng.validate(review(own, [signed]))
    assert validated.denial is not None and "(SignatureMissing)" in validated.denial.message
    assert verifier.calls[0][0] == digest


async def test_no_signature_rule_no_verification() -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    eng = engine(resolver, verifier)
    tags = cluster_policy("tags", {"tags": {"denied": ["latest"]}})
    pinned = with_values(load(DEPLOYMENT), await eng.mutate(review(load(DEPLOYMENT), [tags])))
    assert (await eng.validate(review(pinned, [tags]))).allowed
    assert verifier.calls == []


# -- a check that cannot be made ----------------------------------------------------------------


async def test_unavailable_under_enforce_denies_with_its_own_reason() -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    digest = resolver.digest(CANONICAL)
    verifier.unavailable.add(digest)
    eng = engine(resolver, verifier)
    signed = cluster_policy("signed", keys_spec("release"))

    decision = await eng.mutate(review(load(DEPLOYMENT), [signed]))
    assert decision.denial is not None and decision.reason == "SignatureUnavailable"
    assert decision.denial.reason == "SignatureUnavailable"
    assert decision.denial.message == (
        "kitpin could not verify the signature of every ModelKit, so nothing was admitted: "
        f'initContainer "kitops-init" env MODELKIT_REF: cannot verify the signature of '
        f"'{CANONICAL}' for ClusterModelKitPolicy/signed rule signatures.keys: "
        f"SignatureUnavailable (Unreachable): the signatures of "
        f"reg.example.com/llama@{digest} could not all be fetched"
    )
    validated = await eng.validate(review(load(DEPLOYMENT), [signed]))
    assert validated.denial is not None and validated.reason == "SignatureUnavailable"


async def test_unavailable_with_failure_warn_pins_unverified_and_warns() -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    verifier.unavailable.add(resolver.digest(CANONICAL))
    eng = engine(resolver, verifier, failure="warn")
    signed = cluster_policy("signed", keys_spec("release"))

    decision = await eng.mutate(review(load(DEPLOYMENT), [signed]))
    assert decision.allowed and decision.reason == pinning.Reason.PINNED
    record = json.loads(decision.annotations[pins.PINNED_ANNOTATION] or "")[ENV_PATH]
    assert "signedBy" not in record
    assert not decision.warnings  # validation says it, once, with the Event

    pinned = with_values(load(DEPLOYMENT), decision)
    validated = await eng.validate(review(pinned, [signed]))
    assert validated.allowed and validated.reason == pinning.Reason.ADMITTED_UNVERIFIED
    (warning,) = validated.warnings
    assert warning.startswith(pinning.UNVERIFIED_WARNING)
    assert "SignatureUnavailable (Unreachable)" in warning


async def test_unavailable_under_a_warn_rule_never_denies() -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    verifier.unavailable.add(resolver.digest(CANONICAL))
    eng = engine(resolver, verifier)  # failure: deny
    signed = cluster_policy("signed", keys_spec("release", mode="warn"))
    decision = await eng.mutate(review(load(DEPLOYMENT), [signed]))
    assert decision.allowed
    validated = await eng.validate(review(with_values(load(DEPLOYMENT), decision), [signed]))
    assert validated.allowed and not validated.violations
    (warning,) = validated.warnings  # the rule that could not be checked is said
    assert "rule signatures.keys" in warning and "SignatureUnavailable" in warning


async def test_the_check_runs_within_the_review_deadline() -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    verifier.delay = 30.0
    eng = engine(resolver, verifier, deadline=0.2)
    signed = cluster_policy("signed", keys_spec("release"))
    started = asyncio.get_running_loop().time()
    decision = await eng.mutate(review(load(DEPLOYMENT), [signed]))
    assert asyncio.get_running_loop().time() - started < 2.0
    assert decision.denial is not None and decision.reason == "SignatureUnavailable"
    assert "SignatureUnavailable (Timeout)" in decision.denial.message
    assert "took longer than" in decision.denial.message


# -- require: all ---------------------------------------------------------------------------------


async def test_require_all_needs_every_key() -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    digest = resolver.digest(CANONICAL)
    eng = engine(resolver, verifier)
    both = cluster_policy("both", keys_spec("release", "ci", require="all"))

    verifier.signed[digest] = {"release"}
    decision = await eng.mutate(review(load(DEPLOYMENT), [both]))
    assert decision.denial is not None and "(SignatureInvalid)" in decision.denial.message
    assert "every listed key must have signed" in decision.denial.message
    assert "(signed by: release)" in decision.denial.message
    assert sorted(c[1] for c in verifier.calls) == [("ci",), ("release",)]  # one per key

    verifier.signed[digest] = {"release", "ci"}
    decision = await eng.mutate(review(load(DEPLOYMENT), [both]))
    assert decision.allowed
    record = json.loads(decision.annotations[pins.PINNED_ANNOTATION] or "")[ENV_PATH]
    assert record["signedBy"] == "release, ci"


async def test_every_matching_policy_checks_its_own_keys() -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    digest = resolver.digest(CANONICAL)
    verifier.signed[digest] = {"release", "ci"}
    eng = engine(resolver, verifier)
    platform = cluster_policy("platform", keys_spec("release"))
    team = policy.parse_policy(
        {
            "apiVersion": policy.API_VERSION,
            "kind": policy.NAMESPACED_KIND,
            "metadata": {"name": "team", "namespace": "ml"},
            "spec": keys_spec("ci"),
        }
    )
    decision = await eng.mutate(review(load(DEPLOYMENT), [platform, team]))
    record = json.loads(decision.annotations[pins.PINNED_ANNOTATION] or "")[ENV_PATH]
    assert record["signedBy"] == "release, ci"


# -- keys in Secrets ------------------------------------------------------------------------------


def secret_policy(kind: str, **ref: str) -> policy.Policy:
    metadata: dict[str, Any] = {"name": "secret-keys"}
    if kind == policy.NAMESPACED_KIND:
        metadata["namespace"] = "ml"
    return policy.parse_policy(
        {
            "apiVersion": policy.API_VERSION,
            "kind": kind,
            "metadata": metadata,
            "spec": {"signatures": {"keys": [{"name": "release", "secretRef": dict(ref)}]}},
        }
    )


@pytest.mark.parametrize(
    ("kind", "namespace"), [(policy.CLUSTER_KIND, "kitpin"), (policy.NAMESPACED_KIND, "ml")]
)
async def test_a_secret_key_is_read_where_the_policy_lives(kind: str, namespace: str) -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    verifier.signed[resolver.digest(CANONICAL)] = {"release"}
    secrets = FakeSecrets({(namespace, "cosign", "cosign.pub"): RELEASE.encode()})
    eng = engine(resolver, verifier, secrets=secrets)
    p = secret_policy(kind, name="cosign")
    decision = await eng.mutate(review(load(DEPLOYMENT), [p]))
    assert decision.allowed, decision.denial
    record = json.loads(decision.annotations[pins.PINNED_ANNOTATION] or "")[ENV_PATH]
    assert record["signedBy"] == "release"
    assert secrets.reads == [(namespace, "cosign", "cosign.pub")]
    assert verifier.calls[0][1] == ("release",)


async def test_a_secret_that_cannot_be_read_is_unavailable_naming_it() -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    eng = engine(resolver, verifier, secrets=FakeSecrets())
    p = secret_policy(policy.CLUSTER_KIND, name="cosign", key="release.pub")
    decision = await eng.mutate(review(load(DEPLOYMENT), [p]))
    assert decision.denial is not None and decision.reason == "SignatureUnavailable"
    assert (
        "SignatureUnavailable (InvalidSignatureKey): kitpin cannot tell whether "
        "reg.example.com/llama@"
    ) in decision.denial.message
    assert (
        "the key 'release' (spec.signatures.keys[0].secretRef: Secret kitpin/cosign, key "
        "release.pub) cannot be read: Secret kitpin/cosign does not exist"
    ) in decision.denial.message
    assert verifier.calls == []  # no key, nothing to verify with


async def test_a_secret_holding_no_usable_key_is_unavailable_naming_why() -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    secrets = FakeSecrets({("kitpin", "cosign", "cosign.pub"): b"not a key"})
    eng = engine(resolver, verifier, secrets=secrets)
    decision = await eng.mutate(
        review(load(DEPLOYMENT), [secret_policy(policy.CLUSTER_KIND, name="cosign")])
    )
    assert decision.denial is not None
    assert "cannot be used: its value: is not a PEM public key" in decision.denial.message


async def test_a_cluster_policy_secret_needs_kitpins_namespace() -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    eng = engine(resolver, verifier, secrets=FakeSecrets(), own_namespace=None)
    decision = await eng.mutate(
        review(load(DEPLOYMENT), [secret_policy(policy.CLUSTER_KIND, name="cosign")])
    )
    assert decision.denial is not None
    assert "is read in kitpin's own namespace, which is unknown" in decision.denial.message


async def test_with_any_one_readable_key_that_verifies_is_enough() -> None:
    resolver, verifier = FakeResolver(), FakeVerifier()
    verifier.signed[resolver.digest(CANONICAL)] = {"release"}
    eng = engine(resolver, verifier, secrets=FakeSecrets())
    p = policy.parse_policy(
        {
            "apiVersion": policy.API_VERSION,
            "kind": policy.CLUSTER_KIND,
            "metadata": {"name": "mixed"},
            "spec": {
                "signatures": {
                    "keys": [
                        {"name": "release", "publicKey": RELEASE},
                        {"name": "ci", "secretRef": {"name": "gone"}},
                    ]
                }
            },
        }
    )
    decision = await eng.mutate(review(load(DEPLOYMENT), [p]))
    assert decision.allowed, decision.denial
    # ... but when the readable ones do not verify, the missing one might have: unavailable
    verifier.signed.clear()
    decision = await eng.mutate(review(load(DEPLOYMENT), [p]))
    assert decision.denial is not None and decision.reason == "SignatureUnavailable"
    assert "With the other keys: SignatureMissing:" in decision.denial.message


# -- the real verifier, the real registry client --------------------------------------------


@pytest.fixture
async def store_and_client() -> Any:
    from tests.signatures.cosign_fakes import Store, client

    store = Store()
    async with client(store) as c:
        yield store, c


async def test_a_warm_review_costs_no_registry_request(store_and_client: Any) -> None:
    from tests.signatures.cosign_fakes import REGISTRY, REPOSITORY, Signer

    store, c = store_and_client
    release = Signer.make("ecdsa")
    digest = store.modelkit("v1")
    store.sign_legacy(digest, release)
    verifier = signatures.Verifier(c)
    eng = pinning.Engine(Resolver(c), signatures=signing.Signing(verifier, own_namespace="kitpin"))
    p = policy.parse_policy(
        {
            "apiVersion": policy.API_VERSION,
            "kind": policy.CLUSTER_KIND,
            "metadata": {"name": "signed"},
            "spec": {
                "signatures": {"keys": [{"name": "release", "publicKey": release.public_pem}]}
            },
        }
    )
    obj = load(DEPLOYMENT)
    ref = f"{REGISTRY}/{REPOSITORY}:v1"
    obj["spec"]["template"]["spec"]["initContainers"][0]["env"][1]["value"] = ref
    decision = await eng.mutate(review(obj, [p]))
    assert decision.allowed, decision.denial
    record = json.loads(decision.annotations[pins.PINNED_ANNOTATION] or "")[ENV_PATH]
    assert record["signedBy"] == "release" and record["digest"] == digest
    assert verifier.lookups == 1
    pinned = with_values(obj, decision)

    before = len(store.requests)
    assert (await eng.validate(review(pinned, [p]))).allowed  # the digest mutate verified
    assert (await eng.mutate(review(obj, [p]))).allowed  # the tag again, cached
    assert store.requests[before:] == []
    assert verifier.lookups == 1


async def test_a_signature_copied_onto_another_digest_is_invalid(store_and_client: Any) -> None:
    from tests.signatures.cosign_fakes import REGISTRY, REPOSITORY, Signer, simple_signing_payload

    store, c = store_and_client
    release = Signer.make("ecdsa")
    signed_digest = store.modelkit("v1", seed=1)
    other = store.modelkit("v2", seed=2)
    # the signature of v1, placed where cosign looks for v2's
    payload = simple_signing_payload(signed_digest)
    store.sign_legacy(other, release, payload=payload, signature=release.sign(payload))
    eng = pinning.Engine(Resolver(c), signatures=signing.Signing(signatures.Verifier(c)))
    p = policy.parse_policy(
        {
            "apiVersion": policy.API_VERSION,
            "kind": policy.CLUSTER_KIND,
            "metadata": {"name": "signed"},
            "spec": {
                "signatures": {"keys": [{"name": "release", "publicKey": release.public_pem}]}
            },
        }
    )
    obj = load(DEPLOYMENT)
    obj["spec"]["template"]["spec"]["initContainers"][0]["env"][1]["value"] = (
        f"{REGISTRY}/{REPOSITORY}:v2"
    )
    decision = await eng.mutate(review(obj, [p]))
    assert decision.denial is not None
    assert "(SignatureInvalid)" in decision.denial.message
    assert f"its payload names {signed_digest}" in decision.denial.message
