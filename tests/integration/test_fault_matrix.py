"""The hostile-registry matrix: kitpin's real registry client and resolver against a registry
that lies, stalls, floods and redirects.

Every case puts a :class:`harness.faultproxy.FaultProxy` rule in front of the real CNCF
distribution registry (holding real ModelKits pushed by :mod:`harness.modelkit`) and runs one
resolution in a fresh process wired as ``kitpin run`` wires it
(:mod:`tests.integration.conftest_faults`). For each case it asserts:

- the outcome: the documented error reason (:mod:`controller.errors`), or the genuine digest
  (pinned, or served stale where stale-if-error applies), or ``NotAModelKit``; never an
  exception outside kitpin's errors and never the resolver's "unexpected failure" wrapper;
- the deadline: the call returned within the resolver's deadline plus :data:`MARGIN`;
- memory: the peak resident size during the call grew by at most :data:`MAX_GROWTH_MIB`
  (the manifest cap is 4 MiB; a compression bomb must not be decoded in full);
- zero wrong pins: no digest other than the one the real registry holds is ever pinned;
- the fault fired (a case whose fault the client never met proves nothing).

At the end of the module a summary (cases, failures, wrong pins, worst memory growth, worst
wall time against the deadline) is printed and written to ``fault-matrix.json`` under
pytest's base temporary directory. docs/hostile-inputs.md is the table of these cases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from controller import artifacts
from harness import faultproxy, modelkit
from harness.faultproxy import (
    BearerChallenge,
    Body,
    Bomb,
    Delay,
    Endless,
    Fault,
    FaultProxy,
    Mangle,
    Oversized,
    Redirect,
    Reset,
    Rule,
    Status,
    Trickle,
    token_answer,
)
from harness.registry import RegistryServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

DEADLINE = 2.0
"""The resolver's deadline in every case (``deadlineSeconds``; 8 s in production)."""
MARGIN = 0.5
"""How far past the deadline a call may return (a loaded CI machine, process scheduling)."""
MAX_GROWTH_MIB = 16
"""Peak memory growth allowed during one call: four times the 4 MiB manifest cap."""
WORKER_TIMEOUT = 60.0
"""A worker that has not answered by then hangs: the case fails (never a skip)."""
BOMB_SIZE = 256 * faultproxy.MiB
"""What a compression bomb decodes to: ~600 bytes on the wire with gzip twice."""
BOMB_ENCODINGS = (("gzip", "gzip"), ("gzip",), ("deflate",))
DEEP = 100_000
"""Nesting depth of the deeply nested JSON documents (far past Python's recursion limit)."""

M = r"/v2/.+/manifests/.+"
BLOB = r"/v2/.+/blobs/sha256:[0-9a-f]{64}"
PING = r"/v2/"
TOKEN = r"/token"

Target = Literal["tag", "digest", "deep-config", "garbage-config", "array-config"]
Mode = Literal["manifest", "config", "warm"]


# -- the environment -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, repr=False)
class Env:
    proxy: FaultProxy
    registry: RegistryServer
    references: dict[str, tuple[str, str]]
    """Target → (reference through the proxy, the digest the real registry holds for it)."""
    manifest: bytes
    """The genuine manifest of the ``tag`` target, as the registry serves it."""
    other_manifest: bytes
    """Another genuine ModelKit's manifest (in another repository)."""
    registry_config: Path
    allowlist_config: Path

    def __repr__(self) -> str:
        return f"Env(proxy={self.proxy.url}, registry={self.registry.url})"


def _with_config(packed: modelkit.Packed, data: bytes) -> modelkit.Packed:
    """``packed`` with its config blob replaced by ``data`` (the manifest points at it)."""
    config = modelkit.Blob(media_type=modelkit.MEDIA_TYPE_KIT_CONFIG, data=data)
    manifest = json.loads(packed.manifest)
    manifest["config"] = config.descriptor()
    return dataclasses.replace(packed, manifest=modelkit.go_json(manifest), config=config)


@pytest.fixture(scope="module")
def env(plain_registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    repo = f"it/fault-matrix-{os.getpid()}"
    genuine = modelkit.push_modelkit(plain_registry, repo, "v1", seed=11)
    other = modelkit.push_modelkit(plain_registry, f"{repo}-other", "v1", seed=12)
    assert other != genuine
    packed = modelkit.pack_modelkit(seed=13)
    hostile = {
        "deep-config": _with_config(packed, faultproxy.deep_json(DEEP)),
        "garbage-config": _with_config(packed, b"\x00 this is not a Kitfile \xff"),
        "array-config": _with_config(packed, b'["a Kitfile is an object"]'),
    }
    pushed = {
        name: modelkit.push_packed(plain_registry, repo, name, p) for name, p in hostile.items()
    }
    for encodings in BOMB_ENCODINGS:  # built before any case: their cost is not the proxy's
        faultproxy.bomb_bytes(BOMB_SIZE, encodings)
    workdir = tmp_path_factory.mktemp("fault-matrix")
    with FaultProxy(plain_registry.url) as proxy:
        registry_config = workdir / "registry-config.yaml"
        registry_config.write_text(json.dumps({"registries": {proxy.host: {"plainHTTP": True}}}))
        allowlist_config = workdir / "allowlist-config.yaml"
        allowlist_config.write_text(
            json.dumps(
                {
                    "registries": {proxy.host: {"plainHTTP": True}},
                    "allowedRegistries": ["registry.example.com", "*.registry.example.com"],
                }
            )
        )
        references = {
            "tag": (f"{proxy.host}/{repo}:v1", genuine),
            "digest": (f"{proxy.host}/{repo}@{genuine}", genuine),
            **{name: (f"{proxy.host}/{repo}:{name}", d) for name, d in pushed.items()},
        }
        yield Env(
            proxy=proxy,
            registry=plain_registry,
            references=references,
            manifest=modelkit.fetch_manifest(plain_registry, repo, "v1"),
            other_manifest=modelkit.fetch_manifest(plain_registry, f"{repo}-other", "v1"),
            registry_config=registry_config,
            allowlist_config=allowlist_config,
        )


# -- cases ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Expect:
    reasons: tuple[str, ...] = ()
    """The error reasons accepted (usually one)."""
    pin: Literal["genuine", "stale"] | None = None
    """``genuine``: pins the registry's real digest; ``stale``: serves it stale (either that
    or one of ``reasons`` when both are given)."""
    retry_after: float | Literal["any"] | None = "any"

    def describe(self) -> str:
        pins = {"genuine": ["pins the genuine digest"], "stale": ["serves it stale"], None: []}
        return " or ".join([*pins[self.pin], *self.reasons])


def fails(*reasons: str, retry_after: float | Literal["any"] | None = "any") -> Expect:
    return Expect(reasons=reasons, retry_after=retry_after)


GENUINE = Expect(pin="genuine")
STALE = Expect(pin="stale")
BOMBED = ("ManifestTooLarge", "BadResponse")
"""A compression bomb: refused as an encoding kitpin did not ask for, or cut at the cap."""


@dataclass(frozen=True, kw_only=True)
class Case:
    id: str
    what: str
    """What the registry (the proxy) does, for the summary and the docs table."""
    rules: Callable[[Env], Sequence[Rule]]
    expect: Expect
    mode: Mode = "manifest"
    target: Target = "tag"
    policy: Literal["plain", "allowlist"] = "plain"
    required: tuple[int, ...] | None = None
    """Rules that must fire (None: every rule)."""
    defect: str = ""
    """The issue-15 defect this case covers (it fails on the code before the fix)."""


def on(path: str, fault: Fault, **kwargs: Any) -> Callable[[Env], Sequence[Rule]]:
    """One rule, the same in every environment."""
    rule = Rule(path=path, fault=fault, **kwargs)
    return lambda _env: (rule,)


def bearer(token: Fault, *, realm: str = "{proxy}/token") -> Callable[[Env], Sequence[Rule]]:
    """The registry asks for a Bearer token from ``realm``; ``token`` answers the proxy's own
    ``/token`` (a token accepted: the real registry behind has no auth)."""
    rules = (
        Rule(path=PING, fault=BearerChallenge(realm=realm), anonymous_only=True),
        Rule(path=M, fault=BearerChallenge(realm=realm), anonymous_only=True),
        Rule(path=TOKEN, fault=token, method=None),
    )
    return lambda _env: rules


def swap_layer_digest(body: bytes) -> bytes:
    """The manifest with its first layer pointing at other content: still a valid ModelKit."""
    document = json.loads(body)
    document["layers"][0]["digest"] = "sha256:" + "f" * 64
    return modelkit.go_json(document)


def tamper_config(body: bytes) -> bytes:
    document = json.loads(body)
    document["package"] = {"name": "not what was pushed", "license": "Apache-2.0"}
    return modelkit.go_json(document)


def index_of(manifest: bytes, *, media_type: str = artifacts.OCI_INDEX) -> bytes:
    entry = {
        "mediaType": artifacts.OCI_MANIFEST,
        "digest": faultproxy.digest_of(manifest),
        "size": len(manifest),
    }
    return modelkit.go_json({"schemaVersion": 2, "mediaType": media_type, "manifests": [entry]})


def body_of(make: Callable[[Env], Body]) -> Callable[[Env], Sequence[Rule]]:
    return lambda env: (Rule(path=M, fault=make(env)),)


DEEP_ERRORS = faultproxy.deep_json(DEEP, prefix='{"errors":')
METADATA = "169.254.169.254"
NAT64 = "[64:ff9b::a9fe:a9fe]"
IPV4_COMPATIBLE = "[::a9fe:a9fe]"
HTTP_DATE = "Wed, 21 Oct 2037 07:28:00 GMT"

CASES: tuple[Case, ...] = (
    # -- latency: the deadline must beat it --------------------------------------------------
    Case(
        id="latency-manifest",
        what="holds the manifest request, no answer",
        rules=on(M, Delay()),
        expect=fails("Timeout"),
    ),
    Case(
        id="latency-manifest-trickle",
        what="sends the manifest one byte every 200 ms (each read gets something)",
        rules=on(M, Trickle()),
        expect=fails("Timeout"),
    ),
    Case(
        id="latency-ping",
        what="holds the API version check GET /v2/",
        rules=on(PING, Delay()),
        expect=fails("Timeout"),
    ),
    Case(
        id="latency-token",
        what="holds the token request",
        rules=bearer(Delay()),
        expect=fails("Timeout"),
        required=(0, 2),
    ),
    Case(
        id="latency-config",
        what="holds the config blob (Kitfile) request",
        rules=on(BLOB, Delay()),
        mode="config",
        expect=fails("Timeout"),
    ),
    Case(
        id="latency-under-deadline",
        what="answers the manifest after 300 ms (slow, within the deadline)",
        rules=on(M, Delay(seconds=0.3)),
        expect=GENUINE,
    ),
    Case(
        id="latency-warm-refresh",
        what="holds the refresh of a cached tag",
        rules=on(M, Delay(), skip=1),
        mode="warm",
        expect=STALE,
    ),
    # -- the connection -------------------------------------------------------------------------
    Case(
        id="reset-before-answer",
        what="resets the connection (RST) before any answer",
        rules=on(M, Reset(after=None)),
        expect=fails("Unreachable"),
    ),
    Case(
        id="reset-mid-body",
        what="resets the connection (RST) in the middle of the manifest body",
        rules=on(M, Reset(after=0.5)),
        expect=fails("Unreachable"),
    ),
    Case(
        id="close-mid-body",
        what="closes the connection (FIN) short of the announced Content-Length",
        rules=on(M, Reset(after=0.5, rst=False)),
        expect=fails("Unreachable"),
    ),
    Case(
        id="reset-mid-config",
        what="resets the connection in the middle of the config blob",
        rules=on(BLOB, Reset(after=0.5)),
        mode="config",
        expect=fails("Unreachable"),
    ),
    Case(
        id="reset-warm-refresh",
        what="resets the connection on the refresh of a cached tag",
        rules=on(M, Reset(after=0.5), skip=1),
        mode="warm",
        expect=STALE,
    ),
    # -- status codes -----------------------------------------------------------------------
    Case(
        id="status-401",
        what="401 without a challenge",
        rules=on(M, Status(status=401)),
        expect=fails("Unauthorized"),
    ),
    Case(
        id="status-401-basic-challenge",
        what="401 asking for Basic credentials kitpin does not hold",
        rules=on(M, Status(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})),
        expect=fails("Unauthorized"),
    ),
    Case(
        id="status-403",
        what="403",
        rules=on(M, Status(status=403)),
        expect=fails("Forbidden"),
    ),
    Case(
        id="status-404",
        what="404",
        rules=on(M, Status(status=404)),
        expect=fails("NotFound"),
    ),
    Case(
        id="status-429-retry-after-seconds",
        what="429 with Retry-After: 7",
        rules=on(M, Status(status=429, headers={"Retry-After": "7"})),
        expect=fails("RateLimited", retry_after=7.0),
    ),
    Case(
        id="status-429-retry-after-date",
        what="429 with an HTTP-date Retry-After",
        rules=on(M, Status(status=429, headers={"Retry-After": HTTP_DATE})),
        expect=fails("RateLimited"),
    ),
    Case(
        id="status-429-retry-after-garbage",
        what="429 with Retry-After: soon",
        rules=on(M, Status(status=429, headers={"Retry-After": "soon"})),
        expect=fails("RateLimited", retry_after=None),
    ),
    Case(
        id="status-429-retry-after-superscript",
        what="429 with Retry-After: ² (a digit to str.isdigit, not to float)",
        rules=on(M, Status(status=429, headers={"Retry-After": "²"})),
        expect=fails("RateLimited"),
        defect="3",
    ),
    Case(
        id="status-429-retry-after-huge",
        what="429 with a 400-digit Retry-After",
        rules=on(M, Status(status=429, headers={"Retry-After": "9" * 400})),
        expect=fails("RateLimited"),
    ),
    Case(
        id="status-500",
        what="500",
        rules=on(M, Status(status=500)),
        expect=fails("RegistryError"),
    ),
    Case(
        id="status-503-html",
        what="503 with an HTML page",
        rules=on(
            M,
            Status(
                status=503,
                body=b"<html><body>down for maintenance</body></html>",
                headers={"Content-Type": "text/html"},
            ),
        ),
        expect=fails("RegistryError"),
    ),
    Case(
        id="status-418",
        what="418, a status no registry sends",
        rules=on(M, Status(status=418)),
        expect=fails("BadResponse"),
    ),
    Case(
        id="status-500-on-ping-only",
        what="500 on GET /v2/ only (the manifest is fine)",
        rules=on(PING, Status(status=500)),
        expect=GENUINE,
    ),
    Case(
        id="status-500-warm-refresh",
        what="500 on the refresh of a cached tag",
        rules=on(M, Status(status=500), skip=1),
        mode="warm",
        expect=STALE,
    ),
    Case(
        id="status-404-warm-refresh",
        what="404 on the refresh of a cached tag (the tag was deleted)",
        rules=on(M, Status(status=404), skip=1),
        mode="warm",
        expect=fails("NotFound"),
    ),
    # -- digests ----------------------------------------------------------------------------
    Case(
        id="digest-header-wrong",
        what="the genuine manifest with another sha256 in Docker-Content-Digest",
        rules=on(M, Mangle(headers={"Docker-Content-Digest": "sha256:" + "0" * 64})),
        expect=fails("DigestMismatch"),
    ),
    Case(
        id="digest-header-wrong-sha512",
        what="the genuine manifest with a wrong sha512 Docker-Content-Digest",
        rules=on(M, Mangle(headers={"Docker-Content-Digest": "sha512:" + "0" * 128})),
        expect=fails("DigestMismatch"),
    ),
    Case(
        id="digest-body-tampered",
        what="a manifest pointing at other layers, under the genuine digest header",
        rules=on(M, Mangle(body=swap_layer_digest)),
        expect=fails("DigestMismatch"),
    ),
    Case(
        id="digest-ref-body-tampered-no-header",
        what="for a reference by digest: a tampered manifest, no digest header",
        rules=on(M, Mangle(body=swap_layer_digest, digest="drop")),
        target="digest",
        expect=fails("DigestMismatch"),
    ),
    Case(
        id="digest-ref-body-tampered-header-recomputed",
        what="for a reference by digest: a tampered manifest with its own correct header",
        rules=on(M, Mangle(body=swap_layer_digest, digest="recompute")),
        target="digest",
        expect=fails("DigestMismatch"),
    ),
    Case(
        id="digest-ref-other-manifest",
        what="for a reference by digest: another genuine ModelKit, with its own header",
        rules=body_of(lambda env: Body(body=env.other_manifest)),
        target="digest",
        expect=fails("DigestMismatch"),
    ),
    Case(
        id="digest-ref-index",
        what="for a reference by digest: an image index over the genuine manifest",
        rules=body_of(
            lambda env: Body(body=index_of(env.manifest), content_type=artifacts.OCI_INDEX)
        ),
        target="digest",
        expect=fails("DigestMismatch"),
    ),
    Case(
        id="digest-tampered-warm-refresh",
        what="a tampered manifest on the refresh of a cached tag",
        rules=on(M, Mangle(body=swap_layer_digest), skip=1),
        mode="warm",
        expect=fails("DigestMismatch"),
    ),
    Case(
        id="digest-config-tampered",
        what="a Kitfile changed in transit (the manifest names its digest)",
        rules=on(BLOB, Mangle(body=tamper_config)),
        mode="config",
        expect=fails("DigestMismatch"),
    ),
    # -- size -------------------------------------------------------------------------------
    Case(
        id="size-manifest-content-length",
        what="a 5 MiB manifest, honest Content-Length",
        rules=on(M, Oversized(size=5 * faultproxy.MiB)),
        expect=fails("ManifestTooLarge"),
    ),
    Case(
        id="size-manifest-endless",
        what="a manifest body that never ends (chunked)",
        rules=on(M, Endless()),
        expect=fails("ManifestTooLarge"),
    ),
    Case(
        id="size-404-endless",
        what="404 with a body that never ends",
        rules=on(M, Endless(status=404, content_type="application/json")),
        expect=fails("NotFound"),
    ),
    Case(
        id="size-500-endless",
        what="500 with a body that never ends",
        rules=on(M, Endless(status=500, content_type="application/json")),
        expect=fails("RegistryError"),
    ),
    Case(
        id="size-ping-endless",
        what="GET /v2/ answered with a body that never ends",
        rules=on(PING, Endless(content_type="application/json")),
        expect=GENUINE,
    ),
    Case(
        id="size-config-content-length",
        what="a 2 MiB config blob, honest Content-Length (the cap is 1 MiB)",
        rules=on(BLOB, Oversized(size=2 * faultproxy.MiB, content_type="application/json")),
        mode="config",
        expect=fails("ManifestTooLarge"),
    ),
    Case(
        id="size-config-endless",
        what="a config blob that never ends",
        rules=on(BLOB, Endless(content_type="application/json")),
        mode="config",
        expect=fails("ManifestTooLarge"),
    ),
    Case(
        id="size-token-endless",
        what="a token answer that never ends",
        rules=bearer(Endless(content_type="application/json")),
        expect=fails("ManifestTooLarge", "BadResponse"),
        required=(0, 2),
    ),
    # -- compression bombs (kitpin asks for Accept-Encoding: identity) ------------------------
    Case(
        id="bomb-manifest-gzip-gzip",
        what="manifest: ~600 bytes of Content-Encoding: gzip, gzip decoding to 256 MiB",
        rules=on(M, Bomb(decoded_size=BOMB_SIZE)),
        expect=fails(*BOMBED),
        defect="1",
    ),
    Case(
        id="bomb-manifest-gzip",
        what="manifest: ~250 KiB of Content-Encoding: gzip decoding to 256 MiB",
        rules=on(M, Bomb(decoded_size=BOMB_SIZE, encodings=("gzip",))),
        expect=fails(*BOMBED),
        defect="1",
    ),
    Case(
        id="bomb-manifest-deflate",
        what="manifest: Content-Encoding: deflate decoding to 256 MiB",
        rules=on(M, Bomb(decoded_size=BOMB_SIZE, encodings=("deflate",))),
        expect=fails(*BOMBED),
        defect="1",
    ),
    Case(
        id="bomb-config",
        what="config blob: Content-Encoding: gzip, gzip decoding to 256 MiB",
        rules=on(BLOB, Bomb(decoded_size=BOMB_SIZE, content_type="application/json")),
        mode="config",
        expect=fails(*BOMBED),
        defect="1",
    ),
    Case(
        id="bomb-token",
        what="token answer: Content-Encoding: gzip, gzip decoding to 256 MiB",
        rules=bearer(Bomb(decoded_size=BOMB_SIZE, content_type="application/json")),
        expect=fails(*BOMBED),
        required=(0, 2),
        defect="1",
    ),
    Case(
        id="bomb-404-body",
        what="404 whose error body is a gzip, gzip bomb",
        rules=on(M, Bomb(decoded_size=BOMB_SIZE, status=404, content_type="application/json")),
        expect=fails("NotFound", "BadResponse"),
        defect="1",
    ),
    Case(
        id="bomb-ping",
        what="GET /v2/ answered with a gzip, gzip bomb (the manifest is fine)",
        rules=on(PING, Bomb(decoded_size=BOMB_SIZE, content_type="application/json")),
        expect=GENUINE,
        defect="1",
    ),
    # -- JSON -------------------------------------------------------------------------------
    Case(
        id="json-manifest-html",
        what="an HTML page as the manifest, with its own correct digest header",
        rules=on(M, Body(body=b"<html><body>login</body></html>")),
        expect=fails("BadResponse"),
    ),
    Case(
        id="json-manifest-not-utf8",
        what="binary garbage as the manifest",
        rules=on(M, Body(body=b"\xff\xfe\x00garbage\x80")),
        expect=fails("BadResponse"),
    ),
    Case(
        id="json-manifest-array",
        what="a JSON array as the manifest",
        rules=on(M, Body(body=b"[]")),
        expect=fails("BadResponse"),
    ),
    Case(
        id="json-manifest-empty",
        what="an empty 200",
        rules=on(M, Body(body=b"")),
        expect=fails("BadResponse"),
    ),
    Case(
        id="json-manifest-wrong-types",
        what="a manifest whose config and layers are strings",
        rules=on(M, Body.json({"schemaVersion": 2, "config": "x", "layers": "y"})),
        expect=fails("BadResponse"),
    ),
    Case(
        id="json-manifest-huge-integer",
        what="a manifest with a 4,301-digit schemaVersion",
        rules=on(M, Body(body=b'{"schemaVersion": 1' + b"0" * 4300 + b"}")),
        expect=fails("BadResponse"),
    ),
    Case(
        id="json-manifest-deep-arrays",
        what="a manifest nested 100,000 arrays deep (100 KB)",
        rules=on(M, Body(body=faultproxy.deep_json(DEEP))),
        expect=fails("BadResponse"),
        defect="3",
    ),
    Case(
        id="json-manifest-deep-objects",
        what="a manifest nested 100,000 objects deep",
        rules=on(M, Body(body=faultproxy.deep_json(DEEP, kind="object"))),
        expect=fails("BadResponse"),
        defect="3",
    ),
    Case(
        id="json-404-deep",
        what="404 whose error body is nested 100,000 deep",
        rules=on(M, Status(status=404, body=DEEP_ERRORS)),
        expect=fails("NotFound"),
        defect="3",
    ),
    Case(
        id="json-404-deep-warm-refresh",
        what="the tag deleted: 404 with a deeply nested body on the refresh of a cached tag",
        rules=on(M, Status(status=404, body=DEEP_ERRORS), skip=1),
        mode="warm",
        expect=fails("NotFound"),
        defect="3",
    ),
    Case(
        id="json-401-deep",
        what="401 whose error body is nested 100,000 deep",
        rules=on(M, Status(status=401, body=DEEP_ERRORS)),
        expect=fails("Unauthorized"),
        defect="3",
    ),
    Case(
        id="json-429-deep",
        what="429 whose error body is nested 100,000 deep",
        rules=on(M, Status(status=429, body=DEEP_ERRORS, headers={"Retry-After": "3"})),
        expect=fails("RateLimited", retry_after=3.0),
        defect="3",
    ),
    Case(
        id="json-500-deep",
        what="500 whose error body is nested 100,000 deep",
        rules=on(M, Status(status=500, body=DEEP_ERRORS)),
        expect=fails("RegistryError"),
        defect="3",
    ),
    Case(
        id="json-token-garbage",
        what="a token answer that is not JSON",
        rules=bearer(Body(body=b"<html>", content_type="text/html", with_digest=False)),
        expect=fails("BadResponse"),
        required=(0, 2),
    ),
    Case(
        id="json-token-no-token",
        what="a token answer without a token",
        rules=bearer(Body.json({"expires_in": 60}, with_digest=False)),
        expect=fails("BadResponse"),
        required=(0, 2),
    ),
    Case(
        id="json-token-deep",
        what="a token answer nested 100,000 deep",
        rules=bearer(Body(body=faultproxy.deep_json(DEEP), with_digest=False)),
        expect=fails("BadResponse"),
        required=(0, 2),
        defect="3",
    ),
    Case(
        id="json-token-huge-expires-in",
        what="a good token whose expires_in is a 401-digit integer (no double holds it)",
        rules=bearer(token_answer(expires_in=10**400)),
        expect=Expect(pin="genuine", reasons=("BadResponse",)),
        required=(0, 2),
        defect="3",
    ),
    Case(
        id="json-token-large-expires-in",
        what="a good token whose expires_in is a 301-digit integer",
        rules=bearer(token_answer(expires_in=10**300)),
        expect=GENUINE,
        required=(0, 2),
    ),
    Case(
        id="json-config-deep",
        what="a pushed ModelKit whose config blob is nested 100,000 deep",
        rules=lambda _env: (),
        mode="config",
        target="deep-config",
        expect=fails("BadResponse"),
        defect="3",
    ),
    Case(
        id="json-config-garbage",
        what="a pushed ModelKit whose config blob is binary garbage",
        rules=lambda _env: (),
        mode="config",
        target="garbage-config",
        expect=fails("BadResponse"),
    ),
    Case(
        id="json-config-array",
        what="a pushed ModelKit whose config blob is a JSON array",
        rules=lambda _env: (),
        mode="config",
        target="array-config",
        expect=fails("BadResponse"),
    ),
    # -- an index where a manifest belongs --------------------------------------------------
    Case(
        id="index-for-manifest",
        what="an OCI image index (over the genuine manifest) for the tag",
        rules=body_of(
            lambda env: Body(body=index_of(env.manifest), content_type=artifacts.OCI_INDEX)
        ),
        expect=fails("NotAModelKit"),
    ),
    Case(
        id="index-docker-list-for-manifest",
        what="a Docker manifest list for the tag",
        rules=body_of(
            lambda env: Body(
                body=index_of(env.manifest, media_type=artifacts.DOCKER_MANIFEST_LIST),
                content_type=artifacts.DOCKER_MANIFEST_LIST,
            )
        ),
        expect=fails("NotAModelKit"),
    ),
    Case(
        id="index-under-manifest-content-type",
        what="an index body served as Content-Type: OCI manifest",
        rules=body_of(
            lambda env: Body(body=index_of(env.manifest), content_type=artifacts.OCI_MANIFEST)
        ),
        expect=fails("NotAModelKit"),
    ),
    # -- redirects --------------------------------------------------------------------------
    Case(
        id="redirect-same-origin",
        what="one redirect to the same registry (as blob storage would)",
        rules=on(M, Redirect(location="{proxy}{path}?hop=1"), times=1),
        expect=GENUINE,
    ),
    Case(
        id="redirect-loop",
        what="redirects the manifest request to itself (relative Location)",
        rules=on(M, Redirect(location="{path_qs}")),
        expect=fails("BadResponse"),
    ),
    Case(
        id="redirect-loop-absolute",
        what="redirects the manifest request to itself (absolute Location)",
        rules=on(M, Redirect(location="{proxy}{path}")),
        expect=fails("BadResponse"),
    ),
    Case(
        id="redirect-metadata-ip",
        what=f"redirects to https://{METADATA}/latest/meta-data/",
        rules=on(M, Redirect(location=f"https://{METADATA}/latest/meta-data/")),
        expect=fails("HostNotAllowed"),
    ),
    Case(
        id="redirect-metadata-plain-http",
        what=f"redirects to http://{METADATA}/latest/meta-data/",
        rules=on(M, Redirect(location=f"http://{METADATA}/latest/meta-data/")),
        expect=fails("HostNotAllowed"),
    ),
    Case(
        id="redirect-metadata-ipv4-mapped",
        what="redirects to https://[::ffff:169.254.169.254]/",
        rules=on(M, Redirect(location="https://[::ffff:169.254.169.254]/latest/meta-data/")),
        expect=fails("HostNotAllowed"),
    ),
    Case(
        id="redirect-metadata-nat64",
        what=f"redirects to https://{NAT64}/ (NAT64 form of {METADATA})",
        rules=on(M, Redirect(location=f"https://{NAT64}/latest/meta-data/")),
        expect=fails("HostNotAllowed"),
        defect="metadata",
    ),
    Case(
        id="redirect-metadata-ipv4-compatible",
        what=f"redirects to https://{IPV4_COMPATIBLE}/ (IPv4-compatible form of {METADATA})",
        rules=on(M, Redirect(location=f"https://{IPV4_COMPATIBLE}/latest/meta-data/")),
        expect=fails("HostNotAllowed"),
        defect="metadata",
    ),
    Case(
        id="redirect-metadata-6to4",
        what=f"redirects to https://[2002:a9fe:a9fe::]/ (6to4 form of {METADATA})",
        rules=on(M, Redirect(location="https://[2002:a9fe:a9fe::]/latest/meta-data/")),
        expect=fails("HostNotAllowed"),
        defect="metadata",
    ),
    Case(
        id="redirect-malformed-idn",
        what="redirects to https://xn--a.example/ (an xn-- label that is no IDN)",
        rules=on(M, Redirect(location="https://xn--a.example/v2/")),
        expect=fails("HostNotAllowed", "BadResponse"),
        defect="extra",
    ),
    Case(
        id="redirect-metadata-hostname",
        what="redirects to https://metadata.google.internal/",
        rules=on(M, Redirect(location="https://metadata.google.internal/computeMetadata/v1/")),
        expect=fails("HostNotAllowed"),
    ),
    Case(
        id="redirect-unspecified-address",
        what="redirects to https://0.0.0.0/",
        rules=on(M, Redirect(location="https://0.0.0.0/v2/")),
        expect=fails("HostNotAllowed"),
    ),
    Case(
        id="redirect-plain-http-other-host",
        what="redirects to plain HTTP on a host not configured plainHTTP (localhost:PORT)",
        rules=on(M, Redirect(location="http://localhost:{port}{path}")),
        expect=fails("HostNotAllowed"),
    ),
    Case(
        id="redirect-file-scheme",
        what="redirects to file:///etc/passwd",
        rules=on(M, Redirect(location="file:///etc/passwd")),
        expect=fails("HostNotAllowed"),
    ),
    Case(
        id="redirect-config-metadata",
        what=f"redirects the config blob to https://{METADATA}/",
        rules=on(BLOB, Redirect(location=f"https://{METADATA}/latest/meta-data/")),
        mode="config",
        expect=fails("HostNotAllowed"),
    ),
    Case(
        id="redirect-config-same-origin",
        what="redirects the config blob once to the same registry (blob storage)",
        rules=on(BLOB, Redirect(location="{proxy}{path}?storage=1"), times=1),
        mode="config",
        expect=GENUINE,
    ),
    # -- token realms and token answers -----------------------------------------------------
    Case(
        id="realm-same-registry",
        what="Bearer auth with the registry's own realm, a good token",
        rules=bearer(token_answer()),
        expect=GENUINE,
        required=(0, 2),
    ),
    Case(
        id="realm-metadata-ip",
        what=f"a token realm at https://{METADATA}/token",
        rules=bearer(token_answer(), realm=f"https://{METADATA}/token"),
        expect=fails("HostNotAllowed"),
        required=(0,),
    ),
    Case(
        id="realm-metadata-nat64",
        what=f"a token realm at https://{NAT64}/token",
        rules=bearer(token_answer(), realm=f"https://{NAT64}/token"),
        expect=fails("HostNotAllowed"),
        required=(0,),
        defect="metadata",
    ),
    Case(
        id="realm-metadata-hostname",
        what="a token realm at https://metadata.google.internal/token",
        rules=bearer(token_answer(), realm="https://metadata.google.internal/token"),
        expect=fails("HostNotAllowed"),
        required=(0,),
    ),
    Case(
        id="realm-plain-http-other-host",
        what="a token realm over plain HTTP on another host (127.0.0.2:PORT)",
        rules=bearer(token_answer(), realm="http://127.0.0.2:{port}/token"),
        expect=fails("HostNotAllowed"),
        required=(0,),
    ),
    Case(
        id="realm-malformed-idn",
        what="a token realm at https://xn--a.example/token (an xn-- label that is no IDN)",
        rules=bearer(token_answer(), realm="https://xn--a.example/token"),
        expect=fails("HostNotAllowed", "BadResponse"),
        required=(0,),
        defect="extra",
    ),
    Case(
        id="json-token-not-ascii",
        what="a token with characters no Authorization header can carry",
        rules=bearer(token_answer(token="t\u00e9\nX-Injected: 1")),
        expect=fails("BadResponse"),
        required=(0, 2),
        defect="extra",
    ),
    Case(
        id="token-redirect-metadata",
        what=f"the token endpoint redirects to https://{METADATA}/",
        rules=bearer(Redirect(location=f"https://{METADATA}/latest/meta-data/")),
        expect=fails("HostNotAllowed"),
        required=(0, 2),
    ),
    Case(
        id="token-401",
        what="the token endpoint answers 401",
        rules=bearer(Status(status=401)),
        expect=fails("Unauthorized"),
        required=(0, 2),
    ),
    Case(
        id="token-429-retry-after-superscript",
        what="the token endpoint answers 429 with Retry-After: ²",
        rules=bearer(Status(status=429, headers={"Retry-After": "²"})),
        expect=fails("RateLimited"),
        required=(0, 2),
        defect="3",
    ),
    # -- host policy ------------------------------------------------------------------------
    Case(
        id="allowlist-outside",
        what="a registry outside allowedRegistries (nothing may reach it)",
        rules=lambda _env: (),
        policy="allowlist",
        expect=fails("HostNotAllowed"),
    ),
)


# -- running one case ----------------------------------------------------------------------------


def run_worker(env: Env, case: Case) -> tuple[dict[str, Any] | None, str]:
    """The worker's outcome (None when it printed none) and its stderr."""
    reference, _genuine = env.references[case.target]
    spec = {
        "reference": reference,
        "mode": case.mode,
        "deadline": DEADLINE,
        "registry_config": str(
            env.allowlist_config if case.policy == "allowlist" else env.registry_config
        ),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.integration.conftest_faults", json.dumps(spec)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else ""
        return None, f"the worker did not finish within {WORKER_TIMEOUT:.0f} s\n{stderr}"
    lines = done.stdout.strip().splitlines()
    try:
        outcome = json.loads(lines[-1]) if lines else None
    except ValueError:
        outcome = None
    return outcome, f"exit {done.returncode}\n{done.stderr[-6000:]}"


def judge(case: Case, outcome: dict[str, Any] | None, hits: list[int], env: Env) -> list[str]:
    """What is wrong with ``outcome`` for ``case`` (empty: nothing)."""
    if outcome is None:
        return ["the worker printed no outcome"]
    problems: list[str] = []
    _reference, genuine = env.references[case.target]
    got, reason, digest = outcome["outcome"], outcome["reason"], outcome["digest"]
    if got == "escaped":
        problems.append(f"{reason} escaped kitpin's error hierarchy: {outcome['message'][:200]}")
    elif got == "warmup-failed":
        problems.append(f"the first (warm-up) resolution failed: {reason}: {outcome['message']}")
    if got in ("pinned", "stale") and digest != genuine:
        problems.append(f"WRONG PIN: {digest}, the registry holds {genuine}")
    expect = case.expect
    pinned_as_expected = (expect.pin == "genuine" and got == "pinned") or (
        expect.pin == "stale" and got == "stale"
    )
    refused_as_expected = got == "refused" and reason in expect.reasons
    if not (pinned_as_expected or refused_as_expected):
        problems.append(
            f"expected {expect.describe()}, got {got} {reason}: {outcome['message'][:300]}"
        )
    if refused_as_expected:
        if "unexpected failure" in outcome["message"]:
            problems.append(f"the right reason for the wrong cause: {outcome['message'][:300]}")
        if expect.retry_after != "any" and outcome["retry_after"] != expect.retry_after:
            problems.append(
                f"Retry-After read as {outcome['retry_after']!r}, expected {expect.retry_after!r}"
            )
    if outcome["wall"] > DEADLINE + MARGIN:
        problems.append(f"took {outcome['wall']:.2f} s, past the {DEADLINE:g} s deadline")
    growth_mib = outcome["growth_kib"] / 1024
    if growth_mib > MAX_GROWTH_MIB:
        problems.append(f"peak memory grew by {growth_mib:.0f} MiB (bound {MAX_GROWTH_MIB} MiB)")
    required = range(len(hits)) if case.required is None else case.required
    silent = [i for i in required if hits[i] == 0]
    if silent:
        problems.append(f"rules {silent} never fired: the case proves nothing")
    return problems


# -- the summary ---------------------------------------------------------------------------------


@dataclass(repr=False)
class Matrix:
    rows: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def __repr__(self) -> str:
        return f"Matrix({len(self.rows)} cases so far)"

    def add(
        self, case: Case, outcome: dict[str, Any] | None, problems: list[str], genuine: str
    ) -> None:
        o = outcome or {}
        pinned = o.get("outcome") in ("pinned", "stale")
        self.rows.append(
            {
                "case": case.id,
                "fault": case.what,
                "expected": case.expect.describe(),
                "outcome": o.get("outcome"),
                "reason": o.get("reason"),
                "wall_s": round(o.get("wall", float("nan")), 3),
                "deadline_s": DEADLINE,
                "rss_growth_mib": round(o.get("growth_kib", 0) / 1024, 1),
                "wrong_pin": pinned and o.get("digest") != genuine,
                "ok": not problems,
                "problems": problems,
                "defect": case.defect,
            }
        )

    def summary(self) -> dict[str, Any]:
        rows = self.rows
        measured = [r for r in rows if r["outcome"] is not None]
        worst_rss = max(measured, key=lambda r: r["rss_growth_mib"], default=None)
        worst_wall = max(measured, key=lambda r: r["wall_s"], default=None)
        return {
            "cases": len(rows),
            "failures": sum(not r["ok"] for r in rows),
            "wrong_pins": sum(bool(r["wrong_pin"]) for r in rows),
            "worst_rss_growth_mib": worst_rss and worst_rss["rss_growth_mib"],
            "worst_rss_case": worst_rss and worst_rss["case"],
            "worst_wall_s": worst_wall and worst_wall["wall_s"],
            "worst_wall_case": worst_wall and worst_wall["case"],
            "deadline_s": DEADLINE,
            "margin_s": MARGIN,
            "rss_bound_mib": MAX_GROWTH_MIB,
            "module_seconds": round(time.monotonic() - self.started, 1),
        }

    def table(self) -> list[str]:
        lines = [
            f"{'case':<44} {'expected':<30} {'got':<26} {'wall s':>6} {'RSS MiB':>7}  ok",
        ]
        for r in self.rows:
            got = r["reason"] or r["outcome"] or "-"
            if r["outcome"] == "stale":
                got = "stale (genuine)" if not r["wrong_pin"] else "stale (WRONG)"
            elif r["outcome"] == "pinned":
                got = "pinned (genuine)" if not r["wrong_pin"] else "pinned (WRONG)"
            elif r["outcome"] == "escaped":
                got = f"escaped {r['reason']}"
            lines.append(
                f"{r['case']:<44} {r['expected'][:30]:<30} {got[:26]:<26} "
                f"{r['wall_s']:>6.2f} {r['rss_growth_mib']:>7.1f}  {'ok' if r['ok'] else 'FAIL'}"
            )
        s = self.summary()
        lines.append(
            f"{s['cases']} cases, {s['failures']} failures, {s['wrong_pins']} wrong pins; "
            f"worst RSS growth {s['worst_rss_growth_mib']} MiB ({s['worst_rss_case']}, bound "
            f"{MAX_GROWTH_MIB}); worst wall {s['worst_wall_s']} s ({s['worst_wall_case']}) vs "
            f"deadline {DEADLINE:g} s + {MARGIN:g}; module {s['module_seconds']} s"
        )
        return lines


@pytest.fixture(scope="module")
def matrix(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Matrix]:
    found = Matrix()
    yield found
    path = tmp_path_factory.getbasetemp() / "fault-matrix.json"
    path.write_text(json.dumps({"summary": found.summary(), "cases": found.rows}, indent=2))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line("")
            reporter.write_sep("=", "hostile-registry matrix")
            for line in found.table():
                reporter.write_line(line)
            reporter.write_line(f"(written to {path})")


# -- the tests -----------------------------------------------------------------------------------


def test_docs_table_lists_every_case() -> None:
    """docs/hostile-inputs.md names each case of the matrix, and no case that is gone."""
    text = (ROOT / "docs" / "hostile-inputs.md").read_text()
    named = set(re.findall(r"`test_fault\[([a-z0-9-]+)\]`", text))
    ids = {c.id for c in CASES}
    assert named == ids, (
        f"missing from the docs: {sorted(ids - named)}; gone: {sorted(named - ids)}"
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case: Case, env: Env, matrix: Matrix) -> None:
    rules = tuple(case.rules(env))
    env.proxy.clear_records()
    with env.proxy.rules(*rules):
        outcome, stderr = run_worker(env, case)
        hits = env.proxy.hits()
    problems = judge(case, outcome, hits, env)
    if case.policy == "allowlist" and env.proxy.records():
        problems.append("the proxy was contacted for a registry outside allowedRegistries")
    _reference, genuine = env.references[case.target]
    matrix.add(case, outcome, problems, genuine)
    shown = outcome or {}
    assert not problems, "\n".join(
        [
            f"{case.id}: {case.what}; expected {case.expect.describe()}",
            *(f"- {p}" for p in problems),
            f"outcome: {json.dumps({k: v for k, v in shown.items() if k != 'traceback'})}",
            shown.get("traceback", ""),
            faultproxy.rules_summary(rules),
            f"hits: {hits}",
            env.proxy.log_tail(20),
            f"--- worker stderr ---\n{stderr[-3000:]}",
        ]
    )
