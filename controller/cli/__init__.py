"""The ``kitpin`` command line.

    kitpin resolve REF      print the pinned form of one reference
    kitpin pin [-f FILE]    pin every ModelKit reference in Kubernetes YAML (files, directories,
                            stdin; a Helm post-renderer with no -f)
    kitpin check [-f FILE] --policy FILE
                            evaluate ModelKit policies against Kubernetes YAML (for CI)
    kitpin run              run the admission webhooks (``--dev`` for a local cluster)

Exit codes: 0 success; 1 a resolution or runtime failure (the message names the cause and what
to do); 2 invalid input or usage (including YAML that does not parse and invalid references).
``kitpin check`` exits 1 for what the webhook would deny (an enforce-mode violation, an invalid
reference, a non-ModelKit where one is expected) and when a registry failure stops the check,
2 for usage, an invalid policy or invalid YAML.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from controller import errors, manifests, policy, refs, settings, sites
from controller.admission import pinning

if TYPE_CHECKING:
    from controller.registry.client import RegistryClient
    from controller.registry.credentials import Keychain
    from controller.registry.hosts import HostPolicy
    from controller.resolver import Resolver, ResolverSettings
    from controller.types import Credential, Resolution

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        print(f"kitpin: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add_registry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry-config",
        metavar="FILE",
        help="YAML: per-registry plainHTTP/caFile, allowedRegistries, deniedNetworks",
    )
    p.add_argument(
        "--docker-config",
        metavar="DIR",
        help="directory holding a docker config.json with registry credentials",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kitpin",
        description="Pin KitOps ModelKit references to verified sha256 digests.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("resolve", help="resolve one reference and print its pinned form")
    p.add_argument("reference", metavar="REF")
    p.add_argument(
        "--grammar",
        choices=("kit", "image"),
        default="kit",
        help="kit: MODELKIT_REF / kit:// grammar (default); image: Kubernetes image grammar",
    )
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    p.add_argument(
        "--plain-http",
        action="store_true",
        help="talk plain HTTP to this reference's registry (local registries only)",
    )
    _add_registry_flags(p)

    _add_pin_parser(sub)
    _add_check_parser(sub)

    r = sub.add_parser("run", help="run the admission webhooks")
    r.add_argument(
        "--dev",
        action="store_true",
        help="serve on 127.0.0.1 with generated certificates and kopf-managed webhook "
        "configurations (local control plane or any kubeconfig)",
    )
    r.add_argument("--settings", metavar="FILE", help="kitpin settings YAML (see docs)")
    r.add_argument(
        "--plain-http-registry",
        metavar="HOST[:PORT]",
        action="append",
        default=[],
        help="talk plain HTTP to this registry (repeatable)",
    )
    _add_registry_flags(r)
    r.add_argument("--listen", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    r.add_argument("--port", type=int, default=8443, help="webhook HTTPS port (default 8443)")
    r.add_argument("--tls-cert", metavar="FILE", help="serving certificate (PEM)")
    r.add_argument("--tls-key", metavar="FILE", help="serving key (PEM)")
    r.add_argument(
        "--namespace",
        default=None,
        help="the controller's own namespace (never admitted through kitpin)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # One-shot commands print their result and errors themselves: logs only with -v.
    quiet = logging.INFO if args.command == "run" else logging.ERROR
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else quiet,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        if args.command == "resolve":
            return asyncio.run(_resolve(args))
        if args.command == "pin":
            return _pin(args)
        if args.command == "check":
            return _check(args)
        if args.command == "run":
            from controller import operator  # kopf is only imported by the commands that run it

            return operator.run(args)
    except errors.ReferenceError as e:
        print(f"kitpin: invalid reference: {e}", file=sys.stderr)
        return EXIT_USAGE
    except errors.ConfigError as e:
        print(f"kitpin: invalid configuration: {e}", file=sys.stderr)
        return EXIT_USAGE
    except manifests.ManifestError as e:
        print(f"kitpin: {e}", file=sys.stderr)
        return EXIT_USAGE
    except errors.RegistryError as e:
        print(f"kitpin: {e.reason}: {e}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_USAGE


async def _resolve(args: argparse.Namespace) -> int:
    from controller.registry.client import RegistryClient
    from controller.resolver import Resolver

    ref = refs.parse(args.reference, grammar=args.grammar)
    policy, keychain = settings.registry_access(
        registry_config=args.registry_config,
        docker_config=args.docker_config,
        plain_http=[ref.registry] if args.plain_http else [],
    )
    credential = keychain.lookup(ref.registry, repository=ref.repository) if keychain else None
    async with RegistryClient(policy) as client:
        resolution = await Resolver(client).resolve(ref, credential=credential)
    pinned = ref.pinned(resolution.digest)
    if args.output == "json":
        print(
            json.dumps(
                {
                    "reference": args.reference,
                    "registry": ref.registry,
                    "repository": ref.repository,
                    "tag": ref.tag,
                    "digest": resolution.digest,
                    "pinned": pinned,
                    "format": resolution.manifest.format,
                    "mediaType": resolution.manifest.media_type,
                },
                indent=2,
            )
        )
    else:
        print(pinned)
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# kitpin pin

PIN_DESCRIPTION: Final = """\
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
"""

MANIFEST_SUFFIXES: Final = (".yaml", ".yml", ".json")
PIN_CONCURRENCY: Final = 16
"""Registry requests in flight at once; identical references cost one request anyway."""
STDIN: Final = "-"
STDIN_NAME: Final = "<stdin>"


def _add_input_flags(p: argparse.ArgumentParser) -> None:
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
        help="kitpin settings YAML: its sites (env names, kit CLI images, extra sites) and "
        "deadlineSeconds apply (for check, ignoredNamespaces too), so kitpin finds what the "
        "webhook with those settings finds",
    )


def _add_resolution_flags(p: argparse.ArgumentParser) -> None:
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
    _add_registry_flags(p)


def _add_manifest_parser(
    sub: Any, name: str, *, summary: str, description: str
) -> argparse.ArgumentParser:
    """The parser of a command that reads Kubernetes YAML, with its input flags."""
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_input_flags(p)
    return p


def _add_pin_parser(sub: Any) -> None:
    p = _add_manifest_parser(
        sub,
        "pin",
        summary="pin every ModelKit reference in Kubernetes YAML (files, directories, stdin)",
        description=PIN_DESCRIPTION,
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
    _add_resolution_flags(p)


@dataclass(frozen=True, kw_only=True)
class _Input:
    name: str
    """The name in messages: the path as given (joined with the directory), or <stdin>."""
    path: Path | None
    """None for stdin."""


def _collect_inputs(given: Sequence[str], *, recursive: bool) -> list[_Input]:
    names: list[str] = list(given)
    if not names:
        if sys.stdin is None or sys.stdin.isatty():
            raise manifests.ManifestError(
                "no input: give -f FILE, -f DIR or -f -, or pipe manifests to stdin "
                "(as helm's --post-renderer does)"
            )
        names = [STDIN]
    inputs: list[_Input] = []
    for name in names:
        if name == STDIN:
            if any(i.path is None for i in inputs):
                raise manifests.ManifestError("-f - (stdin) is given more than once")
            inputs.append(_Input(name=STDIN_NAME, path=None))
            continue
        path = Path(name)
        if path.is_dir():
            found = sorted(
                p
                for p in (path.rglob("*") if recursive else path.iterdir())
                if p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file()
            )
            inputs.extend(_Input(name=str(p), path=p) for p in found)
        elif path.exists():
            inputs.append(_Input(name=name, path=path))
        else:
            raise manifests.ManifestError(f"{name}: no such file or directory")
    unique: dict[object, _Input] = {}
    for source in inputs:  # a file named twice (-f dir -f dir/a.yaml) is read once
        unique.setdefault(source.path.resolve() if source.path else None, source)
    return list(unique.values())


def _read(source: _Input) -> str:
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


def _load_manifests(
    args: argparse.Namespace,
    site_settings: sites.SitesSettings | None,
    *,
    names: Sequence[str] | None = None,
) -> list[tuple[_Input, manifests.Manifest]]:
    """Read and scan every input (``names``, by default the ``-f`` inputs; ``-R`` applies to
    both); the first unreadable or invalid one raises."""
    inputs = _collect_inputs(args.filename if names is None else names, recursive=args.recursive)
    return [
        (source, manifests.scan(_read(source), source=source.name, settings=site_settings))
        for source in inputs
    ]


def _load_settings(args: argparse.Namespace) -> settings.Settings:
    return settings.load_settings_file(args.settings) if args.settings else settings.Settings()


def _deadline(args: argparse.Namespace, config: settings.Settings) -> float:
    """Seconds one reference may take: ``--deadline``, else the settings' deadlineSeconds."""
    if args.deadline is not None and not args.deadline > 0:
        raise errors.ConfigError("--deadline must be > 0 seconds")
    return float(args.deadline) if args.deadline is not None else config.resolver.deadline


@dataclass(frozen=True, kw_only=True)
class _Access:
    """How a command reaches the registries: host policy, credentials, deadline."""

    hosts: HostPolicy
    keychain: Keychain | None
    resolver: ResolverSettings
    deadline: float

    def credential(self, ref: refs.Reference) -> Credential | None:
        if self.keychain is None:
            return None
        return self.keychain.lookup(ref.registry, repository=ref.repository)


def _registry_access(
    args: argparse.Namespace,
    config: settings.Settings,
    deadline: float,
    references: Iterable[refs.Reference],
) -> _Access:
    """The registry flags (``--plain-http`` for every registry ``references`` name)."""
    registries = sorted({ref.registry for ref in references}) if args.plain_http else []
    hosts, keychain = settings.registry_access(
        registry_config=args.registry_config,
        docker_config=args.docker_config,
        plain_http=[*registries, *args.plain_http_registry],
    )
    return _Access(
        hosts=hosts,
        keychain=keychain,
        resolver=replace(config.resolver, deadline=deadline),
        deadline=deadline,
    )


@contextlib.asynccontextmanager
async def _registry(access: _Access) -> AsyncIterator[tuple[RegistryClient, Resolver]]:
    """One registry client and one resolver (a cache and single-flight) for the whole run."""
    from controller.registry.client import RegistryClient
    from controller.resolver import Resolver

    async with RegistryClient(access.hosts) as client:
        resolver = Resolver(client, settings=access.resolver)
        try:
            yield client, resolver
        finally:
            await resolver.aclose()


async def _resolve_all(
    resolver: Resolver, references: Sequence[refs.Reference], access: _Access
) -> list[Resolution | errors.RegistryError]:
    """Resolve every reference, one registry request per distinct reference and credential,
    at most PIN_CONCURRENCY at once, each within ``access.deadline`` seconds."""
    limit = asyncio.Semaphore(PIN_CONCURRENCY)

    async def one(ref: refs.Reference) -> Resolution | errors.RegistryError:
        async with limit:
            try:
                return await resolver.resolve(
                    ref, credential=access.credential(ref), deadline=access.deadline
                )
            except errors.RegistryError as e:
                return e

    unique = {ref.canonical: ref for ref in references}
    results = await asyncio.gather(*(one(ref) for ref in unique.values()))
    by_reference = dict(zip(unique, results, strict=True))
    return [by_reference[ref.canonical] for ref in references]


async def _resolve_pins(
    pins: Sequence[manifests.Pin], access: _Access
) -> list[Resolution | errors.RegistryError]:
    async with _registry(access) as (_, resolver):
        return await _resolve_all(resolver, [pin.ref for pin in pins], access)


def _not_a_modelkit(pin: manifests.Pin, resolution: Resolution) -> str | None:
    """The webhook denies non-ModelKits where a ModelKit is expected: so does pin."""
    manifest = resolution.manifest
    if not pin.located.site.expects_modelkit or manifest.format in pinning.MODEL_FORMATS:
        return None
    if (
        manifest.format == "oci-index"
        and manifest.artifact_type == pinning.KITOPS_INDEX_ARTIFACT_TYPE
    ):
        return None
    return (
        f"resolves to {resolution.digest}, which is not a KitOps ModelKit or ModelPack "
        f"({manifest.format}, config media type {manifest.config_media_type or 'unknown'!r}); "
        "this field expects one: point it at the ModelKit's repository and tag"
    )


def _warn(message: str) -> None:
    print(f"kitpin: warning: {message}", file=sys.stderr)


def _fail(message: str) -> None:
    print(f"kitpin: error: {message}", file=sys.stderr)


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


def _pin(args: argparse.Namespace) -> int:
    if args.in_place and (not args.filename or STDIN in args.filename):
        raise manifests.ManifestError(
            "--in-place rewrites files: give them with -f (stdin is printed to stdout)"
        )
    config = _load_settings(args)
    deadline = _deadline(args, config)
    loaded = _load_manifests(args, config.admission.sites)

    for _, manifest in loaded:
        for u in manifest.unresolvable:
            _warn(f"{u}; kitpin cannot pin a value it cannot see")
    plans = [manifests.plan(m) for _, m in loaded]
    for p in plans:
        for located, reason in p.kept:
            logger.debug("%s: left as it is (%s)", located, reason)
    problems = [problem for p in plans for problem in p.problems]
    pins = [(n, pin) for n, p in enumerate(plans) for pin in p.pins]

    failures: list[str] = [f"{problem}" for problem in problems]
    edits: dict[int, list[manifests.Edit]] = {}
    if pins:
        access = _registry_access(args, config, deadline, (pin.ref for _, pin in pins))
        results = asyncio.run(_resolve_pins([pin for _, pin in pins], access))
        for (n, pin), result in zip(pins, results, strict=True):
            if isinstance(result, errors.RegistryError):
                failures.append(
                    f"{pin.located}: cannot pin '{pin.located.site.value}': "
                    f"{result.reason}: {result}"
                )
                continue
            problem = _not_a_modelkit(pin, result)
            if problem is not None:
                failures.append(f"{pin.located}: '{pin.located.site.value}' {problem}")
                continue
            edits.setdefault(n, []).append(manifests.edit(pin, result.digest))

    for message in failures:
        _fail(message)
    code = EXIT_USAGE if problems else EXIT_FAILED if failures else EXIT_OK
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


# ---------------------------------------------------------------------------------------
# kitpin check

CHECK_DESCRIPTION: Final = """\
Evaluate ModelKit policies (ClusterModelKitPolicy and ModelKitPolicy objects, read from the
--policy files) against Kubernetes YAML without changing it: the same evaluation, with the
same messages, as kitpin's validating webhook. Every violation is printed with its file,
line, document, object, JSON path and rule; the exit code says whether the webhook would
admit the objects (for CI: fail a pull request that names a ModelKit by a denied tag).

Input: -f FILE, -f DIR (-R for subdirectories) or -f - for stdin, repeatable, as for `kitpin
pin`. Every reference is checked, including ones that already carry a digest.

Namespaces: each object is checked in its metadata.namespace, else --namespace, else
`default`; a ModelKitPolicy without metadata.namespace belongs to that same namespace. A
ClusterModelKitPolicy's namespaceSelector is matched against --namespace-labels, plus
kubernetes.io/metadata.name=<namespace>, which Kubernetes sets on every namespace. Objects
in namespaces the webhook ignores (kube-system, kube-public, kube-node-lease, settings
ignoredNamespaces, label kitpin.dev/ignore=true) are skipped, as the webhook skips them.

--offline asks no registry: rules on the references themselves (repositories.*, tags.*) are
evaluated; artifact and parent rules need the manifest or the Kitfile and are reported as
not checked, without failing, and a non-ModelKit where a ModelKit is expected goes unnoticed.
Without --offline, a reference is resolved where a ModelKit is expected or where a policy
reads the artifact, and its Kitfile is read only when a rule needs it; a registry that cannot
answer is an error (exit 1): the check could not complete.

Exit codes: 0 no enforce-mode violation and no error (warn and audit violations are printed
but pass); 1 an enforce-mode violation, an invalid reference, a non-ModelKit where a ModelKit
is expected, or a registry failure; 2 usage, an invalid policy, unreadable or invalid YAML.
"""

DEFAULT_NAMESPACE: Final = "default"
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
"""The label Kubernetes puts on every namespace, holding its name."""


def _add_check_parser(sub: Any) -> None:
    p = _add_manifest_parser(
        sub,
        "check",
        summary="evaluate ModelKit policies against Kubernetes YAML (for CI); changes nothing",
        description=CHECK_DESCRIPTION,
    )
    p.add_argument(
        "--policy",
        metavar="FILE|DIR",
        action="append",
        default=[],
        help="ClusterModelKitPolicy/ModelKitPolicy YAML (several documents, or a kind: List as "
        "kubectl get prints), or a directory of such files (repeatable; -R for subdirectories)",
    )
    p.add_argument(
        "-n",
        "--namespace",
        metavar="NS",
        default=None,
        help="namespace of objects and ModelKitPolicies that do not name one (default: default)",
    )
    p.add_argument(
        "--namespace-labels",
        metavar="KEY=VALUE,...",
        action="append",
        default=[],
        help="labels of the namespaces, for the namespaceSelector of cluster policies "
        "(repeatable; kubernetes.io/metadata.name=<namespace> is always added)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="ask no registry: check only rules on the references themselves (repositories, "
        "tags, requireDigest); the others are reported as not checked",
    )
    p.add_argument(
        "--output",
        "-o",
        choices=("text", "json"),
        default="text",
        help="text: one line per finding and a summary (default); json: one object",
    )
    _add_resolution_flags(p)


def _namespace_labels(given: Sequence[str]) -> dict[str, str]:
    """``--namespace-labels team=ml,env=prod`` (repeatable) as a mapping."""
    labels: dict[str, str] = {}
    for text in given:
        for item in text.split(","):
            key, eq, value = item.strip().partition("=")
            if not eq or not key.strip():
                raise errors.ConfigError(
                    f"--namespace-labels {text!r}: {item.strip()!r} is not KEY=VALUE "
                    "(write team=ml,env=prod)"
                )
            labels[key.strip()] = value.strip()
    return labels


def _policy_documents(obj: object) -> list[object]:
    """A document, or the items of a ``kind: List`` (what ``kubectl get cmkp -o yaml`` prints)."""
    if (
        isinstance(obj, Mapping)
        and obj.get("kind") == "List"
        and isinstance(obj.get("items"), list)
    ):
        return list(obj["items"])
    return [obj]


def _load_policies(args: argparse.Namespace) -> tuple[tuple[policy.Policy, ...], list[str]]:
    """The policies of the ``--policy`` files, and every problem found in them (with file and
    line, and the field the parser names)."""
    if STDIN in args.policy:
        raise manifests.ManifestError(
            "--policy - : policies are read from files or directories, not from stdin"
        )
    loaded = _load_manifests(args, None, names=args.policy)
    default_namespace = args.namespace or DEFAULT_NAMESPACE
    found: dict[policy.PolicyRef, tuple[str, policy.Policy]] = {}
    problems: list[str] = []
    for source, manifest in loaded:
        for document in manifest.documents:
            at = f"{source.name}:{document.line}"
            try:
                parsed = policy.parse_policies(
                    _policy_documents(document.obj), default_namespace=default_namespace
                )
            except errors.ConfigError as e:
                problems.append(f"{at}: {e}")
                continue
            for p in parsed:
                first = found.get(p.ref)
                if first is not None:
                    problems.append(
                        f"{at}: {p.display} is defined twice (first at {first[0]}); a cluster "
                        "holds one object per name"
                    )
                    continue
                found[p.ref] = (at, p)
    if not found and not problems:
        problems.append(
            f"no {policy.CLUSTER_KIND} or {policy.NAMESPACED_KIND} (apiVersion "
            f"{policy.API_VERSION}) in --policy {' '.join(args.policy)}"
        )
    return tuple(p for _, p in found.values()), problems


@dataclass(kw_only=True)
class _Checked:
    """One reference of a reviewed object, and what the registry said about it."""

    located: manifests.Located
    ref: refs.Reference | None
    """None when the text is not a valid reference (``problems`` says why)."""
    applicable: tuple[policy.Policy, ...]
    resolve: bool = False
    resolution: Resolution | None = None
    config: Mapping[str, Any] | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)
    """(reason, message) of each error: invalid, not a ModelKit, registry failures."""


@dataclass(frozen=True, kw_only=True)
class _Reviewed:
    """One object with references, checked as the validating webhook reviews it."""

    order: int
    """Index of its input (output follows the input order)."""
    kind: str
    name: str | None
    namespace: str
    labels: Mapping[str, str]
    applicable: tuple[policy.Policy, ...]
    references: tuple[_Checked, ...]

    def finding(self, located: manifests.Located, text: str, **details: object) -> _Finding:
        """A finding at ``located``: where it is (the fields every finding has), then
        ``details``; ``text`` is what its text line says after the location."""
        where = {
            "file": located.source,
            "line": located.line,
            "document": located.document + 1,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "path": located.pointer,
            "where": located.site.where,
            "reference": located.site.value,
        }
        return _Finding(
            order=(self.order, located.document, located.line, located.column),
            fields={**where, **details},
            text=text,
        )


def _identity(document: object, base: str) -> tuple[str, str | None, str | None]:
    """Kind, name and namespace of the object at ``base`` (the document, or a list item; an
    item of a typed list such as DeploymentList takes its kind from the list)."""
    item = sites.get(document, base)
    obj: Mapping[str, Any] = item if isinstance(item, Mapping) else {}
    kind = obj.get("kind")
    if not isinstance(kind, str) and "/items/" in base:
        parent = sites.get(document, base[: base.rfind("/items/")])
        list_kind = parent.get("kind") if isinstance(parent, Mapping) else None
        kind = list_kind.removesuffix("List") if isinstance(list_kind, str) else None
    metadata = obj.get("metadata")
    meta: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
    name, namespace = meta.get("name"), meta.get("namespace")
    return (
        kind if isinstance(kind, str) and kind else "object",
        name if isinstance(name, str) and name else None,
        namespace if isinstance(namespace, str) and namespace else None,
    )


def _review(
    loaded: Sequence[tuple[_Input, manifests.Manifest]],
    policies: Sequence[policy.Policy],
    *,
    namespace: str,
    labels: Mapping[str, str],
    ignored_namespaces: frozenset[str],
    offline: bool,
) -> tuple[list[_Reviewed], int]:
    """Every object that has references, with the policies that apply to it and which of its
    references need the registry; and how many objects were skipped (ignored namespaces)."""
    reviewed: list[_Reviewed] = []
    skipped = 0
    for order, (_, manifest) in enumerate(loaded):
        for document in manifest.documents:
            by_object: dict[str, list[manifests.Located]] = {}
            for located in document.located:
                base = located.pointer[: len(located.pointer) - len(located.site.path)]
                by_object.setdefault(base, []).append(located)
            for base, located_sites in by_object.items():
                kind, name, own_namespace = _identity(document.obj, base)
                ns = own_namespace or namespace
                ns_labels = {**labels, NAMESPACE_NAME_LABEL: ns}
                if ns in ignored_namespaces or ns_labels.get(pinning.IGNORE_LABEL) == "true":
                    logger.info("%s: skipped: namespace %s is ignored", located_sites[0], ns)
                    skipped += 1
                    continue
                applicable = policy.matching(policies, namespace=ns, namespace_labels=ns_labels)
                reads_artifact = not offline and policy.needs_resolution(applicable)
                checked: list[_Checked] = []
                for located in located_sites:
                    site = located.site
                    try:
                        ref = refs.parse(site.reference_text, grammar=site.grammar)
                    except errors.ReferenceError as e:
                        checked.append(
                            _Checked(
                                located=located,
                                ref=None,
                                applicable=applicable,
                                problems=[(e.reason, str(e))],
                            )
                        )
                        continue
                    resolve = not offline and (site.expects_modelkit or reads_artifact)
                    checked.append(
                        _Checked(located=located, ref=ref, applicable=applicable, resolve=resolve)
                    )
                reviewed.append(
                    _Reviewed(
                        order=order,
                        kind=kind,
                        name=name,
                        namespace=ns,
                        labels=ns_labels,
                        applicable=applicable,
                        references=tuple(checked),
                    )
                )
    return reviewed, skipped


async def _look_up(wanted: Sequence[_Checked], access: _Access) -> None:
    """Resolve ``wanted`` (deduplicated, concurrently, within the deadline), flag
    non-ModelKits where a ModelKit is expected, and read the config blob (Kitfile) of those
    whose policies need it (:func:`policy.needs_config`); failures go into ``problems``."""
    from controller.resolver import ConfigCache

    async with _registry(access) as (client, resolver):
        references = [c.ref for c in wanted if c.ref is not None]
        results = await _resolve_all(resolver, references, access)
        for checked, result in zip(wanted, results, strict=True):
            value = checked.located.site.value
            if isinstance(result, errors.RegistryError):
                checked.problems.append((result.reason, f"cannot check '{value}': {result}"))
                continue
            checked.resolution = result
            assert checked.ref is not None
            problem = _not_a_modelkit(
                manifests.Pin(located=checked.located, ref=checked.ref), result
            )
            if problem is not None:
                checked.problems.append((pinning.Reason.NOT_A_MODELKIT, f"'{value}' {problem}"))

        configs = ConfigCache(client)
        limit = asyncio.Semaphore(PIN_CONCURRENCY)

        async def read_config(
            checked: _Checked, ref: refs.Reference, resolution: Resolution
        ) -> None:
            value = checked.located.site.value
            async with limit:
                try:
                    async with asyncio.timeout(access.deadline):
                        checked.config = await configs.get_config(
                            ref, resolution.manifest, credential=access.credential(ref)
                        )
                except TimeoutError:
                    checked.problems.append(
                        (
                            errors.RegistryTimeoutError.reason,
                            f"reading the Kitfile of '{value}' took longer than the "
                            f"{access.deadline:g}s deadline",
                        )
                    )
                except errors.RegistryError as e:
                    checked.problems.append(
                        (e.reason, f"cannot read the Kitfile of '{value}': {e}")
                    )

        await asyncio.gather(
            *(
                read_config(c, c.ref, c.resolution)
                for c in wanted
                if c.ref is not None
                and c.resolution is not None
                and policy.needs_config(c.applicable, c.resolution.manifest)
            )
        )


@dataclass(frozen=True, kw_only=True)
class _Finding:
    order: tuple[int, int, int, int]
    fields: dict[str, Any]
    text: str
    """What the text line says after the location."""

    @property
    def line(self) -> str:
        f = self.fields
        obj = f"{f['kind']}/{f['name']}" if f["name"] else f["kind"]
        return f"{f['file']}:{f['line']}: doc {f['document']} {obj} {f['path']}: {self.text}"


@dataclass(kw_only=True)
class _Report:
    violations: list[_Finding] = field(default_factory=list)
    errors: list[_Finding] = field(default_factory=list)
    unchecked: list[_Finding] = field(default_factory=list)


def _rule_finding(
    obj: _Reviewed,
    at: Mapping[str, manifests.Located],
    item: policy.Violation | policy.Unchecked,
    tag: str,
    text: str,
    *,
    message: str,
) -> _Finding:
    """A violation (with its reason) or a rule not checked: policy, rule, mode, message."""
    details: dict[str, object] = {"policy": str(item.policy), "rule": item.rule}
    if isinstance(item, policy.Violation):
        details["reason"] = item.reason
    return obj.finding(
        at[item.path],
        f"[{tag}] {item.policy} rule {item.rule}: {text}",
        **details,
        mode=item.mode,
        message=message,
    )


def _findings(objects: Sequence[_Reviewed], *, offline: bool) -> _Report:
    """Evaluate every object's policies (:func:`policy.evaluate`, as the webhook does) and
    turn violations, errors and rules not checked into findings, in input order."""
    report = _Report()
    for obj in objects:
        for checked in obj.references:
            for reason, message in checked.problems:
                report.errors.append(
                    obj.finding(
                        checked.located,
                        f"[error] {reason}: {message}",
                        reason=reason,
                        message=message,
                    )
                )
        evidence = [
            policy.Evidence(
                site=c.located.site, reference=c.ref, resolution=c.resolution, config=c.config
            )
            for c in obj.references
            if c.ref is not None
        ]
        if not obj.applicable or not evidence:
            continue
        verdict = policy.evaluate(
            obj.applicable, namespace=obj.namespace, namespace_labels=obj.labels, evidence=evidence
        )
        at = {c.located.site.path: c.located for c in obj.references}
        for v in verdict.violations:
            said = v.message.removeprefix(f"{v.policy} rule {v.rule}: ")
            report.violations.append(_rule_finding(obj, at, v, v.mode, said, message=v.message))
        note = " (offline)" if offline else ""
        for u in verdict.unchecked:
            text = f"not checked{note}: {u.why}"
            report.unchecked.append(_rule_finding(obj, at, u, "unchecked", text, message=u.why))
    for findings in (report.violations, report.errors, report.unchecked):
        findings.sort(key=lambda f: f.order)
    return report


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _check(args: argparse.Namespace) -> int:
    config = _load_settings(args)
    deadline = _deadline(args, config)
    labels = _namespace_labels(args.namespace_labels)
    policies: tuple[policy.Policy, ...] = ()
    if args.policy:
        policies, problems = _load_policies(args)
        for problem in problems:
            print(f"kitpin: invalid policy: {problem}", file=sys.stderr)
        if problems:
            return EXIT_USAGE
    loaded = _load_manifests(args, config.admission.sites)
    objects, skipped = _review(
        loaded,
        policies,
        namespace=args.namespace or DEFAULT_NAMESPACE,
        labels=labels,
        ignored_namespaces=config.admission.ignored_namespaces,
        offline=args.offline,
    )
    wanted = [c for obj in objects for c in obj.references if c.resolve]
    if wanted:
        access = _registry_access(args, config, deadline, (c.ref for c in wanted if c.ref))
        asyncio.run(_look_up(wanted, access))
    report = _findings(objects, offline=args.offline)
    unresolvable = [
        {
            "file": u.source,
            "line": u.line,
            "document": document.index + 1,
            "object": u.obj,
            "path": u.unresolvable.path,
            "where": u.unresolvable.where,
            "message": u.unresolvable.why,
        }
        for _, manifest in loaded
        for document in manifest.documents
        for u in document.unresolvable
    ]

    modes: dict[str, int] = {
        mode: sum(f.fields["mode"] == mode for f in report.violations) for mode in policy.MODES
    }
    code = EXIT_FAILED if modes["enforce"] or report.errors else EXIT_OK
    references = sum(len(obj.references) for obj in objects)
    summary: dict[str, object] = {
        "violations": len(report.violations),
        **modes,
        "errors": len(report.errors),
        "unchecked": len(report.unchecked),
        "objects": len(objects),
        "references": references,
        "skipped": skipped,
        "policies": len(policies),
        "offline": bool(args.offline),
        "exitCode": code,
    }
    if args.output == "json":
        print(
            json.dumps(
                {
                    "violations": [f.fields for f in report.violations],
                    "errors": [f.fields for f in report.errors],
                    "unchecked": [f.fields for f in report.unchecked],
                    "unresolvable": unresolvable,
                    "summary": summary,
                },
                indent=2,
            )
        )
        return code

    for u in unresolvable:
        _warn(f"{u['file']}:{u['line']}: {u['object']}: {u['where']}: {u['message']}")
    for finding in sorted([*report.violations, *report.errors], key=lambda f: f.order):
        print(finding.line)
    for finding in report.unchecked:
        print(finding.line)
    text = (
        f"{_plural(len(report.violations), 'violation')} ({modes['enforce']} enforce, "
        f"{modes['warn']} warn, {modes['audit']} audit) in {_plural(len(objects), 'object')}; "
        f"{_plural(references, 'reference')} checked"
    )
    if report.errors:
        text += f"; {_plural(len(report.errors), 'error')}"
    if report.unchecked:
        text += f"; {len(report.unchecked)} not checked{' (offline)' if args.offline else ''}"
    if skipped:
        text += f"; {_plural(skipped, 'object')} in ignored namespaces skipped"
    print(text)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
