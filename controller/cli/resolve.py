"""``kitpin resolve REF``: resolve one reference and print its pinned form (the tag kept)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from controller import refs, settings
from controller.cli import common


def add_parser(sub: Any) -> None:
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
    common.add_registry_flags(p)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_resolve(args))


async def _resolve(args: argparse.Namespace) -> int:
    from controller.registry.client import RegistryClient
    from controller.resolver import Resolver

    ref = refs.parse(args.reference, grammar=args.grammar)
    hosts, keychain = settings.registry_access(
        registry_config=args.registry_config,
        docker_config=args.docker_config,
        plain_http=[ref.registry] if args.plain_http else [],
    )
    credential = keychain.lookup(ref.registry, repository=ref.repository) if keychain else None
    async with RegistryClient(hosts) as client:
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
    return common.EXIT_OK
