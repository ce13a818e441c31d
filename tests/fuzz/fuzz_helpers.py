"""Profiles, the case counter and the strategies shared by the property-based fuzz tests.

Profiles (``KITPIN_FUZZ_PROFILE``):

- ``quick`` (the default, part of every pytest run and so of ``make test``): a few dozen to a
  hundred examples per property, derandomized (the same examples on every run, on every
  machine) and with no example database, so a run is deterministic and writes nothing;
- ``deep`` (``make fuzz``): :data:`DEEP_EXAMPLES` examples per property, randomized (each run
  explores new inputs; a failure prints the ``@reproduce_failure`` blob to replay it).

Every property is decorated with :func:`fuzz`, which applies the profile and counts the
cases that ran (the conftest prints the total). The properties share one rule: only the
documented errors (:class:`controller.errors.KitpinError` subclasses, the one hierarchy)
may escape the code under test, whatever the input.
"""

from __future__ import annotations

import collections
import datetime
import functools
import os
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import sites

QUICK_EXAMPLES: Final = 100
DEEP_EXAMPLES: Final = 12_500
"""Per property: the ``deep`` profile runs at least 100,000 cases in all."""

_COMMON: Final[dict[str, Any]] = {
    "deadline": None,  # 2 shared cores: wall time per example says nothing
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile(
    "quick", max_examples=QUICK_EXAMPLES, derandomize=True, print_blob=False, **_COMMON
)
settings.register_profile("deep", max_examples=DEEP_EXAMPLES, print_blob=True, **_COMMON)

PROFILE: Final = os.environ.get("KITPIN_FUZZ_PROFILE", "quick")
"""The profile of this run (``quick`` unless ``make fuzz`` says ``deep``)."""

CASES: Final[collections.Counter[str]] = collections.Counter()
"""Cases run per property in this process."""
SECONDS: Final[collections.Counter[str]] = collections.Counter()
"""Seconds spent in the body of each property."""

F = TypeVar("F", bound=Callable[..., Any])


def fuzz(
    *,
    examples: int | None = None,
    deep_examples: int | None = None,
    **strategies: st.SearchStrategy[Any],
) -> Callable[[F], F]:
    """``@given(**strategies)`` with the profile's settings, counting every case the
    property runs. ``examples`` and ``deep_examples`` set this property's own number in the
    ``quick`` and ``deep`` profiles (a property whose cases take a second each runs fewer);
    by default :data:`QUICK_EXAMPLES` and :data:`DEEP_EXAMPLES`."""
    profile = settings.get_profile(PROFILE)
    own = examples if PROFILE == "quick" else deep_examples
    if own is not None:
        profile = settings(profile, max_examples=own)

    def decorate(test: F) -> F:
        @functools.wraps(test)
        def counted(*args: Any, **kwargs: Any) -> Any:
            CASES[test.__name__] += 1
            start = time.perf_counter()
            try:
                return test(*args, **kwargs)
            finally:
                SECONDS[test.__name__] += time.perf_counter() - start

        return profile(given(**strategies)(counted))  # type: ignore[no-any-return]

    return decorate


# ---------------------------------------------------------------------------------------
# Strategies

REFERENCES: Final = st.sampled_from(
    [
        "registry.example.com/ml/llama:production",
        "kit://registry.example.com/ml/llama:v1",
        "reg.io:443/a/b",
        "127.0.0.1:5000/m:1",
        "[::1]:5000/m:latest",
        "ghcr.io/acme/m:v1@sha256:" + "a" * 64,
        "ghcr.io/acme/m@sha256:" + "b" * 64,
        "llama:production",  # no registry: kit's local storage
        "localhost/model",
        "Reg.Example.com/ML/llama",  # uppercase path
        "registry.example.com/ml/llama:",  # empty tag
        "registry.example.com//llama",
        "kit://",
        "$(MODELKIT_REF)",
        "ghcr.io/kitops-ml/kitops-init:v1.7.0",
        "ghcr.io/kitops-ml/kitops:v1",
    ]
)
"""Valid and invalid reference texts, so sites are found and plans have pins and problems."""

KEYS: Final = st.sampled_from(
    [
        "apiVersion", "kind", "metadata", "name", "namespace", "annotations", "labels",
        "ownerReferences", "controller", "items", "spec", "template", "jobTemplate",
        "containers", "initContainers", "ephemeralContainers", "env", "value", "valueFrom",
        "envFrom", "image", "args", "command", "volumes", "reference", "csi", "driver",
        "volumeAttributes", "model.csi.modelpack.org/reference", "predictor", "transformer",
        "explainer", "model", "sklearn", "storageUri", "storageUris", "MODELKIT_REF",
        "models", "source", "a/b~c", "kitpin.dev/pinned",
    ]
)  # fmt: skip

VOCABULARY: Final = st.sampled_from(
    [
        "v1", "apps/v1", "batch/v1", "Pod", "Deployment", "CronJob", "List", "PodList",
        "serving.kserve.io/v1beta1", "InferenceService", "ml.example.com/v1",
        "ModelDeployment", "MODELKIT_REF", "kitops-init", "kit", "pull", "unpack", "-d",
        "--", "sh", "-c", "model.csi.modelpack.org", "",
    ]
)  # fmt: skip

JSON_SCALARS: Final = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    REFERENCES,
    VOCABULARY,
    st.text(max_size=12),
)
"""What a JSON document (an AdmissionReview, a registry answer) can hold."""

ANY_KEYS: Final = KEYS | st.text(max_size=6)

YAML_SCALARS: Final = st.one_of(
    JSON_SCALARS,
    st.floats(),  # nan, inf
    st.datetimes(min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 12, 31)),
    st.dates(),
    st.binary(max_size=8),
)
"""What ``yaml.safe_load`` of a manifest can hold besides JSON: dates, bytes, nan."""

YAML_KEYS: Final = st.one_of(
    KEYS, st.text(max_size=6), st.integers(), st.none(), st.booleans(), st.dates()
)
"""Mapping keys YAML allows (Kubernetes objects only have strings)."""


def documents(
    keys: st.SearchStrategy[Any] = ANY_KEYS,
    scalars: st.SearchStrategy[Any] = JSON_SCALARS,
    *,
    leaves: int = 40,
) -> st.SearchStrategy[Any]:
    """Nested mappings and lists of ``scalars`` under ``keys``."""
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5)
        ),
        max_leaves=leaves,
    )


KINDS: Final = st.sampled_from(
    [
        ("v1", "Pod"), ("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet"), ("batch/v1", "Job"),
        ("batch/v1", "CronJob"), ("v1", "PodTemplate"), ("v1", "List"), ("v1", "ConfigMap"),
        ("apps/v1", "DeploymentList"), ("serving.kserve.io/v1beta1", "InferenceService"),
        ("ml.example.com/v1", "ModelDeployment"),
    ]
)  # fmt: skip


@st.composite
def kubernetes_objects(
    draw: st.DrawFn,
    keys: st.SearchStrategy[Any] = ANY_KEYS,
    scalars: st.SearchStrategy[Any] = JSON_SCALARS,
) -> dict[Any, Any]:
    """An object of a kind kitpin looks into, with junk where its pod spec (or anything
    else) is expected: the walkers see it."""
    api_version, kind = draw(KINDS)
    body = draw(documents(keys, scalars))
    obj: dict[Any, Any] = {"apiVersion": api_version, "kind": kind}
    if isinstance(body, dict):
        obj.update(body)
    else:
        obj["spec"] = body
    return obj


ENV_REF: Final = st.fixed_dictionaries({"name": st.just("MODELKIT_REF"), "value": REFERENCES})
ENV: Final = st.one_of(
    ENV_REF,
    ENV_REF,
    st.fixed_dictionaries({"name": st.just("MODELKIT_REF"), "value": JSON_SCALARS}),
    st.fixed_dictionaries({"name": st.just("MODELKIT_REF"), "valueFrom": documents(leaves=4)}),
    st.fixed_dictionaries({"name": VOCABULARY, "value": REFERENCES | JSON_SCALARS}),
    documents(leaves=6),
)
ARGV: Final = st.one_of(
    st.lists(VOCABULARY | REFERENCES | JSON_SCALARS, max_size=6),
    st.tuples(
        st.lists(st.sampled_from(["-v", "--plain-http", "-d", "/m", "--dir=/m", "--"]), max_size=3),
        st.sampled_from(["pull", "unpack"]),
        st.lists(st.sampled_from(["-d", "/m", "--filter", "model", "-o", "--"]), max_size=3),
        REFERENCES | st.sampled_from(["$(MODELKIT_REF)", "$(OTHER)", "$(", ""]),
    ).map(lambda t: [*t[0], t[1], *t[2], t[3]]),
)
"""``kit pull|unpack`` argument vectors (flags before and after), and junk."""
CONTAINERS: Final = st.fixed_dictionaries(
    {
        "name": VOCABULARY | st.text(max_size=4),
        "image": REFERENCES | VOCABULARY | st.just("ghcr.io/kitops-ml/kitops:v1.7.0"),
        "env": st.lists(ENV, min_size=1, max_size=3) | documents(leaves=3),
    },
    optional={
        "args": ARGV,
        "command": st.sampled_from([["kit"], ["sh", "-c", "kit pull x"], ["/bin/serve"]]) | ARGV,
        "envFrom": documents(leaves=3),
    },
)
VOLUMES: Final = st.one_of(
    st.fixed_dictionaries(
        {
            "name": VOCABULARY,
            "image": st.fixed_dictionaries({"reference": REFERENCES | JSON_SCALARS}),
        }
    ),
    st.fixed_dictionaries(
        {
            "name": VOCABULARY,
            "csi": st.fixed_dictionaries(
                {
                    "driver": st.just("model.csi.modelpack.org") | VOCABULARY,
                    "volumeAttributes": st.dictionaries(
                        st.just("model.csi.modelpack.org/reference") | KEYS,
                        REFERENCES | JSON_SCALARS,
                        max_size=2,
                    ),
                }
            ),
        }
    ),
    documents(leaves=4),
)
POD_SPECS: Final = st.fixed_dictionaries(
    {"initContainers": st.lists(CONTAINERS | documents(leaves=3), min_size=1, max_size=3)},
    optional={
        "containers": st.lists(CONTAINERS | documents(leaves=3), max_size=3),
        "ephemeralContainers": st.lists(CONTAINERS, max_size=2),
        "volumes": st.lists(VOLUMES, max_size=3),
    },
)
"""Pod specs whose containers, env and volumes have the shapes kitpin reads, with junk mixed
in: most examples hold sites, so the invariants about sites are exercised."""


WORKLOAD_KINDS: Final = st.sampled_from(
    [
        ("v1", "Pod"), ("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet"), ("batch/v1", "Job"),
        ("batch/v1", "CronJob"), ("v1", "PodTemplate"),
    ]
)  # fmt: skip


@st.composite
def workloads(
    draw: st.DrawFn, kinds: st.SearchStrategy[tuple[str, str]] = WORKLOAD_KINDS
) -> dict[str, Any]:
    """A workload (Pod, Deployment, CronJob, ... of ``kinds``) with a :data:`POD_SPECS` pod
    spec at the place ``sites`` reads it, with a controller owner or without."""
    api_version, kind = draw(kinds)
    obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
    metadata: dict[str, Any] = {"name": draw(VOCABULARY | st.text(max_size=4))}
    if draw(st.booleans()):
        metadata["ownerReferences"] = [{"kind": "Deployment", "name": "d", "controller": True}]
    obj["metadata"] = metadata
    pointer = sites.pod_template_path(obj)
    node = obj
    tokens = pointer.split("/")[1:] if pointer else ["spec"]
    for token in tokens[:-1]:
        node = node.setdefault(token, {})
    node[tokens[-1]] = draw(POD_SPECS)
    return obj
