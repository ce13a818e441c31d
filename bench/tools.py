"""The load generators, installed by the benchmark itself when missing.

- ``wrk`` (Debian package ``wrk``, C + LuaJIT): closed-loop max-throughput runs. One wrk thread
  drives ~40,000 TLS requests/s on one core here, several times what one Python process can
  answer, so the generator is never the bottleneck. ``apt-get install wrk`` is run only when
  the binary is missing and only as root; otherwise the error says what to install.
- ``vegeta`` (Go module ``github.com/tsenart/vegeta/v12``): open-loop fixed-rate runs (wrk 4.x
  has no ``-R``; wrk2 is not packaged). Built with the local Go toolchain into the same cache
  as the project's other Go tools, ``<cache>/vegeta-<version>/vegeta``, and reused when there.
"""

from __future__ import annotations

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
