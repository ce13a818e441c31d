"""Where the pinned Go-built binaries live, and building them when they are missing.

Lookup order for a binary (same as ``hack/tools.sh``):

1. ``$KITPIN_TOOLS_DIR/<binary>`` when that variable is set and the file is there
   (a directory of ready-made binaries, e.g. envtest's);
2. ``<cache>/<tool>-<version>/<binary>``, where ``<cache>`` is ``$KITPIN_TOOLS_CACHE`` or
   ``${XDG_CACHE_HOME:-~/.cache}/kitpin/tools`` and ``<version>`` comes from ``hack/tools.env``.

There is deliberately no switch to skip tests when a binary is missing: :func:`ensure` builds
it (``hack/tools.sh``), and a failed build fails the tests.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from harness.procs import HarnessError

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS_ENV = REPO_ROOT / "hack" / "tools.env"
TOOLS_SH = REPO_ROOT / "hack" / "tools.sh"

# binary -> (tool directory name, variable in hack/tools.env holding its version)
BINARIES: dict[str, tuple[str, str]] = {
    "kube-apiserver": ("kubernetes", "KUBERNETES_VERSION"),
    "kube-controller-manager": ("kubernetes", "KUBERNETES_VERSION"),
    "kubectl": ("kubernetes", "KUBERNETES_VERSION"),
    "etcd": ("etcd", "ETCD_VERSION"),
    "registry": ("registry", "DISTRIBUTION_VERSION"),
    "helm": ("helm-release", "HELM_VERSION"),  # hack/tools.sh build_helm
}


def versions(path: Path = TOOLS_ENV) -> dict[str, str]:
    """The ``NAME=value`` pairs of ``hack/tools.env`` (comments and blank lines skipped)."""
    pinned: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        pinned[name.strip()] = value.strip().strip("'\"")
    return pinned


def cache_dir() -> Path:
    """The build cache: ``$KITPIN_TOOLS_CACHE`` or ``${XDG_CACHE_HOME:-~/.cache}/kitpin/tools``."""
    if explicit := os.environ.get("KITPIN_TOOLS_CACHE"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kitpin" / "tools"


def candidates(binary: str) -> list[Path]:
    """Every place :func:`find` looks for ``binary``, in order."""
    try:
        tool, version_var = BINARIES[binary]
    except KeyError:
        raise HarnessError(
            f"unknown tool binary {binary!r}; known: {', '.join(sorted(BINARIES))}"
        ) from None
    places: list[Path] = []
    if tools_dir := os.environ.get("KITPIN_TOOLS_DIR"):
        places.append(Path(tools_dir) / binary)
    version = versions().get(version_var)
    if not version:
        raise HarnessError(f"{TOOLS_ENV} does not pin {version_var} (needed for {binary})")
    places.append(cache_dir() / f"{tool}-{version}" / binary)
    return places


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find(binary: str) -> Path:
    """The path of ``binary``; raise :class:`HarnessError` saying how to get it if absent."""
    places = candidates(binary)
    for place in places:
        if _executable(place):
            return place
    looked = ", ".join(str(p) for p in places)
    raise HarnessError(
        f"{binary} not found (looked in: {looked}). Run `make tools` (hack/tools.sh) to build "
        f"the pinned tools, or set KITPIN_TOOLS_DIR to a directory that holds them."
    )


def ensure(*binaries: str) -> dict[str, Path]:
    """Paths of ``binaries``, running ``hack/tools.sh`` first when any is missing.

    The build can take minutes the first time (kube-apiserver). Its output goes to this
    process's stderr so a human sees progress; a failed build raises :class:`HarnessError`.
    """
    missing = [b for b in binaries if not any(_executable(p) for p in candidates(b))]
    if missing:
        result = subprocess.run(
            ["bash", str(TOOLS_SH), "build"],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            raise HarnessError(
                f"hack/tools.sh failed (exit {result.returncode}) building {', '.join(missing)}; "
                f"run `make tools` to see why"
            )
    return {b: find(b) for b in binaries}
