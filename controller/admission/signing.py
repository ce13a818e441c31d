"""Signatures for policy: the one path from a policy's ``signatures`` block to the
verifier's outcome for one digest. The admission engine (mutate, before it pins; validate,
for what it admits), ``kitpin check`` (online) and ``kitpin pin --verify`` all verify
through :meth:`Signing.outcome` / :meth:`Signing.outcomes`. No I/O of its own: the verifier
and the Secret reader are Protocols.

For each policy with a ``signatures`` block (:class:`controller.policy.SignatureRules`):

1. **Its keys.** An inline ``publicKey`` was parsed with the policy. A ``secretRef`` is read
   through :class:`KeySecrets` in the policy's own namespace (``ModelKitPolicy``) or in
   kitpin's own namespace (``ClusterModelKitPolicy``), never elsewhere, and parsed here
   (memoised: a warm review parses nothing). A key that cannot be read or used does not
   count; when the outcome could depend on it (``require: all``, or no other key verified)
   the outcome is ``SignatureUnavailable`` naming the key, its Secret and why.
2. **The check.** ``require: any``: one :meth:`SignatureVerifier.verify` with every key
   (the first signature that counts decides, naming its key). ``require: all``: one per key,
   concurrently, each cached on its own; the outcome is :class:`~controller.signatures.Verified`
   (naming every key) only when each key verified, ``SignatureInvalid`` when one did not,
   ``SignatureUnavailable`` when one could not be checked, ``SignatureMissing`` when the
   digest has no signature at all.
3. **The deadline.** Everything runs within the caller's ``timeout`` (the review's
   remaining deadline); running out is ``SignatureUnavailable`` (``Timeout``). The verifier
   keeps the lookup going for the other callers (single-flight).

The verifier caches each outcome per (repository, digest, key set, credential), so a warm
review (the same digest, the same keys) costs no registry request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Final, Protocol

from controller import errors, policy, refs, signatures, types

__all__ = [
    "KEY_REASON",
    "KeySecrets",
    "NoKeySecrets",
    "SignatureVerifier",
    "Signing",
    "signed_by",
]

KEY_REASON: Final = signatures.SignatureKeyError.reason
"""The ``error_reason`` of a ``SignatureUnavailable`` whose key could not be read or used."""

MAX_PARSED: Final = 1024
"""Secret keys kept parsed, and key sets kept built (each a few hundred bytes): beyond it a
memo starts afresh."""

_KeySetKey = tuple[tuple[signatures.PublicKey, ...], tuple[signatures.PublicKey, ...], bool]


class SignatureVerifier(Protocol):
    """:class:`controller.signatures.Verifier`: cached per (repository, digest, key set,
    credential), single-flight; never raises a registry error."""

    async def verify(
        self,
        ref: refs.Reference,
        digest: str,
        keys: signatures.KeySet,
        *,
        credential: types.Credential | None = None,
    ) -> signatures.Outcome: ...

    def peek(
        self,
        ref: refs.Reference,
        digest: str,
        keys: signatures.KeySet,
        *,
        credential: types.Credential | None = None,
    ) -> signatures.Outcome | None:
        """The cached, fresh outcome, or None (then :meth:`verify`): synchronous, so a warm
        review pays no deadline timer and no await."""
        ...


class KeySecrets(Protocol):
    """Reads one value of one Secret by name (``get``, never ``list``):
    :class:`controller.kubecreds.SecretKeys` in the controller, the Secrets given with
    ``--policy`` in ``kitpin check``."""

    def peek(self, namespace: str, name: str, key: str) -> bytes | errors.ConfigError | None:
        """From the cache alone: the value, why it cannot be read, or None (then :meth:`read`)."""
        ...

    async def read(self, namespace: str, name: str, key: str) -> bytes:
        """``data[key]`` of the Secret ``namespace/name``, decoded; raises
        :class:`controller.errors.ConfigError` saying why not (absent, not readable, no such
        key, not base64, a private key)."""
        ...


class NoKeySecrets:
    """Where no Secret can be read (``kitpin pin``, ``kitpin check`` without Secrets)."""

    def __init__(self, why: str = "kitpin cannot read Secrets here") -> None:
        self.why = why

    def peek(self, namespace: str, name: str, key: str) -> bytes | errors.ConfigError | None:
        return errors.ConfigError(self.why)

    async def read(self, namespace: str, name: str, key: str) -> bytes:
        raise errors.ConfigError(self.why)


class Signing:
    """The verifier and the key Secrets, with kitpin's own namespace (for cluster policies'
    Secrets); one per process (the verifier caches)."""

    def __init__(
        self,
        verifier: SignatureVerifier,
        *,
        secrets: KeySecrets | None = None,
        own_namespace: str | None = None,
    ) -> None:
        self.verifier = verifier
        self.secrets: KeySecrets = secrets or NoKeySecrets()
        self.own_namespace = own_namespace
        self._parsed: dict[tuple[str, bytes], signatures.PublicKey | signatures.SignatureKeyError]
        self._parsed = {}
        self._keysets: dict[_KeySetKey, signatures.KeySet] = {}

    async def outcomes(
        self,
        policies: Sequence[policy.Policy],
        ref: refs.Reference,
        digest: str,
        *,
        credential: types.Credential | None,
        timeout: float,
    ) -> dict[policy.PolicyRef, signatures.Outcome]:
        """The outcome of ``digest`` (``ref``'s repository) for each of ``policies`` that has
        a ``signatures`` block, all within ``timeout`` seconds."""
        checked = policy.signature_policies(policies)
        if not checked:
            return {}
        if len(checked) == 1:  # the common case: no task
            rules = checked[0].signatures
            assert rules is not None
            outcome = await self.outcome(rules, ref, digest, credential=credential, timeout=timeout)
            return {checked[0].ref: outcome}
        results = await asyncio.gather(
            *(
                self.outcome(p.signatures, ref, digest, credential=credential, timeout=timeout)
                for p in checked
                if p.signatures is not None
            )
        )
        return {p.ref: r for p, r in zip(checked, results, strict=True)}

    async def outcome(
        self,
        rules: policy.SignatureRules,
        ref: refs.Reference,
        digest: str,
        *,
        credential: types.Credential | None,
        timeout: float,
    ) -> signatures.Outcome:
        """The outcome of ``digest`` under one ``signatures`` block (see the module
        docstring), within ``timeout`` seconds; never raises for a registry or key failure."""
        if rules.require != "all" and all(k.public_key is not None for k in rules.keys):
            inline = tuple(k.public_key for k in rules.keys if k.public_key is not None)
            cached = self.verifier.peek(
                ref, digest, self._keyset(inline, rules), credential=credential
            )
            if cached is not None:  # the warm case: inline keys, a fresh outcome
                return cached
        subject = f"{ref.canonical_name}@{digest}"
        try:
            async with asyncio.timeout(timeout):
                return await self._outcome(rules, ref, digest, subject, credential)
        except TimeoutError:
            return signatures.SignatureUnavailable(
                subject=subject,
                digest=digest,
                error_reason=errors.RegistryTimeoutError.reason,
                message=(
                    f"checking the signatures of {subject} took longer than the {timeout:.3g}s "
                    "left of the deadline; kitpin cannot tell whether it is signed: check the "
                    "registry's health and try again"
                ),
            )

    async def _outcome(
        self,
        rules: policy.SignatureRules,
        ref: refs.Reference,
        digest: str,
        subject: str,
        credential: types.Credential | None,
    ) -> signatures.Outcome:
        loaded, problems = await self._keys(rules)
        if rules.require == "all" or not loaded:
            if problems:
                return _keys_unavailable(subject, digest, problems, verified=None)
            keysets = [self._keyset((key,), rules) for key in loaded]
            found = await asyncio.gather(
                *(self.verifier.verify(ref, digest, k, credential=credential) for k in keysets)
            )
            return _all_of(subject, digest, found)
        outcome = await self.verifier.verify(
            ref, digest, self._keyset(tuple(loaded), rules), credential=credential
        )
        if problems and not isinstance(outcome, signatures.Verified):
            return _keys_unavailable(subject, digest, problems, verified=outcome)
        return outcome

    def _keyset(
        self, keys: tuple[signatures.PublicKey, ...], rules: policy.SignatureRules
    ) -> signatures.KeySet:
        """The key set (remembered: its fingerprint, the verifier's cache key, is computed
        once, not per review)."""
        memo = (keys, rules.log_keys, rules.require_log_entry)
        known = self._keysets.get(memo)
        if known is None:
            if len(self._keysets) >= MAX_PARSED:
                self._keysets.clear()
            known = self._keysets[memo] = signatures.KeySet(
                keys=keys, log_keys=rules.log_keys, require_log_entry=rules.require_log_entry
            )
        return known

    async def _keys(
        self, rules: policy.SignatureRules
    ) -> tuple[list[signatures.PublicKey], list[str]]:
        """The usable keys of ``rules`` (Secrets read, from the cache when it can), and one
        problem per key that is not."""
        loaded: list[signatures.PublicKey] = []
        problems: list[str] = []
        for key in rules.keys:
            if key.public_key is not None:
                loaded.append(key.public_key)
                continue
            secret = key.secret
            assert secret is not None
            namespace = secret.namespace or self.own_namespace
            where = f"{key.field}.secretRef"
            if namespace is None:
                problems.append(
                    f"the key {key.name!r} ({where}: Secret {secret.name}, key {secret.key}) "
                    "is read in kitpin's own namespace, which is unknown: run kitpin with "
                    "POD_NAMESPACE or --namespace"
                )
                continue
            shown = (
                f"the key {key.name!r} ({where}: Secret {namespace}/{secret.name}, key "
                f"{secret.key})"
            )
            value = self.secrets.peek(namespace, secret.name, secret.key)
            if value is None:
                try:
                    value = await self.secrets.read(namespace, secret.name, secret.key)
                except errors.ConfigError as e:
                    value = e
            if isinstance(value, errors.ConfigError):
                problems.append(f"{shown} cannot be read: {value}")
                continue
            parsed = self._parse(key.name, value)
            if isinstance(parsed, signatures.SignatureKeyError):
                problems.append(f"{shown} cannot be used: {parsed}")
                continue
            loaded.append(parsed)
        return loaded, problems

    def _parse(self, name: str, pem: bytes) -> signatures.PublicKey | signatures.SignatureKeyError:
        """``pem`` parsed as the key ``name`` (remembered: a warm review parses nothing)."""
        memo = (name, pem)
        known = self._parsed.get(memo)
        if known is not None:
            return known
        try:
            parsed: signatures.PublicKey | signatures.SignatureKeyError = (
                signatures.parse_public_key(name, pem, field="its value")
            )
        except signatures.SignatureKeyError as e:
            parsed = e
        if len(self._parsed) >= MAX_PARSED:
            self._parsed.clear()
        self._parsed[memo] = parsed
        return parsed


def signed_by(outcomes: Mapping[policy.PolicyRef, signatures.Outcome]) -> str | None:
    """The names of the keys that verified the digest (every policy's), for the pin record:
    ``release``, or ``release, ci`` when several did; None when none did."""
    names: list[str] = []
    for outcome in outcomes.values():
        if isinstance(outcome, signatures.Verified):
            names += [n for n in outcome.key.split(", ") if n not in names]
    return ", ".join(names) or None


def _keys_unavailable(
    subject: str, digest: str, problems: Sequence[str], *, verified: signatures.Outcome | None
) -> signatures.SignatureUnavailable:
    """A check whose outcome depends on keys kitpin could not read or use."""
    also = (
        f" With the other keys: {verified.reason}: {verified.message}."
        if verified is not None
        else ""
    )
    return signatures.SignatureUnavailable(
        subject=subject,
        digest=digest,
        error_reason=KEY_REASON,
        message=(
            f"kitpin cannot tell whether {subject} is signed: {'; '.join(problems)}.{also} "
            "Fix the key Secret (cosign generate-key-pair k8s://<namespace>/<name> writes "
            "one) or the policy"
        ),
    )


def _all_of(subject: str, digest: str, found: Sequence[signatures.Outcome]) -> signatures.Outcome:
    """``require: all``: one outcome from each key's."""
    if all(isinstance(o, signatures.Verified) for o in found):
        verified = [o for o in found if isinstance(o, signatures.Verified)]
        if len(verified) == 1:
            return verified[0]
        return signatures.Verified(
            subject=subject,
            digest=digest,
            key=", ".join(o.key for o in verified),
            where=verified[0].where,
            log=verified[0].log,
            message=f"{subject} is signed by every listed key: "
            + "; ".join(o.message for o in verified),
        )
    if all(isinstance(o, signatures.SignatureMissing) for o in found):
        return found[0]
    failed = [o for o in found if not isinstance(o, signatures.Verified)]
    definite = [o for o in failed if not isinstance(o, signatures.SignatureUnavailable)]
    if not definite:
        return failed[0]
    signed = [o.key for o in found if isinstance(o, signatures.Verified)]
    problems = tuple(
        problem
        for o in definite
        for problem in (o.problems if isinstance(o, signatures.SignatureInvalid) else ())
    )
    return signatures.SignatureInvalid(
        subject=subject,
        digest=digest,
        problems=problems,
        message=(
            f"every listed key must have signed {subject}, but "
            + "; ".join(o.message for o in definite)
            + (f" (signed by: {', '.join(signed)})" if signed else "")
        ),
    )
