"""Render the kitpin chart with the pinned helm (``hack/tools.env``) and parse the output.

Shared by the chart tests, the chart e2e test, ``make manifests`` and ``make verify``
(:mod:`hack.manifests`).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import tools

REPO_ROOT = tools.REPO_ROOT
CHART_DIR = REPO_ROOT / "charts" / "kitpin"
RELEASE = "kitpin"
NAMESPACE = "kitpin"


def helm() -> Path:
    """The pinned helm binary, built by ``hack/tools.sh`` if missing."""
    return tools.ensure("helm")["helm"]


def kube_version() -> str:
    """The pinned Kubernetes version: what the tests render for (``--kube-version``), the
    apiserver's, not the version of helm's own client-go (its default without a cluster)."""
    return tools.versions()["KUBERNETES_VERSION"]


@dataclass(frozen=True, kw_only=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def docs(self) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(self.stdout) if d]


def run_helm(
    args: Sequence[str],
    *,
    values: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> Result:
    """``helm <args> [-f values.yaml]``; never raises on a non-zero exit. ``env`` is added to
    this process's environment."""
    with tempfile.TemporaryDirectory(prefix="kitpin-chart-") as tmp:
        argv = [str(helm()), *args]
        if values is not None:
            path = Path(tmp) / "values.yaml"
            path.write_text(yaml.safe_dump(dict(values)))
            argv += ["-f", str(path)]
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
    return Result(returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)


def template(
    values: Mapping[str, Any] | None = None,
    *,
    chart: Path = CHART_DIR,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    extra_args: Iterable[str] = (),
) -> Result:
    return run_helm(
        [
            "template",
            release,
            str(chart),
            "--namespace",
            namespace,
            "--kube-version",
            kube_version(),
            *extra_args,
        ],
        values=values,
    )


def render(values: Mapping[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """The rendered documents; AssertionError with helm's stderr if rendering fails."""
    result = template(values, **kwargs)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return result.docs


def find(docs: Iterable[Mapping[str, Any]], kind: str, name: str | None = None) -> list[Any]:
    return [
        d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: Iterable[Mapping[str, Any]], kind: str, name: str | None = None) -> Any:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]
