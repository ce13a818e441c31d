"""``kitpin check`` without a registry (``--offline``, or references nobody can resolve):
rules on the references themselves, namespaces and selectors, output formats, exit codes.

The artifact rules that need a real ModelKit are in test_check_registry_integration.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from check_helpers import (
    DEPLOYMENT_POINTER,
    ERROR_KEYS,
    OBJECT_KEYS,
    POD_POINTER,
    POLICY_KEYS,
    REFERENCE_KEYS,
    REGISTRY,
    SUMMARY_KEYS,
    UNCHECKED_KEYS,
    VIOLATION_KEYS,
    Result,
    cluster_policy,
    deployment,
    feed_stdin,
    line_of,
    namespaced_policy,
    pod,
    rows,
    rules,
    run_check,
    stream,
    summary_line,
    value_from_pod,
    write_yaml,
)

NO_LATEST = cluster_policy("no-latest", {"tags": {"denied": ["latest"]}})


def setup(
    tmp_path: Path, manifest: str, *policies: object, name: str = "app.yaml"
) -> tuple[Path, Path]:
    """``k8s/<name>`` holding ``manifest`` and ``policies/policies.yaml`` holding
    ``policies``; returns both paths."""
    app = tmp_path / "k8s" / name
    app.parent.mkdir(parents=True, exist_ok=True)
    app.write_text(manifest)
    return app, write_yaml(tmp_path / "policies" / "policies.yaml", *policies)


def check_offline(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str | Path) -> Result:
    return run_check(
        capsys, "-f", tmp_path / "k8s", "--policy", tmp_path / "policies", "--offline", *args
    )


# ---------------------------------------------------------------------------------------
# Modes and exit codes


def test_denied_tag_in_enforce_mode_fails_naming_file_line_path_and_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = stream(
        deployment("llama", f"{REGISTRY}/ml/llama:v1", namespace="ml"),
        deployment("mistral", f"{REGISTRY}/ml/mistral:latest", namespace="ml"),
    )
    app, _ = setup(tmp_path, text, NO_LATEST)

    result = check_offline(capsys, tmp_path)

    assert result.code == 1, result
    line = line_of(text, "ml/mistral:latest")
    assert result.lines[0].startswith(
        f"{app}:{line}: doc 2 Deployment/mistral {DEPLOYMENT_POINTER}: [enforce] "
        'ClusterModelKitPolicy/no-latest rule tags.denied: initContainer "kitops-init" env '
        f"MODELKIT_REF '{REGISTRY}/ml/mistral:latest' uses the tag 'latest'"
    ), result.lines[0]
    assert result.summary == summary_line(
        2, 2, results={"pass": 1, "fail": 1}, violations=(1, 0, 0)
    )
    assert result.policy_lines == [
        "policy ClusterModelKitPolicy/no-latest: applied to 2 objects (Deployment/llama, "
        "Deployment/mistral in ml): 1 pass, 1 fail, 0 warn, 0 skip, 0 error"
    ]
    assert len(result.lines) == 3
    assert app.read_text() == text  # check never changes its input
    assert result.err == ""


def test_warn_mode_prints_the_violation_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warn = cluster_policy("release-tags", {"mode": "warn", "tags": {"allowed": ["v*"]}})
    text = pod("eval", f"{REGISTRY}/ml/llama:nightly")
    app, _ = setup(tmp_path, text, warn)

    result = check_offline(capsys, tmp_path)

    assert result.code == 0, result
    assert result.lines[0].startswith(
        f"{app}:{line_of(text, 'nightly')}: doc 1 Pod/eval {POD_POINTER}: [warn] "
        "ClusterModelKitPolicy/release-tags rule tags.allowed: "
    )
    assert "matches none of the tags allowed in namespace default ('v*')" in result.lines[0]
    assert result.summary == summary_line(1, 1, results={"warn": 1}, violations=(0, 1, 0))


def test_a_block_mode_overrides_the_policy_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mixed = cluster_policy(
        "mixed",
        {"mode": "enforce", "tags": {"mode": "warn", "denied": ["latest"], "requireDigest": True}},
    )
    setup(tmp_path, pod("p", f"{REGISTRY}/ml/llama:latest"), mixed)

    result = check_offline(capsys, tmp_path, "-o", "json")

    assert result.code == 0
    assert rules(rows(result, "violations")) == [
        ("ClusterModelKitPolicy/mixed", "tags.denied", "warn"),
        ("ClusterModelKitPolicy/mixed", "tags.requireDigest", "warn"),
    ]


def test_audit_mode_passes_and_is_listed_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = cluster_policy("count-latest", {"mode": "audit", "tags": {"denied": ["latest"]}})
    text = pod("p", f"{REGISTRY}/ml/llama:latest")
    app, _ = setup(tmp_path, text, audit)

    result = check_offline(capsys, tmp_path, "--output", "json")

    assert result.code == 0
    (violation,) = rows(result, "violations")
    assert violation["mode"] == "audit"
    assert violation["reason"] == "TagDenied"
    assert violation["file"] == str(app)
    assert violation["line"] == line_of(text, ":latest")
    summary = result.json()["summary"]
    assert (summary["violations"], summary["audit"], summary["enforce"]) == (1, 1, 0)
    assert summary["exitCode"] == 0
    # the text output shows it too, tagged [audit]
    text_result = check_offline(capsys, tmp_path)
    assert text_result.code == 0
    assert "[audit] ClusterModelKitPolicy/count-latest rule tags.denied:" in text_result.out


def test_every_violation_is_reported_not_only_the_strictest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = [
        NO_LATEST,
        cluster_policy("warn-latest", {"mode": "warn", "tags": {"denied": ["lat*"]}}),
        cluster_policy("audit-digest", {"mode": "audit", "tags": {"requireDigest": True}}),
    ]
    setup(tmp_path, pod("p", f"{REGISTRY}/ml/llama:latest"), *policies)

    result = check_offline(capsys, tmp_path)

    assert result.code == 1
    assert result.summary == summary_line(
        1, 1, results={"fail": 1}, violations=(1, 1, 1), policies=3
    )
    assert [line.split(": ")[2].split(" rule ")[0] for line in result.lines[:3]] == [
        "[audit] ClusterModelKitPolicy/audit-digest",
        "[enforce] ClusterModelKitPolicy/no-latest",
        "[warn] ClusterModelKitPolicy/warn-latest",
    ]


# ---------------------------------------------------------------------------------------
# Rules on the reference


def test_require_digest_accepts_digests_and_refuses_tags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = "sha256:" + "ab" * 32
    text = stream(
        pod("tagged", f"{REGISTRY}/ml/llama:v1"),
        pod("pinned", f"{REGISTRY}/ml/llama:v1@{digest}"),
        pod("digest-only", f"{REGISTRY}/ml/llama@{digest}"),
    )
    setup(tmp_path, text, cluster_policy("pinned-only", {"tags": {"requireDigest": True}}))

    result = check_offline(capsys, tmp_path, "-o", "json")

    assert result.code == 1
    (violation,) = rows(result, "violations")
    assert (violation["name"], violation["rule"], violation["reason"]) == (
        "tagged",
        "tags.requireDigest",
        "DigestRequired",
    )
    assert f"kitpin resolve '{REGISTRY}/ml/llama:v1'" in violation["message"]
    assert result.json()["summary"]["references"] == 3


def test_repositories_allowed_and_denied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repos = cluster_policy(
        "approved",
        {
            "repositories": {
                "allowed": [f"{REGISTRY}/approved/**"],
                "denied": [f"{REGISTRY}/approved/experimental/**"],
            }
        },
    )
    text = stream(
        pod("good", f"{REGISTRY}/approved/llama:v1"),
        pod("experimental", f"{REGISTRY}/approved/experimental/llama:v1"),
        pod("elsewhere", "ghcr.io/someone/llama:v1"),
    )
    setup(tmp_path, text, repos)

    result = check_offline(capsys, tmp_path, "-o", "json")

    assert result.code == 1
    found = [(v["name"], v["rule"], v["reason"]) for v in rows(result, "violations")]
    assert found == [
        ("experimental", "repositories.denied", "RepositoryDenied"),
        ("elsewhere", "repositories.allowed", "RepositoryNotAllowed"),
    ]


def test_references_that_already_carry_a_digest_are_checked_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pinned = f"{REGISTRY}/ml/llama:latest@sha256:{'cd' * 32}"
    setup(tmp_path, deployment("llama", pinned), NO_LATEST)

    result = check_offline(capsys, tmp_path)

    assert result.code == 1
    assert "[enforce] ClusterModelKitPolicy/no-latest rule tags.denied" in result.lines[0]


# ---------------------------------------------------------------------------------------
# Namespaces


def test_modelkit_policy_applies_in_its_own_namespace_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    strict = namespaced_policy("no-dev", {"tags": {"denied": ["dev"]}}, namespace="ml")
    text = stream(
        deployment("in-ml", f"{REGISTRY}/ml/llama:dev", namespace="ml"),
        deployment("in-other", f"{REGISTRY}/ml/llama:dev", namespace="other"),
        pod("unnamespaced", f"{REGISTRY}/ml/llama:dev"),
    )
    setup(tmp_path, text, strict)

    default = check_offline(capsys, tmp_path, "-o", "json")
    assert default.code == 1
    assert [(v["name"], v["namespace"]) for v in rows(default, "violations")] == [("in-ml", "ml")]
    assert rules(rows(default, "violations")) == [
        ("ModelKitPolicy/no-dev", "tags.denied", "enforce")
    ]

    # --namespace places objects that name none; an object's own namespace still wins
    in_ml = check_offline(capsys, tmp_path, "-o", "json", "--namespace", "ml")
    assert [(v["name"], v["namespace"]) for v in rows(in_ml, "violations")] == [
        ("in-ml", "ml"),
        ("unnamespaced", "ml"),
    ]


def test_modelkit_policy_without_namespace_belongs_to_the_namespace_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loose = namespaced_policy("no-dev", {"tags": {"denied": ["dev"]}})  # for kubectl apply -n
    text = stream(
        pod("unnamespaced", f"{REGISTRY}/ml/llama:dev"),
        pod("in-ml", f"{REGISTRY}/ml/llama:dev", namespace="ml"),
    )
    setup(tmp_path, text, loose)

    in_default = check_offline(capsys, tmp_path, "-o", "json")
    assert [v["name"] for v in rows(in_default, "violations")] == ["unnamespaced"]

    in_team = check_offline(capsys, tmp_path, "-o", "json", "-n", "team")
    assert [(v["name"], v["namespace"]) for v in rows(in_team, "violations")] == [
        ("unnamespaced", "team")
    ]


def test_cluster_policy_namespace_selector_reads_namespace_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prod = cluster_policy(
        "prod-no-latest",
        {"namespaceSelector": {"matchLabels": {"env": "prod"}}, "tags": {"denied": ["latest"]}},
    )
    setup(tmp_path, deployment("llama", f"{REGISTRY}/ml/llama:latest", namespace="ml"), prod)

    unlabelled = check_offline(capsys, tmp_path)
    assert unlabelled.code == 0, unlabelled  # a skip passes, and says so
    assert unlabelled.summary == summary_line(1, 1, results={"skip": 1}, skipped_policies=1)

    labelled = check_offline(capsys, tmp_path, "--namespace-labels", "team=ml,env=prod")
    assert labelled.code == 1
    assert "ClusterModelKitPolicy/prod-no-latest rule tags.denied" in labelled.lines[0]

    # repeatable, merged
    repeated = check_offline(
        capsys, tmp_path, "--namespace-labels", "team=ml", "--namespace-labels", "env=prod"
    )
    assert repeated.code == 1

    other = check_offline(capsys, tmp_path, "--namespace-labels", "env=staging")
    assert other.code == 0
    assert other.summary == summary_line(1, 1, results={"skip": 1}, skipped_policies=1)

    # per namespace: NS:KEY=VALUE applies to that namespace only, over the common labels
    in_ml = check_offline(capsys, tmp_path, "--namespace-labels", "ml:env=prod,team=ml")
    assert in_ml.code == 1
    overridden = check_offline(
        capsys, tmp_path, "--namespace-labels", "env=staging", "--namespace-labels", "ml:env=prod"
    )
    assert overridden.code == 1
    elsewhere = check_offline(capsys, tmp_path, "--namespace-labels", "web:env=prod")
    assert elsewhere.code == 0
    assert elsewhere.summary == summary_line(1, 1, results={"skip": 1}, skipped_policies=1)


def test_namespace_name_label_is_set_as_kubernetes_sets_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    by_name = cluster_policy(
        "ml-only",
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ml"]}
                ]
            },
            "tags": {"denied": ["latest"]},
        },
    )
    text = stream(
        pod("in-ml", f"{REGISTRY}/ml/llama:latest", namespace="ml"),
        pod("in-web", f"{REGISTRY}/ml/llama:latest", namespace="web"),
    )
    setup(tmp_path, text, by_name)

    result = check_offline(capsys, tmp_path, "-o", "json")

    assert [v["name"] for v in rows(result, "violations")] == ["in-ml"]


def test_objects_in_namespaces_the_webhook_ignores_are_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = stream(
        pod("system", f"{REGISTRY}/ml/llama:latest", namespace="kube-system"),
        pod("sandbox", f"{REGISTRY}/ml/llama:latest", namespace="sandbox"),
        pod("ml", f"{REGISTRY}/ml/llama:latest", namespace="ml"),
    )
    setup(tmp_path, text, NO_LATEST)
    settings = tmp_path / "settings.yaml"
    settings.write_text("ignoredNamespaces: [sandbox]\n")

    result = check_offline(capsys, tmp_path, "--settings", settings, "-o", "json")

    assert [v["name"] for v in rows(result, "violations")] == ["ml"]
    assert result.json()["summary"]["ignored"] == 2

    ignored_by_label = check_offline(
        capsys, tmp_path, "--settings", settings, "--namespace-labels", "kitpin.dev/ignore=true"
    )
    assert ignored_by_label.code == 0
    assert ignored_by_label.summary == summary_line(
        0, 0, skipped_policies=1, rest="; 3 objects in ignored namespaces"
    )
    assert ignored_by_label.policy_lines == [
        "policy ClusterModelKitPolicy/no-latest: skipped: no object with ModelKit references "
        "was checked"
    ]


# ---------------------------------------------------------------------------------------
# Errors


def test_invalid_policy_exits_2_naming_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = cluster_policy("bad", {"tags": {"denied": ["latest", "la[st"]}})
    _, policies = setup(tmp_path, pod("p", f"{REGISTRY}/ml/llama:latest"), NO_LATEST, bad)
    line = line_of(policies.read_text(), "name: bad") - 3  # the document's first line

    result = check_offline(capsys, tmp_path)

    assert result.code == 2
    assert result.out == ""
    assert (
        f"kitpin: invalid policy: {policies}:{line}: ClusterModelKitPolicy/bad is invalid: "
        "spec.tags.denied[1]: 'la[st' is not a tag pattern"
    ) in result.err


def test_every_invalid_policy_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(
        tmp_path,
        pod("p", f"{REGISTRY}/ml/llama:latest"),
        cluster_policy("bad-mode", {"mode": "block", "tags": {"denied": ["latest"]}}),
        cluster_policy("typo", {"tags": {"deny": ["latest"]}}),
        NO_LATEST,
        NO_LATEST,
    )

    result = check_offline(capsys, tmp_path)

    assert result.code == 2
    errors = result.err.splitlines()
    assert len(errors) == 3, result.err
    assert "ClusterModelKitPolicy/bad-mode is invalid: spec.mode:" in errors[0]
    assert "ClusterModelKitPolicy/typo is invalid: spec.tags.deny:" in errors[1]
    assert "ClusterModelKitPolicy/no-latest is defined twice" in errors[2]


def test_policy_files_without_policies_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(tmp_path, pod("p", f"{REGISTRY}/ml/llama:latest"), {"apiVersion": "v1", "kind": "List"})

    result = check_offline(capsys, tmp_path)

    assert result.code == 2
    assert "no ClusterModelKitPolicy or ModelKitPolicy (apiVersion kitpin.dev/v1alpha1)" in (
        result.err
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "-"], "policies are read from files"),
        (["--policy", "missing.yaml"], "missing.yaml: no such file or directory"),
        (["--namespace-labels", "env"], "'env' is not KEY=VALUE"),
        (["--namespace-labels", ":env=prod"], "the namespace before ':' is empty"),
        (["--namespace-labels", "ml:"], "'' is not KEY=VALUE"),
        (["--namespace-labels", "ml:env=prod,web:x=y"], "'web:x=y' is not KEY=VALUE"),
        (["--deadline", "0"], "--deadline must be > 0"),
        (["--output", "xml"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    app, policies = setup(tmp_path, pod("p", f"{REGISTRY}/ml/llama:v1"), NO_LATEST)

    result = run_check(capsys, "-f", app, "--policy", policies, *args)

    assert result.code == 2
    assert message in result.err


def test_invalid_yaml_in_a_policy_file_exits_2_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, policies = setup(tmp_path, pod("p", f"{REGISTRY}/ml/llama:v1"), NO_LATEST)
    policies.write_text(policies.read_text() + "spec: [unclosed\n")

    result = run_check(capsys, "-f", app, "--policy", policies, "--offline")

    assert result.code == 2
    assert f"{policies}:" in result.err and "not valid YAML" in result.err


@pytest.mark.parametrize(
    "value", ["2001-02-30", "!!int x", "1" * 4301], ids=["date", "int-tag", "int-digits"]
)
@pytest.mark.parametrize("where", ["manifest", "policy"])
def test_values_yaml_cannot_build_exit_2_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, where: str
) -> None:
    app, policies = setup(tmp_path, pod("p", f"{REGISTRY}/ml/llama:v1"), NO_LATEST)
    bad = app if where == "manifest" else policies
    bad.write_text(bad.read_text() + f"---\nkind: ConfigMap\nx: {value}\n")
    line = len(bad.read_text().splitlines())

    result = run_check(capsys, "-f", app, "--policy", policies, "--offline")

    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith(f"kitpin: {bad}:{line}: not valid YAML: cannot read ")


def test_invalid_references_fail_with_their_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = stream(
        pod("upper", f"{REGISTRY}/ml/Llama:v1"),
        pod("local", "llama:v1"),
        pod("fine", f"{REGISTRY}/ml/llama:v1"),
    )
    app, _ = setup(tmp_path, text, NO_LATEST)

    result = check_offline(capsys, tmp_path)

    assert result.code == 1
    assert result.lines[0].startswith(
        f"{app}:{line_of(text, 'ml/Llama')}: doc 1 Pod/upper {POD_POINTER}: "
        "[error] InvalidReference: "
    )
    assert "repositories must be lowercase" in result.lines[0]
    assert result.lines[1].startswith(
        f"{app}:{line_of(text, 'llama:v1', 1)}: doc 2 Pod/local {POD_POINTER}: "
        "[error] LocalReference: 'llama:v1' has no registry host"
    )
    assert result.summary == summary_line(3, 3, results={"pass": 1, "error": 2})


def test_references_are_checked_without_any_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = tmp_path / "app.yaml"
    app.write_text(pod("local", "llama:v1"))

    result = run_check(capsys, "-f", app, "--offline", "-o", "json")

    assert result.code == 1
    assert [e["reason"] for e in rows(result, "errors")] == ["LocalReference"]
    assert result.json()["summary"]["policies"] == 0


def test_unreachable_registry_is_an_error_unless_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = pod("p", "127.0.0.1:1/ml/llama:v1")  # port 1: connection refused
    setup(tmp_path, text, NO_LATEST)
    args: list[str | Path] = ["-f", tmp_path / "k8s", "--policy", tmp_path / "policies"]
    args.append("--plain-http")

    online = run_check(capsys, *args, "-o", "json")
    assert online.code == 1
    (error,) = rows(online, "errors")
    assert error["reason"] == "Unreachable"
    assert error["message"].startswith("cannot check '127.0.0.1:1/ml/llama:v1': ")
    assert rows(online, "violations") == []

    offline = run_check(capsys, *args, "--offline")
    assert offline.code == 0
    assert offline.summary == summary_line(1, 1, results={"pass": 1})


def test_rules_that_need_the_artifact_are_not_checked_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact_rules = cluster_policy(
        "licensed",
        {
            "artifacts": {"licenses": {"allowed": ["Apache-2.0"]}, "requiredLayers": ["model"]},
            "parents": {"requireDigest": True},
        },
    )
    text = deployment("llama", f"{REGISTRY}/ml/llama:v1")
    app, _ = setup(tmp_path, text, artifact_rules)

    result = check_offline(capsys, tmp_path)

    assert result.code == 0, result
    assert result.lines[:3] == [
        f"{app}:{line_of(text, 'llama:v1')}: doc 1 Deployment/llama {DEPLOYMENT_POINTER}: "
        f"[unchecked] ClusterModelKitPolicy/licensed rule {rule}: not checked (offline): "
        "the reference was not resolved, so the artifact is unknown"
        for rule in ("artifacts.requiredLayers", "artifacts.licenses", "parents.requireDigest")
    ]
    assert result.summary == summary_line(
        1, 1, results={"skip": 1}, rest="; 3 rules not checked (offline)"
    )
    assert result.policy_lines == [
        "policy ClusterModelKitPolicy/licensed: applied to 1 object (Deployment/llama in "
        "default): 0 pass, 0 fail, 0 warn, 1 skip, 0 error"
    ]
    assert "--fail-on-skip makes that fail the check" in result.err

    strict = check_offline(capsys, tmp_path, "--fail-on-skip")
    assert strict.code == 1
    assert strict.err == ""


# ---------------------------------------------------------------------------------------
# Inputs and outputs


def test_json_output_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies = [
        NO_LATEST,
        cluster_policy("licensed", {"artifacts": {"licenses": {"allowed": ["MIT"]}}}),
    ]
    text = stream(
        deployment("llama", f"{REGISTRY}/ml/llama:latest", namespace="ml"),
        pod("local", "llama:v1"),
        value_from_pod("from-configmap"),
    )
    app, _ = setup(tmp_path, text, *policies)

    result = check_offline(capsys, tmp_path, "-o", "json")

    assert result.code == 1
    data = result.json()
    assert set(data) == {
        "violations",
        "errors",
        "unchecked",
        "references",
        "policies",
        "unresolvable",
        "summary",
    }
    (violation,) = data["violations"]
    assert set(violation) == VIOLATION_KEYS
    assert violation == {
        "file": str(app),
        "line": line_of(text, "llama:latest"),
        "document": 1,
        "kind": "Deployment",
        "name": "llama",
        "namespace": "ml",
        "path": DEPLOYMENT_POINTER,
        "where": 'initContainer "kitops-init" env MODELKIT_REF',
        "reference": f"{REGISTRY}/ml/llama:latest",
        "policy": "ClusterModelKitPolicy/no-latest",
        "rule": "tags.denied",
        "reason": "TagDenied",
        "mode": "enforce",
        "message": violation["message"],
    }
    assert violation["message"].startswith("ClusterModelKitPolicy/no-latest rule tags.denied: ")
    (error,) = data["errors"]
    assert set(error) == ERROR_KEYS
    assert (error["document"], error["reason"], error["namespace"]) == (
        2,
        "LocalReference",
        "default",
    )
    (unchecked,) = data["unchecked"]  # the local reference has no evidence to check
    assert set(unchecked) == UNCHECKED_KEYS
    assert (unchecked["name"], unchecked["rule"]) == ("llama", "artifacts.licenses")
    (hidden,) = data["unresolvable"]
    assert (hidden["document"], hidden["object"]) == (3, "Pod from-configmap")
    assert hidden["message"].startswith("MODELKIT_REF is set with valueFrom")
    references = data["references"]
    assert all(set(r) == REFERENCE_KEYS for r in references)
    assert [(r["name"], r["result"], r["message"]) for r in references] == [
        ("llama", "fail", None),
        ("local", "error", None),
    ]
    assert references[0]["policies"] == [
        "ClusterModelKitPolicy/licensed",
        "ClusterModelKitPolicy/no-latest",
    ]
    assert [(p["policy"], p["result"], p["message"]) for p in data["policies"]] == [
        ("ClusterModelKitPolicy/licensed", "applied", None),
        ("ClusterModelKitPolicy/no-latest", "applied", None),
    ]
    licensed, no_latest = data["policies"]
    assert set(licensed) == POLICY_KEYS
    assert (licensed["kind"], licensed["name"], licensed["namespace"]) == (
        "ClusterModelKitPolicy",
        "licensed",
        None,
    )
    assert [set(o) for o in licensed["objects"]] == [OBJECT_KEYS, OBJECT_KEYS]
    assert licensed["objects"][0] == {
        "file": str(app),
        "line": line_of(text, "llama:latest"),
        "document": 1,
        "kind": "Deployment",
        "name": "llama",
        "namespace": "ml",
    }
    # per policy: the licence rule was not checked offline (skip), the tag rule failed
    assert licensed["results"] == {"pass": 0, "fail": 0, "warn": 0, "skip": 1, "error": 1}
    assert no_latest["results"] == {"pass": 0, "fail": 1, "warn": 0, "skip": 0, "error": 1}
    assert set(data["summary"]) == SUMMARY_KEYS
    assert data["summary"] == {
        "references": 2,
        "objects": 2,
        "results": {"pass": 0, "fail": 1, "warn": 0, "skip": 0, "error": 1},
        "violations": 1,
        "enforce": 1,
        "warn": 0,
        "audit": 0,
        "errors": 1,
        "unchecked": 1,
        "unresolvable": 1,
        "ignored": 0,
        "policies": 2,
        "policiesSkipped": 0,
        "offline": True,
        "failOnSkip": False,
        "exitCode": 1,
    }


def test_unresolvable_values_are_warned_about_in_text_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = value_from_pod("p")
    app, _ = setup(tmp_path, text, NO_LATEST)

    result = check_offline(capsys, tmp_path)

    assert result.code == 0
    assert result.err.startswith(f"kitpin: warning: {app}:{line_of(text, 'valueFrom')}: Pod p: ")
    assert "MODELKIT_REF is set with valueFrom" in result.err


def test_stdin_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = write_yaml(tmp_path / "policies.yaml", NO_LATEST)
    text = pod("p", f"{REGISTRY}/ml/llama:latest")
    line = line_of(text, ":latest")

    feed_stdin(monkeypatch, text)
    dash = run_check(capsys, "-f", "-", "--policy", policies, "--offline")
    assert dash.code == 1
    assert dash.lines[0].startswith(f"<stdin>:{line}: doc 1 Pod/p {POD_POINTER}: [enforce] ")

    feed_stdin(monkeypatch, text)  # no -f: piped stdin
    piped = run_check(capsys, "--policy", policies, "--offline")
    assert piped.code == 1
    assert piped.lines == dash.lines


def test_kubectl_lists_of_objects_and_of_policies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = [
        yaml.safe_load(pod("a", f"{REGISTRY}/ml/llama:v1")),
        yaml.safe_load(pod("b", f"{REGISTRY}/ml/llama:latest", namespace="ml")),
    ]
    app = write_yaml(
        tmp_path / "k8s" / "list.yaml", {"apiVersion": "v1", "kind": "List", "items": items}
    )
    write_yaml(
        tmp_path / "policies" / "cmkp.yaml",
        {"apiVersion": "v1", "kind": "List", "items": [NO_LATEST]},
    )

    result = check_offline(capsys, tmp_path, "-o", "json")

    assert result.code == 1
    (violation,) = rows(result, "violations")
    assert (violation["file"], violation["document"]) == (str(app), 1)
    assert (violation["kind"], violation["name"], violation["namespace"]) == ("Pod", "b", "ml")
    assert violation["path"] == f"/items/1{POD_POINTER}"


def test_directories_recursive_and_several_policy_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "k8s" / "team").mkdir(parents=True)
    (tmp_path / "k8s" / "team" / "deep.yaml").write_text(pod("deep", f"{REGISTRY}/ml/x:latest"))
    (tmp_path / "k8s" / "top.yaml").write_text(pod("top", f"{REGISTRY}/ml/x:dev"))
    write_yaml(tmp_path / "policies" / "a.yaml", NO_LATEST)
    no_dev = write_yaml(
        tmp_path / "more" / "b.yaml", cluster_policy("no-dev", {"tags": {"denied": ["dev"]}})
    )
    args: list[str | Path] = ["-f", tmp_path / "k8s", "--policy", tmp_path / "policies"]
    args += ["--policy", no_dev]

    flat = run_check(capsys, *args, "--offline", "-o", "json")
    assert [v["name"] for v in rows(flat, "violations")] == ["top"]

    recursive = run_check(capsys, *args, "--offline", "-R", "-o", "json")
    assert sorted(v["name"] for v in rows(recursive, "violations")) == ["deep", "top"]


def test_nothing_to_check_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cm = tmp_path / "cm.yaml"
    cm.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1'}\n")

    result = run_check(capsys, "-f", cm)

    assert result.code == 0
    assert result.out == summary_line(0, 0, policies=0) + "\n"


def test_help_lists_the_check_flags(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_check(capsys, "--help")
    assert result.code == 0
    for flag in (
        "--policy",
        "--namespace",
        "--namespace-labels",
        "--offline",
        "--fail-on-skip",
        "--output",
        "-R",
    ):
        assert flag in result.out
    assert "Exit codes:" in result.out


# ---------------------------------------------------------------------------------------
# What was not judged: skips, per reference and per policy (nothing passes silently)

PROD_ONLY = cluster_policy(
    "prod-models",
    {"namespaceSelector": {"matchLabels": {"env": "prod"}}, "tags": {"denied": ["latest"]}},
)


def test_a_policy_that_matched_no_namespace_is_a_skip_not_a_silent_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The newcomer's false green: a cluster policy whose namespaceSelector needs a label,
    three references using :latest, no --namespace-labels. Nothing was judged, and the
    output says so, names the policy and the flag that would make it apply."""
    text = stream(
        deployment("llama", f"{REGISTRY}/ml/llama:latest"),
        pod("eval", f"{REGISTRY}/ml/llama:latest", namespace="ml-prod"),
        pod("batch", f"{REGISTRY}/ml/mistral:latest"),
    )
    app, _ = setup(tmp_path, text, PROD_ONLY)

    result = check_offline(capsys, tmp_path)

    assert result.code == 0  # a skip is not a failure without --fail-on-skip ...
    assert result.summary == summary_line(3, 3, results={"skip": 3}, skipped_policies=1)
    assert result.findings == [  # ... but every reference says it was not judged
        f"{app}:{line_of(text, 'llama:latest')}: doc 1 Deployment/llama {DEPLOYMENT_POINTER}: "
        "[skip] no policy applies in namespace default (labels "
        "kubernetes.io/metadata.name=default)",
        f"{app}:{line_of(text, 'llama:latest', 2)}: doc 2 Pod/eval {POD_POINTER}: "
        "[skip] no policy applies in namespace ml-prod (labels "
        "kubernetes.io/metadata.name=ml-prod)",
        f"{app}:{line_of(text, 'mistral:latest')}: doc 3 Pod/batch {POD_POINTER}: "
        "[skip] no policy applies in namespace default (labels "
        "kubernetes.io/metadata.name=default)",
    ]
    assert result.policy_lines == [
        "policy ClusterModelKitPolicy/prod-models: skipped: its namespaceSelector env=prod "
        "matches none of the namespaces checked (default, ml-prod; without "
        "--namespace-labels a namespace has only the label "
        "kubernetes.io/metadata.name=<its name>); kitpin check cannot read namespace labels "
        "from a cluster: assume them with --namespace-labels env=prod (every namespace) or "
        "--namespace-labels default:env=prod (namespace default only)"
    ]
    assert result.err == (
        "kitpin: warning: not everything was judged (3 references skipped, 1 policy applied "
        "to nothing); --fail-on-skip makes that fail the check\n"
    )

    strict = check_offline(capsys, tmp_path, "--fail-on-skip")
    assert strict.code == 1
    assert strict.lines == result.lines

    data = check_offline(capsys, tmp_path, "--fail-on-skip", "-o", "json").json()
    assert [(r["name"], r["result"], r["policies"]) for r in data["references"]] == [
        ("llama", "skip", []),
        ("eval", "skip", []),
        ("batch", "skip", []),
    ]
    assert data["references"][1]["message"] == (
        "no policy applies in namespace ml-prod (labels kubernetes.io/metadata.name=ml-prod)"
    )
    (skipped,) = data["policies"]
    assert (skipped["result"], skipped["objects"]) == ("skipped", [])
    assert skipped["results"] == {"pass": 0, "fail": 0, "warn": 0, "skip": 0, "error": 0}
    assert "--namespace-labels env=prod" in skipped["message"]
    summary = data["summary"]
    assert summary["results"]["skip"] == 3 and summary["policiesSkipped"] == 1
    assert (summary["failOnSkip"], summary["exitCode"]) == (True, 1)

    # the hint, followed for one namespace: that object is judged (and fails), the rest skip
    labelled = check_offline(capsys, tmp_path, "--namespace-labels", "ml-prod:env=prod")
    assert labelled.code == 1
    assert labelled.summary == summary_line(
        3, 3, results={"fail": 1, "skip": 2}, violations=(1, 0, 0)
    )
    assert labelled.policy_lines == [
        "policy ClusterModelKitPolicy/prod-models: applied to 1 object (Pod/eval in "
        "ml-prod): 0 pass, 1 fail, 0 warn, 0 skip, 0 error"
    ]


def test_the_skip_hint_shows_the_labels_assumed_and_selector_expressions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    by_expression = cluster_policy(
        "gpu",
        {
            "namespaceSelector": {
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gpu"]}]
            },
            "tags": {"denied": ["latest"]},
        },
    )
    setup(tmp_path, pod("p", f"{REGISTRY}/ml/llama:v1", namespace="ml"), by_expression)

    result = check_offline(capsys, tmp_path, "--namespace-labels", "team=ml")

    (line,) = result.policy_lines
    assert line == (
        "policy ClusterModelKitPolicy/gpu: skipped: its namespaceSelector tier in (gpu) "
        "matches none of the namespaces checked (ml: kubernetes.io/metadata.name=ml,team=ml); "
        "kitpin check cannot read namespace labels from a cluster: assume them with "
        "--namespace-labels [NS:]KEY=VALUE,... giving labels the selector matches "
        "(e.g. --namespace-labels ml:KEY=VALUE)"
    )


def test_a_modelkit_policy_for_another_namespace_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    team = namespaced_policy("no-dev", {"tags": {"denied": ["dev"]}}, namespace="team")
    setup(tmp_path, stream(pod("a", f"{REGISTRY}/ml/llama:dev", namespace="ml")), NO_LATEST, team)

    result = check_offline(capsys, tmp_path, "-o", "json")

    assert result.code == 0
    assert [(p["policy"], p["result"]) for p in rows(result, "policies")] == [
        ("ClusterModelKitPolicy/no-latest", "applied"),
        ("ModelKitPolicy/no-dev", "skipped"),
    ]
    assert rows(result, "policies")[1]["message"] == (
        "it applies in namespace team only, and none of the objects checked is there "
        "(checked: ml; an object is checked in its metadata.namespace, else --namespace)"
    )
    # the reference itself was judged by the cluster policy: a pass
    assert [r["result"] for r in rows(result, "references")] == ["pass"]
    assert check_offline(capsys, tmp_path, "--fail-on-skip").code == 1  # a policy skipped


def test_results_per_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """pass: every rule checked and holds; warn: warn or audit violations only; skip: a rule
    could not be checked (its warn violation is still reported); fail; error."""
    policies = [
        cluster_policy("warn-dev", {"mode": "warn", "tags": {"denied": ["dev"]}}),
        cluster_policy("audit-nightly", {"mode": "audit", "tags": {"denied": ["nightly"]}}),
        NO_LATEST,
        namespaced_policy(
            "licensed", {"artifacts": {"licenses": {"allowed": ["MIT"]}}}, namespace="lic"
        ),
    ]
    text = stream(
        pod("good", f"{REGISTRY}/ml/llama:v1"),
        pod("dev", f"{REGISTRY}/ml/llama:dev"),
        pod("nightly", f"{REGISTRY}/ml/llama:nightly"),
        pod("latest", f"{REGISTRY}/ml/llama:latest"),
        pod("invalid", f"{REGISTRY}/ml/Llama:v1"),
        pod("dev-unlicensed", f"{REGISTRY}/ml/llama:dev", namespace="lic"),
    )
    setup(tmp_path, text, *policies)

    result = check_offline(capsys, tmp_path, "-o", "json")

    assert [(r["name"], r["result"]) for r in rows(result, "references")] == [
        ("good", "pass"),
        ("dev", "warn"),
        ("nightly", "warn"),
        ("latest", "fail"),
        ("invalid", "error"),
        ("dev-unlicensed", "skip"),
    ]
    assert rows(result, "references")[5]["message"] == (
        "not checked (offline): ModelKitPolicy/licensed artifacts.licenses"
    )
    assert result.json()["summary"]["results"] == {
        "pass": 1,
        "fail": 1,
        "warn": 2,
        "skip": 1,
        "error": 1,
    }
    tallies = {p["policy"]: p["results"] for p in rows(result, "policies")}
    # per policy, only its own rules count: latest passes warn-dev (no-latest fails it)
    assert tallies["ClusterModelKitPolicy/warn-dev"] == {
        "pass": 3,
        "fail": 0,
        "warn": 2,
        "skip": 0,
        "error": 1,
    }
    assert tallies["ClusterModelKitPolicy/no-latest"]["fail"] == 1
    assert tallies["ModelKitPolicy/licensed"] == {
        "pass": 0,
        "fail": 0,
        "warn": 0,
        "skip": 1,
        "error": 0,
    }


def test_fail_on_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app, _ = setup(tmp_path, pod("p", f"{REGISTRY}/ml/llama:v1"), NO_LATEST)

    judged = check_offline(capsys, tmp_path, "--fail-on-skip")
    assert judged.code == 0, judged  # every reference judged, every policy applied
    assert judged.err == ""

    without_policy = run_check(capsys, "-f", app, "--offline", "--fail-on-skip")
    assert without_policy.code == 1
    assert without_policy.summary == summary_line(1, 1, results={"skip": 1}, policies=0)
    assert without_policy.findings == []  # no per-reference lines without --policy
    assert run_check(capsys, "-f", app, "--offline").code == 0

    app.write_text(stream(pod("p", f"{REGISTRY}/ml/llama:v1"), value_from_pod("hidden")))
    unseen = check_offline(capsys, tmp_path, "--fail-on-skip")
    assert unseen.code == 1  # a reference kitpin cannot see was not judged either
    assert unseen.summary == summary_line(
        1, 1, results={"pass": 1}, rest="; 1 reference kitpin cannot see"
    )
