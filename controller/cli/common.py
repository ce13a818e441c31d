"""What the ``kitpin`` commands share: exit codes, flags, reading the input manifests, and
reaching the registries (one client, one resolver, one signature verifier, the same deadline
for every reference)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import re
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from controller import errors, manifests, refs, settings, sites

if TYPE_CHECKING:
    from controller.admission.signing import SignatureVerifier
    from controller.registry.client import RegistryClient
    from controller.registry.credentials import Keychain
    from controller.registry.hosts import HostPolicy
    from controller.resolver import Resolver, ResolverSettings
    from controller.types import Credential, Resolution

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

MANIFEST_SUFFIXES: Final = (".yaml", ".yml", ".json")
CONCURRENCY: Final = 16
"""Registry requests in flight at once; identical references cost one request anyway."""
STDIN: Final = "-"
STDIN_NAME: Final = "<stdin>"


# ---------------------------------------------------------------------------------------
# Flags


def add_registry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry-config",
        metavar="FILE",
        help="YAML: per-registry plainHTTP/caFile, allowedRegistries, deniedNetworks, "
        "deniedHostnames (every key: docs/settings.md)",
    )
    p.add_argument(
        "--docker-config",
        metavar="DIR",
        help="directory holding a docker config.json with registry credentials",
    )


def add_input_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--filename",
        metavar="FILE|DIR|-",
        action="append",
        default=[],
        help="a manifest file, a directory of them, or - for stdin (repeatable; default: "
        "stdin when it is not a terminal)",
    )
    p.add_argument("-R", "--recursive", action="store_true", help="read directories recursively")
    p.add_argument(
        "--settings",
        metavar="FILE",
        help="kitpin settings YAML (every key: docs/settings.md): its sites (env names, kit CLI "
        "images, extra sites) and deadlineSeconds apply (for check, ignoredNamespaces too), so "
        "kitpin finds what the webhook with those settings finds",
    )


def add_resolution_flags(p: argparse.ArgumentParser) -> None:
    """How the commands that read many references reach their registries."""
    p.add_argument(
        "--plain-http",
        action="store_true",
        help="talk plain HTTP to every registry the manifests name (local registries only)",
    )
    p.add_argument(
        "--plain-http-registry",
        metavar="HOST[:PORT]",
        action="append",
        default=[],
        help="talk plain HTTP to this registry (repeatable)",
    )
    p.add_argument(
        "--deadline",
        metavar="SECONDS",
        type=float,
        default=None,
        help="longest wait for one reference (default: deadlineSeconds from --settings, else 8)",
    )
    add_registry_flags(p)


def add_manifest_parser(
    sub: Any, name: str, *, summary: str, description: str
) -> argparse.ArgumentParser:
    """The parser of a command that reads Kubernetes YAML, with its input flags."""
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_flags(p)
    return p


# ---------------------------------------------------------------------------------------
# Input


@dataclass(frozen=True, kw_only=True)
class Input:
    name: str
    """The name in messages: the path as given (joined with the directory), or <stdin>."""
    path: Path | None
    """None for stdin."""


def collect_inputs(given: Sequence[str], *, recursive: bool) -> list[Input]:
    names: list[str] = list(given)
    if not names:
        if sys.stdin is None or sys.stdin.isatty():
            raise manifests.ManifestError(
                "no input: give -f FILE, -f DIR or -f -, or pipe manifests to stdin "
                "(as helm's --post-renderer does)"
            )
        names = [STDIN]
    inputs: list[Input] = []
    for name in names:
        if name == STDIN:
            if any(i.path is None for i in inputs):
                raise manifests.ManifestError("-f - (stdin) is given more than once")
            inputs.append(Input(name=STDIN_NAME, path=None))
            continue
        path = Path(name)
        if path.is_dir():
            found = sorted(
                p
                for p in (path.rglob("*") if recursive else path.iterdir())
                if p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file()
            )
            inputs.extend(Input(name=str(p), path=p) for p in found)
        elif path.exists():
            inputs.append(Input(name=name, path=path))
        else:
            raise manifests.ManifestError(f"{name}: no such file or directory")
    unique: dict[object, Input] = {}
    for source in inputs:  # a file named twice (-f dir -f dir/a.yaml) is read once
        unique.setdefault(source.path.resolve() if source.path else None, source)
    return list(unique.values())


def read(source: Input) -> str:
    try:
        data = sys.stdin.buffer.read() if source.path is None else source.path.read_bytes()
    except OSError as e:
        raise manifests.ManifestError(f"{source.name}: cannot read it: {e.strerror or e}") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise manifests.ManifestError(
            f"{source.name}:{line}: not UTF-8 text; Kubernetes manifests are UTF-8"
        ) from None


def load_manifests(
    args: argparse.Namespace,
    site_settings: sites.SitesSettings | None,
    *,
    names: Sequence[str] | None = None,
) -> list[tuple[Input, manifests.Manifest]]:
    """Read and scan every input (``names``, by default the ``-f`` inputs; ``-R`` applies to
    both); the first unreadable or invalid one raises."""
    inputs = collect_inputs(args.filename if names is None else names, recursive=args.recursive)
    return [
        (source, manifests.scan(read(source), source=source.name, settings=site_settings))
        for source in inputs
    ]


def load_settings(args: argparse.Namespace) -> settings.Settings:
    return settings.load_settings_file(args.settings) if args.settings else settings.Settings()


def deadline_seconds(args: argparse.Namespace, config: settings.Settings) -> float:
    """Seconds one reference may take: ``--deadline``, else the settings' deadlineSeconds."""
    if args.deadline is not None and not args.deadline > 0:
        raise errors.ConfigError("--deadline must be > 0 seconds")
    return float(args.deadline) if args.deadline is not None else config.resolver.deadline


# ---------------------------------------------------------------------------------------
# Registries


@dataclass(frozen=True, kw_only=True)
class Access:
    """How a command reaches the registries: host policy, credentials, deadline."""

    hosts: HostPolicy
    keychain: Keychain | None
    resolver: ResolverSettings
    deadline: float

    def credential(self, ref: refs.Reference) -> Credential | None:
        if self.keychain is None:
            return None
        return self.keychain.lookup(ref.registry, repository=ref.repository)


def registry_access(
    args: argparse.Namespace,
    config: settings.Settings,
    deadline: float,
    references: Iterable[refs.Reference],
) -> Access:
    """The registry flags (``--plain-http`` for every registry ``references`` name)."""
    registries = sorted({ref.registry for ref in references}) if args.plain_http else []
    hosts, keychain = settings.registry_access(
        registry_config=args.registry_config,
        docker_config=args.docker_config,
        plain_http=[*registries, *args.plain_http_registry],
    )
    return Access(
        hosts=hosts,
        keychain=keychain,
        resolver=replace(config.resolver, deadline=deadline),
        deadline=deadline,
    )


@contextlib.asynccontextmanager
async def registry(access: Access) -> AsyncIterator[tuple[RegistryClient, Resolver]]:
    """One registry client and one resolver (a cache and single-flight) for the whole run."""
    from controller.registry.client import RegistryClient
    from controller.resolver import Resolver

    async with RegistryClient(access.hosts) as client:
        resolver = Resolver(client, settings=access.resolver)
        try:
            yield client, resolver
        finally:
            await resolver.aclose()


def signature_verifier(client: RegistryClient) -> SignatureVerifier:
    """One signature verifier for the whole run (cached per digest and key set,
    single-flight), over ``client``: what the webhook verifies with
    (:class:`controller.signatures.Verifier`)."""
    from controller.signatures import Verifier

    return Verifier(client)


async def resolve_all(
    resolver: Resolver, references: Sequence[refs.Reference], access: Access
) -> list[Resolution | errors.RegistryError]:
    """Resolve every reference, one registry request per distinct reference and credential,
    at most :data:`CONCURRENCY` at once, each within ``access.deadline`` seconds."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(ref: refs.Reference) -> Resolution | errors.RegistryError:
        async with limit:
            try:
                return await resolver.resolve(
                    ref, credential=access.credential(ref), deadline=access.deadline
                )
            except errors.RegistryError as e:
                return for_cli(e, plain_http_registry=True)

    unique = {ref.canonical: ref for ref in references}
    results = await asyncio.gather(*(one(ref) for ref in unique.values()))
    by_reference = dict(zip(unique, results, strict=True))
    return [by_reference[ref.canonical] for ref in references]


# ---------------------------------------------------------------------------------------
# Messages

_TLS_FAILED: Final = re.compile(
    r"\[SSL[:\]]|SSLError|record layer failure|wrong version number", re.I
)
"""How a TLS handshake with a server that speaks plain HTTP fails."""

_NO_CONNECTION: Final = re.compile(
    r"; check the registry name, network policies and egress, and plainHTTP if it serves "
    r"plain HTTP$"
)
_PULL_SECRET: Final = re.compile(
    r"add a pull secret for (?P<registry>\S+) to the namespace(?: \(imagePullSecrets\))?"
)
_REGISTRY_CONFIG: Final = re.compile(r"\bin the registry config\b(?! \(--registry-config)")


def cli_advice(message: str, *, registry: str, plain_http_registry: bool = False) -> str:
    """``message``, a registry error's, with the advice the CLI's user can follow.

    The registry client words its advice for the webhook, whose operator has the settings
    and the namespace's pull secrets: "plainHTTP in the registry config", "add a pull secret
    to the namespace". A CLI user has flags instead: ``--plain-http``, ``--docker-config``,
    ``--registry-config``. The webhook's messages stay as they are; only what the CLI prints
    goes through here. ``plain_http_registry``: the command also has
    ``--plain-http-registry`` (``pin``, ``check``)."""
    one = f" (or --plain-http-registry {registry} for this registry only)"
    plain = "--plain-http" + (one if plain_http_registry and registry else "")
    if _NO_CONNECTION.search(message):
        if _TLS_FAILED.search(message):
            advice = (
                f"; the TLS handshake failed: if {registry or 'the registry'} serves plain "
                f"HTTP (a local registry), add {plain}; else check the registry name and port"
            )
        else:
            advice = (
                f"; check the registry name and the network, and add {plain} if it serves "
                "plain HTTP"
            )
        message = _NO_CONNECTION.sub(lambda _: advice, message)

    def docker_config(m: re.Match[str]) -> str:
        named = registry if m["registry"] == "it" and registry else m["registry"]
        return (
            f"give credentials for {named} with --docker-config DIR (a directory whose "
            f"config.json has them, e.g. ~/.docker after `docker login {named}`)"
        )

    message = _PULL_SECRET.sub(docker_config, message)
    return _REGISTRY_CONFIG.sub("in the registry config (--registry-config FILE)", message)


def for_cli(
    error: errors.RegistryError, *, plain_http_registry: bool = False
) -> errors.RegistryError:
    """``error`` with :func:`cli_advice`'s message (a copy: same type, reason, registry and
    cause), or ``error`` itself when nothing changes."""
    message = cli_advice(
        error.message, registry=error.registry, plain_http_registry=plain_http_registry
    )
    if message == error.message:
        return error
    twin = copy.copy(error)
    twin.message = message
    twin.args = (message,)
    twin.__cause__ = error.__cause__
    return twin


def warn(message: str) -> None:
    print(f"kitpin: warning: {message}", file=sys.stderr)


def fail(message: str) -> None:
    print(f"kitpin: error: {message}", file=sys.stderr)
