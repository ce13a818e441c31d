"""Reading the registry's answers and turning every failure into a
:class:`controller.errors.RegistryError` subclass whose message says what was being fetched
(:class:`Target`), what went wrong and what to do.

- Bodies are streamed with a hard size cap (:func:`read_body`): a success larger than its
  limit is a :class:`~controller.errors.ManifestTooLargeError` (Content-Length is checked
  before reading); of an error answer only the start is read, for its OCI error codes. The
  cap counts the bytes as received and nothing is decompressed: every request asks for
  ``Accept-Encoding: identity``, and a body sent with another ``Content-Encoding`` anyway is
  refused unread (a success: :class:`~controller.errors.BadResponseError`) or ignored (an
  error answer: its status still decides). Decoding it would let ~1 KB on the wire
  (``gzip, gzip``) expand to gigabytes in memory before any cap could count a byte.
- JSON (manifests, configs, error bodies; token answers in :mod:`.auth`) is decoded by
  :func:`controller.jsonlimits.loads`: bounded depth, every failure a
  :class:`~controller.jsonlimits.DecodeError`, mapped to a ``BadResponseError``.
- A body's digest is the sha256 of the exact bytes received, checked against
  ``Docker-Content-Digest`` and against the digest the reference carried
  (:func:`verify_digest`).
- Status codes map to errors by :func:`status_error` (``404`` and the OCI "unknown" codes:
  not found, ``401``, ``403``, ``429`` with its ``Retry-After`` (ignored when it is neither
  seconds nor an HTTP date, capped at :data:`MAX_RETRY_AFTER_SECONDS`), ``5xx``, anything
  else),
  transport failures by :func:`transport_error` (timeouts, TLS verification, the rest:
  unreachable).
- An error raised without context (by a pure helper, or for another request of a shared
  token fetch) is told again about the request at hand: :func:`in_context`, :func:`moved`.

Pure but for :func:`read_body`, which reads a response's stream.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import logging
import re
import ssl
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Final, TypeVar

import httpx

from controller import errors, jsonlimits, types
from controller.registry import auth, hosts

__all__ = [
    "MAX_ERROR_BODY_BYTES",
    "MAX_RETRY_AFTER_SECONDS",
    "Answer",
    "Target",
    "content_codings",
    "in_context",
    "json_object",
    "moved",
    "parse_retry_after",
    "read_body",
    "status_error",
    "too_large",
    "transport_error",
    "verify_digest",
]

logger = logging.getLogger(__name__)

MAX_ERROR_BODY_BYTES: Final = 64 * 1024
"""Of an error answer only the start is read, for its OCI error codes and message."""

MAX_RETRY_AFTER_SECONDS: Final = 24 * 3600.0
"""A longer ``Retry-After`` is taken as this: the value is only reported (and a year-long wait
from a hostile registry is as useless as one day)."""

_NOT_FOUND_CODES: Final = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"})
_VERIFIABLE: Final = frozenset({"sha256", "sha384", "sha512"})
_DIGITS: Final = re.compile(r"[0-9]+")
"""ASCII digits, as RFC 9110 writes delta-seconds and Content-Length (``str.isdigit`` also
takes ``²`` and ``٣``, which ``int`` then refuses)."""

E = TypeVar("E", bound=errors.RegistryError)


@dataclass(frozen=True, kw_only=True)
class Target:
    """What a request is for: the registry a reference names and the repository in it."""

    registry: str
    repository: str
    subject: str
    """How messages name the thing fetched: ``manifest docker.io/library/x:1``."""

    def error(self, kind: type[E], why: str) -> E:
        """A ``kind`` error about this target: the message is the subject, then ``why``; the
        registry and repository are the target's."""
        return kind(f"{self.subject}: {why}", registry=self.registry, repository=self.repository)


@dataclass(frozen=True, kw_only=True)
class Answer:
    """A final answer (redirects followed) and its body as read."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: httpx.URL
    redirected: bool


# -- reading answers (pure) ---------------------------------------------------------------------


def verify_digest(
    body: bytes,
    *,
    claimed: str | None,
    expected: str | None,
    subject: str,
    registry: str,
    repository: str,
) -> str:
    """``sha256:<hex>`` of ``body``. Raises :class:`errors.DigestMismatchError` when the
    registry's ``Docker-Content-Digest`` (``claimed``) or the digest the reference carried
    (``expected``) disagrees with the bytes."""
    computed = "sha256:" + hashlib.sha256(body).hexdigest()
    for said, who in ((claimed, "the registry claimed"), (expected, "the reference asked for")):
        if not said:
            continue
        said = said.strip()
        algorithm, _, _hex = said.partition(":")
        if algorithm == "sha256":
            actual = computed
        elif algorithm in _VERIFIABLE:
            actual = f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"
        else:
            logger.debug("%s: cannot verify digest algorithm %r; ignored", subject, algorithm)
            continue
        if said != actual:
            raise errors.DigestMismatchError(
                f"{subject}: {who} {said}, but the bytes received hash to {actual}; nothing "
                "was pinned. The registry, or something between kitpin and it (a proxy, a "
                "cache), is serving content that does not match its digest",
                registry=registry,
                repository=repository,
            )
    return computed


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date), at most
    :data:`MAX_RETRY_AFTER_SECONDS`; None when absent or neither (a malformed value is
    ignored, never raised on: the answer is still a rate limit)."""
    if not value:
        return None
    text = value.strip()
    if _DIGITS.fullmatch(text):
        # More digits than a day has seconds needs is "very long": no int of 4,300 digits.
        digits = text.lstrip("0") or "0"
        seconds = float(digits) if len(digits) <= 12 else MAX_RETRY_AFTER_SECONDS
        return min(seconds, MAX_RETRY_AFTER_SECONDS)
    try:
        moment = email.utils.parsedate_to_datetime(text)
        delta = moment.timestamp() - now
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # not a date, or a date no datetime can hold
    return min(max(0.0, delta), MAX_RETRY_AFTER_SECONDS)


def _oci_errors(body: bytes) -> tuple[frozenset[str], str]:
    """The OCI error codes in an error body and a short, single-line message for humans."""
    try:
        document = jsonlimits.loads(body)
    except jsonlimits.DecodeError:
        return frozenset(), ""
    if not isinstance(document, dict) or not isinstance(document.get("errors"), list):
        return frozenset(), ""
    codes: set[str] = set()
    messages: list[str] = []
    for item in document["errors"]:
        if not isinstance(item, dict):
            continue
        code, message = item.get("code"), item.get("message")
        if isinstance(code, str):
            codes.add(code.upper())
        if isinstance(message, str) and message:
            messages.append(" ".join(message.split()))
    text = "; ".join(messages)
    return frozenset(codes), (text[:200] + "…" if len(text) > 200 else text)


def json_object(body: bytes, *, target: Target) -> dict[str, object]:
    """``body`` as a JSON object (a manifest or a config), decoded by
    :func:`controller.jsonlimits.loads`, else :class:`errors.BadResponseError`."""
    try:
        document = jsonlimits.loads(body)
    except jsonlimits.DecodeError as e:
        raise target.error(
            errors.BadResponseError,
            f"the body is not JSON kitpin accepts ({e}); the registry served something else "
            "than a manifest or config",
        ) from e
    if not isinstance(document, dict):
        raise target.error(
            errors.BadResponseError,
            f"the body is JSON but {types.json_type(document)}, not an object; the registry "
            "served something else than a manifest or config",
        )
    return document


# -- reading bodies -----------------------------------------------------------------------------


async def read_body(response: httpx.Response, *, limit: int, strict: bool, target: Target) -> bytes:
    """The body as received, at most ``limit`` bytes, never decompressed. ``strict`` (a
    success): more is a :class:`errors.ManifestTooLargeError` (checked against
    Content-Length before reading), and a ``Content-Encoding`` other than ``identity`` is a
    :class:`errors.BadResponseError`; else (an error answer) the rest is ignored, and so is
    an encoded body (``b""``: only its status counts)."""
    encodings = content_codings(response.headers)
    if encodings:
        if strict:
            raise target.error(
                errors.BadResponseError,
                f"{hosts.host_port_of(response.request.url)} sent the body with "
                f"Content-Encoding: {', '.join(encodings)[:100]}, though kitpin asked for it "
                "unencoded (Accept-Encoding: identity); kitpin does not decompress what a "
                "registry sends. Configure the registry, or the proxy or CDN in front of it, "
                "to honour Accept-Encoding: identity",
            )
        return b""
    declared = _content_length(response.headers.get("content-length"))
    if strict and declared is not None and declared > limit:
        raise too_large(target, limit, f"Content-Length says {declared} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with contextlib.aclosing(_raw_chunks(response)) as received:
            async for chunk in received:
                if size + len(chunk) > limit:
                    if strict:
                        raise too_large(target, limit, "the body is longer")
                    chunks.append(chunk[: limit - size])
                    break
                chunks.append(chunk)
                size += len(chunk)
    except httpx.HTTPError as e:
        raise transport_error(e, url=response.request.url, target=target) from e
    return b"".join(chunks)


async def _raw_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The body's bytes as received: the raw stream, because httpx decodes Content-Encoding
    in ``aiter_bytes()``, whole chunks at a time, before any cap could count them. A
    response its transport already read (``httpx.MockTransport`` with ``content=``; no
    encoding, see :func:`read_body`) is its content."""
    if response.is_stream_consumed:
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk


def content_codings(headers: httpx.Headers) -> list[str]:
    """The content codings ``headers`` say the body is in, other than ``identity``
    (lowercased, in order; empty for a body as is)."""
    return [
        coding
        for value in headers.get_list("content-encoding", split_commas=True)
        if (coding := value.strip().lower()) and coding != "identity"
    ]


def _content_length(value: str | None) -> int | None:
    """A ``Content-Length`` as a number, or None when absent or not one (the transport then
    frames the body; the cap still counts it). At most 2**64: no huge int is converted."""
    if value is None:
        return None
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        return None
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= 20 else 2**64


def too_large(target: Target, limit: int, why: str) -> errors.ManifestTooLargeError:
    return target.error(
        errors.ManifestTooLargeError,
        f"{why}, more than the {limit}-byte limit; a ModelKit manifest or Kitfile is a few "
        "KiB, so it was not read. Check the reference points at a ModelKit, or raise the limit",
    )


# -- errors in context --------------------------------------------------------------------------


def in_context(e: errors.RegistryError, target: Target) -> errors.RegistryError:
    """``e`` again, its message prefixed with what was being fetched, and the registry and
    repository of the reference filled in (pure helpers raise without them)."""
    return _retold(e, f"{target.subject}: {e.message}", target)


def moved(e: errors.RegistryError, origin: Target, target: Target) -> errors.RegistryError:
    """``e``, raised for ``origin``, as if raised for ``target``: the subject its message
    starts with, and its registry and repository, are ``target``'s."""
    prefix = f"{origin.subject}: "
    message = e.message
    if message.startswith(prefix):
        message = f"{target.subject}: {message.removeprefix(prefix)}"
    return _retold(e, message, target)


def _retold(e: errors.RegistryError, message: str, target: Target) -> errors.RegistryError:
    """An error of ``e``'s class with ``message``, about ``target`` (a rate limit keeps its
    ``retry_after``)."""
    again = type(e)(message)
    again.registry, again.repository = target.registry, target.repository
    if isinstance(e, errors.RateLimitedError) and isinstance(again, errors.RateLimitedError):
        again.retry_after = e.retry_after
    return again


# -- mapping failures ---------------------------------------------------------------------------


def transport_error(e: httpx.HTTPError, *, url: httpx.URL, target: Target) -> errors.RegistryError:
    """The error for a request to ``url`` that got no (complete) answer."""
    host = hosts.host_port_of(url)
    if isinstance(e, httpx.TimeoutException):
        return target.error(
            errors.RegistryTimeoutError,
            f"{host} did not answer in time ({e.__class__.__name__}); the registry is slow or "
            "unreachable, try again",
        )
    if _tls_verification_failed(e):
        return target.error(
            errors.UnreachableError,
            f"TLS verification of {host} failed ({e}); if {target.registry} uses a private "
            f"CA, configure caFile for {target.registry} in the registry config",
        )
    if isinstance(e, httpx.DecodingError):
        return target.error(
            errors.BadResponseError, f"{host} sent a body that cannot be decoded ({e})"
        )
    return target.error(
        errors.UnreachableError,
        f"cannot talk to {host} ({e.__class__.__name__}: {e}); check the registry name, "
        "network policies and egress, and plainHTTP if it serves plain HTTP",
    )


def _tls_verification_failed(e: BaseException) -> bool:
    seen: BaseException | None = e
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(e)


def status_error(
    answer: Answer, *, target: Target, credential: types.Credential | None, now: float
) -> errors.RegistryError:
    """The error for a final answer that is no success; ``now`` (:func:`time.time`) dates a
    ``Retry-After``."""
    codes, said = _oci_errors(answer.body)
    detail = f" (the registry said: {said})" if said else ""
    status = answer.status
    who = auth.describe_credential(credential)
    if status == 404 or codes & _NOT_FOUND_CODES:
        return errors.NotFoundError(
            f"{target.subject} not found ({status}){detail}; check the repository and tag. "
            "A private repository can look missing without credentials: add a pull secret "
            f"for {target.registry} to the namespace",
            registry=target.registry,
            repository=target.repository,
        )
    if status == 401:
        return target.error(
            errors.UnauthorizedError,
            f"{target.registry} refused {who} (401){detail}; add a pull secret for "
            f"{target.registry} to the namespace (imagePullSecrets), or check the credentials "
            f"for {target.registry}",
        )
    if status == 403:
        return target.error(
            errors.ForbiddenError,
            f"{target.registry} denied {who} access to {target.repository} (403){detail}; "
            f"grant that credential pull access to {target.repository}, or use one that has it",
        )
    if status == 429:
        retry_after = parse_retry_after(answer.headers.get("retry-after"), now=now)
        wait = f"retry after {retry_after:.0f} s" if retry_after is not None else "retry later"
        return errors.RateLimitedError(
            f"{target.subject}: {target.registry} is rate limiting kitpin (429){detail}; "
            f"{wait}, or authenticate to get a higher limit",
            retry_after=retry_after,
            registry=target.registry,
            repository=target.repository,
        )
    if status >= 500:
        return target.error(
            errors.RegistryError,
            f"{target.registry} failed with {status}{detail}; the registry has a problem, try "
            "again later",
        )
    return target.error(
        errors.BadResponseError,
        f"{target.registry} answered {status}{detail}, which kitpin cannot use; check the "
        "reference and the registry",
    )
