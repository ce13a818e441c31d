"""The ``kitpin`` command line.

    kitpin resolve REF      print the pinned form of one reference
    kitpin pin [-f FILE]    pin every ModelKit reference in Kubernetes YAML (files, directories,
                            stdin; a Helm post-renderer with no -f)
    kitpin run              run the admission webhooks (``--dev`` for a local cluster)

Exit codes: 0 success; 1 a resolution or runtime failure (the message names the cause and what
to do); 2 invalid input or usage (including YAML that does not parse and invalid references).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from controller import errors, manifests, pinning, refs, settings

if TYPE_CHECKING:
    from controller import sites
    from controller.registry.credentials import Keychain
    from controller.registry.hosts import HostPolicy
    from controller.resolver import Resolution, ResolverSettings

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
    # `kitpin check` (the policy issue) goes here: _add_input_flags + _add_registry_flags for
    # its parser, _load_manifests to read and scan the inputs, manifests.plan for the sites,
    # and _resolve_pins for the digests; then controller.policy decides per reference.

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
    quiet = {"run": logging.INFO, "pin": logging.ERROR}.get(args.command, logging.WARNING)
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
        "deadlineSeconds apply, so pin finds what the webhook with those settings finds",
    )


def _add_pin_parser(sub: Any) -> None:
    p = sub.add_parser(
        "pin",
        help="pin every ModelKit reference in Kubernetes YAML (files, directories, stdin)",
        description=PIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_input_flags(p)
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


@dataclass(frozen=True, kw_only=True)
class _Input:
    name: str
    """The name in messages: the path as given (joined with the directory), or <stdin>."""
    path: Path | None
    """None for stdin."""


def _collect_inputs(args: argparse.Namespace) -> list[_Input]:
    names: list[str] = list(args.filename)
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
                for p in (path.rglob("*") if args.recursive else path.iterdir())
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
    args: argparse.Namespace, site_settings: sites.SitesSettings
) -> list[tuple[_Input, manifests.Manifest]]:
    """Read and scan every input; the first unreadable or invalid one raises."""
    return [
        (source, manifests.scan(_read(source), source=source.name, settings=site_settings))
        for source in _collect_inputs(args)
    ]


def _load_settings(args: argparse.Namespace) -> settings.Settings:
    return settings.load_settings_file(args.settings) if args.settings else settings.Settings()


async def _resolve_pins(
    pins: Sequence[manifests.Pin],
    *,
    policy: HostPolicy,
    keychain: Keychain | None,
    resolver_settings: ResolverSettings,
    deadline: float,
) -> list[Resolution | errors.RegistryError]:
    """Resolve every pin, one registry request per distinct reference and credential (one
    resolver for the whole run: a cache and single-flight), at most PIN_CONCURRENCY at once,
    each within ``deadline`` seconds."""
    from controller.registry.client import RegistryClient
    from controller.resolver import Resolver

    limit = asyncio.Semaphore(PIN_CONCURRENCY)
    async with RegistryClient(policy) as client:
        resolver = Resolver(client, settings=resolver_settings)

        async def one(ref: refs.Reference) -> Resolution | errors.RegistryError:
            credential = (
                keychain.lookup(ref.registry, repository=ref.repository) if keychain else None
            )
            async with limit:
                try:
                    return await resolver.resolve(ref, credential=credential, deadline=deadline)
                except errors.RegistryError as e:
                    return e

        unique = {pin.ref.canonical: pin.ref for pin in pins}
        results = await asyncio.gather(*(one(ref) for ref in unique.values()))
        by_reference = dict(zip(unique, results, strict=True))
        await resolver.aclose()
    return [by_reference[pin.ref.canonical] for pin in pins]


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
    if args.deadline is not None and not args.deadline > 0:
        raise errors.ConfigError("--deadline must be > 0 seconds")
    config = _load_settings(args)
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
        registries = sorted({pin.ref.registry for _, pin in pins}) if args.plain_http else []
        policy, keychain = settings.registry_access(
            registry_config=args.registry_config,
            docker_config=args.docker_config,
            plain_http=[*registries, *args.plain_http_registry],
        )
        deadline = args.deadline if args.deadline is not None else config.resolver.deadline
        results = asyncio.run(
            _resolve_pins(
                [pin for _, pin in pins],
                policy=policy,
                keychain=keychain,
                resolver_settings=replace(config.resolver, deadline=deadline),
                deadline=deadline,
            )
        )
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
