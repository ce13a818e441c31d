"""References to ModelKits and images: parse, validate, normalise, render. Pure, no I/O.

Two grammars, never mixed (see ARCHITECTURE.md and the ModelKit reference notes):

- ``"image"``: the container/CRI grammar of Kubernetes ``image:`` fields and
  ``volumes[].image.reference``. A first path component without ``.`` or ``:`` that is not
  ``localhost`` means Docker Hub (``docker.io``; single-component names get ``library/``).
  As in the container runtimes, a first component with an uppercase letter is a host too
  (``MyRegistry/model``), because a repository could not contain it; such a host keeps its
  case in ``registry`` (lowercased, it would read as a Docker Hub namespace).
- ``"kit"``: the KitOps grammar of ``MODELKIT_REF`` and ``kit://`` URIs. The first component
  is a registry only if it contains ``.`` or ``:``; otherwise kit reads its LOCAL storage,
  which a Pod never has, so such a reference is refused with ``LocalReferenceError``. So is
  ``localhost/model``: kit needs the port (``localhost:5000/model``) to see a registry.
  A leading ``kit://`` is accepted and dropped. Kit does not know Docker Hub's ``library/``.

Both: no tag means ``latest``; ``tag@digest`` keeps both (the digest wins when pulling).

Nothing is ever trimmed or repaired: an admission controller that silently changed a value
would pin something the user did not write. Every problem is a
:class:`controller.errors.ReferenceError` whose message names the problem and says what to
write instead; the offending text is quoted with ``repr`` so control characters are visible.

Accepted (both grammars)::

    [HOST[:PORT]/]PATH[/PATH...][:TAG][@sha256:<64 lowercase hex>]

    HOST  DNS labels ``[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?`` joined by ``.``, or an IPv6
          literal in brackets (``[::1]``); case-insensitive, lowercased in ``registry``
    PORT  1-65535
    PATH  ``[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*``; lowercase only
    TAG   ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``

``registry/repository`` is limited to 255 characters (the distribution limit that container
runtimes enforce) and the whole text to 4096.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from dataclasses import dataclass, replace
from typing import Literal, NoReturn

from controller import errors

Grammar = Literal["image", "kit"]

DEFAULT_TAG = "latest"
DOCKER_HUB = "docker.io"

DOCKER_HUB_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io"})
"""Host names that mean Docker Hub; folded into :data:`DOCKER_HUB` in ``registry``."""

DOCKER_HUB_OFFICIAL_NAMESPACE = "library"
"""Namespace of Docker Hub's official images: ``nginx`` is ``docker.io/library/nginx``."""

LOCALHOST = "localhost"

KIT_SCHEME = "kit://"
"""The URI prefix KServe's ``storageUri`` and kit's own tooling put in front of a reference."""

MAX_REFERENCE_LENGTH = 4096
"""Longest text :func:`parse` looks at; anything longer is refused before parsing."""

MAX_NAME_LENGTH = 255
"""Longest ``registry/repository`` (distribution's ``NameTotalLengthMax``)."""

MAX_TAG_LENGTH = 128

SHA256_FORMAT = "sha256:<64 lowercase hex>"

EXAMPLE_REGISTRY = "registry.example.com"

_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_TAG_CHARS_RE = re.compile(r"[A-Za-z0-9_.-]+")
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_IPV6_CHARS_RE = re.compile(r"[0-9A-Fa-f:]+")
_PORT_RE = re.compile(r"[0-9]+")
_SHA256_RE = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_HEX_RE = re.compile(r"[0-9a-fA-F]*")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")

_QUOTE_LIMIT = 200

_PATH_RULE = (
    "path components are lowercase letters and digits, optionally separated by one '.', "
    "one '_', '__' or a run of '-', and cannot start or end with a separator"
)
_TAG_RULE = (
    f"a tag is 1 to {MAX_TAG_LENGTH} characters from A-Z a-z 0-9 '_' '.' '-' and cannot "
    "start with '.' or '-'"
)
_DIGEST_RULE = f"kitpin pins sha256 digests: expected {SHA256_FORMAT}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reference:
    """A parsed, validated reference. Construct it with :func:`parse`, never by hand."""

    registry: str
    """Normalised ``host[:port]``: host lowercased, IPv6 literal in brackets, Docker Hub
    aliases (``index.docker.io``, ``registry-1.docker.io``) folded into ``docker.io``. A host
    without ``.`` or port that only its uppercase letters mark as one (``MyRegistry``, image
    grammar) keeps its case, so that :attr:`canonical` still names it (lowercased, it would
    name a Docker Hub repository); the host policy and the keychain compare hosts
    case-insensitively."""

    repository: str
    """Path inside the registry, e.g. ``library/nginx`` or ``org/team/model``."""

    tag: str
    """The tag; ``latest`` when the text had none (see ``tag_explicit``)."""

    tag_explicit: bool
    """Whether the text spelled the tag out."""

    digest: str | None
    """``sha256:<64 lowercase hex>`` when the text carried a digest, else None."""

    grammar: Grammar

    name: str
    """The registry+repository part as the user wrote it (without ``kit://``, tag or digest).
    The pinned form keeps this spelling so a human recognises their own reference."""

    @property
    def canonical_name(self) -> str:
        """``registry/repository``, fully qualified."""
        return f"{self.registry}/{self.repository}"

    @property
    def canonical(self) -> str:
        """Fully qualified and unambiguous: ``registry/repository@digest`` when a digest is
        present, else ``registry/repository:tag``. The resolver's cache key."""
        if self.digest:
            return f"{self.canonical_name}@{self.digest}"
        return f"{self.canonical_name}:{self.tag}"

    @property
    def is_pinned(self) -> bool:
        return self.digest is not None

    def pinned(self, digest: str) -> str:
        """The pinned text: the user's spelling of the name, the tag kept, the digest added:
        ``name:tag@sha256:...``."""
        return f"{self.name}:{self.tag}@{digest}"

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag_explicit or not self.digest:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse(text: str, *, grammar: Grammar) -> Reference:
    """Parse ``text`` in ``grammar``; raise :class:`controller.errors.ReferenceError`
    (or its subclass ``LocalReferenceError``) with a message that says what to fix.

    Never raises anything else, whatever the input (checked by a property test).
    """
    if not isinstance(text, str):
        raise errors.ReferenceError(
            f"expected a reference string, got {type(text).__name__} {_quote(text)}; "
            "write the reference as a string, e.g. 'registry.example.com/org/model:v1'",
            text=repr(text),
        )
    return _parse_cached(text, grammar)


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str, grammar: Grammar) -> Reference:
    """References are immutable values: a text parses to the same one every time, and the
    same few references arrive with every Pod of a rollout (errors are not cached)."""
    return _Parser(text, grammar).parse()


def _quote(value: object) -> str:
    """``repr`` of a value for a message, shortened when long."""
    if isinstance(value, str) and len(value) > _QUOTE_LIMIT:
        return f"{value[: _QUOTE_LIMIT // 2]!r}... ({len(value)} characters)"
    return repr(value)


class _Parser:
    """One parse of one text; exists so every error can quote the original text."""

    def __init__(self, text: str, grammar: Grammar) -> None:
        self.text = text
        self.grammar: Grammar = grammar
        self.q = _quote(text)
        self.prefix = ""
        """``kit://`` when the text had it (kit grammar), to repeat it in suggestions."""

    def fail(self, problem: str) -> NoReturn:
        raise errors.ReferenceError(f"{self.q} {problem}", text=self.text)

    def parse(self) -> Reference:
        if self.grammar not in ("image", "kit"):
            self.fail(f"cannot be parsed in the unknown grammar {self.grammar!r}")
        self._check_characters()
        body = self._strip_scheme(self.text)

        name, digest = self._split_digest(body)
        name, tag = self._split_tag(name)
        if not name:
            self.fail(
                "has no repository name; write registry and repository first, "
                f"e.g. '{self.prefix}{EXAMPLE_REGISTRY}/org/model:v1'"
            )
        if self.grammar == "image" and _HEX64_RE.fullmatch(body):
            self.fail(
                "looks like an image ID (64 hex digits), not a reference; write "
                f"'registry/repository@sha256:{body}' instead"
            )

        components = name.split("/")
        self._check_no_empty_components(name, components)
        host_text = components[0] if self._first_is_registry(components) else None
        path = components[1:] if host_text is not None else components
        repository = self._repository(path)

        if host_text is None and self.grammar == "kit":
            self._refuse_local(name, components)
        if host_text is None:
            registry = DOCKER_HUB
        else:
            registry = self._registry(host_text)
        if self.grammar == "image" and registry == DOCKER_HUB and len(path) == 1:
            repository = f"{DOCKER_HUB_OFFICIAL_NAMESPACE}/{repository}"

        canonical_name = f"{registry}/{repository}"
        if len(canonical_name) > MAX_NAME_LENGTH:
            self.fail(
                f"names {canonical_name!r}, which is {len(canonical_name)} characters long; "
                f"registry and repository together are limited to {MAX_NAME_LENGTH} "
                "characters: use a shorter repository path"
            )
        return Reference(
            registry=registry,
            repository=repository,
            tag=tag if tag is not None else DEFAULT_TAG,
            tag_explicit=tag is not None,
            digest=digest,
            grammar=self.grammar,
            name=name,
        )

    # -- whole-text checks ---------------------------------------------------------------

    def _check_characters(self) -> None:
        text = self.text
        if not text:
            self.fail(f"is empty; write a reference such as '{EXAMPLE_REGISTRY}/org/model:v1'")
        if len(text) > MAX_REFERENCE_LENGTH:
            self.fail(
                f"is {len(text)} characters long, more than the {MAX_REFERENCE_LENGTH} "
                "characters a reference may have; write a real registry/repository:tag"
            )
        for index, char in enumerate(text):
            if char.isspace():
                self.fail(
                    f"contains whitespace ({char!r} at position {index}); a reference "
                    "cannot contain spaces, tabs or line breaks, and kitpin does not trim "
                    "values: remove it"
                )
            if unicodedata.category(char).startswith("C"):
                self.fail(
                    f"contains a control or invisible character ({char!r} at position "
                    f"{index}); remove it (kitpin does not change values for you)"
                )
            if not char.isascii():
                self.fail(
                    f"contains the non-ASCII character {char!r} at position {index}; "
                    "references are ASCII only: replace it"
                )

    def _strip_scheme(self, text: str) -> str:
        match = _SCHEME_RE.match(text)
        if match is None:
            if "://" in text:
                self.fail("contains '://'; a reference is not a URL: remove the scheme")
            return text
        scheme, rest = match.group(0), text[match.end() :]
        if scheme == KIT_SCHEME:
            if self.grammar == "image":
                self.fail(
                    f"starts with {KIT_SCHEME!r}, the KitOps URI scheme (as in a KServe "
                    "storageUri); an image reference has no scheme: write "
                    f"{rest!r}"
                )
            if not rest:
                self.fail(
                    f"has nothing after {KIT_SCHEME!r}; write e.g. "
                    f"'{KIT_SCHEME}{EXAMPLE_REGISTRY}/org/model:v1'"
                )
            self.prefix = KIT_SCHEME
            if "://" in rest:
                self.fail("contains '://' twice; write a single 'kit://' and the reference")
            return rest
        suggestion = repr(rest)
        if self.grammar == "kit":
            suggestion += f" or {KIT_SCHEME + rest!r}"
        only = f" (only {KIT_SCHEME!r} is accepted)" if self.grammar == "kit" else ""
        self.fail(
            f"starts with the URL scheme {scheme!r}{only}; a reference has no scheme: "
            f"write {suggestion}"
        )

    # -- digest and tag --------------------------------------------------------------------

    def _split_digest(self, body: str) -> tuple[str, str | None]:
        name, at, digest = body.partition("@")
        if not at:
            return body, None
        if "@" in digest:
            self.fail("contains more than one '@'; write at most one '@sha256:...' digest")
        if not digest:
            self.fail(
                f"ends with '@' but has no digest after it; write '@{SHA256_FORMAT}' "
                "or remove the '@'"
            )
        self._check_digest(digest)
        return name, digest

    def _check_digest(self, digest: str) -> None:
        if _SHA256_RE.fullmatch(digest):
            return
        algorithm, colon, encoded = digest.partition(":")
        if not colon:
            problem = f"digest {_quote(digest)} has no algorithm"
        elif algorithm != "sha256":
            problem = f"digest algorithm {algorithm!r} is not supported"
        elif not _HEX_RE.fullmatch(encoded):
            problem = f"digest {_quote(digest)} contains characters that are not hexadecimal"
        elif len(encoded) != 64:
            problem = f"digest {_quote(digest)} has {len(encoded)} hex digits instead of 64"
        else:
            problem = f"digest {_quote(digest)} has uppercase hex digits"
        self.fail(f"has an unusable digest: {problem}; {_DIGEST_RULE}")

    def _split_tag(self, name: str) -> tuple[str, str | None]:
        colon = name.rfind(":")
        if colon <= name.rfind("/"):
            return name, None
        name, tag = name[:colon], name[colon + 1 :]
        if not tag:
            where = "before '@'" if "@" in self.text else "after it"
            self.fail(f"has a ':' but no tag {where}; write a tag (e.g. ':v1') or remove the ':'")
        if _TAG_RE.fullmatch(tag):
            return name, tag
        if len(tag) > MAX_TAG_LENGTH and _TAG_CHARS_RE.fullmatch(tag):
            self.fail(
                f"has a tag of {len(tag)} characters; tags are limited to {MAX_TAG_LENGTH} "
                "characters: use a shorter tag"
            )
        self.fail(f"has an invalid tag {_quote(tag)}; {_TAG_RULE}")

    # -- name ------------------------------------------------------------------------------

    def _check_no_empty_components(self, name: str, components: list[str]) -> None:
        if all(components):
            return
        if name.startswith("/"):
            problem = "starts with '/'"
        elif name.endswith("/"):
            problem = "ends its name with '/'"
        else:
            problem = "has an empty path component ('//')"
        self.fail(
            f"{problem}; write the name as host/path/to/repository with exactly one '/' "
            "between components"
        )

    def _first_is_registry(self, components: list[str]) -> bool:
        if len(components) < 2:
            return False
        first = components[0]
        if "." in first or ":" in first or first.startswith("["):
            return True
        if self.grammar == "image":
            # The container runtimes' rule: localhost, or a component that cannot be a
            # repository path because of uppercase letters, is a host.
            return first == LOCALHOST or first != first.lower()
        return False

    def _repository(self, path: list[str]) -> str:
        repository = "/".join(path)
        for component in path:
            if _PATH_COMPONENT_RE.fullmatch(component):
                continue
            if ":" in component:
                self.fail(
                    f"has a ':' inside the repository path component {component!r}; a ':' "
                    "may only separate the registry host from its port, or the name from "
                    "the tag (once)"
                )
            if component != component.lower() and _PATH_COMPONENT_RE.fullmatch(component.lower()):
                self.fail(
                    f"has uppercase letters in the repository {repository!r}; repositories "
                    f"must be lowercase: write {repository.lower()!r}"
                )
            self.fail(f"has an invalid repository path component {component!r}; {_PATH_RULE}")
        return repository

    def _refuse_local(self, name: str, components: list[str]) -> NoReturn:
        body = self.text[len(self.prefix) :]
        hint = ""
        if len(components) > 1 and components[0] == LOCALHOST:
            body = body[len(LOCALHOST) + 1 :]
            hint = (
                f" (kit counts {LOCALHOST!r} as a registry only with a port: write "
                f"'{self.prefix}{LOCALHOST}:5000/{body}' if a registry listens there)"
            )
        message = (
            f"{self.q} has no registry host, so kit would read its local storage, which a "
            "Pod does not have; write the registry explicitly, e.g. "
            f"'{self.prefix}{EXAMPLE_REGISTRY}/{body}'{hint}"
        )
        if len(components) == 1 and "." in name:
            message += (
                f" (if {name!r} is the registry, add the repository: "
                f"'{self.prefix}{name}/<repository>')"
            )
        raise errors.LocalReferenceError(message, text=self.text)

    def _registry(self, host_text: str) -> str:
        """Validate ``host[:port]`` and return its normalised form."""
        if host_text.startswith("["):
            end = host_text.find("]")
            if end == -1:
                self.fail(
                    f"has an unclosed '[' in the registry host {host_text!r}; write an "
                    "IPv6 literal as '[::1]:5000'"
                )
            literal, rest = host_text[1:end], host_text[end + 1 :]
            if not _IPV6_CHARS_RE.fullmatch(literal) or not _is_ipv6(literal):
                self.fail(
                    f"has {host_text[: end + 1]!r} as registry host, which is not an IPv6 "
                    "address; write e.g. '[::1]:5000'"
                )
            host = f"[{literal.lower()}]"
            if rest and not rest.startswith(":"):
                self.fail(
                    f"has {rest!r} after the IPv6 literal in {host_text!r}; only ':PORT' "
                    "may follow the ']'"
                )
            port = rest[1:] if rest else None
        else:
            if host_text.count(":") > 1:
                self.fail(
                    f"has {host_text!r} as registry host; an IPv6 address must be written "
                    "in brackets, e.g. '[::1]:5000/repository'"
                )
            host, colon, port_text = host_text.partition(":")
            port = port_text if colon else None
            self._check_host_name(host, host_text)
            if colon or "." in host or host.lower() == LOCALHOST:
                host = host.lower()
            # else: ``MyRegistry`` (image grammar) is a host only because of its uppercase
            # letters; lowercased, ``myregistry/model`` would read as Docker Hub's
            # ``docker.io/myregistry/model``, so the case is kept (as the runtimes keep it).
        if port is not None:
            port = self._port(port, host_text)
            return f"{host}:{port}"
        if host in DOCKER_HUB_ALIASES:
            return DOCKER_HUB
        return host

    def _check_host_name(self, host: str, host_text: str) -> None:
        if not host:
            self.fail(f"has no host name before the port in {host_text!r}")
        labels = host.split(".")
        if not all(labels):
            self.fail(
                f"has an empty label in the registry host {host!r} (a leading, trailing or "
                "doubled '.'); write e.g. 'registry.example.com'"
            )
        for label in labels:
            if not _HOST_LABEL_RE.fullmatch(label):
                self.fail(
                    f"has an invalid registry host {host!r}: the label {label!r} must be "
                    "letters, digits and '-', and cannot start or end with '-'"
                )

    def _port(self, port: str, host_text: str) -> str:
        if not port:
            self.fail(
                f"has a ':' but no port in the registry {host_text!r}; write the port "
                "(e.g. ':5000') or remove the ':'"
            )
        if not _PORT_RE.fullmatch(port):
            self.fail(
                f"has the port {port!r} in the registry {host_text!r}, which is not a "
                "number; write a port from 1 to 65535"
            )
        # Bound the digits before int(): a 4000-digit port must not cost anything.
        digits = port.lstrip("0") or "0"
        number = int(digits) if len(digits) <= 6 else 65536
        if not 1 <= number <= 65535:
            self.fail(
                f"has the port {port!r} in the registry {host_text!r}; a port must be "
                "from 1 to 65535"
            )
        return str(number)


def _is_ipv6(literal: str) -> bool:
    try:
        ipaddress.IPv6Address(literal)
    except ValueError:
        return False
    return True
