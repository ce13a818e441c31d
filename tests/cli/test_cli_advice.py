"""The CLI's advice names the CLI's flags (``--plain-http``, ``--docker-config``,
``--registry-config``), not the webhook's settings and namespace pull secrets; the webhook's
own messages stay as they are.

A small plain-HTTP server stands in for a registry (404 for a missing tag, 401 for a private
repository), so the messages come from the real registry client."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from controller import errors
from controller.cli import app, common
from controller.registry import responses


class _Registry(BaseHTTPRequestHandler):
    """``/v2/`` answers; ``private/*`` asks for credentials; every manifest is missing."""

    def do_GET(self) -> None:
        if self.path == "/v2/":
            self._answer(200, {})
        elif self.path.startswith("/v2/private/"):
            self._answer(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                {"WWW-Authenticate": 'Basic realm="registry"'},
            )
        else:
            self._answer(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]})

    def _answer(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a plain-HTTP registry."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _kitpin(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = app.main(list(args))
    return code, capsys.readouterr().err


def _pod(tmp_path: Path, reference: str) -> Path:
    path = tmp_path / "pod.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        f"  - name: c\n    image: x\n    env: [{{name: MODELKIT_REF, value: {reference}}}]\n"
    )
    return path


def test_tls_to_a_plain_http_registry_advises_the_flag(
    registry: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _kitpin(capsys, "resolve", f"{registry}/models/llama:v1")
    assert code == common.EXIT_FAILED
    assert err.startswith(f"kitpin: Unreachable: manifest {registry}/models/llama:v1: ")
    assert (
        f"the TLS handshake failed: if {registry} serves plain HTTP (a local registry), add "
        "--plain-http; else check the registry name and port"
    ) in err
    assert "plainHTTP" not in err and "egress" not in err


def test_pin_also_names_plain_http_registry(
    registry: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _kitpin(capsys, "pin", "-f", str(_pod(tmp_path, f"{registry}/models/llama:v1")))
    assert code == common.EXIT_FAILED
    assert f"add --plain-http (or --plain-http-registry {registry} for this registry only)" in err
    assert "plainHTTP" not in err


def test_not_found_advises_docker_config(registry: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _kitpin(capsys, "resolve", "--plain-http", f"{registry}/models/llama:v1")
    assert code == common.EXIT_FAILED
    assert err.startswith(f"kitpin: NotFound: manifest {registry}/models/llama:v1 not found")
    assert (
        "A private repository can look missing without credentials: give credentials for "
        f"{registry} with --docker-config DIR (a directory whose config.json has them, e.g. "
        f"~/.docker after `docker login {registry}`)"
    ) in err
    assert "namespace" not in err and "pull secret" not in err


def test_unauthorized_advises_docker_config(
    registry: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _kitpin(
        capsys, "pin", "--plain-http", "-f", str(_pod(tmp_path, f"{registry}/private/m:v1"))
    )
    assert code == common.EXIT_FAILED
    assert "Unauthorized:" in err and "(401)" in err
    assert f"give credentials for {registry} with --docker-config DIR" in err
    assert "namespace" not in err and "imagePullSecrets" not in err


def test_a_host_outside_the_policy_names_the_registry_config_flag(
    registry: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "registries.yaml"
    config.write_text("deniedHostnames: [localhost]\n")
    code, err = _kitpin(capsys, "resolve", "--registry-config", str(config), "localhost:5000/x:v1")
    assert code == common.EXIT_FAILED
    assert err.startswith("kitpin: HostNotAllowed: ")
    assert "remove it from deniedHostnames in the registry config (--registry-config FILE)" in err


# -- the rewrite itself, on the registry client's own messages ----------------------------------


def _target(registry: str = "reg.example.com:5000") -> responses.Target:
    return responses.Target(
        registry=registry, repository="models/llama", subject=f"manifest {registry}/models/llama:v1"
    )


def _status(status: int) -> errors.RegistryError:
    answer = responses.Answer(
        status=status,
        headers=httpx.Headers(),
        body=b"",
        url=httpx.URL("https://reg.example.com:5000/v2/"),
        redirected=False,
    )
    return responses.status_error(answer, target=_target(), credential=None, now=0.0)


def test_the_webhook_keeps_its_words() -> None:
    """The registry client's messages are the webhook's: settings and pull secrets."""
    assert "add a pull secret for reg.example.com:5000 to the namespace" in str(_status(404))
    assert "(imagePullSecrets)" in str(_status(401))


def test_for_cli_keeps_type_reason_registry_and_cause() -> None:
    cause = httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number")
    error = responses.transport_error(
        cause, url=httpx.URL("https://reg.example.com:5000/v2/"), target=_target()
    )
    error.__cause__ = cause
    shown = common.for_cli(error)
    assert type(shown) is errors.UnreachableError and shown.reason == "Unreachable"
    assert (shown.registry, shown.repository) == ("reg.example.com:5000", "models/llama")
    assert shown.__cause__ is cause
    assert "add --plain-http;" in str(shown) and "plainHTTP" in str(error)
    forbidden = _status(403)
    assert common.for_cli(forbidden) is forbidden  # nothing webhook-only in it


def test_unauthorized_and_token_messages() -> None:
    shown = str(common.for_cli(_status(401)))
    assert "give credentials for reg.example.com:5000 with --docker-config DIR" in shown
    assert "or check the credentials for reg.example.com:5000" in shown
    token = "the token service t of r rejected x (401); check the credentials for r, or add a "
    token += "pull secret for it to the namespace"
    assert common.cli_advice(token, registry="r").endswith(
        "check the credentials for r, or give credentials for r with --docker-config DIR (a "
        "directory whose config.json has them, e.g. ~/.docker after `docker login r`)"
    )


def test_the_rewrite_is_idempotent() -> None:
    once = common.for_cli(_status(401), plain_http_registry=True)
    assert common.for_cli(once, plain_http_registry=True) is once
    message = "deny it in the registry config"
    assert common.cli_advice(common.cli_advice(message, registry="r"), registry="r") == (
        "deny it in the registry config (--registry-config FILE)"
    )
