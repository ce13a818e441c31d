"""HostPolicy (denied networks and names, allowlist, per-registry settings) and loading the
registry config file."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import httpx
import pytest

from controller import errors
from controller.registry import hosts
from controller.registry.hosts import HostPolicy, RegistryHostConfig, load_registry_config

# -- check ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "169.254.169.254:80",
        "169.254.1.1:5000",
        "[fe80::1]:5000",
        "[fd00:ec2::254]",
        "[::ffff:169.254.169.254]",
        "100.100.100.200",
        "0.0.0.0:5000",
        "224.0.0.1",
        "[ff02::1]",
        "metadata.google.internal",
        "METADATA.google.internal.",
        "metadata",
        "metadata:80",
    ],
)
def test_denied_by_default(host: str) -> None:
    with pytest.raises(errors.HostNotAllowedError) as caught:
        HostPolicy().check(host, purpose="registry")
    assert "registry config" in caught.value.message


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:5000",
        "localhost:5000",
        "[::1]:5000",
        "10.1.2.3",
        "192.168.1.10:443",
        "172.16.0.5",
        "ghcr.io",
        "registry-1.docker.io",
    ],
)
def test_loopback_private_and_public_allowed_by_default(host: str) -> None:
    HostPolicy().check(host, purpose="registry")


def test_message_names_host_purpose_and_network() -> None:
    with pytest.raises(errors.HostNotAllowedError) as caught:
        HostPolicy().check("169.254.169.254", purpose="token realm")
    message = caught.value.message
    assert "token realm 169.254.169.254" in message
    assert "169.254.0.0/16" in message
    assert "deniedNetworks" in message


def test_allowlist_applies_to_registries_only() -> None:
    policy = HostPolicy(allowed_registries=("*.example.com", "127.0.0.1:*", "GHCR.io"))
    for allowed in ("reg.example.com", "127.0.0.1:5000", "ghcr.io"):
        policy.check(allowed, purpose="registry")
    for refused in ("example.com", "reg.example.com:5000", "127.0.0.1", "quay.io"):
        with pytest.raises(errors.HostNotAllowedError) as caught:
            policy.check(refused, purpose="registry")
        assert "allowedRegistries" in caught.value.message
    # Blob storage and token services are the registry's choice; the deny lists still apply.
    policy.check("s3.amazonaws.com", purpose="redirect")
    policy.check("auth.docker.io", purpose="token realm")
    with pytest.raises(errors.HostNotAllowedError):
        policy.check("169.254.169.254", purpose="redirect")


def test_empty_allowlist_refuses_every_registry() -> None:
    with pytest.raises(errors.HostNotAllowedError):
        HostPolicy(allowed_registries=()).check("ghcr.io", purpose="registry")


def test_malformed_host_is_refused() -> None:
    with pytest.raises(errors.HostNotAllowedError):
        HostPolicy().check("evil.example/path@x", purpose="redirect")


def test_check_resolved() -> None:
    policy = HostPolicy()
    policy.check_resolved("reg.example", ["10.0.0.1", "2001:db8::1"], purpose="registry")
    for bad in (["10.0.0.1", "169.254.169.254"], ["fe80::1%eth0"], ["::ffff:169.254.169.254"]):
        with pytest.raises(errors.HostNotAllowedError) as caught:
            policy.check_resolved("reg.example", bad, purpose="registry")
        assert "reg.example resolves to" in caught.value.message


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:169.254.169.254",  # IPv4-mapped
        "::ffff:a9fe:a9fe",  # the same, in hex
        "::a9fe:a9fe",  # IPv4-compatible
        "::169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64, the well-known prefix
        "64:ff9b::169.254.1.1",  # any link-local address behind NAT64
        "64:ff9b:1::a9fe:a9fe",  # NAT64, a local-use prefix (RFC 8215)
        "2002:a9fe:a9fe::",  # 6to4
        "2002:a9fe:a9fe:1::5",
        "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, client 169.254.169.254
        "64:ff9b::6464:64c8",  # NAT64 to Alibaba's 100.100.100.200
        "::ffff:0.0.0.0",
    ],
)
def test_ipv6_forms_carrying_a_denied_ipv4_address_are_denied(address: str) -> None:
    """A gateway (NAT64, 6to4, Teredo) or the kernel (mapped, compatible) may deliver these
    to the IPv4 address inside: judged as that address, as written and as a DNS answer."""
    policy = HostPolicy()
    with pytest.raises(errors.HostNotAllowedError) as caught:
        policy.check(f"[{address}]:80", purpose="redirect")
    assert "carries" in caught.value.message
    with pytest.raises(errors.HostNotAllowedError):
        policy.check_resolved("reg.example", ["10.0.0.1", address], purpose="token realm")


@pytest.mark.parametrize(
    "address",
    [
        "::1",  # loopback, not an IPv4-compatible address
        "::ffff:127.0.0.1",
        "64:ff9b::a00:1",  # NAT64 to 10.0.0.1
        "64:ff9b::808:808",  # NAT64 to a public address
        "2002:c000:204::1",  # 6to4 of 192.0.2.4
        "2001:db8::a9fe:a9fe",  # documentation prefix: nothing embedded
    ],
)
def test_ipv6_forms_carrying_an_allowed_address_are_allowed(address: str) -> None:
    HostPolicy().check(f"[{address}]:5000", purpose="registry")


def test_embedded_ipv4_addresses() -> None:
    v6, v4 = ipaddress.IPv6Address, ipaddress.IPv4Address
    metadata = v4("169.254.169.254")
    assert hosts.embedded_ipv4(v6("64:ff9b::a9fe:a9fe")) == (metadata,)
    assert hosts.embedded_ipv4(v6("::a9fe:a9fe")) == (metadata,)
    assert hosts.embedded_ipv4(v6("::ffff:a9fe:a9fe")) == (metadata,)
    assert hosts.embedded_ipv4(v6("2002:a9fe:a9fe::1")) == (metadata,)
    assert metadata in hosts.embedded_ipv4(v6("2001:0:4136:e378:8000:63bf:5601:5601"))
    assert hosts.embedded_ipv4(v6("::1")) == ()
    assert hosts.embedded_ipv4(v6("::")) == ()
    assert hosts.embedded_ipv4(v6("2001:db8::1")) == ()


def test_a_custom_denied_ipv4_network_covers_its_ipv6_forms() -> None:
    policy = HostPolicy(denied_networks=(ipaddress.ip_network("10.0.0.0/8"),))
    for host in ("[64:ff9b::a00:1]", "[::ffff:10.1.2.3]", "[2002:a00:1::]"):
        with pytest.raises(errors.HostNotAllowedError):
            policy.check(host, purpose="registry")
    policy.check("[64:ff9b::a9fe:a9fe]", purpose="registry")  # not denied any more


@pytest.mark.parametrize("host", ["xn--4.example", "xn--a.example:5000", "xn---.example"])
def test_a_name_with_a_malformed_idna_label_is_refused(host: str) -> None:
    with pytest.raises(errors.HostNotAllowedError) as caught:
        HostPolicy().check(host, purpose="registry")
    assert "not a valid host name" in caught.value.message


def test_a_valid_idna_name_is_allowed() -> None:
    HostPolicy().check("xn--bcher-kva.example", purpose="registry")


def test_host_of_a_url_never_decodes_idna() -> None:
    assert hosts.host_of(httpx.URL("https://xn--4.example/v2/")) == "xn--4.example"
    assert hosts.host_port_of(httpx.URL("https://xn--4.example/v2/")) == "xn--4.example:443"
    assert hosts.host_of(httpx.URL("http://[::1]:5000/")) == "::1"


def test_custom_denied_networks_replace_the_default() -> None:
    policy = HostPolicy(denied_networks=(ipaddress.ip_network("10.0.0.0/8"),))
    policy.check("169.254.169.254", purpose="registry")
    with pytest.raises(errors.HostNotAllowedError):
        policy.check("10.9.9.9", purpose="registry")


# -- per-registry settings -----------------------------------------------------------------------


def test_scheme_for_is_http_only_for_the_exact_plain_registry() -> None:
    policy = HostPolicy(
        registries={
            "127.0.0.1:5000": RegistryHostConfig(plain_http=True),
            "Plain.Example": RegistryHostConfig(plain_http=True),
        }
    )
    assert policy.scheme_for("127.0.0.1:5000") == "http"
    assert policy.scheme_for("plain.example") == "http"
    assert policy.scheme_for("127.0.0.1:5001") == "https"
    assert policy.scheme_for("127.0.0.1") == "https"
    assert policy.scheme_for("plain.example:443") == "https"
    assert policy.allows_plain_http("plain.example", 80)
    assert not policy.allows_plain_http("plain.example", 8080)


def test_config_for_treats_host_and_host_443_alike_for_tls() -> None:
    policy = HostPolicy(
        registries={
            "reg.internal:443": RegistryHostConfig(ca_file="/ca/reg.pem"),
            "other.internal": RegistryHostConfig(ca_file="/ca/other.pem"),
            "[fd00::1]:5000": RegistryHostConfig(ca_file="/ca/v6.pem"),
        }
    )
    assert policy.config_for("reg.internal").ca_file == "/ca/reg.pem"
    assert policy.config_for("reg.internal:443").ca_file == "/ca/reg.pem"
    assert policy.config_for("other.internal:443").ca_file == "/ca/other.pem"
    assert policy.config_for("other.internal:5000") == RegistryHostConfig()
    assert policy.config_for("[FD00::1]:5000").ca_file == "/ca/v6.pem"


def test_bad_registry_key_is_a_config_error() -> None:
    with pytest.raises(errors.ConfigError):
        HostPolicy(registries={"a:b:c": RegistryHostConfig()})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Reg.Example", ("reg.example", None)),
        ("reg.example.:5000", ("reg.example", 5000)),
        ("[::1]:5000", ("::1", 5000)),
        ("[::1]", ("::1", None)),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int | None]) -> None:
    assert hosts.split_host_port(text) == expected


@pytest.mark.parametrize("text", ["", "::1", "host:0", "host:99999", "host:x", "[::1", "a b"])
def test_split_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        hosts.split_host_port(text)


# -- load_registry_config ------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "registries.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_yaml(tmp_path: Path) -> None:
    ca = write(tmp_path, "PEM", "reg.pem")
    policy = load_registry_config(
        write(
            tmp_path,
            f"""
registries:
  "127.0.0.1:5000": {{plainHTTP: true}}
  "Reg.Internal:443": {{caFile: {ca}}}
  "bare.example":
allowedRegistries: ["*.example.com", "127.0.0.1:*"]
deniedNetworks: ["169.254.0.0/16", "10.0.0.0/8", "fd00::1"]
""",
        )
    )
    assert policy.registries == {
        "127.0.0.1:5000": RegistryHostConfig(plain_http=True),
        "reg.internal:443": RegistryHostConfig(ca_file=str(ca)),
        "bare.example": RegistryHostConfig(),
    }
    assert policy.allowed_registries == ("*.example.com", "127.0.0.1:*")
    assert [str(n) for n in policy.denied_networks] == [
        "169.254.0.0/16",
        "10.0.0.0/8",
        "fd00::1/128",
    ]
    assert policy.denied_hostnames == hosts.DEFAULT_DENIED_HOSTNAMES


def test_load_json_and_empty(tmp_path: Path) -> None:
    policy = load_registry_config(
        write(tmp_path, '{"registries": {"localhost:5000": {"plainHTTP": true}}}', "r.json")
    )
    assert policy.scheme_for("localhost:5000") == "http"
    assert policy.allowed_registries is None
    assert policy.denied_networks == hosts.DEFAULT_DENIED_NETWORKS
    assert load_registry_config(write(tmp_path, "", "empty.yaml")) == HostPolicy()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("registries: [a, b]", "registries"),
        ("registries:\n  'http://reg.example': {}", "registries['http://reg.example']"),
        ("registries:\n  'a:b:c': {}", "registries['a:b:c']"),
        ("registries:\n  reg.example: {plainHttp: true}", "registries['reg.example'].plainHttp"),
        ("registries:\n  reg.example: {plainHTTP: 'yes'}", "registries['reg.example'].plainHTTP"),
        ("registries:\n  reg.example: true", "registries['reg.example']"),
        ("registries:\n  reg.example: {caFile: /no/such/ca.pem}", "caFile"),
        ("registries:\n  reg.example: {caFile: 5}", "caFile"),
        ("allowedRegistries: '*.example.com'", "allowedRegistries"),
        ("deniedNetworks: ['not-a-network']", "deniedNetworks[0]"),
        ("deniedNetwork: []", "deniedNetwork"),
        ("- just\n- a list", "(top level)"),
        ("registries: {reg.example: {}, REG.example: {}}", "listed twice"),
    ],
)
def test_load_errors_name_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(errors.ConfigError) as caught:
        load_registry_config(path)
    assert str(path) in caught.value.message
    assert field in caught.value.message


def test_load_syntax_error_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "registries: {a: [}")
    with pytest.raises(errors.ConfigError) as caught:
        load_registry_config(path)
    assert "line 1" in caught.value.message
    with pytest.raises(errors.ConfigError) as caught:
        load_registry_config(tmp_path / "missing.yaml")
    assert "missing.yaml" in caught.value.message
