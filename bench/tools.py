"""The load generators, installed by the benchmark itself when missing.

- ``wrk`` (Debian package ``wrk``, C + LuaJIT): closed-loop max-throughput runs. One wrk thread
  drives ~40,000 TLS requests/s on one core here, several times what one Python process can
  answer, so the generator is never the bottleneck. ``apt-get install wrk`` is run only when
  the binary is missing and only as root; otherwise the error says what to install.
- ``vegeta`` (Go module ``github.com/tsenart/vegeta/v12``): open-loop fixed-rate runs (wrk 4.x
  has no ``-R``; wrk2 is not packaged). Built with the local Go toolchain into the same cache
  as the project's other Go tools, ``<cache>/vegeta-<version>/vegeta``, and reused when there.
- ``kyverno`` (Go module ``github.com/kyverno/kyverno``, ``KYVERNO_VERSION`` in hack/tools.env):
  the side-by-side peer (bench/kyverno.py), built by ``hack/tools.sh kyverno`` into
  ``<cache>/kyverno-<version>/kyverno``; its CRDs are read from the same module in Go's module
  cache (``go mod download``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import tools as harness_tools
from harness.procs import HarnessError

VEGETA_MODULE = "github.com/tsenart/vegeta/v12"
VEGETA_VERSION = "v12.13.0"


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def wrk() -> Path:
    """The path of ``wrk``; ``apt-get install -y wrk`` first when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return Path(found)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise HarnessError(
            "wrk not found: install it (Debian/Ubuntu: `sudo apt-get install wrk`) and rerun"
        )
    _log("installing wrk (apt-get install wrk)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "wrk"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=False).returncode:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=True)
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=True)
    found = shutil.which("wrk")
    if not found:
        raise HarnessError("apt-get installed wrk but it is not on PATH")
    return Path(found)


def vegeta() -> Path:
    """The path of ``vegeta``, built from its Go module into the tools cache when missing."""
    out = harness_tools.cache_dir() / f"vegeta-{VEGETA_VERSION}"
    binary = out / "vegeta"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    if not shutil.which("go"):
        raise HarnessError(
            f"vegeta is built from its Go module: install Go, or put a vegeta binary at {binary}"
        )
    _log(f"building vegeta {VEGETA_VERSION} into {out}")
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-buildvcs=false")
    env.setdefault("GOTOOLCHAIN", "local")
    with tempfile.TemporaryDirectory(prefix="kitpin-vegeta-") as work:

        def go(*args: str) -> None:
            done = subprocess.run(
                ["go", *args], cwd=work, env=env, capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise HarnessError(f"go {' '.join(args)} failed building vegeta:\n{done.stderr}")

        go("mod", "init", "kitpin.dev/benchbuild")
        go("get", f"{VEGETA_MODULE}@{VEGETA_VERSION}")
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        go("build", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp / "vegeta"), VEGETA_MODULE)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return binary


def wrk_version(path: Path) -> str:
    result = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False)
    first = (result.stdout + result.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


KYVERNO_MODULE = "github.com/kyverno/kyverno"


def kyverno_version() -> str:
    return harness_tools.versions()["KYVERNO_VERSION"]


def kyverno() -> Path:
    """The path of Kyverno's admission controller, built by ``hack/tools.sh kyverno`` (several
    minutes cold) when missing."""
    binary = harness_tools.cache_dir() / f"kyverno-{kyverno_version()}" / "kyverno"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    _log(f"building kyverno {kyverno_version()} (hack/tools.sh kyverno, several minutes cold)")
    subprocess.run(["bash", str(harness_tools.TOOLS_SH), "kyverno"], check=True)
    if not binary.is_file():
        raise HarnessError(f"hack/tools.sh kyverno ran but {binary} is not there")
    return binary


def kyverno_crds() -> list[Path]:
    """The directories of Kyverno's CRDs (plain YAML, ``config/crds/...``) in its module."""
    env = dict(os.environ, GOFLAGS="-mod=mod")
    env.setdefault("GOTOOLCHAIN", "local")
    with tempfile.TemporaryDirectory(prefix="kitpin-kyverno-mod-") as work:
        done = subprocess.run(
            ["go", "mod", "download", "-json", f"{KYVERNO_MODULE}@{kyverno_version()}"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise HarnessError(f"go mod download of {KYVERNO_MODULE} failed:\n{done.stderr}")
    root = Path(json.loads(done.stdout)["Dir"]) / "config" / "crds"
    dirs = [root / d for d in ("kyverno", "policies.kyverno.io", "reports", "policyreport")]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise HarnessError(f"Kyverno's module has no CRD directory {', '.join(missing)}")
    return dirs
