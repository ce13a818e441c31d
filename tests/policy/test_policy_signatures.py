"""The ``signatures`` block: parsed (keys refused naming the field), evaluated from the
verifier's outcomes (missing and invalid signatures violate the rule in its mode, a check
that could not be made is not checked, or a failure in mode enforce), and the CRD schemas
agree with the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from policy_fakes import NOW, cluster, evaluate, evidence, manifest, namespaced

from controller import errors, policy, signatures
from controller.policy import parse as parse_module


def public_pem(key: Any) -> str:
    return str(
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


RELEASE = public_pem(ec.generate_private_key(ec.SECP256R1()))
CI = public_pem(ed25519.Ed25519PrivateKey.generate())
P384 = public_pem(ec.generate_private_key(ec.SECP384R1()))
PRIVATE = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)

SIGNED = {"signatures": {"keys": [{"name": "release", "publicKey": RELEASE}]}}
DIGEST = manifest(seed="signed").digest
SUBJECT = f"reg.example/team/model@{DIGEST}"


def refused(spec: dict[str, Any], *, kind: str = policy.CLUSTER_KIND) -> str:
    with pytest.raises(errors.ConfigError) as e:
        if kind == policy.CLUSTER_KIND:
            cluster("signed", spec)
        else:
            namespaced("signed", "ml", spec)
    return str(e.value)


# -- parsing -------------------------------------------------------------------------------------


def test_inline_and_secret_keys_with_their_defaults() -> None:
    p = cluster(
        "signed",
        {
            "signatures": {
                "keys": [
                    {"name": "release", "publicKey": RELEASE},
                    {"name": "ci", "secretRef": {"name": "cosign-ci"}},
                ]
            }
        },
    )
    rules = p.signatures
    assert rules is not None
    assert rules.require == "any" and rules.mode is None and not rules.log_keys
    release, ci = rules.keys
    assert release.public_key is not None and release.public_key.name == "release"
    assert release.public_key.algorithm == "ecdsa-p256"
    assert release.field == "spec.signatures.keys[0]" and release.secret is None
    assert ci.public_key is None
    assert ci.secret == policy.SecretKeyRef(name="cosign-ci", key="cosign.pub", namespace=None)
    assert p.rules == (policy.Rule.SIGNATURES_KEYS,)
    assert p.summary == "signatures: signed by any of release ci"
    assert p.mode_of(policy.Rule.SIGNATURES_KEYS) == "enforce"


def test_a_namespaced_policy_reads_its_secret_in_its_own_namespace() -> None:
    p = namespaced(
        "signed",
        "team-a",
        {
            "mode": "audit",
            "signatures": {
                "require": "all",
                "mode": "warn",
                "keys": [{"name": "ci", "secretRef": {"name": "keys", "key": "ci.pub"}}],
            },
        },
    )
    assert p.signatures is not None and p.signatures.require == "all"
    (ci,) = p.signatures.keys
    assert ci.secret == policy.SecretKeyRef(name="keys", key="ci.pub", namespace="team-a")
    assert p.mode_of(policy.Rule.SIGNATURES_KEYS) == "warn"
    assert p.summary == "signatures: signed by all of ci [warn]"


def test_log_keys_and_require_log_entry() -> None:
    log = public_pem(ec.generate_private_key(ec.SECP256R1()))
    p = cluster(
        "signed",
        {
            "signatures": {
                "keys": [{"name": "release", "publicKey": RELEASE}],
                "logKeys": [{"name": "rekor", "publicKey": log}],
                "requireLogEntry": True,
            }
        },
    )
    assert p.signatures is not None
    assert [k.name for k in p.signatures.log_keys] == ["rekor"]
    assert p.signatures.require_log_entry


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            [{"name": "release", "publicKey": P384}],
            "spec.signatures.keys[0].publicKey: is an ECDSA key on secp384r1; kitpin verifies "
            "ECDSA P-256",
        ),
        (
            [{"name": "release", "publicKey": PRIVATE}],
            "spec.signatures.keys[0].publicKey: holds a private key; give the public key",
        ),
        (
            [{"name": "release", "publicKey": "ssh-ed25519 AAAA"}],
            "spec.signatures.keys[0].publicKey: is not a PEM public key",
        ),
        (
            [
                {"name": "release", "publicKey": RELEASE},
                {
                    "name": "weak",
                    "publicKey": public_pem(rsa.generate_private_key(65537, 1024)),
                },
            ],
            "spec.signatures.keys[1].publicKey: is a 1024-bit RSA key; kitpin accepts RSA keys "
            "of 2048 bits or more",
        ),
        (
            [{"name": "release", "publicKey": RELEASE, "secretRef": {"name": "x"}}],
            "spec.signatures.keys[0]: give exactly one of publicKey (the PEM of cosign.pub) and "
            "secretRef (a Secret holding it)",
        ),
        (
            [{"name": "release"}],
            "spec.signatures.keys[0]: give exactly one of publicKey",
        ),
        (
            [{"name": "release", "publicKey": RELEASE}, {"name": "release", "publicKey": CI}],
            "spec.signatures.keys[1].name: 'release' is also the name of "
            "spec.signatures.keys[0]; names must be unique",
        ),
        (
            [{"publicKey": RELEASE}],
            "spec.signatures.keys[0].name: is null, expected a non-empty name",
        ),
        (
            [{"name": "ci", "secretRef": {"name": "Not_A_Name"}}],
            "spec.signatures.keys[0].secretRef.name: 'Not_A_Name' is not a Secret name",
        ),
        (
            [{"name": "ci", "secretRef": {"name": "keys", "key": "a/b"}}],
            "spec.signatures.keys[0].secretRef.key: 'a/b' is not a Secret data key",
        ),
        (
            [{"name": "ci", "secretRef": {"name": "keys", "namespace": "kube-system"}}],
            "spec.signatures.keys[0].secretRef.namespace: a ClusterModelKitPolicy's key "
            "Secret is read in kitpin's own namespace, never in another",
        ),
        (
            [{"name": "ci", "publicKey": RELEASE, "fingerprint": "x"}],
            "spec.signatures.keys[0].fingerprint: unknown field",
        ),
        ([], "spec.signatures.keys: is empty; list at least one key"),
        (
            [{"name": f"k{i}", "publicKey": RELEASE} for i in range(33)],
            "spec.signatures.keys: lists 33 keys, more than 32",
        ),
    ],
)
def test_a_key_kitpin_cannot_use_is_refused_naming_the_field(
    keys: list[dict[str, Any]], expected: str
) -> None:
    message = refused({"signatures": {"keys": keys}})
    assert message.startswith("ClusterModelKitPolicy/signed is invalid: "), message
    assert expected in message, message


def test_the_rest_of_the_block_is_checked_too() -> None:
    message = refused(
        {
            "signatures": {
                "keys": [{"name": "release", "publicKey": RELEASE}],
                "require": "most",
                "requireLogEntry": True,
                "mode": "Enforce",
                "keyless": True,
            }
        }
    )
    for expected in (
        "spec.signatures.keyless: unknown field",
        "spec.signatures.mode: is 'Enforce'; write one of enforce, warn, audit",
        "spec.signatures.require: is 'most'; write any (one listed key's signature is enough) "
        "or all (every listed key must have signed)",
        "spec.signatures.requireLogEntry: is true but no logKeys are listed",
    ):
        assert expected in message, message
    assert "spec.signatures.keys: is missing" in refused({"signatures": {}})
    assert "spec.signatures.logKeys[0].publicKey: is an ECDSA key on secp384r1" in refused(
        {
            "signatures": {
                "keys": [{"name": "release", "publicKey": RELEASE}],
                "logKeys": [{"name": "rekor", "publicKey": P384}],
            }
        }
    )


def test_a_namespaced_policy_names_its_own_namespace_when_refusing_another() -> None:
    message = refused(
        {"signatures": {"keys": [{"name": "ci", "secretRef": {"name": "k", "namespace": "x"}}]}},
        kind=policy.NAMESPACED_KIND,
    )
    assert "a ModelKitPolicy's key Secret is read in the policy's own namespace" in message


# -- evaluating ------------------------------------------------------------------------------------


def signed(outcome: signatures.Outcome | None, p: policy.Policy) -> policy.Evidence:
    ev = evidence("reg.example/team/model:v1", manifest=manifest(seed="signed"))
    return policy.Evidence(
        site=ev.site,
        reference=ev.reference,
        resolution=ev.resolution,
        signatures=None if outcome is None else {p.ref: outcome},
    )


def verified() -> signatures.Verified:
    return signatures.Verified(
        subject=SUBJECT,
        digest=DIGEST,
        key="release",
        where="tag x.sig layer 0",
        log="absent",
        message=f"{SUBJECT} is signed by the key 'release'",
    )


def missing() -> signatures.SignatureMissing:
    return signatures.SignatureMissing(
        subject=SUBJECT, digest=DIGEST, message=f"{SUBJECT} is not signed: sign it"
    )


def invalid() -> signatures.SignatureInvalid:
    return signatures.SignatureInvalid(
        subject=SUBJECT,
        digest=DIGEST,
        problems=("tag x.sig layer 0: signed by another key",),
        message=f"{SUBJECT} has 1 signature(s), none valid",
    )


def unavailable() -> signatures.SignatureUnavailable:
    return signatures.SignatureUnavailable(
        subject=SUBJECT,
        digest=DIGEST,
        error_reason="Unreachable",
        message="the signatures could not all be fetched",
    )


def test_a_verified_signature_passes() -> None:
    p = cluster("signed", SIGNED)
    verdict = evaluate([p], signed(verified(), p))
    assert verdict.outcome == "allow" and not verdict.unchecked


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [(missing(), "SignatureMissing"), (invalid(), "SignatureInvalid")],
)
@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
def test_missing_and_invalid_signatures_violate_the_rule_in_its_mode(
    outcome: signatures.Outcome, reason: str, mode: str
) -> None:
    p = cluster("signed", {"signatures": {**SIGNED["signatures"], "mode": mode}})
    verdict = evaluate([p], signed(outcome, p))
    (v,) = verdict.violations
    assert (v.rule, v.reason, v.mode) == ("signatures.keys", reason, mode)
    assert v.message == (
        'ClusterModelKitPolicy/signed rule signatures.keys: initContainer "kitops-init" env '
        f"MODELKIT_REF 'reg.example/team/model:v1' resolves to {DIGEST}, which has no valid "
        f"signature ({reason}): {outcome.message}; namespace ml accepts only ModelKits "
        "signed with one of the keys of ClusterModelKitPolicy/signed (release)"
    )
    assert verdict.outcome == {"enforce": "deny", "warn": "warn", "audit": "audit"}[mode]


def test_require_all_is_said_in_the_message() -> None:
    p = cluster("signed", {"signatures": {**SIGNED["signatures"], "require": "all"}})
    (v,) = evaluate([p], signed(missing(), p)).violations
    assert v.message.endswith(
        "signed with every one of the keys of ClusterModelKitPolicy/signed (release)"
    )


def test_a_check_that_could_not_be_made_is_not_checked_never_passed() -> None:
    p = cluster("signed", SIGNED)
    verdict = evaluate([p], signed(unavailable(), p))
    assert not verdict.violations
    (u,) = verdict.unchecked
    assert u.rule == "signatures.keys" and u.mode == "enforce"
    assert u.why == "SignatureUnavailable: the signatures could not all be fetched"
    # ... and in mode enforce it is a failure the engine treats like a registry failure
    assert policy.signature_failures([p], {p.ref: unavailable()}) == ((p, unavailable()),)
    warn = cluster("signed", {"signatures": {**SIGNED["signatures"], "mode": "warn"}})
    assert policy.signature_failures([warn], {warn.ref: unavailable()}) == ()
    assert policy.signature_failures([p], {p.ref: missing()}) == ()


def test_nothing_verified_is_not_checked() -> None:
    p = cluster("signed", SIGNED)
    (u,) = evaluate([p], signed(None, p)).unchecked
    assert u.why == f"the signature of {DIGEST} was not verified"
    unresolved = evidence("reg.example/team/model:v1")
    (u,) = evaluate([p], unresolved).unchecked
    assert u.why == "the reference was not resolved, so the digest to verify is unknown"


def test_each_policy_is_judged_by_its_own_outcome() -> None:
    mine = cluster("a-signed", SIGNED)
    theirs = namespaced("team-keys", "ml", SIGNED)
    ev = signed(verified(), mine)
    ev = policy.Evidence(
        site=ev.site,
        reference=ev.reference,
        resolution=ev.resolution,
        signatures={mine.ref: verified(), theirs.ref: invalid()},
    )
    (v,) = evaluate([mine, theirs], ev).violations
    assert v.policy == theirs.ref and v.reason == "SignatureInvalid"


def test_blocks_limits_the_rules_evaluated() -> None:
    p = cluster("signed", {"tags": {"denied": ["v1"]}, **SIGNED})
    ev = signed(missing(), p)
    every = evaluate([p], ev)
    assert [v.rule for v in every.violations] == ["tags.denied", "signatures.keys"]
    only = policy.evaluate(
        [p], namespace="ml", namespace_labels={}, evidence=[ev], blocks=("signatures",)
    )
    assert [v.rule for v in only.violations] == ["signatures.keys"]


def test_signature_rules_need_the_resolution() -> None:
    p = cluster("signed", SIGNED)
    assert policy.needs_resolution([p])
    assert policy.signature_policies([cluster("tags", {"tags": {"denied": ["x"]}}), p]) == (p,)
    assert not policy.needs_kitfile([p])


def test_status_counts_the_rule() -> None:
    p = cluster("signed", SIGNED, generation=3)
    status = policy.accepted_status(p, now=NOW)
    assert status["ruleCount"] == 1
    assert status["summary"] == "signatures: signed by any of release"


# -- the CRD schemas -----------------------------------------------------------------------------


CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "crds"


@pytest.mark.parametrize(
    "name", ["kitpin.dev_clustermodelkitpolicies.yaml", "kitpin.dev_modelkitpolicies.yaml"]
)
def test_the_crd_schema_states_what_the_parser_reads(name: str) -> None:
    crd = yaml.safe_load((CRD_DIR / name).read_text())
    (version,) = crd["spec"]["versions"]
    block = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["signatures"]
    fields = block["properties"]
    assert tuple(fields) == parse_module._SIGNATURE_FIELDS
    assert block["required"] == ["keys"]
    assert fields["mode"]["enum"] == list(policy.MODES)
    assert fields["require"]["enum"] == list(policy.SIGNATURE_REQUIREMENTS)
    assert fields["require"]["default"] == policy.DEFAULT_SIGNATURE_REQUIREMENT
    keys = fields["keys"]
    assert keys["maxItems"] == policy.MAX_SIGNATURE_KEYS
    assert keys["x-kubernetes-list-map-keys"] == ["name"]  # names are unique
    item = keys["items"]["properties"]
    assert tuple(item) == parse_module._SIGNATURE_KEY_FIELDS
    secret = item["secretRef"]["properties"]
    assert tuple(secret) == parse_module._SECRET_REF_FIELDS  # no namespace: never another
    assert secret["key"]["default"] == policy.DEFAULT_SECRET_KEY
    assert secret["name"]["maxLength"] == policy.MAX_SECRET_NAME_LENGTH
    assert secret["key"]["maxLength"] == policy.MAX_SECRET_KEY_LENGTH
    assert item["publicKey"]["maxLength"] == signatures.keys.MAX_PEM_BYTES
    assert fields["logKeys"]["maxItems"] == policy.MAX_SIGNATURE_KEYS
