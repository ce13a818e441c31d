"""The YAML of settings-like files (settings file, registry config, kubeconfig) is read by one
loader (controller/yamlload.py): mistakes name file, line and column and what to do; values
that look like dates stay strings; nothing escapes as a Python exception."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller import errors, kubeapi, settings, yamlload
from controller.registry import hosts


def _settings_file(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "kitpin.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_a_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = _settings_file(tmp_path, "mode: pin\ncache:\n  ttlSeconds: 60: 5\n")
    with pytest.raises(errors.ConfigError) as caught:
        settings.load_settings_file(path)
    assert str(caught.value) == (
        f"{path}:3:17: not valid YAML: mapping values are not allowed here; fix the YAML "
        "syntax there (a value holding ': ' or starting with '{', '[', '*', '&', '!', '%', "
        "'@' or '`' must be quoted)"
    )


def test_dates_stay_strings(tmp_path: Path) -> None:
    """YAML 1.1 reads 2001-02-03 as a date and 2001-02-30 as an error (PyYAML raised a bare
    ValueError from yaml.safe_load); no setting is a date, so both are the text written."""
    path = _settings_file(tmp_path, "drift:\n  leaseName: 2001-02-30\n")
    assert settings.load_settings_file(path).tags.lease_name == "2001-02-30"
    path = _settings_file(tmp_path, "ignoredNamespaces: [2001-02-03, !!timestamp 2001-02-30]\n")
    ignored = settings.load_settings_file(path).admission.ignored_namespaces
    assert {"2001-02-03", "2001-02-30"} <= ignored


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cache:\n  maxEntries: !!int x\n", ":2:15: not valid YAML: cannot read 'x' as an integer"),
        ("mode: pin\nmode: validate-only\n", ":2:1: not valid YAML: the key 'mode' is given twice"),
        ("mode: pin\n---\nmode: pin\n", ":2:1: not valid YAML: but found another document"),
        ('mode: "\\U0a001000"\n', ":1:10: not valid YAML: found an escape beyond the last"),
        ("mode: !pin x\n", ":1:7: not valid YAML: could not determine a constructor"),
        ("cache:\n\tttlSeconds: 5\n", ":2:1: not valid YAML: found character '\\t'"),
        ("mode: pin\nfailure: \x07\n", ":2:10: not valid YAML: special characters are not"),
        ("[" * 5000, ": nested too deeply for kitpin to read"),
        (b"mode: pin\nfailure: \xff\n", ":2: not UTF-8 text; save the file as UTF-8"),
    ],
    ids=["int", "twice", "documents", "escape", "tag", "tab", "control", "deep", "utf8"],
)
def test_every_mistake_is_a_config_error_naming_the_place(
    tmp_path: Path, text: str | bytes, expected: str
) -> None:
    path = _settings_file(tmp_path, text)
    with pytest.raises(errors.ConfigError) as caught:
        settings.load_settings_file(path)
    assert str(caught.value).startswith(f"{path}{expected}")


def test_a_key_given_twice_names_both_lines() -> None:
    with pytest.raises(yamlload.LoadError) as caught:
        yamlload.load("cache:\n  ttlSeconds: 5\n  enabled: true\n  ttlSeconds: 6\n", source="s")
    assert str(caught.value) == (
        "s:4:3: not valid YAML: the key 'ttlSeconds' is given twice (first at line 2); keep one"
    )
    assert (caught.value.line, caught.value.column) == (4, 3)
    assert yamlload.load("a: 1\na: 2\n", source="s", duplicate_keys=True) == {"a": 2}


def test_merge_keys_may_override_what_they_merge() -> None:
    text = "base: &base {ttlSeconds: 5, enabled: true}\ncache:\n  <<: *base\n  ttlSeconds: 6\n"
    assert yamlload.load(text, source="s") == {
        "base": {"ttlSeconds": 5, "enabled": True},
        "cache": {"ttlSeconds": 6, "enabled": True},
    }


def test_the_safe_loader_itself_is_unchanged() -> None:
    import datetime

    import yaml

    assert yaml.safe_load("a: 2001-02-03") == {"a": datetime.date(2001, 2, 3)}


def test_a_missing_settings_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"cannot read settings file .*: No such file"):
        settings.load_settings_file(tmp_path / "absent.yaml")


# -- the registry config ----------------------------------------------------------------------


def test_registry_config_errors_name_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "registries.yaml"
    path.write_text('registries:\n  "reg.internal": {plainHTTP: true\n')
    with pytest.raises(errors.ConfigError) as caught:
        hosts.load_registry_config(path)
    assert str(caught.value).startswith(f"registry config {path}:3:1: not valid YAML: ")
    assert "fix the YAML syntax there" in str(caught.value)


def test_registry_config_with_a_date_like_value_is_a_field_error(tmp_path: Path) -> None:
    path = tmp_path / "registries.yaml"
    path.write_text("allowedRegistries: [2001-02-30]\ndeniedHostnames: [2001-02-03]\n")
    policy = hosts.load_registry_config(path)
    assert policy.allowed_registries == ("2001-02-30",)
    assert policy.denied_hostnames == frozenset({"2001-02-03"})


def test_registry_config_listing_a_registry_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registries.yaml"
    path.write_text(
        "registries:\n  reg.internal: {plainHTTP: true}\n  reg.internal: {plainHTTP: false}\n"
    )
    with pytest.raises(errors.ConfigError, match=r":3:3: .*'reg.internal' is given twice"):
        hosts.load_registry_config(path)


def test_registry_config_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "registries.yaml"
    path.write_bytes(b"deniedHostnames: [\xff]\n")
    with pytest.raises(errors.ConfigError, match=r"registry config .*:1: not UTF-8 text"):
        hosts.load_registry_config(path)


# -- the kubeconfig -----------------------------------------------------------------------------


def test_kubeconfig_with_dates_and_duplicate_keys_is_read(tmp_path: Path) -> None:
    """A kubeconfig is kubectl's file: read leniently (the last of two keys wins, as with
    yaml.safe_load), and an auth-provider's impossible ``expiry`` date no longer raises."""
    config = tmp_path / "config"
    config.write_text(
        "current-context: c\ncurrent-context: c\n"
        "contexts: [{name: c, context: {user: u}}]\n"
        "users: [{name: u, user: {auth-provider: {name: oidc, config: {expiry: 2001-02-30}}}}]\n"
    )
    assert kubeapi.kubeconfig_auth_plugin({"KUBECONFIG": str(config)}) == "auth-provider"


def test_an_unreadable_kubeconfig_is_no_plugin(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("users: [unclosed\n")
    assert kubeapi.kubeconfig_auth_plugin({"KUBECONFIG": str(config)}) is None
