"""docs/settings.md is generated from the key tables and the fields' docstrings
(hack/settingsdoc.py): it is up to date, every key the loaders accept is in it, and each key
sets the field the page says."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from controller import errors, settings, sites, yamlload
from controller.registry import hosts
from controller.sites import extra as sites_extra
from hack import settingsdoc


def test_the_committed_page_is_what_the_generator_renders() -> None:
    diffs = settingsdoc.differences()
    assert not diffs, "docs/settings.md is stale: run `make manifests`\n" + "".join(diffs)


def test_a_stale_page_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "settings.md"
    stale.write_text(settingsdoc.render().replace("negativeTtlSeconds", "negativeTTL", 1))
    (diff,) = settingsdoc.differences(stale)
    assert "-  negativeTTL: 5" in diff and "+  negativeTtlSeconds: 5" in diff
    assert settingsdoc.differences(tmp_path / "absent.md")


def _yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", settingsdoc.render(), flags=re.DOTALL)


def test_the_defaults_shown_are_the_defaults(tmp_path: Path) -> None:
    settings_block, registry_block = _yaml_blocks()
    document = yamlload.load(settings_block, source="docs/settings.md")
    assert settings.parse_settings_document(document, source="docs") == settings.Settings()
    path = tmp_path / "registry.yaml"
    path.write_text(registry_block)
    assert hosts.load_registry_config(path) == hosts.HostPolicy()


def test_every_key_the_loaders_accept_is_documented() -> None:
    by_section: dict[str, set[str]] = {}
    for key in settings.SETTINGS_KEYS:
        by_section.setdefault(key.section, set()).add(key.name)
    assert by_section["sites.extra[]"] == set(sites_extra._KEYS)
    registry: dict[str, set[str]] = {}
    for key in settings.REGISTRY_KEYS:
        registry.setdefault(key.section, set()).add(key.name)
    assert registry[""] == hosts._TOP_LEVEL_FIELDS
    assert registry["registries.<host>"] == hosts._REGISTRY_FIELDS
    page = settingsdoc.render()
    for key in (*settings.SETTINGS_KEYS, *settings.REGISTRY_KEYS):
        assert f"#### `{key.path}`" in page


def test_a_field_without_a_docstring_stops_the_render(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass
    class Undocumented:
        value: int = 1

    key = settings.Key(path="value", kind="integer", owner=Undocumented, field="value")
    monkeypatch.setattr(settings, "SETTINGS_KEYS", (*settings.SETTINGS_KEYS, key))
    with pytest.raises(SystemExit, match=r"Undocumented\.value has no docstring"):
        settingsdoc.render()


def _other_value(key: settings.Key, default: Any) -> Any:
    """A valid value for ``key`` that is not its default."""
    if key.kind == "choice":
        return next(choice for choice in key.choices if choice != default)
    if key.kind == "boolean":
        return not default
    if key.kind == "integer":
        return default + 1
    if key.kind == "seconds":
        return default + 0.5
    if key.kind == "number":
        return round(default + 0.1, 3)
    if key.kind == "string":
        return "other-value"
    if key.kind == "port":
        return 9090
    assert key.kind == "strings"
    return _OTHER_STRINGS.get(key.path, ["other.example.com/x"])


_OTHER_STRINGS: dict[str, list[str]] = {
    "sites.uriPrefixes": ["modelkit://"],  # a URI scheme
    "sites.disabledDefaults": ["rayjobs.ray.io"],  # a shipped default's name
}


def _owner(loaded: settings.Settings, owner: type) -> object:
    return {
        settings.Settings: loaded,
        settings.ServerSettings: loaded.server,
        loaded.admission.__class__: loaded.admission,
        loaded.resolver.__class__: loaded.resolver,
        sites.SitesSettings: loaded.admission.sites,
        loaded.tags.__class__: loaded.tags,
    }[owner]


@pytest.mark.parametrize(
    "key",
    [
        k
        for k in settings.SETTINGS_KEYS
        if "[]" not in k.path
        and k.kind not in ("path", "mappings")
        and k.path != "server.clientNames"  # needs a client CA: tests/admission/
    ],
    ids=lambda k: k.path,
)
def test_each_key_sets_the_field_the_page_names(key: settings.Key) -> None:
    default = settingsdoc.default_value(key)
    value = _other_value(key, default)
    document: dict[str, Any] = {}
    *sections, name = key.path.split(".")
    target = document
    for section in sections:
        target = target.setdefault(section, {})
    target[name] = value
    loaded = settings.parse_settings_document(document, source="s.yaml")
    got = getattr(_owner(loaded, key.owner), key.field)
    if key.path == "ignoredNamespaces":
        assert set(value) < got
    elif key.kind == "strings":
        assert tuple(value) == got
    else:
        assert got == value


def test_webhook_timeout_bounds_the_deadline_as_the_chart_does() -> None:
    """charts/kitpin/templates/validate.yaml: deadlineSeconds < webhook.timeoutSeconds."""
    loaded = settings.parse_settings_document(
        {"webhookTimeoutSeconds": 20, "deadlineSeconds": 12}, source="s.yaml"
    )
    assert (loaded.webhook_timeout, loaded.admission.deadline, loaded.resolver.deadline) == (
        20,
        12,
        12,
    )
    with pytest.raises(errors.ConfigError) as caught:
        settings.parse_settings_document({"deadlineSeconds": 12}, source="s.yaml")
    assert str(caught.value).startswith(
        "s.yaml: deadlineSeconds: 12 must be below the webhook timeout, "
        "webhookTimeoutSeconds (10): "
    )
    assert "lower deadlineSeconds" in str(caught.value)
    with pytest.raises(errors.ConfigError, match=r"8 \(the default\) must be below"):
        settings.parse_settings_document({"webhookTimeoutSeconds": 8}, source="s.yaml")
    for bad in (0, 31, 10.5, "10", True):
        with pytest.raises(errors.ConfigError, match="webhookTimeoutSeconds: expected an integer"):
            settings.parse_settings_document({"webhookTimeoutSeconds": bad}, source="s.yaml")
