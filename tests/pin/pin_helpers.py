"""Helpers shared by the ``kitpin pin`` tests: fake digests, test data, running the CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from controller import manifests, sites

HERE = Path(__file__).parent
TESTDATA = HERE / "testdata"
TESTCHART = HERE / "testchart"
REPO_ROOT = HERE.parents[1]

PLACEHOLDER = "registry.example.com:5000"
"""The registry the files in ``testdata/`` name; integration tests replace it."""

CLI_TIMEOUT = 60.0
"""Seconds one ``kitpin`` subprocess may take (a hang fails the test instead of the run)."""


def fake_digest(canonical: str) -> str:
    """A digest of the real shape, derived from the reference (k8s-digester style)."""
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def pin_text(
    text: str, *, source: str = "test.yaml", settings: sites.SitesSettings | None = None
) -> str:
    """``text`` with every pinnable reference pinned to its :func:`fake_digest`."""
    manifest = manifests.scan(text, source=source, settings=settings)
    plan = manifests.plan(manifest)
    assert not plan.problems, plan.problems
    edits = [manifests.edit(p, fake_digest(p.ref.canonical)) for p in plan.pins]
    return manifests.splice(manifest, edits)


def read_testdata(name: str, registry: str = PLACEHOLDER) -> str:
    """A file of ``testdata/`` with its registry replaced by ``registry``."""
    return (TESTDATA / name).read_text().replace(PLACEHOLDER, registry)


def load_all(text: str) -> list[object]:
    return list(yaml.safe_load_all(text))


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """(old, new) of each line that differs; the texts must have the same line count."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(old) == len(new), "pinning must not add or remove lines"
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


def kitpin_binary() -> Path:
    """The ``kitpin`` console script of this virtualenv (what helm runs as post-renderer)."""
    path = Path(sys.executable).parent / "kitpin"
    assert path.is_file(), f"{path} missing: `pip install -e .` installs the console script"
    return path


def run_kitpin(
    *args: str | os.PathLike[str],
    stdin: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``kitpin`` console script; stdin is closed when not given (not a TTY)."""
    argv: Sequence[str] = [str(kitpin_binary()), *(str(a) for a in args)]
    return subprocess.run(
        argv,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=cwd or REPO_ROOT,
        env=env,
        check=False,
    )
