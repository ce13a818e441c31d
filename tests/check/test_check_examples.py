"""The files in examples/: the policy is valid, ``kitpin check`` judges the workloads with
it once ``${KITPIN_REGISTRY}`` is substituted (as examples/README.md shows), and the
placeholder itself is refused and explained."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from check_helpers import rows, run_check

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PLACEHOLDER = "${KITPIN_REGISTRY}"
WORKLOADS = ("deployment.yaml", "inferenceservice.yaml")


def substituted(tmp_path: Path, registry: str = "registry.example.com") -> Path:
    """The workload examples with the placeholder replaced, as envsubst or sed would."""
    out = tmp_path / "k8s"
    out.mkdir()
    for name in WORKLOADS:
        (out / name).write_text((EXAMPLES / name).read_text().replace(PLACEHOLDER, registry))
    return out


def test_the_example_policy_judges_the_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k8s = substituted(tmp_path)
    args = ["-f", str(k8s), "--policy", str(EXAMPLES / "policies"), "--offline", "-o", "json"]

    labelled = run_check(capsys, *args, "--namespace-labels", "env=prod")

    assert labelled.code == 0, labelled
    (applied,) = rows(labelled, "policies")
    assert (applied["policy"], applied["result"]) == (
        "ClusterModelKitPolicy/production-models",
        "applied",
    )
    assert [o["kind"] for o in applied["objects"]] == ["Deployment", "InferenceService"]
    assert rows(labelled, "violations") == []  # :production is no denied tag
    # offline, the artifact and parent rules cannot be checked: skips, said so
    assert {r["result"] for r in rows(labelled, "references")} == {"skip"}

    unlabelled = run_check(capsys, *args)
    (skipped,) = rows(unlabelled, "policies")
    assert skipped["result"] == "skipped"
    assert "--namespace-labels env=prod" in skipped["message"]
    assert run_check(capsys, *args, "--fail-on-skip").code == 1


def test_the_placeholder_must_be_substituted(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_check(capsys, "-f", str(EXAMPLES / "deployment.yaml"), "--offline", "-o", "json")

    assert result.code == 1
    (error,) = rows(result, "errors")
    assert error["reason"] == "InvalidReference"
    assert error["reference"] == f"{PLACEHOLDER}/demo/llama:production"


def test_every_example_with_the_placeholder_is_explained() -> None:
    """examples/README.md lists every example file, explains the placeholder and shows the
    one-liner that substitutes it; each workload example points there."""
    readme = (EXAMPLES / "README.md").read_text()
    listed = set(re.findall(r"\]\(([\w/.-]+\.yaml)\)", readme))
    files = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.yaml")}
    assert listed == files
    assert f"envsubst '{PLACEHOLDER}' < examples/deployment.yaml | kubectl apply -f -" in readme
    for name in files:
        if PLACEHOLDER in (EXAMPLES / name).read_text():
            assert name in WORKLOADS
            assert "examples/README.md" in (EXAMPLES / name).read_text()
