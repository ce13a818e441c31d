"""The settings file: every field lands in its dataclass; every mistake names the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller import errors, settings


def test_empty_document_gives_safe_defaults() -> None:
    loaded = settings.parse_settings_document(None, source="s.yaml")
    assert loaded.admission.mode == "pin"
    assert loaded.admission.failure == "deny"
    assert loaded.admission.deadline == 8.0
    assert loaded.resolver.ttl == 60.0
    assert loaded.resolver.deadline == loaded.admission.deadline
    assert "kube-system" in loaded.admission.ignored_namespaces


def test_full_document() -> None:
    loaded = settings.parse_settings_document(
        {
            "mode": "pods-only",
            "failure": "warn",
            "deadlineSeconds": 5,
            "ignoredNamespaces": ["monitoring"],
            "cache": {
                "ttlSeconds": 30,
                "negativeTtlSeconds": 2,
                "staleIfErrorSeconds": 0,
                "refreshAhead": 0.5,
                "maxEntries": 100,
                "enabled": False,
            },
            "sites": {
                "envNames": ["MODELKIT_REF", "MODEL_REF"],
                "extra": [
                    {
                        "group": "ml.example.com",
                        "kind": "ModelDeployment",
                        "paths": ["spec.models[*].source"],
                        "grammar": "kit",
                        "prefix": "kit://",
                    }
                ],
            },
        },
        source="s.yaml",
    )
    assert loaded.admission.mode == "pods-only"
    assert loaded.admission.failure == "warn"
    assert loaded.admission.deadline == 5.0 == loaded.resolver.deadline
    assert {"monitoring", "kube-system"} <= loaded.admission.ignored_namespaces
    assert loaded.resolver.ttl == 30.0
    assert loaded.resolver.negative_ttl == 2.0
    assert loaded.resolver.stale_if_error == 0.0
    assert loaded.resolver.refresh_ahead == 0.5
    assert loaded.resolver.max_entries == 100
    assert loaded.resolver.enabled is False
    assert loaded.admission.sites.env_names == ("MODELKIT_REF", "MODEL_REF")
    (extra,) = loaded.admission.sites.extra_sites
    assert (extra.group, extra.kind, extra.prefix) == (
        "ml.example.com",
        "ModelDeployment",
        "kit://",
    )


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"mdoe": "pin"}, ["top level", "unknown key", "mdoe"]),
        ({"mode": "strict"}, ["mode", "'strict'", "pods-only"]),
        ({"failure": "ignore"}, ["failure", "deny or warn"]),
        ({"deadlineSeconds": 30}, ["deadlineSeconds", "below the webhook timeout"]),
        ({"deadlineSeconds": "8"}, ["deadlineSeconds", "number"]),
        ({"cache": {"ttl": 5}}, ["cache", "unknown key", "ttl"]),
        ({"cache": {"ttlSeconds": -1}}, ["cache", "ttl"]),
        ({"cache": {"maxEntries": 1.5}}, ["cache.maxEntries", "integer"]),
        ({"cache": {"refreshAhead": 0}}, ["cache", "refresh_ahead", "(0, 1]"]),
        ({"cache": {"refreshAhead": 2}}, ["cache", "refresh_ahead", "(0, 1]"]),
        ({"cache": {"enabled": "yes"}}, ["cache.enabled", "true or false"]),
        ({"sites": {"envNames": "MODELKIT_REF"}}, ["sites.envNames", "list"]),
        ({"sites": {"extra": [{"group": "g", "kind": "K", "paths": ["spec..x"]}]}},
         ["sites.extra[0]", "paths"]),
        ({"ignoredNamespaces": [""]}, ["ignoredNamespaces"]),
        (["mode", "pin"], ["top level", "mapping"]),
    ],
)  # fmt: skip
def test_mistakes_name_the_field(document: object, words: list[str]) -> None:
    with pytest.raises(errors.ConfigError) as exc:
        settings.parse_settings_document(document, source="kitpin.yaml")
    message = str(exc.value)
    assert message.startswith("kitpin.yaml: ")
    for word in words:
        assert word in message


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="cannot read settings file"):
        settings.load_settings_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: [unclosed\n")
    with pytest.raises(errors.ConfigError, match="not valid YAML"):
        settings.load_settings_file(bad)


def test_plain_http_registries_are_added_to_the_host_policy(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    config = tmp_path / "registries.yaml"
    config.write_text(f'registries:\n  "reg.internal:5000": {{caFile: "{ca}"}}\n')
    policy, keychain = settings.registry_access(
        registry_config=str(config), plain_http=["127.0.0.1:5000"]
    )
    assert keychain is None
    assert policy.scheme_for("127.0.0.1:5000") == "http"
    assert policy.scheme_for("127.0.0.1:5001") == "https"
    assert policy.config_for("reg.internal:5000").ca_file == str(ca)  # the file's entry kept
    with pytest.raises(errors.ConfigError, match="--plain-http-registry"):
        settings.registry_access(plain_http=["not a host"])


def test_dev_registry_is_read_from_the_dev_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KITPIN_DEV_DIR", str(tmp_path))
    assert settings.dev_registry() is None
    (tmp_path / "env").write_text(
        "export KUBECONFIG=/x/kubeconfig\nexport KITPIN_REGISTRY=127.0.0.1:41234\n"
    )
    assert settings.dev_registry() == "127.0.0.1:41234"
