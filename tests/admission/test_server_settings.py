"""The server's settings: the settings file's ``server`` section, ``kitpin run``'s flags
over it, and the errors that say what to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller import errors, settings
from harness import pki


@pytest.fixture
def client_ca(tmp_path: Path) -> Path:
    return pki.CA("kitpin-test-client-ca").write(tmp_path, "client-ca").cert


def test_defaults_authenticate_no_one_and_stop_within_15_seconds() -> None:
    server = settings.Settings().server
    assert (server.client_ca, server.client_names, server.probe_port) == (None, (), None)
    assert (server.drain_seconds, server.shutdown_seconds) == (3.0, 15.0)


def test_the_server_section(client_ca: Path) -> None:
    loaded = settings.parse_settings_document(
        {
            "server": {
                "clientCAFile": str(client_ca),
                "clientNames": ["kube-apiserver"],
                "probePort": 8081,
                "drainSeconds": 5,
                "shutdownSeconds": 20,
            }
        },
        source="s.yaml",
    )
    assert loaded.server == settings.ServerSettings(
        client_ca=client_ca,
        client_names=("kube-apiserver",),
        probe_port=8081,
        drain_seconds=5.0,
        shutdown_seconds=20.0,
    )


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"clientCa": "x"}, "s.yaml: server: unknown key(s) ['clientCa']"),
        ({"clientCAFile": 3}, "s.yaml: server.clientCAFile: expected the path of a PEM file"),
        ({"clientNames": "a"}, "server.clientNames: expected a list of non-empty strings"),
        ({"clientNames": ["a"]}, "client names (clientNames, --client-name) without a client CA"),
        ({"probePort": 0}, "server.probePort: expected a TCP port (1-65535), got 0"),
        ({"probePort": "8081"}, "server.probePort: expected a TCP port"),
        ({"drainSeconds": "5"}, "server.drainSeconds: expected a number of seconds"),
        ({"drainSeconds": 30}, "drainSeconds (30) exceeds shutdownSeconds (15)"),
        ({"shutdownSeconds": 0}, "drainSeconds must be >= 0 and shutdownSeconds > 0"),
        ({"clientCAFile": "/nonexistent/ca.crt"}, "client CA /nonexistent/ca.crt: cannot read"),
        ([], "server: expected a mapping, got list"),
    ],
)
def test_errors_name_the_field(server: object, message: str) -> None:
    with pytest.raises(errors.ConfigError) as e:
        settings.parse_settings_document({"server": server}, source="s.yaml")
    assert message in str(e.value)


def test_a_client_ca_that_is_no_certificate_is_refused_at_start(tmp_path: Path) -> None:
    key = pki.CA("x").write(tmp_path, "ca").key  # a private key, not a certificate
    with pytest.raises(errors.ConfigError, match="not a PEM certificate bundle"):
        settings.server_settings(settings.ServerSettings(), client_ca=str(key))


def test_flags_override_the_file(client_ca: Path, tmp_path: Path) -> None:
    other = pki.CA("other").write(tmp_path, "other").cert
    base = settings.ServerSettings(client_ca=other, probe_port=9000, drain_seconds=1)
    merged = settings.server_settings(
        base, client_ca=str(client_ca), client_names=["a", "b"], probe_port=8081, webhook_port=8443
    )
    assert merged == settings.ServerSettings(
        client_ca=client_ca, client_names=("a", "b"), probe_port=8081, drain_seconds=1
    )
    assert settings.server_settings(base) == base


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"probe_port": 8443, "webhook_port": 8443}, "the probe port (8443) is the webhook port"),
        ({"probe_port": 70000}, "--probe-port 70000: expected a TCP port"),
        ({"client_names": ["a"]}, "without a client CA"),
    ],
)
def test_flag_errors(flags: dict[str, object], message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings.server_settings(settings.ServerSettings(), **flags)  # type: ignore[arg-type]
