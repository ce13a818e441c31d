"""``kitpin pin``: pin every ModelKit reference in Kubernetes YAML (files, directories,
stdin; a Helm post-renderer with no -f), rewriting only the changed strings
(:mod:`controller.manifests`). ``--verify`` pins only digests whose cosign signature verifies
with the ``--key`` files, through the webhook's own path
(:meth:`controller.admission.signing.Signing.outcome`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from controller import errors, manifests, policy, signatures
from controller.admission import pinning, signing
from controller.cli import common
from controller.types import Resolution

logger = logging.getLogger(__name__)

DESCRIPTION: Final = """\
Pin every ModelKit reference in Kubernetes YAML to its sha256 digest, keeping the tag:
reg/llama:production becomes reg/llama:production@sha256:... . References are found by the
same code, with the same settings (--settings), as the admission webhook; references that
already carry a digest are left alone. Only the changed strings are rewritten: comments, key
order, quoting and every other line stay byte for byte.

Input: -f FILE, -f DIR (its *.yaml, *.yml and *.json; -R for subdirectories) or -f - for
stdin, repeatable; with no -f, stdin (as a Helm post-renderer:
`helm install ... --post-renderer kitpin --post-renderer-args pin`). Output: stdout (several
inputs are joined with ---), or each file rewritten with --in-place.

If any reference cannot be pinned nothing is written (no half-pinned output) and the exit code
is 1 (a registry failure) or 2 (invalid YAML or an invalid reference); --keep-going writes what
could be pinned, leaves the rest as it was, and still exits non-zero.

--verify --key cosign.pub: pin a digest only when its cosign signature verifies with one of
the keys (--require all: with every key), the check a policy's signatures block makes at
admission (docs/signatures.md). A digest without a signature (SignatureMissing), with none
by these keys over this digest (SignatureInvalid) or whose signatures cannot be fetched
(SignatureUnavailable) is not pinned, and the exit code is 1.
"""


def add_parser(sub: Any) -> None:
    p = common.add_manifest_parser(
        sub,
        "pin",
        summary="pin every ModelKit reference in Kubernetes YAML (files, directories, stdin)",
        description=DESCRIPTION,
    )
    p.add_argument(
        "-i",
        "--in-place",
        action="store_true",
        help="rewrite the files instead of printing (files that need no change are not touched)",
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="write what could be pinned even if some references could not (exit code stays "
        "non-zero)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="pin only digests whose cosign signature verifies with a --key (docs/signatures.md)",
    )
    p.add_argument(
        "--key",
        metavar="[NAME=]FILE",
        action="append",
        default=[],
        help="a public key (PEM, cosign.pub) for --verify, named NAME (default: the file name "
        "without .pub); repeatable",
    )
    p.add_argument(
        "--require",
        choices=policy.SIGNATURE_REQUIREMENTS,
        default=policy.DEFAULT_SIGNATURE_REQUIREMENT,
        help="--verify: a signature by any one key is enough (default), or all keys must have "
        "signed",
    )
    common.add_resolution_flags(p)


def signature_rules(args: argparse.Namespace) -> policy.SignatureRules | None:
    """The keys of ``--verify --key``, as a policy's ``signatures`` block states them; None
    without ``--verify``. :class:`errors.ConfigError` for keys kitpin cannot use."""
    if not args.verify:
        if args.key:
            raise errors.ConfigError("--key is for --verify: add --verify, or drop --key")
        return None
    if not args.key:
        raise errors.ConfigError(
            "--verify needs the public keys to verify with: --key cosign.pub (repeatable)"
        )
    keys: list[policy.SignatureKey] = []
    for given in args.key:
        name, eq, file = given.partition("=")
        if not eq:
            name, file = Path(given).name.removesuffix(".pub") or given, given
        where = f"--key {given}"
        if any(k.name == name for k in keys):
            raise errors.ConfigError(f"{where}: the name {name!r} is given twice; use NAME=FILE")
        try:
            pem = Path(file).read_bytes()
        except OSError as e:
            raise errors.ConfigError(f"{where}: cannot read it: {e.strerror or e}") from e
        key = signatures.parse_public_key(name, pem, field=where)
        keys.append(policy.SignatureKey(name=name, field=where, public_key=key))
    return policy.SignatureRules(keys=tuple(keys), require=args.require)


async def _resolve_pins(
    pins: Sequence[manifests.Pin],
    access: common.Access,
    rules: policy.SignatureRules | None = None,
) -> list[Resolution | errors.RegistryError | signatures.Outcome]:
    """Each pin's resolution (or its registry error); with ``rules`` (``--verify``), a
    resolution whose signature does not verify is replaced by the outcome that says why."""
    async with common.registry(access) as (client, resolver):
        results = await common.resolve_all(resolver, [pin.ref for pin in pins], access)
        if rules is None:
            return list(results)
        signer = signing.Signing(common.signature_verifier(client))
        limit = asyncio.Semaphore(common.CONCURRENCY)

        async def verify(
            pin: manifests.Pin, result: Resolution | errors.RegistryError
        ) -> Resolution | errors.RegistryError | signatures.Outcome:
            if isinstance(result, errors.RegistryError):
                return result
            if pinning.not_a_modelkit_message(pin.located.site, result) is not None:
                return result  # refused below, with the webhook's words
            async with limit:
                outcome = await signer.outcome(
                    rules,
                    pin.ref,
                    result.digest,
                    credential=access.credential(pin.ref),
                    timeout=access.deadline,
                )
            if isinstance(outcome, signatures.Verified):
                logger.info("%s: %s", pin.located, outcome.message)
                return result
            return outcome

        return list(
            await asyncio.gather(*(verify(p, r) for p, r in zip(pins, results, strict=True)))
        )


def _write_in_place(path: Path, text: str) -> None:
    """Replace ``path`` atomically (a temporary file in the same directory, renamed over
    it), keeping its permission bits; a symbolic link stays a link to the rewritten file."""
    path = path.resolve()
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".kitpin")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    if args.in_place and (not args.filename or common.STDIN in args.filename):
        raise manifests.ManifestError(
            "--in-place rewrites files: give them with -f (stdin is printed to stdout)"
        )
    rules = signature_rules(args)
    config = common.load_settings(args)
    deadline = common.deadline_seconds(args, config)
    loaded = common.load_manifests(args, config.admission.sites)

    for _, manifest in loaded:
        for u in manifest.unresolvable:
            common.warn(f"{u}; kitpin cannot pin a value it cannot see")
    plans = [manifests.plan(m) for _, m in loaded]
    for p in plans:
        for located, reason in p.kept:
            logger.debug("%s: left as it is (%s)", located, reason)
    problems = [problem for p in plans for problem in p.problems]
    pins = [(n, pin) for n, p in enumerate(plans) for pin in p.pins]

    failures: list[str] = [f"{problem}" for problem in problems]
    edits: dict[int, list[manifests.Edit]] = {}
    if pins:
        access = common.registry_access(args, config, deadline, (pin.ref for _, pin in pins))
        results = asyncio.run(_resolve_pins([pin for _, pin in pins], access, rules))
        for (n, pin), result in zip(pins, results, strict=True):
            if isinstance(result, errors.RegistryError):
                failures.append(
                    f"{pin.located}: cannot pin '{pin.located.site.value}': "
                    f"{result.reason}: {result}"
                )
                continue
            if not isinstance(result, Resolution):  # --verify: not signed as required
                message = common.cli_advice(result.message, registry=pin.ref.registry)
                failures.append(
                    f"{pin.located}: cannot pin '{pin.located.site.value}': "
                    f"{result.reason}: {message}"
                )
                continue
            # The webhook denies non-ModelKits where a ModelKit is expected: so does pin.
            problem = pinning.not_a_modelkit_message(pin.located.site, result)
            if problem is not None:
                failures.append(f"{pin.located}: {problem}")
                continue
            edits.setdefault(n, []).append(manifests.edit(pin, result.digest))

    for message in failures:
        common.fail(message)
    code = common.EXIT_USAGE if problems else common.EXIT_FAILED if failures else common.EXIT_OK
    if failures and not args.keep_going:
        print(
            f"kitpin: nothing written: {len(failures)} of {len(pins) + len(problems)} "
            "reference(s) could not be pinned (--keep-going writes the others)",
            file=sys.stderr,
        )
        return code

    outputs = [manifests.splice(m, edits.get(n, ())) for n, (_, m) in enumerate(loaded)]

    if args.in_place:
        for (source, manifest), text in zip(loaded, outputs, strict=True):
            if text != manifest.text:
                assert source.path is not None
                _write_in_place(source.path, text)
    else:
        out = manifests.concatenate(outputs)
        sys.stdout.buffer.write(out.encode("utf-8"))
        sys.stdout.buffer.flush()
    logger.info("pinned %d reference(s) in %d input(s)", sum(map(len, edits.values())), len(loaded))
    return code
