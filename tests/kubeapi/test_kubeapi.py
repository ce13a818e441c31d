"""kitpin's own apiserver client against a real TLS server: trust, who we are, errors by
status, deadlines, and logging in again (a rotated service-account token)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import kopf
import pytest
import trustme

from controller import kubeapi
from tests.kubeapi.fakeapi import FakeApiServer

SECRET = "/api/v1/namespaces/ns/secrets/regcred"
REPO_ROOT = Path(__file__).resolve().parents[2]


def endpoint(server: FakeApiServer, **fields: Any) -> kopf.ConnectionInfo:
    fields.setdefault("ca_data", server.ca_pem)
    return kopf.ConnectionInfo(server=server.server, **fields)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- TLS and who we are ------------------------------------------------------------------


@pytest.mark.parametrize("ca", ["data-pem", "data-base64", "file"])
async def test_get_over_tls_with_a_bearer_token(
    fake_api: FakeApiServer, tmp_path: Path, ca: str
) -> None:
    fake_api.put(SECRET, {"kind": "Secret", "type": "Opaque"})
    if ca == "file":
        fake_api.ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
        info = endpoint(fake_api, ca_data=None, ca_path=str(tmp_path / "ca.crt"), token="t0k3n")
    else:
        data = fake_api.ca_pem if ca == "data-pem" else fake_api.ca_b64
        info = endpoint(fake_api, ca_data=data, token="t0k3n")
    async with kubeapi.KubeAPI(info) as api:
        got = await api.get(SECRET)
    assert got["kind"] == "Secret" and got["metadata"]["resourceVersion"]
    (seen,) = fake_api.seen
    assert seen.user == "kitpin"
    assert seen.headers["Authorization"] == "Bearer t0k3n"
    assert seen.headers["User-Agent"] == "kitpin"
    assert seen.headers["Accept"] == "application/json"


async def test_a_server_the_ca_does_not_vouch_for_is_unreachable(
    fake_api: FakeApiServer,
) -> None:
    other_ca = trustme.CA().cert_pem.bytes().decode()
    async with kubeapi.KubeAPI(endpoint(fake_api, ca_data=other_ca, token="t0k3n")) as api:
        with pytest.raises(kubeapi.UnreachableError, match="certificate verify failed"):
            await api.get(SECRET)
    assert fake_api.seen == []  # nothing was sent, the token included


async def test_insecure_skips_verification(fake_api: FakeApiServer) -> None:
    fake_api.put(SECRET, {"kind": "Secret"})
    info = endpoint(fake_api, ca_data=None, insecure=True, token="t0k3n")
    async with kubeapi.KubeAPI(info) as api:
        assert (await api.get(SECRET))["kind"] == "Secret"


@pytest.mark.parametrize("given_as", ["files", "data-base64", "data-pem"])
async def test_client_certificate_authenticates(
    fake_api: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given_as: str
) -> None:
    fake_api.put(SECRET, {"kind": "Secret"})
    client = fake_api.ca.issue_cert("client.kitpin.test", common_name="kitpin-admin")
    cert_pem = client.cert_chain_pems[0].bytes()
    key_pem = client.private_key_pem.bytes()
    written: list[tuple[Path, int, int]] = []
    private_file = kubeapi._private_file

    def recording(path: Path, text: str) -> Path:
        result = private_file(path, text)
        written.append(
            (path, stat.S_IMODE(path.stat().st_mode), stat.S_IMODE(path.parent.stat().st_mode))
        )
        return result

    monkeypatch.setattr(kubeapi, "_private_file", recording)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    if given_as == "files":
        client.cert_chain_pems[0].write_to_path(str(tmp_path / "c.crt"))
        client.private_key_pem.write_to_path(str(tmp_path / "c.key"))
        info = endpoint(
            fake_api,
            certificate_path=str(tmp_path / "c.crt"),
            private_key_path=str(tmp_path / "c.key"),
        )
    elif given_as == "data-base64":  # a kubeconfig's client-certificate-data / client-key-data
        info = endpoint(
            fake_api,
            certificate_data=base64.b64encode(cert_pem).decode(),
            private_key_data=base64.b64encode(key_pem).decode(),
        )
    else:
        info = endpoint(fake_api, certificate_data=cert_pem, private_key_data=key_pem)
    async with kubeapi.KubeAPI(info) as api:
        await api.get(SECRET)
    (seen,) = fake_api.seen
    assert seen.user == "cert:kitpin-admin"
    assert "Authorization" not in seen.headers
    if given_as == "files":
        assert written == []  # used in place, nothing copied
    else:
        assert [(p.name, mode, dmode) for p, mode, dmode in written] == [
            ("client.crt", 0o600, 0o700),
            ("client.key", 0o600, 0o700),
        ]
        assert list(scratch.iterdir()) == []  # removed once loaded


def test_a_certificate_without_its_key_is_refused() -> None:
    info = kopf.ConnectionInfo(server="https://x", certificate_data="-----BEGIN CERTIFICATE-----")
    with pytest.raises(ValueError, match="both the certificate and its key"):
        kubeapi.ssl_context(info)


async def test_basic_auth(fake_api: FakeApiServer) -> None:
    fake_api.passwords[("admin", "s3cret")] = "admin"
    fake_api.put(SECRET, {"kind": "Secret"})
    async with kubeapi.KubeAPI(endpoint(fake_api, username="admin", password="s3cret")) as api:
        await api.get(SECRET)
    (seen,) = fake_api.seen
    assert seen.user == "admin"
    assert seen.headers["Authorization"] == "Basic " + base64.b64encode(b"admin:s3cret").decode()


def test_authorization_header_precedence_is_kopfs() -> None:
    def header(**fields: Any) -> str | None:
        return kubeapi.authorization(kopf.ConnectionInfo(server="https://x", **fields))

    assert header() is None
    assert header(token="t") == "Bearer t"
    assert header(scheme="Digest", token="t") == "Digest t"
    assert (header(username="u", password="p", token="t") or "").startswith("Basic ")
    for fields in ({}, {"token": "t"}, {"scheme": "Digest", "token": "t"}):
        info = kopf.ConnectionInfo(server="https://x", **fields)  # type: ignore[arg-type]
        assert kubeapi.authorization(info) == info.as_http_headers().get("Authorization")


# -- calls and errors --------------------------------------------------------------------


async def test_post_and_merge_patch_send_json(fake_api: FakeApiServer) -> None:
    fake_api.put("/apis/g/v1/things/a", {"kind": "Thing", "spec": {"x": 1, "y": 2}})
    async with kubeapi.KubeAPI(endpoint(fake_api, token="t0k3n")) as api:
        created = await api.post(
            "/api/v1/namespaces/ns/events", {"metadata": {"generateName": "kitpin-"}}
        )
        patched = await api.patch("/apis/g/v1/things/a", {"spec": {"y": None, "z": 3}})
    assert created["metadata"]["name"].startswith("kitpin-")
    assert patched["spec"] == {"x": 1, "z": 3}
    post, patch = fake_api.seen
    assert post.headers["Content-Type"] == "application/json"
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert patch.body == {"spec": {"y": None, "z": 3}}


async def test_error_statuses_are_typed_and_carry_the_apis_message(
    fake_api: FakeApiServer,
) -> None:
    forbidden = "/api/v1/namespaces/other/secrets/theirs"
    fake_api.forbidden.add(forbidden)
    fake_api.put("/apis/g/v1/things/a", {"kind": "Thing"})
    async with kubeapi.KubeAPI(endpoint(fake_api, token="t0k3n")) as api:
        with pytest.raises(kubeapi.NotFoundError) as missing:
            await api.get("/api/v1/namespaces/ns/secrets/nope")
        with pytest.raises(kubeapi.ForbiddenError) as denied:
            await api.get(forbidden)
        with pytest.raises(kubeapi.ConflictError) as conflict:
            await api.patch("/apis/g/v1/things/a", {"metadata": {"resourceVersion": "1"}})
        with pytest.raises(kubeapi.ApiError) as other:
            await api.request("PATCH", "/apis/g/v1/things/a", body={}, content_type="text/x")

    e = missing.value
    assert (e.status, e.reason, e.message) == (404, "NotFound", 'secrets "nope" not found')
    assert (
        str(e) == 'GET /api/v1/namespaces/ns/secrets/nope: 404 NotFound: secrets "nope" not found'
    )
    assert isinstance(e, kubeapi.ApiError) and isinstance(e, kubeapi.KubeError)
    assert denied.value.status == 403 and "cannot get resource" in denied.value.message
    assert conflict.value.status == 409 and "has been modified" in str(conflict.value)
    assert type(other.value) is kubeapi.ApiError and other.value.status == 415


def test_an_error_that_is_not_a_status_keeps_its_text() -> None:
    e = kubeapi._error("GET", "/x", 502, "Bad Gateway", b"upstream down\n")
    assert type(e) is kubeapi.ApiError
    assert str(e) == "GET /x: 502 Bad Gateway: upstream down"


async def test_every_call_has_a_deadline(fake_api: FakeApiServer) -> None:
    fake_api.put(SECRET, {"kind": "Secret"})
    fake_api.delay = 0.5
    async with kubeapi.KubeAPI(endpoint(fake_api, token="t0k3n"), timeout=0.1) as api:
        with pytest.raises(kubeapi.UnreachableError, match=r"no answer from .* within 0\.1s"):
            await api.get(SECRET)
        with pytest.raises(kubeapi.UnreachableError, match=r"within 0\.05s"):
            await api.get(SECRET, timeout=0.05)
        assert (await api.get(SECRET, timeout=5))["kind"] == "Secret"


async def test_an_outer_deadline_is_the_callers() -> None:
    """The caller's own timeout stays a TimeoutError (not converted to UnreachableError)."""
    server = await FakeApiServer(ca=trustme.CA(), tokens={"t": "u"}, delay=0.5).start()
    try:
        async with kubeapi.KubeAPI(endpoint(server, token="t"), timeout=5) as api:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await api.get(SECRET)
    finally:
        await server.stop()


async def test_nothing_listening_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    info = kopf.ConnectionInfo(server=f"https://127.0.0.1:{port}", token="t")
    async with kubeapi.KubeAPI(info) as api:
        with pytest.raises(kubeapi.UnreachableError, match=f"127.0.0.1:{port}"):
            await api.get(SECRET)


def test_paths_encode_each_segment_and_refuse_dot_segments() -> None:
    assert kubeapi.path("api", "v1", "namespaces", "ns", "secrets", "a/b c") == (
        "/api/v1/namespaces/ns/secrets/a%2Fb%20c"
    )
    for bad in ("", ".", ".."):
        with pytest.raises(ValueError, match="not a valid name"):
            kubeapi.path("api", "v1", "namespaces", "ns", "secrets", bad)


async def test_an_encoded_slash_stays_in_its_segment(fake_api: FakeApiServer) -> None:
    async with kubeapi.KubeAPI(endpoint(fake_api, token="t0k3n")) as api:
        with pytest.raises(kubeapi.NotFoundError):
            await api.get(kubeapi.path("api", "v1", "namespaces", "ns", "secrets", "../x"))
    assert fake_api.seen[0].path == "/api/v1/namespaces/ns/secrets/..%2Fx"


# -- logging in again --------------------------------------------------------------------


def token_login(server: FakeApiServer, token_file: Path, calls: list[str]) -> Any:
    def login() -> kopf.ConnectionInfo:
        token = token_file.read_text().strip()
        calls.append(token)
        return endpoint(server, token=token)

    return login


async def test_the_token_file_is_read_again_once_the_login_is_older_than_refresh_after(
    fake_api: FakeApiServer, tmp_path: Path
) -> None:
    fake_api.put(SECRET, {"kind": "Secret"})
    fake_api.tokens = {"first": "sa", "second": "sa"}  # the kubelet rotated; both still valid
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    calls: list[str] = []
    login = token_login(fake_api, token_file, calls)
    clock = Clock()
    async with kubeapi.KubeAPI(login(), relogin=login, refresh_after=60, clock=clock) as api:
        await api.get(SECRET)
        token_file.write_text("second\n")
        clock.now += 59
        await api.get(SECRET)  # still young: the token in hand
        clock.now += 1
        await asyncio.gather(*(api.get(SECRET) for _ in range(5)))  # one re-read for all
        assert api.endpoint.token == "second"
    assert calls == ["first", "second"]
    assert [s.headers["Authorization"] for s in fake_api.seen] == [
        "Bearer first",
        "Bearer first",
        *["Bearer second"] * 5,
    ]


async def test_a_401_logs_in_again_and_retries_once(
    fake_api: FakeApiServer, tmp_path: Path
) -> None:
    fake_api.put(SECRET, {"kind": "Secret"})
    fake_api.tokens = {"second": "sa"}  # the first one expired
    token_file = tmp_path / "token"
    token_file.write_text("second")
    calls: list[str] = []
    login = token_login(fake_api, token_file, calls)
    stale = endpoint(fake_api, token="first")
    async with kubeapi.KubeAPI(stale, relogin=login) as api:  # no refresh by age
        assert (await api.get(SECRET))["kind"] == "Secret"
        assert calls == ["second"]
        fake_api.tokens = {}  # now nothing is valid: one retry, then the error
        with pytest.raises(kubeapi.UnauthorizedError) as e:
            await api.get(SECRET)
    assert e.value.status == 401
    assert calls == ["second", "second"]
    assert [s.user for s in fake_api.seen] == [None, "sa", None, None]


async def test_concurrent_401s_log_in_again_once(fake_api: FakeApiServer, tmp_path: Path) -> None:
    fake_api.put(SECRET, {"kind": "Secret"})
    fake_api.tokens = {"second": "sa"}
    token_file = tmp_path / "token"
    token_file.write_text("second")
    calls: list[str] = []
    login = token_login(fake_api, token_file, calls)
    async with kubeapi.KubeAPI(endpoint(fake_api, token="first"), relogin=login) as api:
        got = await asyncio.gather(*(api.get(SECRET) for _ in range(8)))
    assert [g["kind"] for g in got] == ["Secret"] * 8
    assert calls == ["second"]
    assert sum(s.user is None for s in fake_api.seen) == 8  # all eight were refused at first


async def test_a_failing_login_keeps_the_current_one(
    fake_api: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake_api.put(SECRET, {"kind": "Secret"})
    attempts: list[int] = []

    def broken() -> kopf.ConnectionInfo:
        attempts.append(1)
        raise kopf.LoginError("token file missing")

    clock = Clock()
    info = endpoint(fake_api, token="t0k3n")
    async with kubeapi.KubeAPI(info, relogin=broken, refresh_after=60, clock=clock) as api:
        clock.now += 60
        with caplog.at_level(logging.WARNING, logger="controller.kubeapi"):
            assert (await api.get(SECRET))["kind"] == "Secret"  # with the token in hand
        await api.get(SECRET)  # not tried again until another period has passed
        assert len(attempts) == 1 and api.endpoint is info
        fake_api.tokens = {}
        with pytest.raises(kubeapi.UnauthorizedError):  # the 401, not the login's error
            await api.get(SECRET)
        with pytest.raises(kopf.LoginError):  # kopf's handler does see it
            await api.relogin()
    assert "token file missing" in caplog.text


async def test_without_relogin_a_401_is_the_callers(fake_api: FakeApiServer) -> None:
    async with kubeapi.KubeAPI(endpoint(fake_api, token="wrong")) as api:
        with pytest.raises(kubeapi.UnauthorizedError):
            await api.get(SECRET)
        assert await api.relogin() is api.endpoint  # nothing to log in with: the same
    assert len(fake_api.seen) == 1


async def test_relogin_gives_the_new_login_and_uses_it(
    fake_api: FakeApiServer, tmp_path: Path
) -> None:
    """What kopf's login handler gets: a fresh login, the one kitpin's calls use next."""
    fake_api.put(SECRET, {"kind": "Secret"})
    fake_api.tokens = {"first": "sa", "second": "sa"}
    token_file = tmp_path / "token"
    token_file.write_text("first")
    calls: list[str] = []
    login = token_login(fake_api, token_file, calls)
    async with kubeapi.KubeAPI(login(), relogin=login) as api:
        token_file.write_text("second")
        fresh = await api.relogin()
        assert fresh.token == "second" and api.endpoint is fresh
        await api.get(SECRET)
    assert fake_api.seen[-1].headers["Authorization"] == "Bearer second"


async def test_a_new_client_certificate_gets_a_new_session(fake_api: FakeApiServer) -> None:
    """A login that changes the TLS material (an exec plugin's rotated certificate) is
    used at once; only a new token keeps the session."""
    fake_api.put(SECRET, {"kind": "Secret"})
    certs = [fake_api.ca.issue_cert("c.test", common_name=cn) for cn in ("old", "new")]
    current = [0]

    def login() -> kopf.ConnectionInfo:
        cert = certs[current[0]]
        return endpoint(
            fake_api,
            certificate_data=cert.cert_chain_pems[0].bytes(),
            private_key_data=cert.private_key_pem.bytes(),
        )

    clock = Clock()
    async with kubeapi.KubeAPI(login(), relogin=login, refresh_after=10, clock=clock) as api:
        await api.get(SECRET)
        current[0] = 1
        clock.now += 10
        await api.get(SECRET)
        clock.now += 10
        await api.get(SECRET)
    assert [s.user for s in fake_api.seen] == ["cert:old", "cert:new", "cert:new"]


# -- the kubeconfig, and keeping the kubernetes client out -------------------------------


def test_kubeconfig_auth_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(
        "current-context: dev\n"
        "contexts:\n"
        "- {name: dev, context: {cluster: c, user: certs}}\n"
        "- {name: eks, context: {cluster: c, user: aws}}\n"
        "- {name: gke, context: {cluster: c, user: google}}\n"
        "users:\n"
        "- {name: certs, user: {client-certificate-data: QQ==, client-key-data: QQ==}}\n"
        "- {name: aws, user: {exec: {command: aws, apiVersion: client.authentication.k8s.io/v1}}}\n"
        "- {name: google, user: {auth-provider: {name: gcp}}}\n"
    )
    first = tmp_path / "first.yaml"
    assert kubeapi.kubeconfig_auth_plugin({"KUBECONFIG": str(base)}) is None
    for context, plugin in (("eks", "exec"), ("gke", "auth-provider"), ("dev", None)):
        first.write_text(f"current-context: {context}\n")  # the first file's value wins
        kubeconfig = os.pathsep.join([str(first), str(base)])
        assert kubeapi.kubeconfig_auth_plugin({"KUBECONFIG": kubeconfig}) == plugin
    assert kubeapi.kubeconfig_auth_plugin({"KUBECONFIG": str(tmp_path / "absent")}) is None
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    assert kubeapi.kubeconfig_auth_plugin({}) is None


def test_importing_the_operator_imports_neither_the_kubernetes_client_nor_cryptography() -> None:
    """kopf would import the client when it is installed (see kubeapi); --dev alone needs
    cryptography. A fresh interpreter, since this one has imported both already."""
    code = (
        "import sys\n"
        "import controller.operator\n"
        "assert 'kubernetes' not in sys.modules, 'kubernetes'\n"
        "assert 'cryptography' not in sys.modules, 'cryptography'\n"
        "import kubernetes.client\n"  # still importable (the exec-plugin login needs it)
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


def test_hiding_is_a_no_op_once_the_client_is_imported() -> None:
    import kubernetes  # noqa: F401  (this process has it anyway)

    before = sys.modules["kubernetes"]
    with kubeapi.kubernetes_client_hidden():
        assert sys.modules["kubernetes"] is before
    assert sys.modules["kubernetes"] is before
