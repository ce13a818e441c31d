"""``kitpin run``: the admission webhooks (:mod:`controller.operator`; ``--dev`` for a local
cluster). kopf is imported only when this command runs."""

from __future__ import annotations

import argparse
from typing import Any

from controller.cli import common


def add_parser(sub: Any) -> None:
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
    common.add_registry_flags(r)
    r.add_argument("--listen", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    r.add_argument("--port", type=int, default=8443, help="webhook HTTPS port (default 8443)")
    r.add_argument("--tls-cert", metavar="FILE", help="serving certificate (PEM)")
    r.add_argument("--tls-key", metavar="FILE", help="serving key (PEM)")
    r.add_argument(
        "--client-ca",
        metavar="FILE",
        help="require a client certificate signed by this CA (PEM) on the webhook port: the "
        "one the apiserver presents to webhooks, so no other client can submit reviews "
        "(docs/security.md; settings: server.clientCAFile)",
    )
    r.add_argument(
        "--client-name",
        metavar="NAME",
        action="append",
        default=[],
        help="with --client-ca: the certificate's CN or a DNS name must be NAME (repeatable)",
    )
    r.add_argument(
        "--probe-port",
        type=int,
        default=None,
        metavar="PORT",
        help="also serve /healthz, /readyz and /metrics (only) on this plain HTTP port, for "
        "kubelet probes and Prometheus when --client-ca is set (default: none)",
    )
    r.add_argument(
        "--namespace",
        default=None,
        help="the controller's own namespace (never admitted through kitpin)",
    )


def run(args: argparse.Namespace) -> int:
    from controller import operator  # kopf is only imported by the commands that run it

    return operator.run(args)
