"""`kitpin run`: wire settings → registry client → resolver → engine → kopf handlers → server.

Production (the Helm chart): every replica serves the webhooks behind one Service with one
certificate; the chart owns the webhook configurations (namespaceSelector, timeoutSeconds,
reinvocationPolicy), so kopf does not manage them, and replicas run ``standalone`` (admission
needs no peering).

``--dev``: serve on 127.0.0.1 with generated certificates and let kopf create the webhook
configurations (named ``kitpin.dev``) in the cluster of the current kubeconfig. With a
``.dev/env`` from `make dev-up`, the dev registry is trusted over plain HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import kopf

from controller import audit, devcerts, kubecreds, pinning, server, settings, webhook
from controller import metrics as metrics_mod
from controller.registry.client import RegistryClient
from controller.resolver import ConfigCache, Resolver

logger = logging.getLogger(__name__)

MANAGED_CONFIG_NAME = "kitpin.dev"


def _own_namespace(args: argparse.Namespace) -> str | None:
    if args.namespace:
        return str(args.namespace)
    env = os.environ.get("POD_NAMESPACE")
    if env:
        return env
    sa_ns = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return sa_ns.read_text().strip() if sa_ns.exists() else None


def _kube_api_client() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def run(args: argparse.Namespace) -> int:
    loaded = settings.load_settings_file(args.settings) if args.settings else settings.Settings()
    plain = list(args.plain_http_registry)
    if args.dev:
        dev_registry = settings.dev_registry()
        if dev_registry:
            plain.append(dev_registry)
            logger.info("dev: trusting the dev registry %s over plain HTTP", dev_registry)
    policy, keychain = settings.registry_access(
        registry_config=args.registry_config,
        docker_config=args.docker_config,
        plain_http=plain,
    )
    admission = loaded.admission
    own = _own_namespace(args)
    if own:
        admission = dataclasses.replace(
            admission, ignored_namespaces=admission.ignored_namespaces | {own}
        )

    if args.dev:
        certs = devcerts.write_dev_certificates(
            Path(tempfile.mkdtemp(prefix="kitpin-dev-")), hosts=("127.0.0.1", "localhost")
        )
        cert_file, key_file, ca_file = certs.cert_file, certs.key_file, certs.ca_file
        listen, host = "127.0.0.1", "127.0.0.1"
    else:
        if not (args.tls_cert and args.tls_key):
            print("kitpin run: --tls-cert and --tls-key are required (or --dev)")
            return 2
        cert_file, key_file, ca_file = Path(args.tls_cert), Path(args.tls_key), None
        listen, host = args.listen, None

    return asyncio.run(
        _serve(
            admission=admission,
            resolver_settings=loaded.resolver,
            policy=policy,
            keychain=keychain,
            listen=listen,
            host=host,
            port=args.port,
            cert_file=cert_file,
            key_file=key_file,
            ca_file=ca_file,
            managed=args.dev,
        )
    )


def _small_tls_buffers() -> None:
    """asyncio's TLS transport gives every connection a 256 KiB read buffer
    (``asyncio.sslproto.SSLProtocol.max_size``, filled with zeros, so resident): 1,000
    concurrent admissions cost ~280 MB before any work. A TLS record carries at most 16 KiB,
    so a 16 KiB buffer still takes a whole record per read; only bodies larger than that need
    more reads (an 8 MiB UPDATE review: 512 reads of microseconds each). Measured: a bare
    aiohttp TLS responder holding 1,000 connections, 313 MB with the default, 99 MB with
    16 KiB."""
    import asyncio.sslproto

    if getattr(asyncio.sslproto.SSLProtocol, "max_size", 0) > _TLS_BUFFER:
        asyncio.sslproto.SSLProtocol.max_size = _TLS_BUFFER


_TLS_BUFFER = 16 * 1024


def _quiet_gc() -> None:
    """Keep the cyclic garbage collector off the admission path's tail latency.

    Everything imported and built at start-up (kopf, the kubernetes client's ~1,000 model
    classes, settings) lives for the whole process: ``gc.freeze()`` moves it out of the
    collector's view, so a full collection scans only what was allocated since. Reviews
    allocate many short-lived, acyclic objects (parsed JSON) that reference counting frees;
    the default gen-0 threshold (700 allocations) would still start a collection every few
    reviews, so it is raised. Cycles are still collected, just less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


async def _serve(
    *,
    admission: pinning.AdmissionSettings,
    resolver_settings: Any,
    policy: Any,
    keychain: Any,
    listen: str,
    host: str | None,
    port: int,
    cert_file: Path,
    key_file: Path,
    ca_file: Path | None,
    managed: bool,
) -> int:
    metrics = metrics_mod.Metrics()
    async with RegistryClient(policy, on_request=metrics.count_registry_request) as client:
        resolver = Resolver(client, settings=resolver_settings, metrics=metrics)
        api_client = _kube_api_client()
        credentials = kubecreds.NamespaceCredentials(
            kubecreds.ClientReader(api_client), central=keychain
        )
        engine = pinning.Engine(
            resolver,
            credentials=credentials,
            configs=ConfigCache(client),
            settings=admission,
        )
        recorder = audit.AuditRecorder(audit.KubeAuditSink(api_client), metrics=metrics)
        registry = kopf.OperatorRegistry()
        # A private registry has none of kopf's default login handlers: use the kubernetes
        # client's (in-cluster service account, else the kubeconfig).
        kopf.on.login(registry=registry)(kopf.login_via_client)
        resources = list(webhook.BUILTIN_RESOURCES) + webhook.extra_resources(
            admission.sites.extra_sites
        )
        ids = webhook.register(
            registry, engine, metrics=metrics, resources=resources, recorder=recorder
        )
        logger.info("webhook handlers: %s", ", ".join(ids))

        flusher: list[asyncio.Task[None]] = []

        @kopf.on.startup(registry=registry)
        async def start_audit(**_: Any) -> None:
            flusher.append(asyncio.create_task(recorder.run(), name="kitpin-audit"))

        @kopf.on.cleanup(registry=registry)
        async def stop_audit(**_: Any) -> None:
            for task in flusher:
                task.cancel()
            await recorder.flush()  # what was recorded before shutdown is not lost

        kopf_settings = kopf.OperatorSettings()
        kopf_settings.admission.server = server.WebhookServer(  # a kopf.WebhookServer subclass
            addr=listen,
            port=port,
            host=host,
            certfile=str(cert_file),
            pkeyfile=str(key_file),
            cafile=str(ca_file) if ca_file else None,
            metrics_render=metrics.render,
            # kitpin's own webhooks skip kopf's generic admission path (see webhook.FastPath);
            # kopf still serves everything else and manages the configurations in --dev.
            fast_review=webhook.FastPath(
                webhook.Admission(engine, metrics=metrics, recorder=recorder), resources
            ).serve,
        )
        kopf_settings.admission.managed = MANAGED_CONFIG_NAME if managed else None
        kopf_settings.posting.enabled = False
        _small_tls_buffers()
        _quiet_gc()
        await kopf.operator(
            registry=registry,
            settings=kopf_settings,
            clusterwide=True,
            standalone=True,
        )
    return 0
