"""Builders and a runner shared by the ``kitpin check`` tests: policy objects, manifests
whose reference lines are known, and ``kitpin check`` run in-process."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller import cli, policy

REGISTRY = "registry.example.com"
INIT_IMAGE = "ghcr.io/kitops-ml/kitops-init:v1.7.0"
DEPLOYMENT_POINTER = "/spec/template/spec/initContainers/0/env/0/value"
POD_POINTER = "/spec/initContainers/0/env/0/value"

FINDING_KEYS = {
    "file",
    "line",
    "document",
    "kind",
    "name",
    "namespace",
    "path",
    "where",
    "reference",
}
"""The keys every finding of the JSON output has (where it is)."""
VIOLATION_KEYS = FINDING_KEYS | {"policy", "rule", "reason", "mode", "message"}
ERROR_KEYS = FINDING_KEYS | {"reason", "message"}
UNCHECKED_KEYS = FINDING_KEYS | {"policy", "rule", "mode", "message"}
REFERENCE_KEYS = FINDING_KEYS | {"result", "policies", "message"}
POLICY_KEYS = {"policy", "kind", "name", "namespace", "result", "objects", "results", "message"}
OBJECT_KEYS = {"file", "line", "document", "kind", "name", "namespace"}
RESULTS = ("pass", "fail", "warn", "skip", "error")
SUMMARY_KEYS = {
    "references",
    "objects",
    "results",
    "violations",
    "enforce",
    "warn",
    "audit",
    "errors",
    "unchecked",
    "unresolvable",
    "ignored",
    "policies",
    "policiesSkipped",
    "offline",
    "failOnSkip",
    "exitCode",
}


def summary_line(
    references: int,
    objects: int,
    *,
    results: dict[str, int] | None = None,
    violations: tuple[int, int, int] = (0, 0, 0),
    policies: int = 1,
    skipped_policies: int = 0,
    rest: str = "",
) -> str:
    """The text summary: references and their results, violations by mode, policies, and
    ``rest`` (the optional parts, with their leading "; ")."""

    def n(count: int, word: str, plural: str | None = None) -> str:
        return f"{count} {word if count == 1 else plural or word + 's'}"

    counts = {r: 0 for r in RESULTS} | (results or {})
    enforce, warn, audit = violations
    return (
        f"{n(references, 'reference')} in {n(objects, 'object')}: "
        + ", ".join(f"{counts[r]} {r}" for r in RESULTS)
        + f"; {n(enforce + warn + audit, 'violation')} ({enforce} enforce, {warn} warn, "
        f"{audit} audit); {n(policies, 'policy', 'policies')}"
        + (f" ({skipped_policies} skipped)" if skipped_policies else "")
        + rest
    )


# ---------------------------------------------------------------------------------------
# Policies


def cluster_policy(
    name: str, spec: Mapping[str, Any], *, metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": policy.API_VERSION,
        "kind": policy.CLUSTER_KIND,
        "metadata": {"name": name, **(metadata or {})},
        "spec": dict(spec),
    }


def namespaced_policy(
    name: str, spec: Mapping[str, Any], *, namespace: str | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": policy.API_VERSION,
        "kind": policy.NAMESPACED_KIND,
        "metadata": metadata,
        "spec": dict(spec),
    }


def write_yaml(path: Path, *documents: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------
# Manifests (text, so that the line of each reference is what a person sees)


def _init_container(env: str, indent: str) -> str:
    """The ``initContainers`` block of a pod spec: kitops-init with MODELKIT_REF ``env``
    (``value: REF``, or ``valueFrom: ...``)."""
    lines = [
        "initContainers:",
        "  - name: kitops-init",
        f"    image: {INIT_IMAGE}",
        "    env:",
        "      - name: MODELKIT_REF",
        f"        {env}",
    ]
    return "".join(f"{indent}{line}\n" for line in lines)


def _metadata(name: str, namespace: str | None) -> str:
    ns = f"  namespace: {namespace}\n" if namespace else ""
    return f"metadata:\n  name: {name}\n{ns}"


def deployment(name: str, ref: str, *, namespace: str | None = None) -> str:
    return (
        "apiVersion: apps/v1\n"
        "kind: Deployment\n"
        f"{_metadata(name, namespace)}"
        "spec:\n"
        f"  selector: {{matchLabels: {{app: {name}}}}}\n"
        "  template:\n"
        f"    metadata: {{labels: {{app: {name}}}}}\n"
        "    spec:\n"
        f"{_init_container(f'value: {ref}', '      ')}"
        "      containers:\n"
        "        - {name: server, image: vllm/vllm-openai:v0.9.0}\n"
    )


def pod(name: str, ref: str, *, namespace: str | None = None, env: str | None = None) -> str:
    """A Pod whose kitops-init reads ``ref`` (or MODELKIT_REF ``env``, e.g. a valueFrom)."""
    return (
        "apiVersion: v1\n"
        "kind: Pod\n"
        f"{_metadata(name, namespace)}"
        "spec:\n"
        f"{_init_container(env or f'value: {ref}', '  ')}"
        "  containers: [{name: main, image: x/serve:1}]\n"
    )


def value_from_pod(name: str) -> str:
    """A Pod whose MODELKIT_REF comes from a ConfigMap: a reference kitpin cannot see."""
    return pod(name, "", env="valueFrom: {configMapKeyRef: {name: models, key: llama}}")


def image_volume_pod(name: str, ref: str) -> str:
    """A Pod mounting ``ref`` as a Kubernetes image volume (any OCI artifact may be there)."""
    return (
        "apiVersion: v1\n"
        "kind: Pod\n"
        f"metadata:\n  name: {name}\n"
        "spec:\n"
        "  containers: [{name: main, image: x/serve:1}]\n"
        "  volumes:\n"
        "    - name: weights\n"
        "      image:\n"
        f"        reference: {ref}\n"
    )


def stream(*documents: str) -> str:
    return "---\n".join(documents)


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The line (from 1) of the ``occurrence``-th line of ``text`` containing ``needle``."""
    found = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(found) >= occurrence, f"{needle!r} is not in the text {occurrence} time(s)"
    return found[occurrence - 1]


# ---------------------------------------------------------------------------------------
# Running


@dataclass(frozen=True, kw_only=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    @property
    def summary(self) -> str:
        """The text output's last line."""
        return self.lines[-1]

    @property
    def findings(self) -> list[str]:
        """The text output's lines about references (not the policy lines, not the
        summary)."""
        return [line for line in self.lines[:-1] if not line.startswith("policy ")]

    @property
    def policy_lines(self) -> list[str]:
        return [line for line in self.lines if line.startswith("policy ")]

    def json(self) -> dict[str, Any]:
        data = json.loads(self.out)
        assert isinstance(data, dict)
        return data


def run_check(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Result:
    """``kitpin check ARGS`` in this process: exit code, stdout, stderr."""
    try:
        code = cli.main(["check", *(str(a) for a in args)])
    except SystemExit as e:  # argparse usage errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return Result(code=code, out=out, err=err)


def feed_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Make ``text`` the process's stdin (piped: not a terminal)."""
    wrapper = io.TextIOWrapper(io.BytesIO(text.encode()), encoding="utf-8")
    monkeypatch.setattr(wrapper, "isatty", lambda: False)
    monkeypatch.setattr("sys.stdin", wrapper)


def rows(result: Result, section: str) -> list[dict[str, Any]]:
    data = result.json()[section]
    assert isinstance(data, list)
    return data


def rules(findings: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(policy, rule, mode) of each violation, for compact assertions."""
    return [(f["policy"], f["rule"], f["mode"]) for f in findings]
