"""The plain kit CLI container: the reference after ``pull``/``unpack`` in args/command."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from controller import sites

REF = "registry.example.com/ml/llama:production"


def job(container: dict[str, Any]) -> dict[str, Any]:
    base = {"name": "fetch", "image": "ghcr.io/kitops-ml/kitops:v1.7.0"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "fetch"},
        "spec": {"template": {"spec": {"initContainers": [{**base, **container}]}}},
    }


P = "/spec/template/spec/initContainers/0"

CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("unpack then -o and a path", {"args": ["unpack", REF, "-o", "/models"]}, f"{P}/args/1"),
    ("pull", {"args": ["pull", REF]}, f"{P}/args/1"),
    (
        "switches before the ref",
        {"args": ["unpack", "-v", "--plain-http", "-o", REF]},
        f"{P}/args/4",
    ),
    ("global flags first", {"args": ["-vv", "--log-level", "debug", "pull", REF]}, f"{P}/args/4"),
    ("--config value", {"args": ["--config", "/tmp/kit", "unpack", REF]}, f"{P}/args/3"),
    ("-d takes a value", {"args": ["unpack", "-d", "/models", REF]}, f"{P}/args/3"),
    ("--dir=value", {"args": ["unpack", "--dir=/models", REF]}, f"{P}/args/2"),
    ("-dVALUE", {"args": ["unpack", "-d/models", REF]}, f"{P}/args/2"),
    ("clustered -od DIR", {"args": ["unpack", "-od", "/models", REF]}, f"{P}/args/3"),
    ("--filter value", {"args": ["unpack", "--filter", "model", REF]}, f"{P}/args/3"),
    ("-f value", {"args": ["unpack", "-f", "model,datasets:train", REF]}, f"{P}/args/3"),
    ("--filter=value", {"args": ["unpack", "--filter=model", REF, "-d", "/m"]}, f"{P}/args/2"),
    (
        "network flags with values",
        {
            "args": [
                "pull",
                "--tls-cert",
                "/ca.pem",
                "--concurrency",
                "3",
                "--proxy",
                "http://p",
                REF,
            ]
        },
        f"{P}/args/7",
    ),
    ("--tls-verify=false", {"args": ["pull", "--tls-verify=false", REF]}, f"{P}/args/2"),
    ("-- ends flags", {"args": ["unpack", "--", REF]}, f"{P}/args/2"),
    ("command kit pull REF", {"command": ["kit", "pull", REF]}, f"{P}/command/2"),
    (
        "command /usr/local/bin/kit, args unpack",
        {"command": ["/usr/local/bin/kit"], "args": ["unpack", REF, "-d", "/m"]},
        f"{P}/args/1",
    ),
    ("command kit unpack, args REF", {"command": ["kit", "unpack"], "args": [REF]}, f"{P}/args/0"),
    ("empty command means entrypoint", {"command": [], "args": ["pull", REF]}, f"{P}/args/1"),
    ("other subcommand", {"args": ["version"]}, None),
    ("pack is not a pull", {"args": ["pack", ".", "-t", REF]}, None),
    ("no args", {}, None),
    ("subcommand without a ref", {"args": ["unpack", "-d", "/m"]}, None),
    ("args not a list", {"args": "unpack " + REF}, None),
    ("non-string arg", {"args": ["unpack", 7]}, None),
    ("command is another program", {"command": ["python", "fetch.py"], "args": [REF]}, None),
]


@pytest.mark.parametrize(("container", "path"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_kit_cli_reference_position(container: dict[str, Any], path: str | None) -> None:
    found = sites.find(job(container))
    assert found.unresolvable == ()
    if path is None:
        assert found.sites == ()
        return
    (site,) = found.sites
    assert (site.path, site.kind, site.grammar, site.expects_modelkit) == (
        path,
        "kit-cli-args",
        "kit",
        True,
    )
    assert site.value == REF
    assert site.where.startswith('initContainer "fetch" ')


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/kitops-ml/kitops:v1.7.0",
        "ghcr.io/kitops-ml/kitops",
        "ghcr.io/kitops-ml/kitops:latest@sha256:" + "a" * 64,
        "ghcr.io/jozu-ai/kitops:next",
        "ghcr.io/jozu-ai/kit:v0.3.2",
        "GHCR.IO/kitops-ml/kitops:v1",
    ],
)
def test_kit_cli_images(image: str) -> None:
    assert len(sites.find(job({"image": image, "args": ["pull", REF]})).sites) == 1


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/kitops-ml/kitops-init:v1.7.0",  # the init image reads MODELKIT_REF
        "ghcr.io/kitops-ml/kitops-kserve:next",
        "ghcr.io/jozu-ai/kit-init:1",
        "docker.io/someone/kitops:1",
        "busybox",
    ],
)
def test_other_images_are_not_the_kit_cli(image: str) -> None:
    assert sites.find(job({"image": image, "args": ["pull", REF]})) is sites.EMPTY


def test_kit_cli_images_are_configurable() -> None:
    obj = job({"image": "mirror.example.com/tools/kit:1.7", "args": ["unpack", REF]})
    assert sites.find(obj) is sites.EMPTY
    custom = sites.SitesSettings(kit_cli_images=("mirror.example.com/tools/kit",))
    assert [s.path for s in sites.find(obj, custom).sites] == [f"{P}/args/1"]


def test_reference_from_an_env_variable_pins_the_env_entry() -> None:
    obj = job(
        {
            "args": ["unpack", "$(MODEL)", "-d", "/models"],
            "env": [
                {"name": "MODEL", "value": "registry.example.com/old:1"},
                {"name": "MODEL", "value": REF},  # the last definition wins
            ],
        }
    )
    (site,) = sites.find(obj).sites
    assert site.path == f"{P}/env/1/value"
    assert site.value == REF
    assert site.kind == "kit-cli-args"
    assert site.where == 'initContainer "fetch" env MODEL (used by args[1] (kit unpack))'


def test_reference_from_modelkit_ref_is_reported_once() -> None:
    obj = job(
        {"args": ["pull", "$(MODELKIT_REF)"], "env": [{"name": "MODELKIT_REF", "value": REF}]}
    )
    assert [(s.path, s.kind) for s in sites.find(obj).sites] == [(f"{P}/env/0/value", "env")]


@pytest.mark.parametrize(
    ("container", "path", "why"),
    [
        ({"args": ["pull", "$(MODEL)"]}, f"{P}/args/1", "no env MODEL"),
        (
            {
                "args": ["pull", "$(MODEL)"],
                "env": [
                    {"name": "MODEL", "valueFrom": {"configMapKeyRef": {"name": "m", "key": "r"}}}
                ],
            },
            f"{P}/env/0",
            "valueFrom",
        ),
        ({"args": ["pull", "$(HOST)/ml/llama:$(TAG)"]}, f"{P}/args/1", "built from variables"),
        (
            {"command": ["sh", "-c", f"kit login x && kit unpack {REF} -d /models"]},
            f"{P}/command",
            "shell script",
        ),
        (
            {"command": ["/bin/bash", "-c"], "args": [f"kit pull {REF}"]},
            f"{P}/command",
            "shell script",
        ),
    ],
    ids=["undefined variable", "variable from valueFrom", "interpolated", "sh -c", "bash -c args"],
)
def test_kit_cli_references_kitpin_cannot_see(
    container: dict[str, Any], path: str, why: str
) -> None:
    found = sites.find(job(container))
    assert found.sites == ()
    (unresolvable,) = found.unresolvable
    assert unresolvable.path == path
    assert why in unresolvable.why


def test_shell_without_kit_is_ignored() -> None:
    assert sites.find(job({"command": ["sh", "-c", "echo hello"]})) is sites.EMPTY


DEPLOYMENT = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: llama}}
spec:
  template:
    spec:
      initContainers:
        - name: unpack
          image: ghcr.io/kitops-ml/kitops:v1.7.0
          args: [unpack, -v, --plain-http, {REF}, -d, /models, --filter=model]
          volumeMounts: [{{name: models, mountPath: /models}}]
      containers:
        - name: server
          image: server:1
      volumes: [{{name: models, emptyDir: {{}}}}]
"""


def test_kit_cli_in_a_deployment_manifest() -> None:
    found = sites.find(yaml.safe_load(DEPLOYMENT))
    assert [(s.path, s.where) for s in found.sites] == [
        (
            "/spec/template/spec/initContainers/0/args/3",
            'initContainer "unpack" args[3] (kit unpack)',
        )
    ]
