"""``kitpin pin`` as a Helm post-renderer: the real ``helm template`` on a small chart with
ModelKit references (tests/pin/testchart), resolved against the real registry.

This is the example of docs/helm-post-renderer.md, run as written there.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from pin_helpers import CLI_TIMEOUT, TESTCHART, kitpin_binary

from harness import modelkit, tools
from harness.registry import RegistryServer

pytestmark = pytest.mark.integration


def helm(args: Sequence[str | os.PathLike[str]], home: Path) -> subprocess.CompletedProcess[str]:
    """The pinned helm binary with its cache, config and data under ``home``."""
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return subprocess.run(
        [str(tools.ensure("helm")["helm"]), *(str(a) for a in args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def by_kind(rendered: str) -> dict[str, Any]:
    return {d["kind"]: d for d in yaml.safe_load_all(rendered) if d}


def test_helm_template_with_kitpin_post_renderer(
    tmp_path: Path, pin_registry: RegistryServer, pin_repo: str
) -> None:
    llama = modelkit.push_modelkit(pin_registry, f"{pin_repo}/llama", "production")
    lora = modelkit.push_modelkit(pin_registry, f"{pin_repo}/lora", "v1", seed=1)
    model_ref = f"{pin_registry.host}/{pin_repo}/llama:production"
    adapter_ref = f"{pin_registry.host}/{pin_repo}/lora:v1"
    values = [
        "--set",
        f"model.reference={model_ref}",
        "--set",
        f"adapter.reference={adapter_ref}",
    ]

    plain = helm(["template", "demo", TESTCHART, *values], tmp_path)
    assert plain.returncode == 0, plain.stderr
    result = helm(
        [
            "template",
            "demo",
            TESTCHART,
            *values,
            "--post-renderer",
            kitpin_binary(),
            "--post-renderer-args",
            "pin",
            "--post-renderer-args",
            "--plain-http",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr

    rendered = by_kind(result.stdout)
    spec = rendered["Deployment"]["spec"]["template"]["spec"]
    assert spec["initContainers"][0]["env"][0] == {
        "name": "MODELKIT_REF",
        "value": f"{model_ref}@{llama}",
    }
    assert spec["initContainers"][1]["args"] == [
        "unpack",
        f"{adapter_ref}@{lora}",
        "-d",
        "/models/adapter",
    ]
    # Not a site: a ConfigMap holding a reference-looking string is left alone.
    assert rendered["ConfigMap"]["data"]["model"] == model_ref
    # Helm 3 does not pass hooks (here a `helm test` Pod) through post-renderers
    # (helm/helm#7891): the hook keeps its tag; the admission webhook pins it when created.
    hook = rendered["Pod"]
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert hook["spec"]["initContainers"][0]["env"][0]["value"] == model_ref

    # Only the two reference lines differ from plain `helm template` output; comments and
    # formatting are Helm's own.
    old, new = plain.stdout.splitlines(), result.stdout.splitlines()
    assert len(old) == len(new)
    assert [(a, b) for a, b in zip(old, new, strict=True) if a != b] == [
        (
            f'              value: "{model_ref}"',
            f'              value: "{model_ref}@{llama}"',
        ),
        (
            f'          args: ["unpack", "{adapter_ref}", "-d", "/models/adapter"]',
            f'          args: ["unpack", "{adapter_ref}@{lora}", "-d", "/models/adapter"]',
        ),
    ]


def test_helm_fails_when_a_reference_cannot_be_pinned(
    tmp_path: Path, pin_registry: RegistryServer, pin_repo: str
) -> None:
    modelkit.push_modelkit(pin_registry, f"{pin_repo}/lora", "v1")
    missing = f"{pin_registry.host}/{pin_repo}/llama:missing"
    values = [
        "--set",
        f"model.reference={missing}",
        "--set",
        f"adapter.reference={pin_registry.host}/{pin_repo}/lora:v1",
    ]
    plain = helm(["template", "demo", TESTCHART, *values], tmp_path)
    line = plain.stdout.splitlines().index(f'              value: "{missing}"') + 1
    result = helm(
        [
            "template",
            "demo",
            TESTCHART,
            *values,
            "--post-renderer",
            kitpin_binary(),
            "--post-renderer-args",
            "pin",
            "--post-renderer-args",
            "--plain-http",
        ],
        tmp_path,
    )
    assert result.returncode != 0
    assert result.stdout == ""  # no half-pinned release
    # helm shows kitpin's message: which object, which field, which reference, why
    assert (
        f'<stdin>:{line}: Deployment demo-serve: initContainer "kitops-init" env MODELKIT_REF: '
        f"cannot pin '{missing}': NotFound: "
    ) in result.stderr
