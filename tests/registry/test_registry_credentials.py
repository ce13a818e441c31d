"""The keychain: docker config.json, .dockerconfigjson pull secrets, legacy .dockercfg."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from controller import errors
from controller.registry import Credential, Keychain


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def keychain(document: object, source: str = "secret team-a/regcred") -> Keychain:
    return Keychain.from_dockerconfigjson(json.dumps(document).encode(), source=source)


def test_auth_base64_with_colons_in_the_password() -> None:
    chain = keychain({"auths": {"reg.example": {"auth": b64("alice:pa:ss:word")}}})
    credential = chain.lookup("reg.example")
    assert credential is not None
    assert (credential.username, credential.password) == ("alice", "pa:ss:word")
    assert credential.source == "secret team-a/regcred"


def test_auth_without_padding_and_with_whitespace() -> None:
    encoded = b64("bob:xy").rstrip("=")
    chain = keychain({"auths": {"reg.example": {"auth": f"  {encoded}\n"}}})
    credential = chain.lookup("reg.example")
    assert credential is not None and credential.password == "xy"


def test_username_password_fields_case_insensitive_like_docker() -> None:
    chain = keychain({"Auths": {"reg.example:5000": {"Username": "u", "Password": "p"}}})
    credential = chain.lookup("REG.example:5000")
    assert credential is not None and (credential.username, credential.password) == ("u", "p")
    assert chain.lookup("reg.example") is None


def test_identity_and_registry_tokens() -> None:
    chain = keychain(
        {
            "auths": {
                "a.example": {"auth": b64("<token>:"), "identitytoken": "refresh"},
                "b.example": {"registrytoken": "bearer-me"},
            }
        }
    )
    a, b = chain.lookup("a.example"), chain.lookup("b.example")
    assert a is not None and a.identity_token == "refresh" and a.username == "<token>"
    assert b is not None and b.registry_token == "bearer-me" and b.username is None


@pytest.mark.parametrize(
    "key",
    [
        "https://index.docker.io/v1/",
        "index.docker.io",
        "docker.io",
        "registry-1.docker.io",
        "https://registry-1.docker.io/v2/",
    ],
)
def test_docker_hub_keys_mean_docker_io(key: str) -> None:
    chain = keychain({"auths": {key: {"auth": b64("hub:pw")}}})
    for name in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        credential = chain.lookup(name)
        assert credential is not None and credential.username == "hub"


@pytest.mark.parametrize(
    "key", ["https://reg.example", "http://reg.example/", "reg.example/v2/", "REG.EXAMPLE."]
)
def test_url_keys(key: str) -> None:
    assert keychain({"auths": {key: {"auth": b64("u:p")}}}).lookup("reg.example") is not None


def test_path_scoped_and_glob_keys_most_specific_wins() -> None:
    chain = keychain(
        {
            "auths": {
                "*.example.com": {"auth": b64("glob:1")},
                "reg.example.com": {"auth": b64("host:2")},
                "reg.example.com/team-a": {"auth": b64("team:3")},
            }
        }
    )

    def user(registry: str, repository: str | None = None) -> str | None:
        credential = chain.lookup(registry, repository=repository)
        return None if credential is None else credential.username

    assert user("reg.example.com", "team-a/model") == "team"
    assert user("reg.example.com", "team-ab/model") == "host"
    assert user("reg.example.com") == "host"
    assert user("other.example.com", "team-a/model") == "glob"
    assert user("a.b.example.com") is None  # a glob label matches one label
    assert user("example.com") is None


def test_legacy_dockercfg() -> None:
    chain = keychain(
        {"https://index.docker.io/v1/": {"auth": b64("old:pw"), "email": "x@example.com"}}
    )
    credential = chain.lookup("docker.io")
    assert credential is not None and credential.username == "old"


def test_helpers_are_ignored_with_a_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="controller.registry.credentials"):
        chain = keychain({"credsStore": "desktop", "credHelpers": {"gcr.io": "gcloud"}})
    assert len(chain) == 0
    assert "credential helpers" in caplog.text
    chain = keychain(
        {"auths": {"gcr.io": {}, "reg.example": {"auth": b64("u:p")}}, "credsStore": "x"}
    )
    assert chain.lookup("gcr.io") is None
    assert chain.lookup("reg.example") is not None


def test_merge_first_wins() -> None:
    first = keychain({"auths": {"reg.example": {"auth": b64("first:1")}}}, source="one")
    second = keychain(
        {"auths": {"reg.example": {"auth": b64("second:2")}, "b.example": {"auth": b64("b:3")}}},
        source="two",
    )
    merged = Keychain.merge(first, second)
    found = merged.lookup("reg.example")
    assert found is not None and (found.username, found.source) == ("first", "one")
    found = merged.lookup("b.example")
    assert found is not None and found.source == "two"
    assert Keychain.merge().lookup("reg.example") is None


SECRET = "sup3r-s3cret-value"


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe not utf-8 " + SECRET.encode(),
        b'{"auths": {"reg.example": {"auth": "' + SECRET.encode() + b'"',
        json.dumps({"auths": {"reg.example": {"auth": SECRET + "!!"}}}).encode(),
        json.dumps({"auths": {"reg.example": {"auth": b64(SECRET)}}}).encode(),  # no ':'
        json.dumps({"auths": {"reg.example": {"password": 12345, "username": SECRET}}}).encode(),
        json.dumps({"auths": {"reg.example": SECRET}}).encode(),
        json.dumps({"auths": [SECRET]}).encode(),
        json.dumps([SECRET]).encode(),
        json.dumps({"auths": {"http://a b/": {"auth": b64("u:" + SECRET)}}}).encode(),
        b'{"auths": {"reg.example": {"auth": "'
        + SECRET.encode()
        + b'", "x": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}}}",
        json.dumps({"auths": {"reg.example": {"registrytoken": SECRET + "\r\nX: y"}}}).encode(),
    ],
)
def test_malformed_is_config_error_without_the_secret(data: bytes) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        Keychain.from_dockerconfigjson(data, source="secret team-a/broken")
    assert "secret team-a/broken" in caught.value.message
    assert SECRET not in caught.value.message
    assert SECRET not in repr(caught.value.__cause__)


@pytest.mark.parametrize("depth", [65, 5000, 20_000])
def test_a_document_nested_deeply_is_one_line_naming_the_source(depth: int) -> None:
    """Python's json recursed: "maximum recursion depth exceeded" (a RecursionError, not a
    ConfigError) once it was a few hundred levels deep."""
    data = b'{"auths": {"reg.example": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}}"
    with pytest.raises(errors.ConfigError) as caught:
        Keychain.from_dockerconfigjson(data, source="secret team-a/deep")
    message = caught.value.message
    assert message.startswith("secret team-a/deep: nested deeper than 64 levels")
    assert "\n" not in message
    assert "recursion" not in message


@pytest.mark.parametrize("token", ["tok\r\nX-Injected: 1", "t\u00f6ken", "two words"])
def test_a_registry_token_that_cannot_be_a_header_is_a_config_error(token: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        keychain({"auths": {"reg.example": {"registrytoken": token}}})
    assert "registrytoken" in caught.value.message
    assert token not in caught.value.message


def test_invalid_json_says_where() -> None:
    with pytest.raises(errors.ConfigError) as caught:
        Keychain.from_dockerconfigjson(b'{"auths": {\n  "a": x}}', source="secret ns/s")
    assert "line 2, column" in caught.value.message


def test_credential_repr_hides_secrets() -> None:
    credential = Credential(username="u", password=SECRET, identity_token=SECRET, source="s")
    assert SECRET not in repr(credential)
    assert SECRET not in credential.identity


def test_from_docker_config_dir(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"reg.example": {"auth": b64("u:p")}}})
    )
    credential = Keychain.from_docker_config_dir(tmp_path).lookup("reg.example")
    assert credential is not None and credential.source == str(tmp_path / "config.json")


def test_from_docker_config_dir_legacy_and_missing(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        Keychain.from_docker_config_dir(tmp_path)
    assert str(tmp_path) in caught.value.message
    (tmp_path / ".dockercfg").write_text(json.dumps({"reg.example": {"auth": b64("u:p")}}))
    assert Keychain.from_docker_config_dir(tmp_path).lookup("reg.example") is not None
