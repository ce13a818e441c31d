"""sites.find on any object (what an AdmissionReview or a YAML file can hold): it never
raises, and every site it returns points at its value, so the pin written there (apply, the
JSON patch) changes that string and nothing else."""

from __future__ import annotations

import copy
from typing import Any

from fuzz_helpers import (
    ANY_KEYS,
    JSON_SCALARS,
    YAML_KEYS,
    YAML_SCALARS,
    documents,
    fuzz,
    kubernetes_objects,
    workloads,
)
from hypothesis import strategies as st

from controller import sites

EXTRA = sites.SitesSettings(
    extra_sites=(
        sites.ExtraSite(
            group="ml.example.com", kind="ModelDeployment", paths=("spec.models[*].source",)
        ),
        sites.ExtraSite(
            group="ml.example.com",
            kind="ModelDeployment",
            paths=("spec[*]", "spec.a/b~c", "spec.model[0]", "spec.stages[*].inputs[*]"),
            prefix="kit://",
        ),
        sites.ExtraSite(group="", kind="ConfigMap", paths=("data.model",), grammar="image"),
    )
)
SETTINGS = st.sampled_from([sites.SitesSettings(), EXTRA])

OBJECTS = st.one_of(
    workloads(),
    kubernetes_objects(),
    kubernetes_objects(YAML_KEYS, YAML_SCALARS),  # what yaml.safe_load gives kitpin pin
    documents(ANY_KEYS, JSON_SCALARS, leaves=20),  # not even an object
)


def check_sites(obj: Any, settings: sites.SitesSettings) -> None:
    before = copy.deepcopy(obj)
    found = sites.find(obj, settings)
    assert obj == before or repr(obj) == repr(before)  # nan != nan: compare the text
    assert sites.find(obj, settings) == found  # deterministic
    paths = [site.path for site in found.sites]
    assert len(paths) == len(set(paths))
    for site in found.sites:
        assert isinstance(site.value, str) and site.value.startswith(site.prefix)
        assert sites.get(obj, site.path) == site.value
        assert site.grammar in ("kit", "image")
    for u in found.unresolvable:
        sites.get(obj, u.path)  # exists: the warning names a real place
    if not found.sites:
        return
    values = {site.path: site.render(site.reference_text + "@pinned") for site in found.sites}
    new = sites.apply(obj, values)
    assert repr(obj) == repr(before)  # copy-on-write: the input is untouched
    for path, value in values.items():
        assert sites.get(new, path) == value
    assert {s.path for s in sites.find(new, settings).sites} <= set(values)  # none is new
    patched = sites.patch(obj, sites.json_patch(obj, values=values, annotations={}))
    assert repr(patched) == repr(new)


@fuzz(obj=OBJECTS, settings=SETTINGS)
def test_find_never_raises_and_every_site_points_at_its_value(
    obj: Any, settings: sites.SitesSettings
) -> None:
    check_sites(obj, settings)


@fuzz(
    examples=50,
    kind=st.sampled_from(["List", "PodList", "DeploymentList"]),
    items=st.lists(workloads(), max_size=3),
)
def test_helpers_on_lists_and_owners(kind: str, items: list[Any]) -> None:
    """The helpers pin and check use beside find: owner and pod template lookups."""
    obj = {"apiVersion": "v1", "kind": kind, "items": items}
    assert sites.find(obj) is sites.EMPTY  # a list is not an object: manifests looks inside
    for item in items:
        sites.controller_owner(item)
        sites.pod_template_path(item)
        check_sites(item, sites.SitesSettings())
