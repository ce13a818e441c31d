"""The verifier end to end against an in-memory registry (the real RegistryClient over
httpx.MockTransport): every place cosign stores a signature, every outcome, the log entries,
the bounds, the cache and single-flight."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cosign_fakes import Log, Signer, Store, client, ref, sha256, simple_signing_payload

from controller import registry
from controller.signatures import (
    KeySet,
    SignatureInvalid,
    SignatureMissing,
    SignatureUnavailable,
    Verified,
    Verifier,
    finding,
    parse_public_key,
    payloads,
)

RELEASE = Signer.make("ecdsa")
CI = Signer.make("ed25519")
STRANGER = Signer.make("ecdsa")
LOG = Log()


def keyset(*signers: Signer, log: Log | None = None, require: bool = False) -> KeySet:
    names = {id(RELEASE): "release", id(CI): "ci", id(STRANGER): "stranger"}
    keys = tuple(
        parse_public_key(names.get(id(s), f"key{i}"), s.public_pem) for i, s in enumerate(signers)
    )
    log_keys = (parse_public_key("rekor", log.signer.public_pem),) if log else ()
    return KeySet(keys=keys, log_keys=log_keys, require_log_entry=require)


KEYS = keyset(RELEASE, CI)


@pytest.fixture
async def env() -> AsyncIterator[tuple[Store, registry.RegistryClient]]:
    store = Store()
    async with client(store) as c:
        yield store, c


async def verify(c: registry.RegistryClient, digest: str, keys: KeySet = KEYS) -> Any:
    return await Verifier(c).verify(ref(), digest, keys)


# -- where cosign stores signatures ----------------------------------------------------------------


async def test_a_sig_tag_signature_verifies_naming_the_key(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    store.sign_legacy(digest, RELEASE)
    outcome = await verify(c, digest)
    assert isinstance(outcome, Verified)
    assert outcome.key == "release"
    assert outcome.log == "absent"
    assert outcome.where == f"tag {digest.replace(':', '-')}.sig layer 0"
    assert outcome.reason == "SignatureVerified"
    assert "release" in outcome.message and digest in outcome.message


@pytest.mark.parametrize("kind", ["ed25519", "ed25519-pure", "rsa"])
async def test_each_key_type_in_the_sig_tag(env: Any, kind: str) -> None:
    store, c = env
    digest = store.modelkit()
    signer = Signer.make(kind)  # type: ignore[arg-type]
    store.sign_legacy(digest, signer)
    outcome = await verify(c, digest, keyset(RELEASE, signer))
    assert isinstance(outcome, Verified) and outcome.key == "key1"


@pytest.mark.parametrize("referrers_api", [True, False])
async def test_a_bundle_referrer_verifies_with_and_without_the_referrers_api(
    referrers_api: bool,
) -> None:
    store = Store(referrers_api=referrers_api)
    digest = store.modelkit()
    store.sign_bundle(digest, CI)
    async with client(store) as c:
        outcome = await verify(c, digest)
    assert isinstance(outcome, Verified) and outcome.key == "ci"
    assert outcome.where.startswith("referrer sha256:")
    paths = " ".join(store.requests)
    assert f"/referrers/{digest}" in paths
    assert (f"/manifests/{digest.replace(':', '-')} " in paths + " ") is not referrers_api


@pytest.mark.parametrize("referrers_api", [True, False])
async def test_an_oci_1_1_sig_referrer_verifies(referrers_api: bool) -> None:
    """``cosign sign --registry-referrers-mode=oci-1-1``: simple-signing layers in a referrer."""
    store = Store(referrers_api=referrers_api)
    digest = store.modelkit()
    payload = simple_signing_payload(digest)
    layer = store.blob(
        payload,
        payloads.SIMPLE_SIGNING,
        annotations={payloads.SIGNATURE_ANNOTATION: _b64(RELEASE.sign(payload))},
    )
    store.referrer(digest, payloads.COSIGN_SIG_ARTIFACT, [layer])
    async with client(store) as c:
        outcome = await verify(c, digest)
    assert isinstance(outcome, Verified) and outcome.key == "release"


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


# -- missing and invalid --------------------------------------------------------------------------


async def test_unsigned_is_missing_and_says_what_to_do(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    outcome = await verify(c, digest)
    assert isinstance(outcome, SignatureMissing)
    assert outcome.reason == "SignatureMissing"
    assert "cosign sign --key" in outcome.message and "release, ci" in outcome.message


@pytest.mark.parametrize("referrers_api", [True, False])
async def test_an_attestation_is_not_a_signature(referrers_api: bool) -> None:
    store = Store(referrers_api=referrers_api)
    digest = store.modelkit()
    store.sign_bundle(digest, RELEASE, predicate_type="https://slsa.dev/provenance/v1")
    layer = store.blob(b"{}", "application/spdx+json")
    store.referrer(digest, "application/spdx+json", [layer])  # an SBOM
    async with client(store) as c:
        assert isinstance(await verify(c, digest), SignatureMissing)
    assert not any("/blobs/" in r for r in store.requests)  # nothing read but manifests
    # with the API, the listing's types and annotations suffice; the tag schema lists
    # neither (go-containerregistry), so each referrer's manifest is read to learn its type
    manifests_read = sum("/manifests/sha256:" in r for r in store.requests)
    assert manifests_read == (0 if referrers_api else 2)


async def test_signed_by_another_key_is_invalid(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    store.sign_legacy(digest, STRANGER)
    store.sign_bundle(digest, STRANGER)
    outcome = await verify(c, digest)
    assert isinstance(outcome, SignatureInvalid)
    assert len(outcome.problems) == 2
    assert all("does not verify with any of the keys (release, ci)" in p for p in outcome.problems)
    assert "list the key that signed it" in outcome.message


async def test_a_signature_copied_from_another_digest_is_invalid(env: Any) -> None:
    store, c = env
    digest = store.modelkit("v1", seed=1)
    other = store.modelkit("v2", seed=2)
    store.sign_legacy(other, RELEASE, onto=digest)  # payload names `other`, under digest's tag
    outcome = await verify(c, digest)
    assert isinstance(outcome, SignatureInvalid)
    assert f"its payload names {other}, not this digest" in outcome.problems[0]
    assert "signed by 'release'" in outcome.problems[0]


async def test_a_bundle_for_another_digest_is_invalid(env: Any) -> None:
    store, c = env
    digest = store.modelkit("v1", seed=1)
    other = store.modelkit("v2", seed=2)
    layer = store.blob(
        __import__("cosign_fakes").bundle(RELEASE, other), payloads.BUNDLE_V03
    )  # a bundle over `other`, attached to `digest`
    store.referrer(digest, payloads.BUNDLE_V03, [layer])
    outcome = await verify(c, digest)
    assert isinstance(outcome, SignatureInvalid)
    assert f"its statement names {other}" in outcome.problems[0]


async def test_a_tampered_payload_is_invalid(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    payload = simple_signing_payload(digest)
    signature = RELEASE.sign(payload)
    store.sign_legacy(
        digest,
        RELEASE,
        payload=payload.replace(b'"optional":null', b'"optional":{"by":"mallory"}'),
        signature=signature,
    )
    store.sign_bundle(digest, RELEASE, tamper=True)
    outcome = await verify(c, digest)
    assert isinstance(outcome, SignatureInvalid)
    assert len(outcome.problems) == 2


@pytest.mark.parametrize(
    ("annotations", "says"),
    [
        ({}, "no dev.cosignproject.cosign/signature annotation"),
        ({payloads.SIGNATURE_ANNOTATION: "%%%"}, "not valid base64"),
    ],
)
async def test_a_malformed_sig_layer_is_invalid(
    env: Any, annotations: dict[str, str], says: str
) -> None:
    store, c = env
    digest = store.modelkit()
    store.sign_legacy(digest, RELEASE, annotations=annotations)
    outcome = await verify(c, digest)
    assert isinstance(outcome, SignatureInvalid)
    assert says in outcome.problems[0]


async def test_one_good_signature_among_bad_ones_verifies(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    store.sign_legacy(digest, STRANGER)
    store.sign_legacy(digest, CI)
    outcome = await verify(c, digest)
    assert isinstance(outcome, Verified) and outcome.key == "ci"
    assert outcome.where.endswith("layer 1")


# -- transparency-log entries ---------------------------------------------------------------------


async def test_log_entries_are_unchecked_without_a_log_key(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    store.sign_legacy(digest, RELEASE, log=LOG)
    outcome = await verify(c, digest)
    assert isinstance(outcome, Verified) and outcome.log == "unchecked"


@pytest.mark.parametrize("form", ["sig", "bundle"])
async def test_a_log_entry_verifies_with_the_log_key(env: Any, form: str) -> None:
    store, c = env
    digest = store.modelkit()
    if form == "sig":
        store.sign_legacy(digest, RELEASE, log=LOG)
    else:
        store.sign_bundle(digest, RELEASE, log=LOG)
    outcome = await verify(c, digest, keyset(RELEASE, log=LOG))
    assert isinstance(outcome, Verified) and outcome.log == "verified"


@pytest.mark.parametrize("form", ["sig", "bundle"])
async def test_a_log_entry_of_another_log_is_invalid(env: Any, form: str) -> None:
    store, c = env
    digest = store.modelkit()
    if form == "sig":
        store.sign_legacy(digest, RELEASE, log=Log())
    else:
        store.sign_bundle(digest, RELEASE, log=Log())
    outcome = await verify(c, digest, keyset(RELEASE, log=LOG))
    assert isinstance(outcome, SignatureInvalid)
    assert "not one of the configured log keys" in outcome.problems[0]


async def test_a_forged_log_entry_is_invalid(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    payload = simple_signing_payload(digest)
    signature = RELEASE.sign(payload)
    entry = LOG.hashedrekord(payload=payload, signature=signature, public_pem=RELEASE.public_pem)
    entry["Payload"]["integratedTime"] += 1  # altered after the log signed it
    store.sign_legacy(
        digest,
        RELEASE,
        payload=payload,
        signature=signature,
        annotations={
            payloads.SIGNATURE_ANNOTATION: _b64(signature),
            payloads.REKOR_BUNDLE_ANNOTATION: json.dumps(entry),
        },
    )
    outcome = await verify(c, digest, keyset(RELEASE, log=LOG))
    assert isinstance(outcome, SignatureInvalid)
    assert "signed entry timestamp does not verify" in outcome.problems[0]


async def test_a_log_entry_recording_another_signature_is_invalid(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    payload = simple_signing_payload(digest)
    signature = RELEASE.sign(payload)
    entry = LOG.hashedrekord(
        payload=payload, signature=RELEASE.sign(payload + b" "), public_pem=RELEASE.public_pem
    )
    store.sign_legacy(
        digest,
        RELEASE,
        payload=payload,
        signature=signature,
        annotations={
            payloads.SIGNATURE_ANNOTATION: _b64(signature),
            payloads.REKOR_BUNDLE_ANNOTATION: json.dumps(entry),
        },
    )
    outcome = await verify(c, digest, keyset(RELEASE, log=LOG))
    assert isinstance(outcome, SignatureInvalid)
    assert "records another signature" in outcome.problems[0]


async def test_without_a_log_entry_signing_without_a_log_works_unless_required(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    store.sign_legacy(digest, RELEASE)
    outcome = await verify(c, digest, keyset(RELEASE, log=LOG))
    assert isinstance(outcome, Verified) and outcome.log == "absent"
    required = await verify(c, digest, keyset(RELEASE, log=LOG, require=True))
    assert isinstance(required, SignatureInvalid)
    assert "one is required" in required.problems[0]


# -- unavailable ----------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", [r"\.sig$", r"/referrers/", r"/blobs/"])
async def test_a_registry_error_while_fetching_is_unavailable(env: Any, failing: str) -> None:
    store, c = env
    digest = store.modelkit()
    store.sign_legacy(digest, RELEASE)
    store.sign_bundle(digest, STRANGER)
    store.failures[failing] = 503
    outcome = await verify(c, digest)
    if failing == r"/referrers/":  # the .sig signature still verifies
        assert isinstance(outcome, Verified)
        return
    assert isinstance(outcome, SignatureUnavailable)
    assert outcome.reason == "SignatureUnavailable"
    assert outcome.error_reason == "RegistryError"
    assert "503" in outcome.message and "try again" in outcome.message


async def test_a_registry_that_is_down_is_unavailable() -> None:
    store = Store()
    digest = store.modelkit()

    def down(request: Any) -> Any:
        import httpx

        raise httpx.ConnectError("connection refused", request=request)

    import httpx

    async with registry.RegistryClient(
        transport=httpx.MockTransport(down), resolve=lambda h, p: _addresses()
    ) as c:
        outcome = await Verifier(c).verify(ref(), digest, KEYS)
    assert isinstance(outcome, SignatureUnavailable)
    assert outcome.error_reason == "Unreachable"


async def _addresses() -> list[str]:
    return ["10.0.0.7"]


# -- bounds ---------------------------------------------------------------------------------------


async def test_oversized_signature_blobs_are_not_read(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    big = simple_signing_payload(digest) + b" " * (finding.MAX_BLOB_BYTES + 1)
    store.sign_legacy(digest, RELEASE, payload=big)
    outcome = await verify(c, digest)
    assert isinstance(outcome, SignatureInvalid)
    assert "more than the 262144-byte limit" in outcome.problems[0]
    assert not any(r.startswith("GET") and "/blobs/" in r for r in store.requests)


async def test_at_most_max_layers_are_read(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    for _ in range(finding.MAX_LAYERS + 2):
        store.sign_legacy(digest, STRANGER)
    outcome = await verify(c, digest)
    assert isinstance(outcome, SignatureInvalid)
    assert sum("/blobs/" in r for r in store.requests) == finding.MAX_LAYERS
    assert any("2 of 18 signature layers" in p for p in outcome.problems)


# -- cache and single flight ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_checks_share_one_lookup_and_the_outcome_is_cached(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    store.sign_legacy(digest, RELEASE)
    clock = Clock()
    verifier = Verifier(c, clock=clock)
    outcomes = await asyncio.gather(*(verifier.verify(ref(), digest, KEYS) for _ in range(10)))
    assert all(isinstance(o, Verified) for o in outcomes)
    assert verifier.lookups == 1
    sent = len(store.requests)
    assert isinstance(await verifier.verify(ref("other-tag"), digest, KEYS), Verified)
    assert len(store.requests) == sent and verifier.lookups == 1
    # another key set is another check
    assert isinstance(await verifier.verify(ref(), digest, keyset(STRANGER)), SignatureInvalid)
    assert verifier.lookups == 2
    clock.now += verifier.ttl + 1
    await verifier.verify(ref(), digest, KEYS)
    assert verifier.lookups == 3


async def test_missing_is_cached_briefly_and_unavailable_not_at_all(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    clock = Clock()
    verifier = Verifier(c, clock=clock)
    assert isinstance(await verifier.verify(ref(), digest, KEYS), SignatureMissing)
    assert isinstance(await verifier.verify(ref(), digest, KEYS), SignatureMissing)
    assert verifier.lookups == 1
    store.sign_legacy(digest, RELEASE)
    clock.now += verifier.missing_ttl + 1
    assert isinstance(await verifier.verify(ref(), digest, KEYS), Verified)
    other = store.modelkit("v2", seed=3)
    store.failures[r"\.sig$"] = 500
    assert isinstance(await verifier.verify(ref(), other, KEYS), SignatureUnavailable)
    del store.failures[r"\.sig$"]
    assert isinstance(await verifier.verify(ref(), other, KEYS), SignatureMissing)
    assert verifier.lookups == 4


async def test_a_caller_that_gives_up_leaves_the_lookup_to_the_others(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    store.sign_legacy(digest, RELEASE)
    verifier = Verifier(c)
    first = asyncio.create_task(verifier.verify(ref(), digest, KEYS))
    second = asyncio.create_task(verifier.verify(ref(), digest, KEYS))
    await asyncio.sleep(0)
    first.cancel()
    assert isinstance(await second, Verified)
    assert verifier.lookups == 1
    await verifier.aclose()


async def test_the_digest_checked_is_the_one_given_not_the_references(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    store.sign_legacy(digest, RELEASE)
    unsigned = store.modelkit("v2", seed=9)
    verifier = Verifier(c)
    assert isinstance(
        await verifier.verify(ref().with_digest(digest), unsigned, KEYS), SignatureMissing
    )
    assert sha256(b"") != digest


@pytest.mark.parametrize(
    ("blob", "says"),
    [
        (b"not json", "the simple-signing payload is not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"critical":{"image":{}}}', "docker-manifest-digest is null, not a sha256 digest"),
        (b'{"critical":{"image":{"docker-manifest-digest":"sha256:abc"}}}', "'sha256:abc'"),
    ],
)
async def test_an_unreadable_payload_signed_by_a_key_is_invalid(
    env: Any, blob: bytes, says: str
) -> None:
    store, c = env
    digest = store.modelkit()
    store.sign_legacy(digest, RELEASE, payload=blob)
    outcome = await verify(c, digest)
    assert isinstance(outcome, SignatureInvalid)
    assert says in outcome.problems[0]


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ({"mediaType": "x"}, "not a sigstore bundle kitpin reads"),
        ({"mediaType": payloads.BUNDLE_V03, "messageSignature": {}}, "message signature"),
        ({"mediaType": payloads.BUNDLE_V03}, "no dsseEnvelope"),
        (
            {
                "mediaType": payloads.BUNDLE_V03,
                "dsseEnvelope": {"payloadType": "t", "payload": "e30="},
            },
            "signatures is not a non-empty list",
        ),
    ],
)
async def test_an_unreadable_bundle_is_invalid(
    env: Any, document: dict[str, Any], says: str
) -> None:
    store, c = env
    digest = store.modelkit()
    layer = store.blob(json.dumps(document).encode(), payloads.BUNDLE_V03)
    store.referrer(digest, payloads.BUNDLE_V03, [layer])
    outcome = await verify(c, digest)
    assert isinstance(outcome, SignatureInvalid)
    assert says in outcome.problems[0]


async def test_peek_answers_from_the_cache_only(env: Any) -> None:
    store, c = env
    digest = store.modelkit()
    store.sign_legacy(digest, RELEASE)
    clock = Clock()
    verifier = Verifier(c, clock=clock)
    assert verifier.peek(ref(), digest, KEYS) is None  # nothing cached: no lookup either
    assert verifier.lookups == 0 and not store.requests
    verified = await verifier.verify(ref(), digest, KEYS)
    sent = len(store.requests)
    assert verifier.peek(ref(), digest, KEYS) is verified
    assert verifier.peek(ref(), digest, keyset(STRANGER)) is None  # another key set
    assert len(store.requests) == sent
    clock.now += verifier.ttl + 1
    assert verifier.peek(ref(), digest, KEYS) is None  # expired
