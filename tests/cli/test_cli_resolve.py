"""`kitpin resolve` against the real registry: the installed console script as a subprocess.

Exit codes (controller/cli/app.py): 0 pinned; 1 the registry could not give a digest (the
message names the cause and what to do); 2 invalid input: usage, reference or configuration.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness import modelkit, procs, tools
from harness.registry import RegistryServer

pytestmark = pytest.mark.integration

USER = ("cli-user", "cli-password-41d9")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, kw_only=True)
class Run:
    code: int
    stdout: str
    stderr: str


def kitpin(*args: str, cwd: Path | None = None) -> Run:
    """Run the ``kitpin`` console script of this virtualenv."""
    script = Path(sys.executable).parent / "kitpin"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "controller.cli"]
    env = dict(os.environ)
    env.pop("DOCKER_CONFIG", None)
    done = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
    )
    return Run(code=done.returncode, stdout=done.stdout, stderr=done.stderr)


# --------------------------------------------------------------------------- registries


@pytest.fixture(scope="module")
def registry_binary() -> Path:
    return tools.ensure("registry")["registry"]


@pytest.fixture(scope="module")
def plain(
    tmp_path_factory: pytest.TempPathFactory, registry_binary: Path
) -> Iterator[RegistryServer]:
    with RegistryServer(
        workdir=tmp_path_factory.mktemp("cli-plain"), name="cli-plain", binary=registry_binary
    ) as server:
        yield server


@pytest.fixture(scope="module")
def private(
    tmp_path_factory: pytest.TempPathFactory, registry_binary: Path
) -> Iterator[RegistryServer]:
    with RegistryServer(
        workdir=tmp_path_factory.mktemp("cli-private"),
        name="cli-private",
        htpasswd={USER[0]: USER[1]},
        binary=registry_binary,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def tls(
    tmp_path_factory: pytest.TempPathFactory, registry_binary: Path
) -> Iterator[RegistryServer]:
    with RegistryServer(
        workdir=tmp_path_factory.mktemp("cli-tls"), name="cli-tls", tls=True, binary=registry_binary
    ) as server:
        yield server


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    short = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))
    return f"cli/{short.strip('-')[:40].strip('-')}-{secrets.token_hex(3)}"


def write_yaml(path: Path, document: object) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def docker_config(directory: Path, host: str, user: str, password: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return directory


# --------------------------------------------------------------------------- success


def test_text_output_is_the_pinned_reference(plain: RegistryServer, repo: str) -> None:
    digest = modelkit.push_modelkit(plain, repo, "production")

    run = kitpin("resolve", "--plain-http", f"{plain.host}/{repo}:production")

    assert run.code == 0, run.stderr
    assert run.stdout == f"{plain.host}/{repo}:production@{digest}\n"
    assert run.stderr == ""


@pytest.mark.parametrize(
    ("fmt", "expected"), [("kitops", "kitops-modelkit"), ("modelpack", "modelpack")]
)
def test_json_output_describes_the_artifact(
    plain: RegistryServer, repo: str, fmt: modelkit.Format, expected: str
) -> None:
    digest = modelkit.push_modelkit(plain, repo, "v1", fmt=fmt)
    reference = f"{plain.host}/{repo}:v1"

    run = kitpin("resolve", "--plain-http", "-o", "json", reference)

    assert run.code == 0, run.stderr
    assert json.loads(run.stdout) == {
        "reference": reference,
        "registry": plain.host,
        "repository": repo,
        "tag": "v1",
        "digest": digest,
        "pinned": f"{reference}@{digest}",
        "format": expected,
        "mediaType": modelkit.MEDIA_TYPE_MANIFEST,
    }


def test_a_moved_tag_resolves_to_its_new_digest(plain: RegistryServer, repo: str) -> None:
    first = modelkit.push_modelkit(plain, repo, "latest", seed=1)
    second = modelkit.push_modelkit(plain, repo, "latest", seed=2)
    assert first != second

    run = kitpin("resolve", "--plain-http", f"{plain.host}/{repo}:latest")

    assert run.code == 0, run.stderr
    assert run.stdout.strip().endswith(f"@{second}")


def test_image_grammar_and_an_already_pinned_reference(plain: RegistryServer, repo: str) -> None:
    digest = modelkit.push_modelkit(plain, repo, "v2")
    pinned = f"{plain.host}/{repo}:v2@{digest}"

    by_tag = kitpin("resolve", "--plain-http", "--grammar", "image", f"{plain.host}/{repo}:v2")
    by_digest = kitpin("resolve", "--plain-http", pinned)

    assert by_tag.code == 0, by_tag.stderr
    assert by_tag.stdout == f"{pinned}\n"
    assert by_digest.code == 0, by_digest.stderr
    assert by_digest.stdout == f"{pinned}\n"


def test_docker_config_credentials_open_a_private_repository(
    private: RegistryServer, repo: str, tmp_path: Path
) -> None:
    digest = modelkit.push_modelkit(private, repo, "v1", auth=USER)
    reference = f"{private.host}/{repo}:v1"
    config = docker_config(tmp_path / "docker", private.host, *USER)

    anonymous = kitpin("resolve", "--plain-http", reference)
    with_credentials = kitpin("resolve", "--plain-http", "--docker-config", str(config), reference)

    assert anonymous.code == 1
    assert anonymous.stdout == ""
    assert "kitpin: Unauthorized:" in anonymous.stderr
    assert "(401)" in anonymous.stderr
    assert f"give credentials for {private.host} with --docker-config DIR" in anonymous.stderr
    assert "namespace" not in anonymous.stderr  # the webhook's advice, not the CLI's
    assert with_credentials.code == 0, with_credentials.stderr
    assert with_credentials.stdout == f"{reference}@{digest}\n"


def test_wrong_docker_config_credentials_are_unauthorized(
    private: RegistryServer, repo: str, tmp_path: Path
) -> None:
    modelkit.push_modelkit(private, repo, "v1", auth=USER)
    config = docker_config(tmp_path / "docker", private.host, USER[0], "not-the-password")

    run = kitpin(
        "resolve", "--plain-http", "--docker-config", str(config), f"{private.host}/{repo}:v1"
    )

    assert run.code == 1
    assert "kitpin: Unauthorized:" in run.stderr
    assert "not-the-password" not in run.stderr  # secrets never reach the output


def test_registry_config_plain_http(plain: RegistryServer, repo: str, tmp_path: Path) -> None:
    digest = modelkit.push_modelkit(plain, repo, "v1")
    config = write_yaml(
        tmp_path / "registries.yaml", {"registries": {plain.host: {"plainHTTP": True}}}
    )

    run = kitpin("resolve", "--registry-config", str(config), f"{plain.host}/{repo}:v1")

    assert run.code == 0, run.stderr
    assert run.stdout == f"{plain.host}/{repo}:v1@{digest}\n"


def test_registry_config_ca_file_trusts_a_private_ca(
    tls: RegistryServer, repo: str, tmp_path: Path
) -> None:
    assert tls.ca_file is not None
    digest = modelkit.push_modelkit(tls, repo, "v1")
    reference = f"{tls.host}/{repo}:v1"
    config = write_yaml(
        tmp_path / "registries.yaml", {"registries": {tls.host: {"caFile": str(tls.ca_file)}}}
    )

    untrusted = kitpin("resolve", reference)
    trusted = kitpin("resolve", "--registry-config", str(config), reference)

    assert untrusted.code == 1
    assert "kitpin: Unreachable:" in untrusted.stderr
    assert "TLS verification" in untrusted.stderr and "caFile" in untrusted.stderr
    assert "in the registry config (--registry-config FILE)" in untrusted.stderr
    assert trusted.code == 0, trusted.stderr
    assert trusted.stdout == f"{reference}@{digest}\n"


# --------------------------------------------------------------------------- exit code 1


def test_missing_tag_is_not_found(plain: RegistryServer, repo: str) -> None:
    modelkit.push_modelkit(plain, repo, "v1")

    run = kitpin("resolve", "--plain-http", f"{plain.host}/{repo}:v9")

    assert run.code == 1
    assert run.stdout == ""
    assert f"kitpin: NotFound: manifest {plain.host}/{repo}:v9 not found (404)" in run.stderr
    assert "check the repository and tag" in run.stderr
    assert f"give credentials for {plain.host} with --docker-config DIR" in run.stderr
    assert "pull secret" not in run.stderr and "namespace" not in run.stderr


def test_plain_http_registry_without_plain_http_fails_with_a_hint(
    plain: RegistryServer, repo: str
) -> None:
    modelkit.push_modelkit(plain, repo, "v1")

    run = kitpin("resolve", f"{plain.host}/{repo}:v1")

    assert run.code == 1
    assert run.stdout == ""
    assert "kitpin: Unreachable:" in run.stderr
    assert f"if {plain.host} serves plain HTTP (a local registry), add --plain-http" in run.stderr
    assert "plainHTTP" not in run.stderr  # the settings key is the webhook's, not the CLI's


def test_nothing_listening_is_unreachable() -> None:
    host = f"127.0.0.1:{procs.free_port()}"

    run = kitpin("resolve", "--plain-http", f"{host}/models/llama:v1")

    assert run.code == 1
    assert "kitpin: Unreachable:" in run.stderr
    assert f"cannot talk to {host}" in run.stderr


def test_registry_outside_the_allowlist_is_refused(
    plain: RegistryServer, repo: str, tmp_path: Path
) -> None:
    modelkit.push_modelkit(plain, repo, "v1")
    config = write_yaml(
        tmp_path / "registries.yaml",
        {
            "registries": {plain.host: {"plainHTTP": True}},
            "allowedRegistries": ["registry.example.com"],
        },
    )

    run = kitpin("resolve", "--registry-config", str(config), f"{plain.host}/{repo}:v1")

    assert run.code == 1
    assert "kitpin: HostNotAllowed:" in run.stderr
    assert plain.count_manifest_requests(repo, "v1") == 0  # refused before any request


# --------------------------------------------------------------------------- exit code 2


def test_kit_local_reference_is_invalid() -> None:
    run = kitpin("resolve", "llama:production")

    assert run.code == 2
    assert run.stdout == ""
    assert run.stderr.startswith("kitpin: invalid reference:")
    assert "no registry host" in run.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["resolve"], id="no-reference"),
        pytest.param(["resolve", "-o", "yaml", "reg.example.com/m:v1"], id="bad-output"),
        pytest.param(["resolve", "--no-such-flag", "reg.example.com/m:v1"], id="bad-flag"),
    ],
)
def test_usage_errors(args: list[str]) -> None:
    run = kitpin(*args)

    assert run.code == 2
    assert run.stdout == ""
    assert "usage: kitpin" in run.stderr
    assert "kitpin: error:" in run.stderr


def test_invalid_registry_config_names_the_field(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "registries.yaml", {"registris": {}})

    run = kitpin("resolve", "--registry-config", str(config), "reg.example.com/m:v1")

    assert run.code == 2
    assert run.stderr.startswith("kitpin: invalid configuration:")
    assert "registris" in run.stderr and "unknown field" in run.stderr


def test_docker_config_without_config_json_is_invalid(tmp_path: Path) -> None:
    run = kitpin("resolve", "--docker-config", str(tmp_path), "reg.example.com/m:v1")

    assert run.code == 2
    assert run.stderr.startswith("kitpin: invalid configuration:")
    assert "no config.json" in run.stderr
