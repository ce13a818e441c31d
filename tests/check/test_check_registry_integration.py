"""``kitpin check`` against the real CNCF distribution registry, with ModelKits packed in
kit's wire format (harness/modelkit.py): rules that read the manifest and the Kitfile
(licenses, formats, layers, parents), NotAModelKit, registry failures, and what is fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from check_helpers import (
    DEPLOYMENT_POINTER,
    POD_POINTER,
    Result,
    cluster_policy,
    deployment,
    image_volume_pod,
    line_of,
    pod,
    rows,
    run_check,
    stream,
    write_yaml,
)

from harness import modelkit
from harness.registry import RegistryServer
from tests.pin.pin_helpers import run_kitpin

pytestmark = pytest.mark.integration

BLOB = "/blobs/sha256:[0-9a-f]{64}"
NO_LATEST = cluster_policy("no-latest", {"tags": {"denied": ["latest"]}})


@dataclass(frozen=True, kw_only=True)
class Online:
    """This test's repositories in the real registry, and ``kitpin check`` against them."""

    registry: RegistryServer
    repo: str
    tmp_path: Path
    capsys: pytest.CaptureFixture[str]

    def ref(self, name: str, tag: str = "v1") -> str:
        return f"{self.registry.host}/{self.repo}/{name}:{tag}"

    def push(self, name: str, tag: str = "v1", **options: Any) -> str:
        """``kit pack`` + ``kit push`` to ``<repo>/<name>:<tag>``; the manifest digest."""
        return modelkit.push_modelkit(self.registry, f"{self.repo}/{name}", tag, **options)

    def gets(self, path_regex: str) -> int:
        """GET requests logged for ``/v2/<repo>/<path_regex>``."""
        return self.registry.count_requests("GET", f"/v2/{self.repo}/{path_regex}")

    def check(self, manifest: str, *policies: object, output: str = "json") -> Result:
        """Write ``manifest`` to k8s/app.yaml and ``policies`` to policies.yaml, and check
        them against the registry (``--plain-http``)."""
        app = self.tmp_path / "k8s" / "app.yaml"
        app.parent.mkdir(parents=True, exist_ok=True)
        app.write_text(manifest)
        args: list[str | Path] = ["-f", app, "--plain-http", "-o", output]
        if policies:
            args += ["--policy", write_yaml(self.tmp_path / "policies.yaml", *policies)]
        return run_check(self.capsys, *args)


@pytest.fixture
def online(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    pin_registry: RegistryServer,
    pin_repo: str,
) -> Online:
    return Online(registry=pin_registry, repo=pin_repo, tmp_path=tmp_path, capsys=capsys)


def found(result: Result) -> list[tuple[str, str, str]]:
    """(object name, rule, reason) of each violation."""
    return [(v["name"], v["rule"], v["reason"]) for v in rows(result, "violations")]


def kitfile_with_license(name: str, license_id: str) -> dict[str, Any]:
    kitfile = modelkit.default_kitfile(name)
    kitfile["package"]["license"] = license_id
    kitfile["model"]["license"] = license_id
    return kitfile


def test_licenses_are_read_from_the_kitfile(online: Online) -> None:
    online.push("llama")  # Apache-2.0
    online.push("restricted", kitfile=kitfile_with_license("restricted", "CC-BY-NC-4.0"), seed=1)
    licensed = cluster_policy(
        "licensed", {"artifacts": {"licenses": {"allowed": ["Apache-2.0", "MIT"]}}}
    )
    text = stream(
        deployment("llama", online.ref("llama")),
        deployment("llama-canary", online.ref("llama")),
        deployment("restricted", online.ref("restricted")),
    )

    result = online.check(text, licensed)

    assert result.code == 1, result
    # one ModelKit, one rule: one violation, naming both places the license was found
    assert found(result) == [("restricted", "artifacts.licenses", "LicenseNotAllowed")]
    (violation,) = rows(result, "violations")
    assert (
        "declares the license 'CC-BY-NC-4.0' (Kitfile package.license and model.license), "
        "which is not approved"
    ) in violation["message"]
    assert rows(result, "errors") == []
    assert rows(result, "unchecked") == []
    # online, every rule was checked: nothing skipped
    assert [(r["name"], r["result"]) for r in rows(result, "references")] == [
        ("llama", "pass"),
        ("llama-canary", "pass"),
        ("restricted", "fail"),
    ]
    # one manifest request and one Kitfile read per distinct reference
    online.registry.wait_for_requests("GET", f"/v2/{online.repo}/llama{BLOB}", at_least=1)
    assert online.gets("llama/manifests/v1") == 1
    assert online.gets(f"llama{BLOB}") == 1

    allowed = cluster_policy(
        "licensed", {"artifacts": {"licenses": {"allowed": ["Apache-2.0", "CC-BY-NC-4.0"]}}}
    )
    assert online.check(text, allowed).code == 0


def test_required_format(online: Online) -> None:
    online.push("kit", fmt="kitops")
    online.push("pack", fmt="modelpack", seed=2)
    text = stream(
        deployment("kit", online.ref("kit")),
        deployment("pack", online.ref("pack")),
    )

    only_kit = cluster_policy("kit-only", {"artifacts": {"formats": ["kitops-modelkit"]}})
    result = online.check(text, only_kit)
    assert result.code == 1
    assert found(result) == [("pack", "artifacts.formats", "FormatNotAllowed")]
    assert "is a CNCF ModelPack" in rows(result, "violations")[0]["message"]

    only_pack = cluster_policy("pack-only", {"artifacts": {"formats": ["modelpack"]}})
    assert found(online.check(text, only_pack)) == [
        ("kit", "artifacts.formats", "FormatNotAllowed")
    ]

    both = cluster_policy("both", {"artifacts": {"formats": ["kitops-modelkit", "modelpack"]}})
    assert online.check(text, both).code == 0

    # the format is in the manifest: no Kitfile was read
    assert online.gets(f".*{BLOB}") == 0


def test_required_layers(online: Online) -> None:
    online.push("full")
    no_model = modelkit.default_kitfile("data-only")
    del no_model["model"]
    online.push("data-only", kitfile=no_model, seed=3)
    text = stream(
        deployment("full", online.ref("full")),
        deployment("data-only", online.ref("data-only")),
    )
    needs_model = cluster_policy(
        "needs-model", {"artifacts": {"requiredLayers": ["model", "dataset"]}}
    )

    result = online.check(text, needs_model)

    assert result.code == 1, result
    assert found(result) == [("data-only", "artifacts.requiredLayers", "RequiredLayersMissing")]
    (violation,) = rows(result, "violations")
    assert "has no model layer" in violation["message"]
    assert (violation["line"], violation["path"]) == (
        line_of(text, "data-only:v1"),
        DEPLOYMENT_POINTER,
    )


def test_parent_referenced_by_tag_is_flagged(online: Online) -> None:
    parent = online.ref("parent")
    parent_digest = online.push("parent")
    online.push("child", kitfile=modelkit.default_kitfile("child", model_path=parent), seed=4)
    online.push(
        "child-pinned",
        kitfile=modelkit.default_kitfile("child", model_path=f"{parent}@{parent_digest}"),
        seed=5,
    )
    text = stream(
        deployment("child", online.ref("child")),
        deployment("child-pinned", online.ref("child-pinned")),
    )
    rules = cluster_policy(
        "parents",
        {"artifacts": {"requiredLayers": ["model"]}, "parents": {"requireDigest": True}},
    )

    result = online.check(text, rules)

    assert result.code == 1, result
    # the parent supplies the model layer: only the unpinned parent is a violation
    assert found(result) == [("child", "parents.requireDigest", "ParentNotPinned")]
    message = rows(result, "violations")[0]["message"]
    assert f"'{parent}' (Kitfile model.path) by tag" in message


def test_not_a_modelkit_where_a_modelkit_is_expected(online: Online) -> None:
    image = online.ref("server")
    digest = modelkit.push_image(online.registry, f"{online.repo}/server", "v1")
    text = stream(pod("init", image), image_volume_pod("volume", image))

    result = online.check(text)  # no policy: the references are still checked

    assert result.code == 1, result
    (error,) = rows(result, "errors")
    assert (error["name"], error["reason"]) == ("init", "NotAModelKit")
    # the webhook's words (pinning.not_a_modelkit_message)
    assert error["message"].startswith(
        f"'{image}' resolves to {digest}, which is not a ModelKit (config media type"
    )
    assert "this field expects a KitOps ModelKit or a CNCF ModelPack" in error["message"]
    assert result.json()["summary"]["references"] == 2  # the image volume may hold any artifact

    as_text = online.check(text, output="text")
    assert as_text.lines[0].startswith(
        f"{online.tmp_path / 'k8s' / 'app.yaml'}:{line_of(text, image)}: doc 1 Pod/init "
        f"{POD_POINTER}: [error] NotAModelKit: '{image}' resolves to {digest}"
    )


def test_registry_failures_fail_the_check(online: Online) -> None:
    missing = online.ref("missing")

    result = online.check(deployment("llama", missing), NO_LATEST)

    assert result.code == 1, result
    (error,) = rows(result, "errors")
    assert error["reason"] == "NotFound"
    assert error["message"].startswith(f"cannot check '{missing}': ")
    assert rows(result, "violations") == []


def test_the_registry_is_asked_only_when_needed(online: Online) -> None:
    online.push("llama")
    # an image volume may hold any artifact, and tag rules read only the reference: this one
    # (which does not exist) is never resolved
    text = stream(
        image_volume_pod("volume", online.ref("weights")),
        deployment("llama", online.ref("llama")),
    )

    result = online.check(text, NO_LATEST)

    assert result.code == 0, result
    # the ModelKit site is resolved (is it a ModelKit?), its Kitfile is not read
    online.registry.wait_for_requests("GET", f"/v2/{online.repo}/llama/manifests/v1", at_least=1)
    assert online.gets("weights/.*") == 0
    assert online.gets(f".*{BLOB}") == 0

    # a policy that reads the artifact resolves every reference, image volumes too
    layered = cluster_policy("layered", {"artifacts": {"formats": ["kitops-modelkit"]}})
    result = online.check(text, layered)
    assert result.code == 1
    assert [(e["name"], e["reason"]) for e in rows(result, "errors")] == [("volume", "NotFound")]

    # --offline asks nothing at all; what it could not check is a skip
    app = online.tmp_path / "offline.yaml"
    app.write_text(deployment("offline", online.ref("offline-only")))
    policies = online.tmp_path / "policies.yaml"
    offline = run_check(online.capsys, "-f", app, "--policy", policies, "--offline")
    assert offline.code == 0, offline
    assert offline.lines[0].endswith(
        "not checked (offline): the reference was not resolved, so the artifact is unknown"
    )
    assert "0 pass, 0 fail, 0 warn, 1 skip, 0 error" in offline.summary
    assert online.gets("offline-only/.*") == 0
    strict = run_check(
        online.capsys, "-f", app, "--policy", policies, "--offline", "--fail-on-skip"
    )
    assert strict.code == 1


def test_console_script_exit_code_for_ci(online: Online) -> None:
    online.push("llama", "latest", kitfile=kitfile_with_license("x", "MIT"))
    k8s = online.tmp_path / "k8s"
    k8s.mkdir()
    (k8s / "llama.yaml").write_text(
        deployment("llama", online.ref("llama", "latest"), namespace="ml")
    )
    policies = write_yaml(
        online.tmp_path / "policies" / "prod.yaml",
        NO_LATEST,
        cluster_policy(
            "licensed", {"mode": "warn", "artifacts": {"licenses": {"allowed": ["Apache-2.0"]}}}
        ),
    )

    done = run_kitpin("check", "-f", k8s, "--policy", policies, "--plain-http")

    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    # one reference: its violations in policy order (cluster policies by name)
    assert "[warn] ClusterModelKitPolicy/licensed rule artifacts.licenses" in lines[0]
    assert "declares the license 'MIT' (Kitfile package.license and model.license)" in lines[0]
    assert "[enforce] ClusterModelKitPolicy/no-latest rule tags.denied" in lines[1]
    assert lines[2:] == [
        "policy ClusterModelKitPolicy/licensed: applied to 1 object (Deployment/llama in ml): "
        "0 pass, 0 fail, 1 warn, 0 skip, 0 error",
        "policy ClusterModelKitPolicy/no-latest: applied to 1 object (Deployment/llama in ml): "
        "0 pass, 1 fail, 0 warn, 0 skip, 0 error",
        "1 reference in 1 object: 0 pass, 1 fail, 0 warn, 0 skip, 0 error; 2 violations "
        "(1 enforce, 1 warn, 0 audit); 2 policies",
    ]

    # --fail-on-skip with a policy that needs a namespace label nobody gave: exit 1 even
    # where every reference passes
    (k8s / "llama.yaml").write_text(deployment("llama", online.ref("llama", "latest")))
    gpu = write_yaml(
        online.tmp_path / "policies" / "gpu.yaml",
        cluster_policy(
            "gpu",
            {"namespaceSelector": {"matchLabels": {"tier": "gpu"}}, "tags": {"denied": ["x"]}},
        ),
    )
    args = ("check", "-f", k8s, "--policy", gpu, "--plain-http")
    assert run_kitpin(*args).returncode == 0
    skipped = run_kitpin(*args, "--fail-on-skip")
    assert skipped.returncode == 1, skipped.stderr
    assert "policy ClusterModelKitPolicy/gpu: skipped: " in skipped.stdout
    assert run_kitpin(*args, "--fail-on-skip", "--namespace-labels", "tier=gpu").returncode == 0
