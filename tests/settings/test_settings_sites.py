"""The settings file's `sites:` keys for custom resources (docs/sites.md): shipped defaults
turned off, KServe URI prefixes, extra sites with pod specs; mistakes name the key."""

from __future__ import annotations

import pytest

from controller import errors, settings, sites


def test_sites_keys_land_in_sites_settings() -> None:
    loaded = settings.parse_settings_document(
        {
            "sites": {
                "uriPrefixes": ["modelkit://"],
                "disabledDefaults": ["rayjobs.ray.io", "jobs.batch.volcano.sh"],
                "extra": [
                    {
                        "group": "ml.example.com",
                        "kind": "Trainer",
                        "versions": ["v1"],
                        "podSpecs": ["/spec/replicaSpecs/*/template/spec"],
                    }
                ],
            }
        },
        source="s.yaml",
    )
    site_settings = loaded.admission.sites
    assert site_settings.uri_prefixes == ("modelkit://",)
    assert site_settings.disabled_defaults == ("rayjobs.ray.io", "jobs.batch.volcano.sh")
    (extra,) = site_settings.extra_sites
    assert extra.pod_specs == ("/spec/replicaSpecs/*/template/spec",) and extra.paths == ()
    kinds = [(s.group, s.kind) for s in site_settings.active_sites]
    assert ("ray.io", "RayJob") not in kinds and ("batch.volcano.sh", "Job") not in kinds
    assert ("ray.io", "RayCluster") in kinds and kinds[-1] == ("ml.example.com", "Trainer")


def test_no_sites_keys_read_every_default() -> None:
    loaded = settings.parse_settings_document({}, source="s.yaml")
    assert loaded.admission.sites.active_sites == tuple(sites.DEFAULT_SITES.values())


@pytest.mark.parametrize(
    ("document", "words"),
    [
        (
            {"disabledDefaults": ["rayjob.ray.io"]},
            ["s.yaml: sites.disabledDefaults: 'rayjob.ray.io' is not a shipped default", "rayjobs"],
        ),
        ({"disabledDefaults": "rayjobs.ray.io"}, ["sites.disabledDefaults", "list"]),
        ({"uriPrefixes": ["s3://"]}, ["sites.uriPrefixes", "KServe"]),
        ({"uriPrefixes": ["modelkit:"]}, ["sites.uriPrefixes", "not a URI scheme"]),
        ({"extra": [{"group": "g", "kind": "K"}]}, ["sites.extra[0]", '"paths" or "podSpecs"']),
        ({"extra": [{"group": "g", "kind": "K", "podSpecs": "/spec"}]}, ["podSpecs", "list"]),
        ({"extra": [{"group": "g", "kind": "K", "podSpecs": ["spec..x"]}]}, ["podSpecs"]),
    ],
)
def test_mistakes_name_the_key(document: dict[str, object], words: list[str]) -> None:
    with pytest.raises(errors.ConfigError) as info:
        settings.parse_settings_document({"sites": document}, source="s.yaml")
    for word in words:
        assert word in str(info.value)
