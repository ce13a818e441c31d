"""The ``kitpin`` command line.

    kitpin resolve REF      print the pinned form of one reference
    kitpin run              run the admission webhooks (``--dev`` for a local cluster)

Exit codes: 0 success; 1 a resolution or runtime failure (the message names the cause and what
to do); 2 invalid input or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from controller import errors, refs, settings

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
    quiet = logging.INFO if args.command == "run" else logging.WARNING
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else quiet,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        if args.command == "resolve":
            return asyncio.run(_resolve(args))
        if args.command == "run":
            from controller import operator  # kopf is only imported by the commands that run it

            return operator.run(args)
    except errors.ReferenceError as e:
        print(f"kitpin: invalid reference: {e}", file=sys.stderr)
        return EXIT_USAGE
    except errors.ConfigError as e:
        print(f"kitpin: invalid configuration: {e}", file=sys.stderr)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
