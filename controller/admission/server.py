"""The HTTPS server the apiserver calls: kopf's webhook server plus probes and metrics.

kopf's :class:`kopf.WebhookServer` serves ``POST /<handler-id>`` with aiohttp's default body
cap of 1 MiB. An UPDATE review carries the object twice; Kubernetes objects may reach about
1.5 MiB each (etcd's limit), so kitpin accepts bodies up to ``max_body`` (8 MiB). It also
serves, on the same port (so probes prove the webhook port itself answers):

- ``GET /healthz`` — the process serves HTTP;
- ``GET /readyz``  — the handlers are registered, the server is up and not stopping;
- ``GET /metrics`` — Prometheus exposition of :mod:`controller.metrics`.

**Who may call.** A review names a namespace, and kitpin resolves the ModelKits in it with
that namespace's pull secrets: whoever can submit reviews can use any namespace's secrets.
With ``client_ca`` the webhook port requires, in the TLS handshake (``ssl.CERT_REQUIRED``),
a client certificate signed by that CA: the one the apiserver presents to webhooks (its
AdmissionConfiguration's ``kubeConfigFile``, see ``docs/security.md``). A client without
one never gets an HTTP byte read; ``client_names`` further limits the certificate's CN or
DNS names (else 403). Without ``client_ca`` any client that reaches the port may submit
reviews: kitpin logs a warning at start.

Kubelet probes and Prometheus cannot present the apiserver's certificate. With
``probe_port`` they get a second, plain HTTP port that serves only the three GET routes above
and no review at all (nothing there reads a secret or the network). The safe design is the
separate port: the port that accepts reviews verifies every peer before HTTP, so no route,
middleware or future change can accept an unauthenticated review, and there is no
"optional certificate" mode whose check lives in application code.

**Malformed reviews** get HTTP 400 from kitpin's own server before the fast path or kopf sees
them: :func:`review_problem` checks, once, the shape both rely on and names the field.

**Stopping** (kopf cancels the server on SIGTERM/SIGINT): ``/readyz`` answers 503 at once;
new connections are still served for ``drain_seconds`` (load balancers and endpoints catch
up), each answer then closing its connection; then the port stops listening and in-flight
reviews finish, all within ``shutdown_seconds`` (keep it below the pod's
``terminationGracePeriodSeconds``); whatever is still running then is cut.

kitpin's own webhooks (``/pin-*``, ``/check-*``) are answered by ``fast_review``
(:meth:`controller.admission.fastpath.FastPath.serve`) before kopf's generic admission
machinery; kopf serves everything else (and the same reviews, should the fast path decline
one). What this needs of kopf beyond its public API goes through
:mod:`controller.admission.kopfcompat`.

Certificate files (serving pair, CA bundle, client CA) are re-read when they change
(cert-manager rotations) and loaded into the live TLS context: the listening socket stays,
new handshakes get the new certificate, nothing is refused meanwhile. A pair that does not
load (half-written) keeps the previous certificate until the next check. A client CA that is
replaced is added to the trusted ones; removing trust in one needs a restart.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

import aiohttp.web
import kopf
import orjson

from controller.admission import kopfcompat
from controller.types import json_type

logger = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024

MAX_DEPTH: Final = 254
"""The deepest nesting of objects and arrays a review may have (the review itself is level
1, its object level 3). orjson encodes at most 254 levels, which is what
:func:`review_problem` uses to measure it at C speed (~4 us for a 6 KB review, where a walk in
Python costs ~30 us); kopf's recursive copy and diff of the object fail near 490 levels, and
no Kubernetes object kitpin admits comes near either (a Pod with managedFields: ~15)."""

CLOSE_TIMEOUT: Final = 0.5
"""Seconds of the shutdown budget kept for the end: cancelling the reviews that outlived
it, closing connections."""

FastReview = Callable[
    [Mapping[str, Any], str | None, Mapping[str, Any]], Awaitable[Mapping[str, object] | None]
]
"""``(review, handler id, kopf's indexes) -> response or None``: answers a review before
kopf's generic admission machinery does; None hands it to kopf."""

_API_VERSIONS: Final = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
_OPERATIONS: Final = ("CREATE", "UPDATE", "DELETE", "CONNECT")
_GVK: Final = ("group", "version", "kind")
_GVR: Final = ("group", "version", "resource")


# -- the shape of a review ------------------------------------------------------------------


def _shown(value: object) -> str:
    """A short, single-line, ASCII rendering of a value from the request, for a message
    that becomes an HTTP reason phrase."""
    text = ascii(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _mapping_problem(value: object, where: str, fields: Iterable[str]) -> str | None:
    if not isinstance(value, dict):
        return f"{where}: expected an object, got {json_type(value)}"
    for name in fields:
        if not isinstance(value.get(name), str):
            return f"{where}.{name}: expected a string, got {json_type(value.get(name))}"
    return None


def _optional_string(request: Mapping[str, Any], name: str) -> str | None:
    value = request.get(name)
    if value is not None and not isinstance(value, str):
        return f"request.{name}: expected a string or null, got {json_type(value)}"
    return None


def _string_map(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return f"{where}: expected an object of strings, got {json_type(value)}"
    for key, item in value.items():
        if not isinstance(item, str):
            return f"{where}[{_shown(key)}]: expected a string, got {json_type(item)}"
    return None


def _object_problem(obj: object, where: str, namespace: object) -> str | None:
    """``request.object`` / ``request.oldObject``: a Kubernetes object (or null)."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        return f"{where}: expected an object or null, got {json_type(obj)}"
    meta = obj.get("metadata")
    if meta is None:
        return None
    if not isinstance(meta, dict):
        return f"{where}.metadata: expected an object, got {json_type(meta)}"
    for name in ("name", "namespace", "generateName"):
        if meta.get(name) is not None and not isinstance(meta.get(name), str):
            return f"{where}.metadata.{name}: expected a string, got {json_type(meta.get(name))}"
    for name in ("labels", "annotations"):
        problem = _string_map(meta.get(name), f"{where}.metadata.{name}")
        if problem:
            return problem
    own = meta.get("namespace")
    if own and namespace and own != namespace:
        # The apiserver sets an object's namespace from the request's before admission, or
        # rejects the request: a review where they differ was not written by an apiserver.
        return (
            f"{where}.metadata.namespace {_shown(own)} is not request.namespace "
            f"{_shown(namespace)}: an apiserver never sends that"
        )
    return None


def _user_problem(user: object) -> str | None:
    if not isinstance(user, dict):
        return f"request.userInfo: expected an object, got {json_type(user)}"
    for name in ("username", "uid"):
        if user.get(name) is not None and not isinstance(user.get(name), str):
            return f"request.userInfo.{name}: expected a string, got {json_type(user.get(name))}"
    groups = user.get("groups")
    if groups is not None and (
        not isinstance(groups, list) or not all(isinstance(g, str) for g in groups)
    ):
        return "request.userInfo.groups: expected an array of strings"
    extra = user.get("extra")
    if extra is not None and (
        not isinstance(extra, dict)
        or not all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in extra.values()
        )
    ):
        return "request.userInfo.extra: expected an object of arrays of strings"
    return None


def review_problem(data: object, *, brackets: int | None = None) -> str | None:
    """What makes ``data`` (a decoded request body) no AdmissionReview that kitpin's fast
    path and kopf can serve, naming the field; None when its shape is right.

    The one check of a review's shape, before anything reads it: an ``admission.k8s.io/v1``
    (or ``v1beta1``) ``AdmissionReview`` whose ``request`` has a non-empty string ``uid``,
    ``kind`` and ``resource`` with string parts, a known ``operation``, a ``userInfo``
    object, an ``object`` or ``oldObject`` (objects with an object ``metadata`` whose
    name, namespace, labels and annotations are strings, in ``request.namespace``), and
    nothing nested deeper than :data:`MAX_DEPTH`. What the apiserver always sends passes;
    anything else would reach kopf or the engine as a type they do not expect.

    ``brackets``: how many ``{`` and ``[`` the raw body holds, when the caller knows (a
    ``bytes.count``, ~1 us). No document nests deeper than it has brackets, so at most
    :data:`MAX_DEPTH` of them spares the depth measurement (an encode of the whole review,
    the costliest step here for a Pod as the apiserver sends it)."""
    if not isinstance(data, dict):
        return f"the body is {json_type(data)}, not an AdmissionReview object"
    if data.get("kind") != "AdmissionReview":
        return f"kind: expected 'AdmissionReview', got {_shown(data.get('kind'))}"
    if data.get("apiVersion") not in _API_VERSIONS:
        return f"apiVersion: expected admission.k8s.io/v1, got {_shown(data.get('apiVersion'))}"
    request = data.get("request")
    if not isinstance(request, dict):
        return f"request: expected an object, got {json_type(request)}"
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        return f"request.uid: expected a non-empty string, got {json_type(uid)}"
    problem = _mapping_problem(request.get("kind"), "request.kind", _GVK) or _mapping_problem(
        request.get("resource"), "request.resource", _GVR
    )
    if problem:
        return problem
    for name, fields in (("requestKind", _GVK), ("requestResource", _GVR)):
        if request.get(name) is not None:
            problem = _mapping_problem(request[name], f"request.{name}", fields)
            if problem:
                return problem
    for name in ("subResource", "requestSubResource", "name", "namespace"):
        problem = _optional_string(request, name)
        if problem:
            return problem
    if request.get("operation") not in _OPERATIONS:
        return (
            f"request.operation: expected one of {', '.join(_OPERATIONS)}, "
            f"got {_shown(request.get('operation'))}"
        )
    problem = _user_problem(request.get("userInfo"))
    if problem:
        return problem
    obj, old = request.get("object"), request.get("oldObject")
    if obj is None and old is None:
        return "request.object and request.oldObject are both missing: nothing to review"
    namespace = request.get("namespace")
    problem = _object_problem(obj, "request.object", namespace) or _object_problem(
        old, "request.oldObject", namespace
    )
    if problem:
        return problem
    if request.get("dryRun") is not None and not isinstance(request.get("dryRun"), bool):
        return f"request.dryRun: expected a boolean, got {json_type(request.get('dryRun'))}"
    if request.get("options") is not None and not isinstance(request.get("options"), dict):
        return f"request.options: expected an object or null, got {json_type(request['options'])}"
    if brackets is not None and brackets <= MAX_DEPTH:
        return None
    try:
        orjson.dumps(data)  # refuses more than MAX_DEPTH levels, in C
    except orjson.JSONEncodeError:
        return (
            f"the review nests objects and arrays deeper than {MAX_DEPTH} levels: "
            "no Kubernetes object kitpin admits is that deep"
        )
    return None


# -- callers ----------------------------------------------------------------------------------


def certificate_names(peercert: Mapping[str, Any]) -> set[str]:
    """The names a verified client certificate (``ssl.SSLSocket.getpeercert()``) stands for:
    its subject's commonName(s) and its DNS subjectAltNames."""
    names: set[str] = set()
    for rdn in peercert.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                names.add(str(value))
    for kind, value in peercert.get("subjectAltName") or ():
        if kind == "DNS":
            names.add(str(value))
    return names


def caller_problem(
    peercert: Mapping[str, Any] | None, *, required: bool, names: frozenset[str]
) -> tuple[int, str] | None:
    """(HTTP status, message) refusing a caller, or None to serve it. ``peercert`` is what
    the TLS layer verified (empty or None: no certificate)."""
    if not required:
        return None
    if not peercert:  # CERT_REQUIRED makes this unreachable; kept in case TLS changes
        return 401, "a client certificate signed by kitpin's client CA is required"
    if names:
        presented = certificate_names(peercert)
        if not presented & names:
            return 403, (
                f"the client certificate names {sorted(presented)}, none of the allowed "
                f"callers {sorted(names)} (--client-name)"
            )
    return None


# -- the server -----------------------------------------------------------------------------


class WebhookServer(kopf.WebhookServer):
    """kopf's webhook server with an explicit body cap, probe/metrics routes, caller
    authentication, review validation, in-place certificate reload and a graceful stop."""

    def __init__(
        self,
        *,
        metrics_render: Callable[[], bytes] | None = None,
        max_body: int = MAX_BODY,
        fast_review: FastReview | None = None,
        client_ca: str | os.PathLike[str] | None = None,
        client_names: Iterable[str] = (),
        probe_port: int | None = None,
        drain_seconds: float = 3.0,
        shutdown_seconds: float = 15.0,
        **kwargs: Any,
    ) -> None:
        """``client_ca``: require client certificates signed by it (kopf's ``verify_*``
        settings with ``ssl.CERT_REQUIRED``); ``client_names``: and naming one of these.
        ``probe_port``: serve the probes and metrics (only) there too, over plain HTTP
        (0: any free port, see :attr:`probe_port`). ``drain_seconds`` and
        ``shutdown_seconds``: how it stops (module docstring)."""
        names = frozenset(client_names)
        if names and client_ca is None:
            raise ValueError("client_names without client_ca: nothing would check them")
        if not 0 <= drain_seconds <= shutdown_seconds:
            raise ValueError("expected 0 <= drain_seconds <= shutdown_seconds")
        if client_ca is not None:
            kwargs["verify_mode"] = ssl.CERT_REQUIRED
            kwargs["verify_cafile"] = client_ca
        super().__init__(**kwargs)
        self.metrics_render = metrics_render
        self.fast_review = fast_review
        self.max_body = max_body
        self.client_names = names
        self.probe_port = probe_port
        """The probe port; once serving, the bound one (when 0 was asked for)."""
        self.drain_seconds = drain_seconds
        self.shutdown_seconds = shutdown_seconds
        self.url: str | None = None
        """The webhook URL, once serving (as the webhook configurations get it)."""
        self.ready = False
        self.stopping = False
        self.in_flight = 0
        """Reviews being answered now."""
        self._reviewing: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def authenticates_callers(self) -> bool:
        return self.verify_mode == ssl.CERT_REQUIRED and bool(
            self.verify_cafile or self.verify_capath or self.verify_cadata
        )

    # -- routes ---------------------------------------------------------------------------

    async def _healthz(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="ok\n")

    async def _readyz(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        if self.stopping:
            return aiohttp.web.Response(status=503, text="stopping\n")
        if not self.ready:
            return aiohttp.web.Response(status=503, text="starting\n")
        return aiohttp.web.Response(text="ok\n")

    async def _metrics(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        body = self.metrics_render() if self.metrics_render else b""
        return aiohttp.web.Response(
            body=body, content_type="text/plain", charset="utf-8", headers={}
        )

    def _probe_routes(self) -> list[aiohttp.web.RouteDef]:
        return [
            aiohttp.web.get("/healthz", self._healthz),
            aiohttp.web.get("/readyz", self._readyz),
            aiohttp.web.get("/metrics", self._metrics),
        ]

    def webhook_app(self, fn: Any) -> aiohttp.web.Application:
        """The application on the webhook port: reviews (``fn`` is kopf's webhook function),
        probes and metrics, behind the caller check when callers are authenticated.

        The check is an aiohttp middleware only then: aiohttp wraps every request's handler
        in each middleware, a cost on every cached review that a server which does not
        authenticate callers need not pay."""

        async def review(request: aiohttp.web.Request) -> aiohttp.web.Response:
            task = asyncio.current_task()
            if task is not None:
                self._reviewing.add(task)
            self.in_flight += 1
            self._idle.clear()
            try:
                response = await self._review(fn, request)
            finally:
                self.in_flight -= 1
                self._reviewing.discard(task)
                if not self.in_flight:
                    self._idle.set()
            if self.stopping:
                response.force_close()  # clients reconnect, to a replica that is not stopping
            return response

        @aiohttp.web.middleware
        async def guard(
            request: aiohttp.web.Request,
            handler: Callable[[aiohttp.web.Request], Awaitable[aiohttp.web.StreamResponse]],
        ) -> aiohttp.web.StreamResponse:
            peercert = request.transport.get_extra_info("peercert") if request.transport else None
            refused = caller_problem(
                peercert, required=self.authenticates_callers, names=self.client_names
            )
            if refused is not None:
                status, message = refused
                logger.warning(
                    "refused %s %s from %s: %s",
                    request.method,
                    request.path,
                    request.remote,
                    message,
                )
                refusal = (
                    aiohttp.web.HTTPUnauthorized if status == 401 else aiohttp.web.HTTPForbidden
                )
                raise refusal(reason=message, text=f"{status}: {message}\n")
            response = await handler(request)
            if self.stopping:
                response.force_close()
            return response

        prefix = self.path.rstrip("/") if self.path else ""
        app = aiohttp.web.Application(
            client_max_size=self.max_body,
            middlewares=[guard] if self.authenticates_callers else [],
        )
        app.add_routes([*self._probe_routes(), aiohttp.web.post(f"{prefix}/{{id:.*}}", review)])
        return app

    def probe_app(self) -> aiohttp.web.Application:
        """The application on the probe port: the probes and metrics, no reviews."""
        app = aiohttp.web.Application(client_max_size=1024)
        app.add_routes(self._probe_routes())
        return app

    async def _review(self, fn: Any, request: aiohttp.web.Request) -> aiohttp.web.Response:
        try:
            # orjson: the review (~6.5 KB as the apiserver sends a Pod) parses in ~19 us
            # instead of ~43 us with json, the largest single cost of a cached review.
            body = await request.read()
            data = orjson.loads(body)
        except ValueError as e:  # orjson.JSONDecodeError is a json.JSONDecodeError
            raise aiohttp.web.HTTPBadRequest(reason=f"not a JSON AdmissionReview: {e}") from e
        webhook = request.match_info.get("id")
        problem = review_problem(data, brackets=body.count(b"{") + body.count(b"["))
        if problem is not None:
            logger.info(
                "malformed AdmissionReview on /%s from %s: %s", webhook, request.remote, problem
            )
            message = f"malformed AdmissionReview: {problem}"
            raise aiohttp.web.HTTPBadRequest(reason=message, text=f"400: {message}\n")
        if self.fast_review is not None:
            # kopf binds its indexes (namespace labels, policies) into the function it hands
            # to webhook servers; the fast path reads the same ones.
            indexes = kopfcompat.indexes(fn)
            if indexes is not None:
                answer = await self.fast_review(data, webhook, indexes)
                if answer is not None:
                    return aiohttp.web.Response(
                        body=orjson.dumps(answer), content_type="application/json"
                    )
        sslpeer = request.transport.get_extra_info("peercert") if request.transport else None
        try:
            response = await fn(
                data,
                webhook=webhook,
                sslpeer=sslpeer,
                headers=dict(request.headers),
            )
        except kopfcompat.UnknownResourceError as e:
            raise aiohttp.web.HTTPNotFound(reason=str(e) or None) from e
        except kopfcompat.WebhookError as e:
            raise aiohttp.web.HTTPBadRequest(reason=str(e) or None) from e
        return aiohttp.web.Response(body=orjson.dumps(response), content_type="application/json")

    # -- serving --------------------------------------------------------------------------

    async def __call__(self, fn: Any) -> AsyncIterator[kopf.WebhookClientConfig]:
        stamps = self._file_stamps()  # before reading them: a change meanwhile is seen
        cadata, context = kopfcompat.ssl_context(self)
        runners: list[aiohttp.web.AppRunner] = []
        site: aiohttp.web.TCPSite | None = None
        try:
            runner = aiohttp.web.AppRunner(
                self.webhook_app(fn),
                handle_signals=False,
                access_log=None,
                shutdown_timeout=CLOSE_TIMEOUT,
            )
            await runner.setup()
            runners.append(runner)
            port = self.port or kopfcompat.free_port()
            site = aiohttp.web.TCPSite(
                runner, self.addr or None, port, ssl_context=context, reuse_address=True
            )
            await site.start()
            if self.probe_port is not None:
                probes = aiohttp.web.AppRunner(
                    self.probe_app(), handle_signals=False, access_log=None
                )
                await probes.setup()
                runners.append(probes)
                probe_site = aiohttp.web.TCPSite(
                    probes, self.addr or None, self.probe_port, reuse_address=True
                )
                await probe_site.start()
                self.probe_port = probe_site.port
            scheme = "http" if context is None else "https"
            host = self.host or kopfcompat.accessible_host(self.addr)
            url = self.url = kopfcompat.url(scheme, host, port, self.path or "")
            self._announce(url)
            self.ready = True
            while True:
                config: kopf.WebhookClientConfig = {"url": url}
                if cadata is not None:
                    config["caBundle"] = base64.b64encode(cadata).decode("ascii")
                yield config
                cadata, stamps = await self._reload_when_changed(context, cadata, stamps)
        except asyncio.CancelledError:
            if site is not None:
                await self._stop_gracefully(site)
            raise
        finally:
            self.ready = False
            for each in runners:
                await each.cleanup()

    def _announce(self, url: str) -> None:
        logger.info("serving webhooks at %s", url)
        if self.probe_port is not None:
            logger.info(
                "serving /healthz, /readyz and /metrics on plain HTTP port %s", self.probe_port
            )
        if self.authenticates_callers:
            allowed = f" naming {sorted(self.client_names)}" if self.client_names else ""
            logger.info(
                "callers must present a client certificate signed by %s%s",
                self.verify_cafile or "the configured client CA",
                allowed,
            )
            if self.probe_port is None:
                logger.warning(
                    "a client certificate is required on the webhook port, for probes and "
                    "/metrics too: kubelet probes cannot present one (use --probe-port)"
                )
        else:
            logger.warning(
                "no client CA (--client-ca): any client that reaches %s can submit "
                "AdmissionReviews, and kitpin resolves the ModelKits they name with the pull "
                "secrets of the namespace they name. Require the apiserver's client "
                "certificate (docs/security.md) or keep the port reachable by the apiserver "
                "only (the chart's NetworkPolicy)",
                url,
            )

    # -- certificates ---------------------------------------------------------------------

    def _watched(self) -> list[str]:
        files = (self.certfile, self.pkeyfile, self.cafile, self.verify_cafile)
        return [os.fspath(f) for f in files if f]

    def _file_stamps(self) -> tuple[tuple[float, int], ...]:
        stamps = []
        for path in self._watched():
            try:
                st = os.stat(path)
            except OSError:
                stamps.append((0.0, -1))
            else:
                stamps.append((st.st_mtime, st.st_size))
        return tuple(stamps)

    async def _reload_when_changed(
        self,
        context: ssl.SSLContext | None,
        cadata: bytes | None,
        stamps: tuple[tuple[float, int], ...],
    ) -> tuple[bytes | None, tuple[tuple[float, int], ...]]:
        """Wait until the certificate files change (from ``stamps``) and load cleanly; load
        them into the live ``context``; return the CA bundle for the webhook configurations
        and the files' new stamps."""
        failed: tuple[tuple[float, int], ...] | None = None
        while True:
            await asyncio.sleep(self.file_check_interval)
            now = self._file_stamps()
            if context is None or now in (stamps, failed):
                continue
            try:
                # A complete fresh build first: it fails, without touching the live context,
                # on a half-written pair (certificate and key that do not match).
                fresh_cadata, _ = kopfcompat.ssl_context(self)
                if self.certfile and self.pkeyfile:
                    context.load_cert_chain(self.certfile, self.pkeyfile, self.password)
                if self.verify_cafile or self.verify_capath or self.verify_cadata:
                    context.load_verify_locations(
                        self.verify_cafile, self.verify_capath, self.verify_cadata
                    )
            except (OSError, ssl.SSLError, ValueError) as e:
                logger.warning(
                    "certificate files changed but do not load (%s): still serving the "
                    "previous certificate until they do",
                    e,
                )
                failed = now
                continue
            logger.info("certificate files changed: new connections get the new certificate")
            return (fresh_cadata if fresh_cadata is not None else cadata), now

    # -- stopping -------------------------------------------------------------------------

    async def _stop_gracefully(self, site: aiohttp.web.TCPSite) -> None:
        """Unready first, serve through the drain window, stop listening, let in-flight
        reviews finish; all within ``shutdown_seconds``."""
        task = asyncio.current_task()
        if task is not None:
            # kopf cancelled this task to stop it: take the cancellation (it is re-raised
            # when this returns), so the waits below (and aiohttp's own) run to their end.
            task.uncancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_seconds
        self.stopping = True
        logger.info(
            "stopping: /readyz answers 503; serving new connections for %.1f s more "
            "(load balancers and endpoints catch up), then finishing in-flight reviews "
            "(at most %.1f s in all)",
            self.drain_seconds,
            self.shutdown_seconds,
        )
        await asyncio.sleep(self.drain_seconds)
        await site.stop()  # no new connections; accepted ones are still served
        if self.in_flight:
            logger.info("waiting for %d in-flight review(s)", self.in_flight)
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time() - CLOSE_TIMEOUT)):
                    await self._idle.wait()
            except TimeoutError:
                logger.warning(
                    "%d review(s) still in flight after %.1f s: cutting them (the "
                    "apiserver applies the webhook's failurePolicy to them)",
                    self.in_flight,
                    self.shutdown_seconds,
                )
                late = set(self._reviewing)
                for each in late:
                    each.cancel()
                await asyncio.wait(late, timeout=CLOSE_TIMEOUT / 2)
        logger.info("stopped serving webhooks")
