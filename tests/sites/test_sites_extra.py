"""Extra sites: a platform team's own CRDs, declared in settings; settings validation."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from controller import errors, sites

CRD_OBJECT = """
apiVersion: ml.example.com/v1
kind: ModelDeployment
metadata: {name: chat}
spec:
  model:
    ref: kit://registry.example.com/ml/llama:production
  models:
    - name: base
      source: registry.example.com/ml/llama:v3
    - name: adapter
      source: registry.example.com/ml/lora:v1
    - name: no-source
    - name: odd
      source: 42
    - name: empty
      source: ""
  stages:
    - inputs: [registry.example.com/ml/a:1, registry.example.com/ml/b:1]
    - inputs: {not: a list}
    - inputs: [registry.example.com/ml/c:1]
"""

SETTINGS = """
extraSites:
  - group: ml.example.com
    kind: ModelDeployment
    paths: ["spec.models[*].source", "spec.stages[*].inputs[*]"]
  - group: ml.example.com
    kind: ModelDeployment
    versions: [v1]
    paths: [spec.model.ref]
    prefix: "kit://"
  - group: ml.example.com
    kind: ModelDeployment
    versions: [v2alpha1]
    paths: [spec.model.ref]
    grammar: image
    expectsModelKit: false
"""


def load_settings() -> sites.SitesSettings:
    raw = yaml.safe_load(SETTINGS)["extraSites"]
    extra = tuple(
        sites.ExtraSite.from_mapping(d, context=f"extraSites[{i}]") for i, d in enumerate(raw)
    )
    return sites.SitesSettings(extra_sites=extra)


def test_extra_sites_with_wildcards() -> None:
    obj = yaml.safe_load(CRD_OBJECT)
    found = sites.find(obj, load_settings())
    assert found.unresolvable == ()
    assert [(s.path, s.where, s.prefix, s.grammar) for s in found.sites] == [
        ("/spec/models/0/source", "ModelDeployment spec.models[0].source", "", "kit"),
        ("/spec/models/1/source", "ModelDeployment spec.models[1].source", "", "kit"),
        ("/spec/stages/0/inputs/0", "ModelDeployment spec.stages[0].inputs[0]", "", "kit"),
        ("/spec/stages/0/inputs/1", "ModelDeployment spec.stages[0].inputs[1]", "", "kit"),
        ("/spec/stages/2/inputs/0", "ModelDeployment spec.stages[2].inputs[0]", "", "kit"),
        ("/spec/model/ref", "ModelDeployment spec.model.ref", "kit://", "kit"),
    ]
    assert all(s.kind == "extra" and s.expects_modelkit for s in found.sites)
    assert found.sites[-1].reference_text == "registry.example.com/ml/llama:production"
    for site in found.sites:
        assert sites.get(obj, site.path) == site.value


def test_extra_site_versions_and_prefix() -> None:
    obj = yaml.safe_load(CRD_OBJECT)
    obj["apiVersion"] = "ml.example.com/v2alpha1"
    found = sites.find(obj, load_settings())
    model_ref = [s for s in found.sites if s.path == "/spec/model/ref"]
    # v2alpha1 matches the third entry (image grammar, no prefix) but not the second one
    assert [(s.grammar, s.prefix, s.expects_modelkit) for s in model_ref] == [("image", "", False)]


def test_extra_site_index_and_prefix_filter() -> None:
    extra = sites.ExtraSite(
        group="ml.example.com",
        kind="ModelDeployment",
        paths=("spec.models[1].source",),
        prefix="registry.",
    )
    found = sites.find(yaml.safe_load(CRD_OBJECT), sites.SitesSettings(extra_sites=(extra,)))
    assert [s.path for s in found.sites] == ["/spec/models/1/source"]
    assert found.sites[0].reference_text == "example.com/ml/lora:v1"
    nothing = sites.ExtraSite(
        group="ml.example.com", kind="ModelDeployment", paths=("spec.models[9].source",)
    )
    assert (
        sites.find(yaml.safe_load(CRD_OBJECT), sites.SitesSettings(extra_sites=(nothing,)))
        is sites.EMPTY
    )


def test_extra_site_on_a_builtin_kind_adds_to_pod_sites_without_duplicates() -> None:
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"annotations": {"ml.example.com/model": "registry.example.com/m:1"}},
        "spec": {"template": {"spec": {"containers": [
            {"name": "c", "env": [{"name": "MODELKIT_REF", "value": "registry.example.com/m:2"}]}
        ]}}},
    }  # fmt: skip
    overlap = sites.ExtraSite(
        group="apps",
        kind="Deployment",
        paths=("spec.template.spec.containers[*].env[*].value",),
    )
    found = sites.find(obj, sites.SitesSettings(extra_sites=(overlap,)))
    assert [(s.path, s.kind) for s in found.sites] == [
        ("/spec/template/spec/containers/0/env/0/value", "env")
    ]


def test_extra_site_keys_are_escaped_in_pointers() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "Thing",
        "spec": {"a/b": {"c~d": "registry.example.com/m:1"}},
    }
    extra = sites.ExtraSite(group="", kind="Thing", paths=("spec.a/b.c~d",))
    (site,) = sites.find(obj, sites.SitesSettings(extra_sites=(extra,))).sites
    assert site.path == "/spec/a~1b/c~0d"
    assert sites.get(obj, site.path) == "registry.example.com/m:1"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"group": "g", "kind": "K", "paths": ["spec..x"]}, "not valid"),
        ({"group": "g", "kind": "K", "paths": ["spec.x[]"]}, "not valid"),
        ({"group": "g", "kind": "K", "paths": ["spec.x[-1]"]}, "not valid"),
        ({"group": "g", "kind": "K", "paths": ["spec.x[01]"]}, "not valid"),
        ({"group": "g", "kind": "K", "paths": ["[*].x"]}, "not valid"),
        ({"group": "g", "kind": "K", "paths": ["spec.*x"]}, "not valid"),
        ({"group": "g", "kind": "K", "paths": ["spec.x*"]}, "not valid"),
        ({"group": "g", "kind": "K", "paths": ["/spec//x"]}, "empty token"),
        ({"group": "g", "kind": "K", "paths": ["/spec/a~2"]}, "bad escape"),
        ({"group": "g", "kind": "K", "podSpecs": ["spec..x"]}, "podSpecs"),
        ({"group": "g", "kind": "K", "podSpecs": "/spec"}, "podSpecs"),
        ({"group": "g", "kind": "K", "paths": ["spec. x"]}, "not valid"),
        ({"group": "g", "kind": "K", "paths": [""]}, "paths"),
        ({"group": "g", "kind": "K", "paths": []}, "paths"),
        ({"group": "g", "kind": "K", "paths": "spec.x"}, '"paths"'),
        ({"group": "g", "kind": "K", "paths": [1]}, "paths"),
        ({"group": "g", "kind": "K", "paths": ["spec.x"], "versions": "v1"}, '"versions"'),
        ({"group": "g", "kind": "", "paths": ["spec.x"]}, "kind"),
        ({"group": 3, "kind": "K", "paths": ["spec.x"]}, "group"),
        ({"group": "g", "kind": "K", "paths": ["spec.x"], "grammar": "oci"}, "grammar"),
        ({"group": "g", "kind": "K", "paths": ["spec.x"], "prefix": None}, "prefix"),
        (
            {"group": "g", "kind": "K", "paths": ["spec.x"], "expectsModelKit": "yes"},
            "expectsModelKit",
        ),
        (
            {"group": "g", "kind": "K", "paths": ["spec.x"], "expects_modelkit": True},
            "unknown field",
        ),
        ({"kind": "K", "paths": ["spec.x"]}, '"group"'),
        ({"group": "g", "paths": ["spec.x"]}, 'field "kind"'),
        ({"group": "g", "kind": "K"}, 'field "paths"'),
        (["group", "g"], "mapping"),
    ],
)
def test_extra_site_config_errors(data: Any, message: str) -> None:
    with pytest.raises(errors.ConfigError) as info:
        sites.ExtraSite.from_mapping(data, context="extraSites[0]")
    assert message in str(info.value)
    assert str(info.value).startswith(("extraSites[0]", "extra site"))


@pytest.mark.parametrize(
    "path",
    ["spec.model.ref", "spec.models[*].source", "spec.a[*][*].b", "spec.x[0]", "metadata.name"],
)
def test_valid_paths(path: str) -> None:
    sites.ExtraSite(group="g", kind="K", paths=(path,))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"env_names": ("",)},
        {"env_names": "MODELKIT_REF"},
        {"kit_cli_images": (3,)},
        {"modelpack_csi_drivers": None},
        {"modelpack_csi_drivers": ("",)},
        {"pod_kinds": {("apps", "Deployment"): "spec/template/spec"}},
        {"pod_kinds": {"Deployment": "/spec/template/spec"}},
        {"extra_sites": ({"group": "g"},)},
    ],
)
def test_settings_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(errors.ConfigError):
        sites.SitesSettings(**kwargs)


def test_settings_are_values() -> None:
    assert sites.SitesSettings() == sites.SitesSettings()
    assert hash(sites.SitesSettings()) == hash(sites.SitesSettings())
    assert sites.SitesSettings(env_names=("A",)) != sites.SitesSettings()
    extra = sites.ExtraSite.from_mapping({"group": "", "kind": "K", "paths": ["spec.x"]})
    assert extra == sites.ExtraSite(group="", kind="K", paths=("spec.x",))
    assert isinstance(extra.paths, tuple)
