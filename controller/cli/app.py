"""The ``kitpin`` console script: the argument parser and the dispatch to one module per
command (:mod:`.resolve`, :mod:`.pin`, :mod:`.check`, :mod:`.run`).

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
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from controller import errors, manifests
from controller.cli import check, common, pin, resolve, run

COMMANDS: Final[dict[str, Callable[[argparse.Namespace], int]]] = {
    "resolve": resolve.run,
    "pin": pin.run,
    "check": check.run,
    "run": run.run,
}
"""Each command's entry point, by name (in ``--help`` order)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        print(f"kitpin: error: {message}", file=sys.stderr)
        raise SystemExit(common.EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kitpin",
        description="Pin KitOps ModelKit references to verified sha256 digests.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    resolve.add_parser(sub)
    pin.add_parser(sub)
    check.add_parser(sub)
    run.add_parser(sub)
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
    command = COMMANDS.get(args.command)
    if command is None:
        return common.EXIT_USAGE
    try:
        return command(args)
    except errors.ReferenceError as e:
        print(f"kitpin: invalid reference: {e}", file=sys.stderr)
        return common.EXIT_USAGE
    except errors.ConfigError as e:
        print(f"kitpin: invalid configuration: {e}", file=sys.stderr)
        return common.EXIT_USAGE
    except manifests.ManifestError as e:
        print(f"kitpin: {e}", file=sys.stderr)
        return common.EXIT_USAGE
    except errors.RegistryError as e:
        # The CLI's advice names its flags; `run` keeps the webhook's words, for its operator.
        shown = e if args.command == "run" else common.for_cli(e, plain_http_registry=False)
        print(f"kitpin: {e.reason}: {shown}", file=sys.stderr)
        return common.EXIT_FAILED
