"""The shipped custom resources (controller/sites/defaults.py): a realistic object of every
kind, with a reference at each of its paths, is found and patched; the "Paths visited" list
documents every path; defaults can be turned off or replaced; the owner rule's templates."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller import errors, refs, sites
from controller.sites import finding

REF = "registry.example.com/models/{}:v1"


def _init(name: str) -> dict[str, Any]:
    """A kitops-init init container whose MODELKIT_REF names ``name``."""
    return {
        "name": "kitops-init",
        "image": "ghcr.io/kitops-ml/kitops-init:v1.7.0",
        "env": [{"name": "MODELKIT_REF", "value": REF.format(name)}],
    }


def _pod(name: str, **extra: Any) -> dict[str, Any]:
    """A pod spec: the init container above and a server that reads what it unpacked."""
    return {
        "initContainers": [_init(name)],
        "containers": [{"name": "server", "image": "registry.example.com/serve:1"}],
        **extra,
    }


def _template(name: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": name}}, "spec": _pod(name)}


ENV = "/initContainers/0/env/0/value"

# kind → (apiVersion, spec, the pod spec pointers that hold a reference, other sites)
SAMPLES: dict[str, tuple[str, dict[str, Any], list[str], list[str]]] = {
    "leaderworkersets.leaderworkerset.x-k8s.io": (
        "leaderworkerset.x-k8s.io/v1",
        {
            "replicas": 2,
            "leaderWorkerTemplate": {
                "size": 4,
                "leaderTemplate": _template("leader"),
                "workerTemplate": _template("worker"),
            },
        },
        [
            "/spec/leaderWorkerTemplate/leaderTemplate/spec",
            "/spec/leaderWorkerTemplate/workerTemplate/spec",
        ],
        [],
    ),
    "jobsets.jobset.x-k8s.io": (
        "jobset.x-k8s.io/v1alpha2",
        {
            "replicatedJobs": [
                {
                    "name": "driver",
                    "replicas": 1,
                    "template": {"spec": {"template": _template("d")}},
                },
                {
                    "name": "workers",
                    "replicas": 4,
                    "template": {"spec": {"template": _template("w")}},
                },
            ]
        },
        [
            "/spec/replicatedJobs/0/template/spec/template/spec",
            "/spec/replicatedJobs/1/template/spec/template/spec",
        ],
        [],
    ),
    "rayclusters.ray.io": (
        "ray.io/v1",
        {
            "rayVersion": "2.40.0",
            "headGroupSpec": {"rayStartParams": {}, "template": _template("head")},
            "workerGroupSpecs": [
                {"groupName": "gpu", "replicas": 2, "template": _template("gpu")},
                {"groupName": "cpu", "replicas": 1, "template": _template("cpu")},
            ],
        },
        [
            "/spec/headGroupSpec/template/spec",
            "/spec/workerGroupSpecs/0/template/spec",
            "/spec/workerGroupSpecs/1/template/spec",
        ],
        [],
    ),
    "rayservices.ray.io": (
        "ray.io/v1",
        {
            "serveConfigV2": "applications: []",
            "rayClusterConfig": {
                "headGroupSpec": {"template": _template("head")},
                "workerGroupSpecs": [{"groupName": "gpu", "template": _template("gpu")}],
            },
        },
        [
            "/spec/rayClusterConfig/headGroupSpec/template/spec",
            "/spec/rayClusterConfig/workerGroupSpecs/0/template/spec",
        ],
        [],
    ),
    "rayjobs.ray.io": (
        "ray.io/v1",
        {
            "entrypoint": "python train.py",
            "rayClusterSpec": {
                "headGroupSpec": {"template": _template("head")},
                "workerGroupSpecs": [{"groupName": "gpu", "template": _template("gpu")}],
            },
            "submitterPodTemplate": _template("submitter"),
        },
        [
            "/spec/rayClusterSpec/headGroupSpec/template/spec",
            "/spec/rayClusterSpec/workerGroupSpecs/0/template/spec",
            "/spec/submitterPodTemplate/spec",
        ],
        [],
    ),
    "services.serving.knative.dev": (
        "serving.knative.dev/v1",
        {"template": {"spec": {**_pod("ksvc"), "containerConcurrency": 4}}},
        ["/spec/template/spec"],
        [],
    ),
    "configurations.serving.knative.dev": (
        "serving.knative.dev/v1",
        {"template": {"spec": _pod("config")}},
        ["/spec/template/spec"],
        [],
    ),
    "revisions.serving.knative.dev": (
        "serving.knative.dev/v1",
        {**_pod("revision"), "timeoutSeconds": 300},
        ["/spec"],
        [],
    ),
    "llminferenceservices.serving.kserve.io": (
        "serving.kserve.io/v1alpha2",
        {
            "model": {
                "uri": "kit://" + REF.format("llama"),
                "name": "llama",
                "lora": {
                    "adapters": [
                        {"name": "sql", "uri": "kit://" + REF.format("sql-lora")},
                        {"name": "chat", "uri": "hf://org/chat-lora"},  # not a ModelKit
                    ]
                },
            },
            "replicas": 2,
            "template": _pod("decode"),
            "worker": _pod("decode-worker"),
            "prefill": {"replicas": 1, "template": _pod("prefill"), "worker": _pod("pw")},
            "router": {
                "route": {},
                "scheduler": {
                    "template": _pod("scheduler"),
                    "tokenizer": {"template": _pod("tokenizer")},
                },
            },
        },
        [
            "/spec/template",
            "/spec/worker",
            "/spec/prefill/template",
            "/spec/prefill/worker",
            "/spec/router/scheduler/template",
            "/spec/router/scheduler/tokenizer/template",
        ],
        ["/spec/model/uri", "/spec/model/lora/adapters/0/uri"],
    ),
    "pytorchjobs.kubeflow.org": (
        "kubeflow.org/v1",
        {
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "template": _template("master")},
                "Worker": {"replicas": 3, "template": _template("worker")},
            }
        },
        [
            "/spec/pytorchReplicaSpecs/Master/template/spec",
            "/spec/pytorchReplicaSpecs/Worker/template/spec",
        ],
        [],
    ),
    "tfjobs.kubeflow.org": (
        "kubeflow.org/v1",
        {
            "tfReplicaSpecs": {
                "Chief": {"template": _template("c")},
                "PS": {"template": _template("p")},
            }
        },
        ["/spec/tfReplicaSpecs/Chief/template/spec", "/spec/tfReplicaSpecs/PS/template/spec"],
        [],
    ),
    "mpijobs.kubeflow.org": (
        "kubeflow.org/v2beta1",
        {
            "slotsPerWorker": 1,
            "mpiReplicaSpecs": {
                "Launcher": {"template": _template("launcher")},
                "Worker": {"template": _template("worker")},
            },
        },
        [
            "/spec/mpiReplicaSpecs/Launcher/template/spec",
            "/spec/mpiReplicaSpecs/Worker/template/spec",
        ],
        [],
    ),
    "xgboostjobs.kubeflow.org": (
        "kubeflow.org/v1",
        {"xgbReplicaSpecs": {"Master": {"template": _template("m")}}},
        ["/spec/xgbReplicaSpecs/Master/template/spec"],
        [],
    ),
    "paddlejobs.kubeflow.org": (
        "kubeflow.org/v1",
        {"paddleReplicaSpecs": {"Worker": {"template": _template("w")}}},
        ["/spec/paddleReplicaSpecs/Worker/template/spec"],
        [],
    ),
    "jaxjobs.kubeflow.org": (
        "kubeflow.org/v1",
        {"jaxReplicaSpecs": {"Worker": {"template": _template("w")}}},
        ["/spec/jaxReplicaSpecs/Worker/template/spec"],
        [],
    ),
    "trainjobs.trainer.kubeflow.org": (
        "trainer.kubeflow.org/v1alpha1",
        {  # the three shapes of trainer v2.0, v2.1 and v2.2+, side by side
            "runtimeRef": {"name": "torch-distributed"},
            "trainer": {"numNodes": 2},
            "podSpecOverrides": [
                {"targetJobs": [{"name": "node"}], "initContainers": [_init("v20")]},
            ],
            "podTemplateOverrides": [
                {"targetJobs": [{"name": "node"}], "spec": {"initContainers": [_init("v21")]}},
            ],
            "runtimePatches": [
                {
                    "manager": "kitpin-test",
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": "node",
                                        "template": {
                                            "spec": {
                                                "template": {
                                                    "spec": {"initContainers": [_init("v22")]}
                                                }
                                            }
                                        },
                                    }
                                ]
                            }
                        }
                    },
                }
            ],
        },
        [
            "/spec/podSpecOverrides/0",
            "/spec/podTemplateOverrides/0/spec",
            "/spec/runtimePatches/0/trainingRuntimeSpec/template/spec/replicatedJobs/0"
            "/template/spec/template/spec",
        ],
        [],
    ),
    "rollouts.argoproj.io": (
        "argoproj.io/v1alpha1",
        {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "r"}},
            "template": _template("rollout"),
            "strategy": {"canary": {"steps": [{"setWeight": 20}]}},
        },
        ["/spec/template/spec"],
        [],
    ),
    "jobs.batch.volcano.sh": (
        "batch.volcano.sh/v1alpha1",
        {
            "minAvailable": 2,
            "schedulerName": "volcano",
            "tasks": [
                {"name": "ps", "replicas": 1, "template": _template("ps")},
                {"name": "worker", "replicas": 2, "template": _template("worker")},
            ],
        },
        ["/spec/tasks/0/template/spec", "/spec/tasks/1/template/spec"],
        [],
    ),
}


def sample(name: str) -> dict[str, Any]:
    api_version, spec, _, _ = SAMPLES[name]
    return {
        "apiVersion": api_version,
        "kind": sites.DEFAULT_SITES[name].kind,
        "metadata": {"name": "sample", "namespace": "ml"},
        "spec": copy.deepcopy(spec),
    }


def test_every_default_has_a_sample() -> None:
    assert set(SAMPLES) == set(sites.DEFAULT_SITES)


@pytest.mark.parametrize("name", list(sites.DEFAULT_SITES))
def test_every_path_of_every_default_is_found_and_patched(name: str) -> None:
    obj = sample(name)
    before = copy.deepcopy(obj)
    _, _, pod_specs, others = SAMPLES[name]

    found = sites.find(obj)

    assert not found.unresolvable
    assert [s.path for s in found.sites] == [p + ENV for p in pod_specs] + others
    for site in found.sites:
        assert sites.get(obj, site.path) == site.value
        ref = refs.parse(site.reference_text, grammar=site.grammar)
        assert ref.registry == "registry.example.com"
        assert site.where.startswith(sites.DEFAULT_SITES[name].kind + " ")
    digest = "sha256:" + "ab" * 32
    values = {
        s.path: s.render(refs.parse(s.reference_text, grammar=s.grammar).pinned(digest))
        for s in found.sites
    }
    patched = sites.patch(obj, sites.json_patch(obj, values=values, annotations={}))
    assert obj == before  # copy-on-write
    for site in found.sites:
        assert sites.get(patched, site.path) == site.value + "@" + digest
    assert sites.find(patched).sites == tuple(
        dataclasses.replace(s, value=s.value + "@" + digest) for s in found.sites
    )
    # The pod specs are what pod_specs() lists (for pull secrets and service accounts).
    assert [p for p, _ in sites.pod_specs(obj)] == pod_specs


def test_every_pod_spec_rule_applies_inside_a_custom_resource() -> None:
    """Not only MODELKIT_REF: kit CLI arguments, image volumes, ModelPack CSI volumes, and
    what cannot be pinned (valueFrom) in a RayCluster worker group."""
    pod = {
        "containers": [
            {
                "name": "fetch",
                "image": "ghcr.io/kitops-ml/kitops:v1.7.0",
                "args": ["unpack", REF.format("cli"), "-d", "/models"],
            },
            {
                "name": "other",
                "image": "registry.example.com/x:1",
                "env": [{"name": "MODELKIT_REF", "valueFrom": {"configMapKeyRef": {"name": "m"}}}],
            },
        ],
        "volumes": [
            {"name": "weights", "image": {"reference": "registry.example.com/w:1"}},
            {
                "name": "csi",
                "csi": {
                    "driver": "model.csi.modelpack.org",
                    "volumeAttributes": {
                        "model.csi.modelpack.org/reference": "reg.example.com/m:2"
                    },
                },
            },
        ],
    }
    obj = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "spec": {
            "headGroupSpec": {"template": {"spec": {}}},
            "workerGroupSpecs": [{"template": {"spec": pod}}],
        },
    }
    found = sites.find(obj)
    base = "/spec/workerGroupSpecs/0/template/spec"
    assert [(s.path, s.kind) for s in found.sites] == [
        (f"{base}/containers/0/args/1", "kit-cli-args"),
        (f"{base}/volumes/0/image/reference", "image-volume"),
        (
            f"{base}/volumes/1/csi/volumeAttributes/model.csi.modelpack.org~1reference",
            "modelpack-csi",
        ),
    ]
    assert found.sites[0].where == (
        'RayCluster spec.workerGroupSpecs[0].template.spec container "fetch" args[1] (kit unpack)'
    )
    (u,) = found.unresolvable
    assert u.path == f"{base}/containers/1/env/0/valueFrom"


def test_paths_visited_lists_every_default_with_its_source() -> None:
    doc = finding.__doc__ or ""
    section = doc.split("Shipped defaults", 1)[1].split("Templates and owners", 1)[0]
    entries = re.split(r"\n    (?=\S)", section)[1:]
    listed = {e.split()[0]: e for e in entries}
    assert set(listed) == set(sites.DEFAULT_SITES)
    for name, site in sites.DEFAULT_SITES.items():
        text = re.sub(r"\s+", " ", listed[name])
        assert site.kind in text
        for path in (*site.pod_specs, *site.paths):
            assert path in text, (name, path)
    # Every entry names its project's Go API types (kubeflow's jobs share one citation).
    for name in ("leaderworkersets", "jobsets", "rayclusters", "llminferenceservices", "jaxjobs"):
        (entry,) = (e for n, e in listed.items() if n.startswith(name + "."))
        assert ".go" in entry


def test_docs_sites_md_lists_every_default() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "sites.md").read_text()
    for name, site in sites.DEFAULT_SITES.items():
        assert f"`{name}`" in page
        for path in (*site.pod_specs, *site.paths):
            assert path in page, (name, path)


# --- turning defaults off, replacing them -------------------------------------------------


def test_a_disabled_default_is_not_read() -> None:
    obj = sample("rayjobs.ray.io")
    off = sites.SitesSettings(disabled_defaults=("rayjobs.ray.io",))
    assert sites.find(obj, off) is sites.EMPTY
    assert not sites.is_template(obj, off)
    assert sites.find(sample("rayclusters.ray.io"), off).sites  # the others still are
    assert "rayjobs.ray.io" not in {f"{s.kind}" for s in off.active_sites}
    assert len(off.active_sites) == len(sites.DEFAULT_SITES) - 1


def test_an_unknown_default_name_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(errors.ConfigError) as info:
        sites.SitesSettings(disabled_defaults=("rayjob.ray.io",))
    assert "'rayjob.ray.io' is not a shipped default" in str(info.value)
    assert "rayjobs.ray.io" in str(info.value)


def test_an_extra_site_of_the_same_kind_replaces_the_default() -> None:
    mine = sites.ExtraSite(
        group="ray.io",
        kind="RayJob",
        versions=("v1",),
        pod_specs=("/spec/submitterPodTemplate/spec",),
    )
    custom = sites.SitesSettings(extra_sites=(mine,))
    assert mine in custom.active_sites
    assert [s for s in custom.active_sites if s.kind == "RayJob"] == [mine]
    obj = sample("rayjobs.ray.io")
    assert [s.path for s in sites.find(obj, custom).sites] == [
        "/spec/submitterPodTemplate/spec" + ENV
    ]
    obj["apiVersion"] = "ray.io/v1alpha1"  # versions: [v1] only
    assert sites.find(obj, custom) is sites.EMPTY


# --- the owner rule's templates -------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_version", "kind", "template"),
    [
        ("v1", "Pod", False),
        ("v1", "PodTemplate", True),
        ("v1", "ReplicationController", True),
        ("apps/v1", "Deployment", True),
        ("apps/v1", "StatefulSet", True),
        ("batch/v1", "CronJob", True),
        ("serving.kserve.io/v1beta1", "InferenceService", False),
        ("serving.kserve.io/v1alpha2", "LLMInferenceService", False),  # model URIs: paths
        ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", True),
        ("ray.io/v1", "RayCluster", True),
        ("serving.knative.dev/v1", "Revision", True),
        ("kubeflow.org/v1", "PyTorchJob", True),
        ("batch.volcano.sh/v1alpha1", "Job", True),
        ("v1", "ConfigMap", False),
        ("example.com/v1", "Thing", False),
    ],
)
def test_templates(api_version: str, kind: str, template: bool) -> None:
    assert sites.is_template({"apiVersion": api_version, "kind": kind}) is template


def test_an_extra_site_is_a_template_only_with_pod_specs_and_no_paths() -> None:
    pods = sites.ExtraSite(group="g", kind="Pods", pod_specs=("/spec/template/spec",))
    refs_ = sites.ExtraSite(group="g", kind="Refs", paths=("spec.model",))
    both = sites.ExtraSite(group="g", kind="Both", paths=("spec.model",), pod_specs=("/spec/pod",))
    custom = sites.SitesSettings(extra_sites=(pods, refs_, both))
    assert [
        sites.is_template({"apiVersion": "g/v1", "kind": k}, custom)
        for k in ("Pods", "Refs", "Both")
    ] == [True, False, False]
    assert (pods.template, refs_.template, both.template) == (True, False, False)
    assert not sites.is_template({"kind": "Pods"}, custom)
    assert not sites.is_template("junk", custom)  # type: ignore[arg-type]


# --- KServe URI prefixes --------------------------------------------------------------------


def test_uri_prefixes_read_other_spellings_of_kit_uris() -> None:
    settings = sites.SitesSettings(uri_prefixes=("modelkit://", "kit://", "modelkit://"))
    assert settings.uri_prefixes == ("modelkit://",)
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "spec": {
            "predictor": {
                "model": {"storageUri": "modelkit://" + REF.format("a")},
                "storageUris": [{"uri": "kit://" + REF.format("b")}, {"uri": "s3://bucket/c"}],
            }
        },
    }
    found = sites.find(isvc, settings).sites
    assert [(s.path, s.prefix, s.reference_text) for s in found] == [
        ("/spec/predictor/storageUris/0/uri", "kit://", REF.format("b")),
        ("/spec/predictor/model/storageUri", "modelkit://", REF.format("a")),
    ]
    assert found[1].render(REF.format("a") + "@x") == "modelkit://" + REF.format("a") + "@x"
    assert len(sites.find(isvc).sites) == 1  # without the setting, only kit://

    llm = sample("llminferenceservices.serving.kserve.io")
    llm["spec"]["model"]["uri"] = "modelkit://" + REF.format("llama")
    paths = [s.path for s in sites.find(llm, settings).sites]
    assert "/spec/model/uri" in paths
    assert "/spec/model/uri" not in [s.path for s in sites.find(llm).sites]

    extra = sites.ExtraSite(group="g", kind="K", paths=("spec.a", "spec.b"), prefix="kit://")
    other = sites.ExtraSite(group="g", kind="L", paths=("spec.a",), prefix="my://")
    custom = sites.SitesSettings(uri_prefixes=("modelkit://",), extra_sites=(extra, other))
    obj = {
        "apiVersion": "g/v1",
        "kind": "K",
        "spec": {"a": "modelkit://" + REF.format("a"), "b": "my://x/y:1"},
    }
    assert [(s.path, s.prefix) for s in sites.find(obj, custom).sites] == [
        ("/spec/a", "modelkit://")
    ]
    obj["kind"] = "L"
    obj["spec"]["a"] = "my://" + REF.format("a")
    assert [(s.path, s.prefix) for s in sites.find(obj, custom).sites] == [("/spec/a", "my://")]


@pytest.mark.parametrize(
    ("prefixes", "message"),
    [
        (("Modelkit://",), "not a URI scheme"),
        (("modelkit",), "not a URI scheme"),
        (("modelkit://host/",), "not a URI scheme"),
        (("s3://",), "KServe serves itself"),
        (("oci://",), "KServe serves itself"),
        (("",), "non-empty"),
        ("modelkit://", "list of strings"),
    ],
)
def test_bad_uri_prefixes(prefixes: Any, message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        sites.SitesSettings(uri_prefixes=prefixes)


# --- path syntax: * on mappings, JSON pointers ---------------------------------------------


CRD = yaml.safe_load(
    """
apiVersion: ml.example.com/v1
kind: Trainer
spec:
  replicaSpecs:
    Master:
      model: registry.example.com/m/a:1
      template: {spec: {initContainers: [
        {name: i, env: [{name: MODELKIT_REF, value: registry.example.com/m/p:1}]}]}}
    Worker: {model: registry.example.com/m/b:1}
    Odd: 42
  list: [registry.example.com/m/c:1, {x: registry.example.com/m/d:1}]
  "0": registry.example.com/m/zero:1
"""
)


def test_star_reaches_every_value_of_a_mapping_in_both_syntaxes() -> None:
    for paths, pods in (
        (("spec.replicaSpecs.*.model", "spec.list.*"), ("spec.replicaSpecs.*.template.spec",)),
        (("/spec/replicaSpecs/*/model", "/spec/list/*"), ("/spec/replicaSpecs/*/template/spec",)),
    ):
        site = sites.ExtraSite(group="ml.example.com", kind="Trainer", paths=paths, pod_specs=pods)
        found = sites.find(CRD, sites.SitesSettings(extra_sites=(site,)))
        assert [(s.path, s.where) for s in found.sites] == [
            (
                "/spec/replicaSpecs/Master/template/spec/initContainers/0/env/0/value",
                'Trainer spec.replicaSpecs.Master.template.spec initContainer "i" env MODELKIT_REF',
            ),
            ("/spec/replicaSpecs/Master/model", "Trainer spec.replicaSpecs.Master.model"),
            ("/spec/replicaSpecs/Worker/model", "Trainer spec.replicaSpecs.Worker.model"),
            ("/spec/list/0", "Trainer spec.list[0]"),
        ]


def test_bracket_star_stays_a_list_wildcard() -> None:
    site = sites.ExtraSite(
        group="ml.example.com", kind="Trainer", paths=("spec.replicaSpecs[*].model",)
    )
    assert sites.find(CRD, sites.SitesSettings(extra_sites=(site,))) is sites.EMPTY


def test_a_pointer_digit_token_is_an_index_in_a_list_and_a_name_in_a_mapping() -> None:
    site = sites.ExtraSite(
        group="ml.example.com",
        kind="Trainer",
        paths=("/spec/list/0", "/spec/0", "/spec/list/01", "/spec/list/9"),
    )
    found = sites.find(CRD, sites.SitesSettings(extra_sites=(site,)))
    assert [s.path for s in found.sites] == ["/spec/list/0", "/spec/0"]


def test_pod_specs_respect_versions_and_are_walked_once() -> None:
    v1 = sites.ExtraSite(
        group="ml.example.com",
        kind="Trainer",
        versions=("v1",),
        pod_specs=("spec.replicaSpecs.*.template.spec",),
    )
    again = sites.ExtraSite(
        group="ml.example.com",
        kind="Trainer",
        pod_specs=("/spec/replicaSpecs/Master/template/spec",),
    )
    both = sites.SitesSettings(extra_sites=(v1, again))
    assert len(sites.find(CRD, both).sites) == 1
    v2 = {**CRD, "apiVersion": "ml.example.com/v2"}
    assert len(sites.find(v2, both).sites) == 1  # through `again`, any version
    assert sites.find(v2, sites.SitesSettings(extra_sites=(v1,))) is sites.EMPTY


def test_pod_specs_of_builtin_kinds_and_inference_services() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "spec": {"template": {"spec": {"containers": []}}},
    }
    assert sites.pod_specs(deployment) == (("/spec/template/spec", {"containers": []}),)
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "spec": {
            "predictor": {"workerSpec": {}, "imagePullSecrets": [{"name": "p"}]},
            "transformer": {},
        },
    }
    assert [p for p, _ in sites.pod_specs(isvc)] == [
        "/spec/predictor",
        "/spec/predictor/workerSpec",
        "/spec/transformer",
    ]
    for junk in (
        {},
        {"apiVersion": "v1", "kind": "ConfigMap"},
        "x",
        {"apiVersion": "v1", "kind": "Pod", "spec": 3},
    ):
        assert sites.pod_specs(junk) == ()  # type: ignore[arg-type]
