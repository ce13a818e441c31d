"""Every use of kopf's internals, in one place. Checked against kopf 1.45.2.

kitpin uses kopf's public API (``kopf.on.*``, ``kopf.index``, ``kopf.Patch``,
``kopf.AdmissionError``, ``kopf.WebhookServer``, ``kopf.operator``) everywhere else. What
kopf does not make public, and :mod:`controller.admission.server` needs, is here, each
with where it lives in kopf 1.45.2; ``tests/admission/test_kopfcompat.py`` checks every one
against real kopf objects, so an upgrade that moves one fails there, not in production:

- :class:`WebhookError`, :class:`UnknownResourceError`: what kopf's webhook function
  (``kopf._core.engines.admission.serve_admission_request``) raises for a review it cannot
  serve (malformed; a resource it has no handler for). No public alias.
- :func:`indexes`: kopf's ``spawn_tasks`` (``kopf._core.reactor.running``) hands webhook
  servers ``functools.partial(serve_admission_request, ..., indices=<kopf's indexes>)``;
  the fast path reads the same indexes from it.
- :func:`ssl_context`, :func:`free_port`, :func:`accessible_host`, :func:`url`: the
  helpers of ``kopf.WebhookServer`` (``kopf._kits.webhooks``: ``_build_ssl``,
  ``_allocate_free_port``, ``_get_accessible_addr``, ``_build_url``) that kitpin's
  subclass reuses to serve the same TLS and URLs as kopf's own server.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import kopf
from kopf._core.engines.admission import UnknownResourceError, WebhookError

__all__ = [
    "UnknownResourceError",
    "WebhookError",
    "accessible_host",
    "free_port",
    "indexes",
    "ssl_context",
    "url",
]


def indexes(webhook_fn: object) -> Mapping[str, Any] | None:
    """The indexes (by index id) kopf bound into the webhook function it hands to servers,
    or None when ``webhook_fn`` carries none (not kopf's, or kopf changed)."""
    keywords = getattr(webhook_fn, "keywords", None)
    if not isinstance(keywords, Mapping):
        return None
    found = keywords.get("indices")
    return found if isinstance(found, Mapping) else None


def ssl_context(server: kopf.WebhookServer) -> tuple[bytes | None, ssl.SSLContext | None]:
    """(CA bundle for the webhook configurations, server TLS context) as kopf builds them from
    the server's settings; (None, None) for an insecure (plain HTTP) server."""
    cadata, context = server._build_ssl()
    return cadata, context


def free_port() -> int:
    """A free TCP port, for a server without a fixed one."""
    return int(kopf.WebhookServer._allocate_free_port())


def accessible_host(addr: str | None) -> str:
    """A host the apiserver can reach for a listening address (``0.0.0.0`` → ``127.0.0.1``)."""
    return str(kopf.WebhookServer._get_accessible_addr(addr))


def url(scheme: str, host: str, port: int, path: str) -> str:
    """The webhook URL as kopf writes it (IPv6 in brackets, default ports left out)."""
    return str(kopf.WebhookServer._build_url(scheme, host, port, path))
