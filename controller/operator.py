"""`kitpin run`: wire settings → registry client → resolver → engine → kopf handlers → server.

Production (the Helm chart): every replica serves the webhooks behind one Service with one
certificate; the chart owns the webhook configurations (namespaceSelector, timeoutSeconds,
reinvocationPolicy), so kopf does not manage them, and replicas run ``standalone`` (admission
needs no peering).

Arming (``--arm-webhooks``, :mod:`controller.admission.arming`): the chart renders its
webhook configurations fail-open; once this replica serves (the server's ``ready``), a task
started by a kopf startup handler sets the failure policy they ask for, and keeps it set.

``--dev``: serve on 127.0.0.1 with generated certificates (in a ``kitpin-dev-*`` temporary
directory, removed on exit) and let kopf create the webhook configurations in the cluster of
the current kubeconfig. Each instance owns its own configurations, named after its port
(:func:`dev_config_name`: two instances on one machine never share a port, and the apiserver
calls 127.0.0.1, so it runs on that machine), and deletes them, and only them, on exit: one
instance stopping never unregisters another. With a ``.dev/env`` from `make dev-up` (in
``$KITPIN_DEV_DIR``, default ``.dev``), the dev registry is trusted over plain HTTP and, when
``$KUBECONFIG`` is unset, the dev cluster's kubeconfig is used.

Without an apiserver to talk to (no service account, no kubeconfig, a ``$KUBECONFIG`` naming
a missing file) `kitpin run` stops before anything starts, with one line saying what to do
(:class:`NoApiserverError`).

Callers, probes and stopping (:class:`controller.settings.ServerSettings`, the settings
file's ``server`` section with ``--client-ca``, ``--client-name`` and ``--probe-port`` over
it): with a client CA only the apiserver (its client certificate) may submit reviews; on
SIGTERM kopf stops the server, which goes unready, drains and finishes in-flight reviews
(:mod:`controller.admission.server`) before the audit trail is flushed and kitpin exits.

The apiserver: one login (:class:`KubeLogin`: the in-cluster service account, else the
kubeconfig) serves kopf (its login handler) and kitpin's own calls (pull secrets, the audit
trail: :class:`controller.kubeapi.KubeAPI`). The official ``kubernetes`` client is imported
only when a kubeconfig user needs an exec plugin or an auth-provider.

Tag records (docs/tags.md, the settings' ``tags:`` and ``drift:``): a
:class:`~controller.tags.writer.TagWriter` the engine observes resolutions through, flushed
by a background task; each replica's paged list-and-watch of ``modelkittags``
(:mod:`controller.tags.informer`, not kopf's: 10,000 records cost ~22 MiB instead of ~230)
feeds it what is stored. The drift watch runs only on the replica holding the Lease in
kitpin's namespace, with the central keychain's credentials only (no namespace's pull
secrets).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from controller import errors, kubeapi, refs, types

# kopf imports the kubernetes client (~19 MB) when it is installed: see kubeapi.
with kubeapi.kubernetes_client_hidden():
    import kopf

    from controller import audit, kubecreds, settings
    from controller import metrics as metrics_mod
    from controller.admission import arming, decide, fastpath, pinning, server, signing, webhook
    from controller.admission import indexes as index_ids
    from controller.registry.client import RegistryClient
    from controller.registry.credentials import Keychain
    from controller.resolver import ConfigCache, Resolver
    from controller.signatures import Verifier
    from controller.tags import TagsSettings
    from controller.tags import informer as tag_informer
    from controller.tags import lease as tag_lease
    from controller.tags import model as tag_model
    from controller.tags import watch as tag_watch
    from controller.tags import writer as tag_writer

logger = logging.getLogger(__name__)

DEV_CONFIG_SUFFIX = ".kitpin.dev"
"""Every ``--dev`` instance's configuration name ends with this (``dev-<port>.kitpin.dev``)."""

DEV_CONFIG_DELETE_TIMEOUT = 5.0
"""Seconds ``--dev`` may take, on exit, to delete its own webhook configurations."""


def dev_config_name(port: int) -> str:
    """The webhook configurations (both kinds) of the ``--dev`` instance serving on ``port``,
    which kopf also uses as its webhooks' name suffix (``pin-pods.dev-8443.kitpin.dev``)."""
    return f"dev-{port}{DEV_CONFIG_SUFFIX}"


class NoApiserverError(errors.ConfigError):
    """No apiserver to log in to: not in a cluster, and no (readable) kubeconfig."""

    reason = "NoApiserver"


TAGS_FLUSH_ON_STOP = 5.0
"""Seconds the last flush of tag records may take at shutdown."""

SERVICE_ACCOUNT_REFRESH = 60.0
"""Seconds after which the service account's token is read again: the kubelet rotates the
projected token file well before the token expires."""


def _own_namespace(args: argparse.Namespace) -> str | None:
    if args.namespace:
        return str(args.namespace)
    env = os.environ.get("POD_NAMESPACE")
    if env:
        return env
    sa_ns = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return sa_ns.read_text().strip() if sa_ns.exists() else None


class KubeLogin:
    """Where the apiserver is and who kitpin is there, as a ``kopf.ConnectionInfo``; called
    again to log in again (a rotated token).

    kopf's own rudimentary login functions read the files: the in-cluster service account
    (its token is re-read at every call), else the kubeconfig (``$KUBECONFIG`` or
    ``~/.kube/config``: server, CA, client certificate, token or basic auth). A kubeconfig
    user that needs an exec plugin or an auth-provider is beyond them: then the official
    client's login (``kopf.login_via_client``) runs the plugin, which imports that client."""

    def __init__(self, settings: kopf.OperatorSettings) -> None:
        self._settings = settings
        self.in_cluster = False
        self._announced = False

    def __call__(self) -> kopf.ConnectionInfo:
        info = kopf.login_with_service_account(settings=self._settings)
        if info is not None:
            self.in_cluster = True
            return _service_host(info)
        plugin = kubeapi.kubeconfig_auth_plugin()
        if plugin is not None:
            if not self._announced:
                logger.info(
                    "the kubeconfig's user authenticates through %r, which kopf's login "
                    "cannot run: logging in with the kubernetes client library instead "
                    "(imported for this: ~20 MB more memory)",
                    plugin,
                )
                self._announced = True
            info = kopf.login_via_client(logger=logger, settings=self._settings)
            if info is None:
                raise kopf.LoginError(
                    f"the kubeconfig's user authenticates through {plugin!r}, which kitpin "
                    "runs with the kubernetes client library: install the `kubernetes` package"
                )
        else:
            info = kopf.login_with_kubeconfig(settings=self._settings)
        if info is None:
            raise kopf.LoginError(
                "no apiserver to talk to: not in a cluster (no service account token) and no "
                "kubeconfig ($KUBECONFIG or ~/.kube/config)"
            )
        return info


def _service_host(info: kopf.ConnectionInfo) -> kopf.ConnectionInfo:
    """The apiserver at ``$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` when the kubelet
    set them (as client-go and the official client do), rather than kopf's fixed
    ``https://kubernetes.default.svc``, which needs the cluster DNS."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return info
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return dataclasses.replace(info, server=f"https://{host}:{port}")


def _dev_env(name: str) -> str | None:
    """``name``'s value in ``$KITPIN_DEV_DIR/env`` (default ``.dev/env``), which `make dev-up`
    writes as ``export NAME=value`` lines; None when absent."""
    env = Path(os.environ.get("KITPIN_DEV_DIR") or ".dev") / "env"
    try:
        lines = env.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        line = line.strip().removeprefix("export ").strip()
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip().strip("'\"") or None
    return None


def _use_dev_kubeconfig() -> None:
    """``--dev`` with ``$KUBECONFIG`` unset: the dev cluster's kubeconfig, when `make dev-up`
    wrote one (never a real cluster's ``~/.kube/config`` by surprise). kopf's login reads
    ``$KUBECONFIG``, so it is set for this process."""
    if os.environ.get("KUBECONFIG"):
        return
    kubeconfig = _dev_env("KUBECONFIG")
    if kubeconfig and Path(kubeconfig).is_file():
        os.environ["KUBECONFIG"] = kubeconfig
        logger.info("dev: using the dev cluster's kubeconfig %s", kubeconfig)


_WHAT_TO_DO = (
    "set KUBECONFIG to a kubeconfig file, run `make dev-up` (then `kitpin run --dev` finds "
    ".dev/env), or run kitpin in a cluster"
)


def _first_login(login: KubeLogin) -> kopf.ConnectionInfo:
    """The first login, before anything starts; :class:`NoApiserverError` saying what to do
    when there is no apiserver to talk to."""
    try:
        return login()
    except FileNotFoundError as e:
        problem = f"the kubeconfig {e.filename} does not exist (KUBECONFIG)"
        raise NoApiserverError(f"{problem}: {_WHAT_TO_DO}") from e
    # ValueError: kopf reads the kubeconfig with its own YAML load, which raises it on a
    # date-like value such as 2001-02-30.
    except (OSError, ValueError, yaml.YAMLError, KeyError) as e:
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        detail = " ".join(str(e).split())  # one line: YAML errors come on several
        problem = f"the kubeconfig {where} cannot be used ({type(e).__name__}: {detail})"
        raise NoApiserverError(f"{problem}: {_WHAT_TO_DO}") from e
    except kopf.LoginError as e:
        raise NoApiserverError(f"{' '.join(str(e).split())}: {_WHAT_TO_DO}") from e


def _arming_settings(
    args: argparse.Namespace, own_namespace: str | None
) -> arming.ArmingSettings | None:
    """``--arm-*`` → :class:`~controller.admission.arming.ArmingSettings` (None: no arming);
    :class:`errors.ConfigError` for flags that cannot work."""
    names = arming.parse_names(getattr(args, "arm_webhooks", None) or ())
    service = getattr(args, "arm_service", None)
    if not names:
        if service:
            raise errors.ConfigError("--arm-service without --arm-webhooks: nothing to arm")
        return None
    problem = arming.validate_names(names)
    if problem:
        raise errors.ConfigError(problem)
    if service and not own_namespace:
        raise errors.ConfigError(
            "--arm-service needs kitpin's namespace (POD_NAMESPACE or --namespace), where the "
            "Service is"
        )
    interval = getattr(args, "arm_interval", None)
    interval = arming.ArmingSettings.interval if interval is None else float(interval)
    if interval <= 0:
        raise errors.ConfigError("--arm-interval must be a positive number of seconds")
    return arming.ArmingSettings(
        configurations=names,
        failure_policy=getattr(args, "arm_failure_policy", None) or "Fail",
        service=service or None,
        namespace=own_namespace,
        interval=interval,
    )


def run(args: argparse.Namespace) -> int:
    """`kitpin run`: 0 once stopped; 2, with one ``error:`` line, when it cannot start."""
    try:
        return _run(args)
    except NoApiserverError as e:
        print(f"kitpin run: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    loaded = settings.load_settings_file(args.settings) if args.settings else settings.Settings()
    plain = list(args.plain_http_registry)
    if args.dev:
        dev_registry = settings.dev_registry()
        if dev_registry:
            plain.append(dev_registry)
            logger.info("dev: trusting the dev registry %s over plain HTTP", dev_registry)
        _use_dev_kubeconfig()
    policy, keychain = settings.registry_access(
        registry_config=args.registry_config,
        docker_config=args.docker_config,
        plain_http=plain,
    )
    serving = settings.server_settings(
        loaded.server,
        client_ca=args.client_ca,
        client_names=args.client_name,
        probe_port=args.probe_port,
        webhook_port=args.port,
    )
    admission = loaded.admission
    own = _own_namespace(args)
    if own:
        admission = dataclasses.replace(
            admission, ignored_namespaces=admission.ignored_namespaces | {own}
        )
    arming_settings = _arming_settings(args, own)
    if not args.dev and not (args.tls_cert and args.tls_key):
        print(
            "kitpin run: error: --tls-cert and --tls-key are required (or --dev)", file=sys.stderr
        )
        return 2

    kopf_settings = kopf.OperatorSettings()
    login = KubeLogin(kopf_settings)
    endpoint = _first_login(login)  # before anything starts: no apiserver, one line, exit 2

    dev_dir: Path | None = None
    try:
        if args.dev:
            from controller import devcerts  # imports cryptography (~8 MB): for --dev only

            dev_dir = Path(tempfile.mkdtemp(prefix="kitpin-dev-"))
            certs = devcerts.write_dev_certificates(dev_dir, hosts=("127.0.0.1", "localhost"))
            cert_file, key_file, ca_file = certs.cert_file, certs.key_file, certs.ca_file
            listen, host = "127.0.0.1", "127.0.0.1"
        else:
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
                managed=dev_config_name(args.port) if args.dev else None,
                serving=serving,
                tags_settings=loaded.tags,
                own_namespace=own,
                arming_settings=arming_settings,
                kopf_settings=kopf_settings,
                login=login,
                endpoint=endpoint,
            )
        )
    finally:
        if dev_dir is not None:  # the dev CA's and the serving key
            shutil.rmtree(dev_dir, ignore_errors=True)


class _CentralCredentials:
    """The drift watch's credentials: the central keychain only (``--docker-config``). It
    acts for no admitted object, so it never reads a namespace's pull secrets: a tag only a
    namespace's secret can read is not checked (its HEAD answers 401, counted as an error)."""

    def __init__(self, keychain: Keychain | None) -> None:
        self._keychain = keychain

    async def credential(
        self, ref: refs.Reference, *, namespaces: Sequence[str]
    ) -> types.Credential | None:
        if self._keychain is None:
            return None
        return self._keychain.lookup(ref.registry, repository=ref.repository)


def _register_tags(
    registry: kopf.OperatorRegistry,
    *,
    writer: tag_writer.TagWriter,
    api: kubeapi.KubeAPI[Any],
    client: RegistryClient,
    keychain: Keychain | None,
    settings: TagsSettings,
    metrics: metrics_mod.Metrics,
    namespace: str | None,
) -> None:
    """The ModelKitTag side of `kitpin run`: the informer feeding the writer what is stored
    (its own list-and-watch, not kopf's: :mod:`controller.tags.informer` says why), the
    writer's flush loop, and the drift watch (with roll-forward) under the Lease."""
    metrics.track_tags(records=lambda: writer.known, pending=lambda: writer.pending)
    informer = tag_informer.RecordInformer(tag_informer.ApiRecordSource(api), writer)
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def start_tags(**kwargs: Any) -> None:
        tasks.append(asyncio.create_task(informer.run(), name="kitpin-tags-informer"))
        tasks.append(asyncio.create_task(writer.run(), name="kitpin-tags-writer"))
        if not settings.drift:
            return
        if not namespace:
            logger.warning(
                "the drift watch is off: kitpin's namespace is unknown (set POD_NAMESPACE or "
                "--namespace), so there is no Lease to elect a leader with"
            )
            return
        cluster_index = kwargs.get(index_ids.CLUSTER_POLICIES_INDEX)
        namespaced_index = kwargs.get(index_ids.NAMESPACED_POLICIES_INDEX)

        def immutable(key: tag_model.TagKey) -> bool:
            policies = [
                p
                for index in (cluster_index, namespaced_index)
                if index is not None
                for store in index.values()
                for p in store
            ]
            return any(
                p.tags is not None and p.tags.is_immutable(key.tag) is not None for p in policies
            )

        drift = tag_watch.DriftWatch(
            writer,
            client,
            credentials=_CentralCredentials(keychain),
            workloads=tag_watch.ApiWorkloads(api),
            events=tag_watch.ApiEvents(api),
            immutable=immutable,
            settings=settings,
            metrics=metrics,
        )
        elector = tag_lease.LeaseElector(
            api,
            namespace=namespace,
            name=settings.lease_name,
            duration=settings.lease_duration,
            renew_deadline=settings.lease_renew_deadline,
            retry=settings.lease_retry,
        )
        logger.info(
            "drift watch: electing a leader on the Lease %s/%s as %s",
            namespace,
            settings.lease_name,
            elector.holder,
        )

        async def watch_drift() -> None:
            # a pass over half a list would check only the records indexed so far, and the
            # rest an interval later: the first pass waits for the informer's first list
            await informer.synced.wait()
            await drift.run()

        tasks.append(asyncio.create_task(elector.run(watch_drift), name="kitpin-drift-lease"))

    @kopf.on.cleanup(registry=registry)
    async def stop_tags(**_: Any) -> None:
        for task in tasks:
            task.cancel()  # the elector releases the Lease as it stops
        await asyncio.gather(*tasks, return_exceptions=True)
        # What admissions observed before shutdown is written, within a bound: an
        # unreachable apiserver must not hold the pod past its grace period.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TAGS_FLUSH_ON_STOP):
                await writer.flush()


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

    Everything imported and built at start-up (kopf, aiohttp, httpx, settings) lives for the
    whole process: ``gc.freeze()`` moves it out of the collector's view, so a full collection
    scans only what was allocated since. Reviews allocate many short-lived, acyclic objects
    (parsed JSON) that reference counting frees; the default gen-0 threshold (700
    allocations) would still start a collection every few reviews, so it is raised. Cycles
    are still collected, just less often."""
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
    managed: str | None,
    serving: settings.ServerSettings,
    tags_settings: TagsSettings | None = None,
    own_namespace: str | None = None,
    arming_settings: arming.ArmingSettings | None = None,
    kopf_settings: kopf.OperatorSettings | None = None,
    login: KubeLogin | None = None,
    endpoint: kopf.ConnectionInfo | None = None,
) -> int:
    """Serve until stopped. ``managed``: the name of the webhook configurations kopf manages
    (``--dev``), deleted on exit if this instance served; None: the chart's."""
    tags_settings = tags_settings or TagsSettings()
    metrics = metrics_mod.Metrics()
    kopf_settings = kopf_settings or kopf.OperatorSettings()
    login = login or KubeLogin(kopf_settings)
    api = kubeapi.KubeAPI(
        endpoint or _first_login(login),
        relogin=login,
        refresh_after=SERVICE_ACCOUNT_REFRESH if login.in_cluster else None,
    )
    async with (
        RegistryClient(policy, on_request=metrics.count_registry_request) as client,
        api,
    ):
        resolver = Resolver(client, settings=resolver_settings, metrics=metrics)
        # Beside the resolver, one signature verifier (cached per digest and key set,
        # single-flight) for policies' `signatures` blocks; their key Secrets are read like
        # pull secrets, by name, in the policy's namespace or kitpin's (docs/signatures.md).
        verifier = Verifier(client)
        signatures = signing.Signing(
            verifier,
            secrets=kubecreds.SecretKeys(kubecreds.ApiReader(api)),
            own_namespace=own_namespace,
        )
        credentials = kubecreds.NamespaceCredentials(kubecreds.ApiReader(api), central=keychain)
        writer = (
            tag_writer.TagWriter(
                tag_writer.ApiTagStore(api), settings=tags_settings, metrics=metrics
            )
            if tags_settings.records
            else None
        )
        engine = pinning.Engine(
            resolver,
            credentials=credentials,
            configs=ConfigCache(client),
            settings=admission,
            tags=writer,
            signatures=signatures,
        )
        recorder = audit.AuditRecorder(audit.ApiAuditSink(api), metrics=metrics)
        registry = kopf.OperatorRegistry()

        # A private registry has none of kopf's default login handlers: kopf gets the same
        # login as kitpin's own client, fresh each time kopf asks (at start-up, after a 401).
        @kopf.on.login(registry=registry)
        async def login_handler(**_: Any) -> kopf.ConnectionInfo:
            return await api.relogin()

        resources = webhook.resources(admission.sites)  # what the settings read, no more
        # One Admission (engine, metrics, audit trail) for kopf's handlers and the fast path.
        admitting = decide.Admission(engine, metrics=metrics, recorder=recorder)
        ids = webhook.register(registry, admitting, resources=resources)
        logger.info("webhook handlers: %s", ", ".join(ids))

        flusher: list[asyncio.Task[None]] = []

        @kopf.on.startup(registry=registry)
        async def start_audit(**_: Any) -> None:
            flusher.append(asyncio.create_task(recorder.run(), name="kitpin-audit"))

        # kopf runs cleanup handlers once its root tasks have ended, the webhook server's
        # graceful stop included: what reviews recorded while draining is flushed too.
        @kopf.on.cleanup(registry=registry)
        async def stop_audit(**_: Any) -> None:
            for task in flusher:
                task.cancel()
            await recorder.flush()  # what was recorded before shutdown is not lost
            await verifier.aclose()  # signature lookups no review waits for any more

        if writer is not None:
            _register_tags(
                registry,
                writer=writer,
                api=api,
                client=client,
                keychain=keychain,
                settings=tags_settings,
                metrics=metrics,
                namespace=own_namespace,
            )

        web = server.WebhookServer(  # a kopf.WebhookServer subclass
            addr=listen,
            port=port,
            host=host,
            certfile=str(cert_file),
            pkeyfile=str(key_file),
            cafile=str(ca_file) if ca_file else None,
            client_ca=str(serving.client_ca) if serving.client_ca else None,
            client_names=serving.client_names,
            probe_port=serving.probe_port,
            drain_seconds=serving.drain_seconds,
            shutdown_seconds=serving.shutdown_seconds,
            metrics_render=metrics.render,
            # kitpin's own webhooks skip kopf's generic admission path (see fastpath.FastPath);
            # kopf still serves everything else and manages the configurations in --dev.
            fast_review=fastpath.FastPath(admitting, webhook.routes(resources)).serve,
        )
        kopf_settings.admission.server = web
        kopf_settings.admission.managed = managed
        if arming_settings is not None:
            _register_arming(registry, arming.Arming(api, arming_settings), web)
        kopf_settings.posting.enabled = False
        _small_tls_buffers()
        _quiet_gc()
        metrics.watch_gc()
        try:
            await kopf.operator(
                registry=registry,
                settings=kopf_settings,
                clusterwide=True,
                standalone=True,
            )
        except errors.RegistryError as e:
            # kopf re-raises, as it exits, the error of any task still running when it
            # stopped: a registry fetch that outlived the review which asked for it (a
            # review's deadline leaves the fetch running for others). Stopping while a
            # registry is down is not a failure of kitpin.
            logger.info("stopped; a registry fetch still running then failed: %s", e)
        finally:
            # kopf emptied its managed configurations as it stopped; this instance deletes
            # them (only its own, and only if it served: an instance that could not bind its
            # port never owned the configurations of the one that did).
            if managed and web.url is not None:
                await _delete_configurations(api, managed)
    return 0


def _register_arming(
    registry: kopf.OperatorRegistry, armer: arming.Arming, web: server.WebhookServer
) -> None:
    """Arm the chart's webhook configurations once ``web`` serves (a startup handler starts
    the task: the server itself knows nothing of arming); stop it at cleanup."""
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def start_arming(**_: Any) -> None:
        def serving() -> bool:
            return web.ready and not web.stopping

        tasks.append(asyncio.create_task(armer.run(serving), name="kitpin-arming"))

    @kopf.on.cleanup(registry=registry)
    async def stop_arming(**_: Any) -> None:
        for task in tasks:  # never disarms: the other replicas still serve
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _delete_configurations(api: kubeapi.KubeAPI[Any], name: str) -> None:
    """Delete both webhook configurations called ``name`` (a ``--dev`` instance's own);
    failures are logged (the cluster may be gone already)."""
    for plural in arming.KINDS:
        path = kubeapi.path(*arming.API_PREFIX, plural, name)
        try:
            await api.request("DELETE", path, timeout=DEV_CONFIG_DELETE_TIMEOUT)
        except kubeapi.NotFoundError:
            continue
        except kubeapi.KubeError as e:
            logger.warning("dev: could not delete %s %s: %s", plural, name, e)
        else:
            logger.info("dev: deleted %s %s", plural, name)
