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
        "configurations of its own (dev-<port>.kitpin.dev, deleted on exit), in the cluster "
        "of $KUBECONFIG, else of .dev/env (make dev-up)",
    )
    r.add_argument(
        "--settings",
        metavar="FILE",
        help="kitpin settings YAML (every key, its default and meaning: docs/settings.md)",
    )
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
    arm = r.add_argument_group(
        "arming",
        "the chart renders its webhook configurations fail-open (failurePolicy: Ignore); "
        "once serving, kitpin sets the policy they ask for (docs/install.md)",
    )
    arm.add_argument(
        "--arm-webhooks",
        metavar="NAME[,NAME]",
        action="append",
        default=[],
        help="once serving, set failurePolicy of every webhook in the Mutating- and "
        "ValidatingWebhookConfigurations of these names (repeatable), and keep it set",
    )
    arm.add_argument(
        "--arm-failure-policy",
        choices=["Fail", "Ignore"],
        default="Fail",
        help="the policy for configurations without a kitpin.dev/failure-policy annotation "
        "(default Fail)",
    )
    arm.add_argument(
        "--arm-service",
        metavar="NAME",
        default=None,
        help="arm only once this Service in kitpin's namespace has a ready endpoint",
    )
    arm.add_argument(
        "--arm-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="check the armed configurations again this often (a helm upgrade sets them back "
        "to Ignore; default 10)",
    )


def run(args: argparse.Namespace) -> int:
    from controller import operator  # kopf is only imported by the commands that run it

    return operator.run(args)
