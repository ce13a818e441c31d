"""kitpin's own container image, built without a container engine, for the node.

``Containerfile`` describes the image (``podman build``), but this machine has no Docker or
podman, and the node must pull from the local registry only. So the harness assembles the
same image from pieces it can build itself and pushes it with its own pushing code
(:func:`harness.modelkit.push_packed`, as :mod:`harness.images` does for busybox and kit):

1. **Base layer** (cached, gzip'ed): a Debian root file system made by ``mmdebstrap``
   (variant ``essential`` plus ``python3``, ``python3-venv``, ``ca-certificates``; merged
   ``/usr``; no apt, no perl beyond perl-base, no docs, man pages or locales) with, as the
   ``Containerfile`` has it, a virtualenv at ``/opt/kitpin`` holding kitpin's runtime
   dependencies only (``pyproject.toml`` ``[project].dependencies``), bytecode compiled
   ahead of time (the root file system is read-only at run time), pip and setuptools
   removed, then ``python3-venv`` and what it brought purged; user and group 65532
   ``kitpin``. The dependencies' wheels are
   downloaded by the *host's* pip (its own index, certificates and ``PIP_*`` settings apply,
   nothing is written into the image), for the image's CPython and glibc, and installed in
   the chroot with ``pip install --no-index``: nothing in the chroot needs the network, DNS
   or certificates. The host's ``/etc/resolv.conf`` and ``/etc/hostname``, which mmdebstrap
   copies in, are removed. Building it takes a minute, so the layer is kept in
   ``harness.tools.cache_dir() / "kitpin-image"``, keyed by a hash of what determines it
   (suite, packages, dpkg options, the chroot script, the dependencies, the Python version).
2. **kitpin layer** (small, rebuilt on every call): the project's wheel
   (``pip wheel --no-deps`` of a copy of what the ``Containerfile`` copies:
   ``pyproject.toml``, ``README.md``, ``controller/``) unpacked into the venv's
   site-packages, its bytecode, and the ``kitpin`` console script at
   ``/opt/kitpin/bin/kitpin``.

Both layers have fixed times (0) and numeric owners (root, except what Debian owns otherwise);
bytecode is hash-based (``unchecked-hash``, compiled with ``PYTHONHASHSEED=0``) so it does not
depend on file times. The same inputs give the same digests: two cold builds of the base
layer (same Debian packages and wheels) were bit-for-bit equal, and an unchanged kitpin gives
the same image digest. The image configuration follows the ``Containerfile``: user
``65532:65532``, ``PATH=/opt/kitpin/bin:...``, ``PYTHONDONTWRITEBYTECODE=1``,
``PYTHONUNBUFFERED=1``, ``LANG=C.UTF-8`` (the ``python:3.11-slim`` base sets it),
entrypoint ``kitpin``, command ``run --help``, port 8443, its labels.

Needs ``mmdebstrap`` (Debian package; run as root, as the node is) and a package index for
pip. ``KITPIN_DEBIAN_MIRROR`` (optional) is passed to mmdebstrap as its mirror; without it,
mmdebstrap's default (Debian's, with updates and security for a stable suite).

    ref = kitpin_image(registry.host)   # "127.0.0.1:PORT/kitpin-node/kitpin:0.1.0@sha256:..."
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import gzip
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, cast

from harness import images, modelkit, tools
from harness.images import ImageError

SUITE = "bookworm"
PYTHON_VERSION = "3.11"
"""The suite's ``python3`` (checked after the build)."""
GLIBC_MINOR = 36
"""The suite's glibc is 2.36: the newest ``manylinux_2_N`` wheel tag that runs on it."""
ARCHITECTURE = "amd64"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
PURGED = (
    "python3-venv",
    f"python{PYTHON_VERSION}-venv",
    "python3-distutils",
    "python3-lib2to3",
    "python3-pip-whl",
    "python3-setuptools-whl",
)
"""Only needed to create the venv."""
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
MMDEBSTRAP_OPTIONS = (
    "--variant=essential",
    f"--architectures={ARCHITECTURE}",
    f"--include={','.join(PACKAGES)}",
    # Merged /usr by symlinks plus the `usr-is-merged` package: without it, apt satisfies
    # init-system-helpers' `usrmerge | usr-is-merged` with usrmerge and ~45 MB of perl.
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
)
VENV = "/opt/kitpin"
UID = GID = 65532
NAME = "kitpin"
"""The image's repository is ``kitpin-node/kitpin`` (:data:`harness.images.REPOSITORY_PREFIX`)."""
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
CACHE_SUBDIR = "kitpin-image"
MIRROR_ENV = "KITPIN_DEBIAN_MIRROR"
ENV = (
    f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
    "LANG=C.UTF-8",
)
LABELS = {
    "org.opencontainers.image.title": "kitpin",
    "org.opencontainers.image.description": (
        "Admission controller that pins KitOps ModelKit references to verified sha256 digests"
    ),
    "org.opencontainers.image.licenses": "Apache-2.0",
}
BUILD_TIMEOUT = 1800.0

# Run by mmdebstrap's customize hook, on the host, as `sh SCRIPT ROOT WHEELS INFO`.
CUSTOMIZE = f"""\
set -eu
root=$1 wheels=$2 info=$3
in_root() {{
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \\
        PYTHONHASHSEED=0 "$@"
}}
rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
mkdir "$root/tmp/wheels"
cp "$wheels"/*.whl "$wheels/requirements.txt" "$root/tmp/wheels/"
in_root /usr/bin/python3 -m venv {VENV}
in_root {VENV}/bin/python -m pip install --quiet --no-index --no-cache-dir \\
    --disable-pip-version-check --no-compile --find-links /tmp/wheels \\
    --requirement /tmp/wheels/requirements.txt
in_root {VENV}/bin/python -m pip uninstall --quiet --yes setuptools pip
in_root /usr/bin/dpkg --purge {" ".join(PURGED)} >/dev/null
rm -rf "$root/tmp/wheels"
echo 'kitpin:x:{GID}:' >>"$root/etc/group"
echo 'kitpin:x:{UID}:{GID}:kitpin:/nonexistent:/usr/sbin/nologin' >>"$root/etc/passwd"
for dir in /usr/lib/python3 /usr/lib/python{PYTHON_VERSION} {VENV}/lib; do
    if [ -d "$root$dir" ]; then
        in_root /usr/bin/python3 -m compileall -q -f -j0 --invalidation-mode unchecked-hash "$dir"
    fi
done
in_root {VENV}/bin/python -c '
import importlib.metadata, importlib.util, json, os, sys, sysconfig
json.dump({{
    "python": "%d.%d" % sys.version_info[:2],
    "magic": importlib.util.MAGIC_NUMBER.hex(),
    "purelib": sysconfig.get_paths()["purelib"],
    "libc": os.confstr("CS_GNU_LIBC_VERSION"),
    "distributions": sorted(
        "%s==%s" % (d.metadata["Name"], d.version) for d in importlib.metadata.distributions()
    ),
}}, sys.stdout)
' >"$info"
"""


@dataclass(frozen=True, kw_only=True)
class BaseLayer:
    """The cached base layer (``path``, gzip'ed) and what the kitpin layer needs to know."""

    path: Path
    digest: str
    """Of the gzip'ed blob."""
    diff_id: str
    """Of the uncompressed tar."""
    size: int
    python: str
    magic: str
    """``importlib.util.MAGIC_NUMBER`` of the image's Python (hex)."""
    purelib: str
    """The venv's site-packages (``/opt/kitpin/lib/python3.11/site-packages``)."""
    distributions: tuple[str, ...]


# ---------------------------------------------------------------------------- inputs


def runtime_dependencies(repo_root: Path = tools.REPO_ROOT) -> list[str]:
    """``[project].dependencies`` of ``pyproject.toml``."""
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    return [str(d) for d in project.get("dependencies", [])]


def project_version(repo_root: Path = tools.REPO_ROOT) -> str:
    return str(tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["version"])


def base_key(dependencies: Sequence[str]) -> str:
    """A hash of everything the base layer depends on (a new key builds a new layer)."""
    inputs = {
        "format": 1,
        "suite": SUITE,
        "architecture": ARCHITECTURE,
        "mirror": os.environ.get(MIRROR_ENV, ""),
        "mmdebstrap": MMDEBSTRAP_OPTIONS,
        "script": CUSTOMIZE,
        "python": PYTHON_VERSION,
        "glibc": GLIBC_MINOR,
        "dependencies": sorted(dependencies),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]


def _run(argv: Sequence[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT, **kwargs
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-3000:]
        raise ImageError(f"{what} failed (exit {result.returncode}): {shlex.join(argv)}\n{output}")
    return result


# ---------------------------------------------------------------------------- base layer


def _download_wheels(dependencies: Sequence[str], dest: Path) -> None:
    """The dependencies' wheels (with their own dependencies) for the image's CPython and glibc,
    fetched by this machine's pip with its own configuration."""
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR, 4, -1)]
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    argv += ["--only-binary=:all:", "--implementation", "cp", "--python-version", PYTHON_VERSION]
    argv += [arg for platform in platforms for arg in ("--platform", platform)]
    argv += ["--dest", str(dest), *dependencies]
    _run(argv, "downloading the runtime dependencies' wheels")
    (dest / "requirements.txt").write_text("".join(f"{d}\n" for d in dependencies))


class _Hashing:
    """A write-only file that hashes and counts what passes through to ``sink``."""

    def __init__(self, sink: IO[bytes] | None = None) -> None:
        self.sink = sink
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        if self.sink is not None:
            self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        if self.sink is not None:
            self.sink.flush()

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256.hexdigest()}"


def _normalise(source: IO[bytes], out: IO[bytes]) -> str:
    """Copy mmdebstrap's tar stream (``./``-prefixed, sorted by name) to ``out`` as a gzip'ed
    OCI layer: names without ``./``, no ``/dev`` entries (the runtime provides ``/dev``), mtime
    0, numeric owners only, no extended attributes. Returns the diff ID."""
    compressed = gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=6, mtime=0)
    with compressed:
        plain = _Hashing(cast(IO[bytes], compressed))
        src = tarfile.open(fileobj=source, mode="r|")
        dst = tarfile.open(fileobj=cast(IO[bytes], plain), mode="w|", format=tarfile.PAX_FORMAT)
        with src, dst:
            for member in src:
                name = member.name.removeprefix("./").strip("/")
                if name in ("", ".") or name.startswith("dev/"):
                    continue
                member.name = name
                if member.islnk():
                    member.linkname = member.linkname.removeprefix("./")
                member.mtime = 0
                member.uname = member.gname = ""
                member.pax_headers = {}
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    return plain.digest


def _build_base(dependencies: Sequence[str], workdir: Path, out: Path) -> BaseLayer:
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is missing: `apt-get install mmdebstrap` (Debian, as root)")
    wheels = workdir / "wheels"
    wheels.mkdir()
    _download_wheels(dependencies, wheels)
    script = workdir / "customize.sh"
    script.write_text(CUSTOMIZE)
    info = workdir / "info.json"
    hook = shlex.join(["sh", str(script)]) + ' "$1" ' + shlex.join([str(wheels), str(info)])
    # nice: the build takes both cores for a minute; tests may be running alongside.
    argv = ["nice", "-n", "10", "mmdebstrap", *MMDEBSTRAP_OPTIONS]
    argv += [f"--customize-hook={hook}", SUITE, "-"]
    if mirror := os.environ.get(MIRROR_ENV):
        argv.append(mirror)
    log = workdir / "mmdebstrap.log"
    tmp = out.with_name(out.name + ".tmp")
    with log.open("wb") as log_file, tmp.open("wb") as tmp_file:
        compressed = _Hashing(tmp_file)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log_file, cwd=workdir)
        try:
            assert proc.stdout is not None
            diff_id = _normalise(proc.stdout, cast(IO[bytes], compressed))
            proc.wait(timeout=BUILD_TIMEOUT)
        except BaseException:
            proc.kill()
            proc.wait()
            tmp.unlink(missing_ok=True)
            raise
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        tail = log.read_text(errors="replace")[-3000:]
        raise ImageError(f"mmdebstrap failed (exit {proc.returncode}):\n{tail}")
    facts = json.loads(info.read_text())
    if facts["python"] != PYTHON_VERSION:
        raise ImageError(
            f"{SUITE}'s python3 is {facts['python']}, not {PYTHON_VERSION}: update PYTHON_VERSION"
        )
    base = BaseLayer(
        path=out,
        digest=compressed.digest,
        diff_id=diff_id,
        size=compressed.size,
        python=facts["python"],
        magic=facts["magic"],
        purelib=facts["purelib"],
        distributions=tuple(facts["distributions"]),
    )
    tmp.replace(out)
    return base


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive between processes (two test runs building the same layer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def base_layer(repo_root: Path = tools.REPO_ROOT, *, cache: Path | None = None) -> BaseLayer:
    """The base layer for ``repo_root``'s runtime dependencies, built unless cached."""
    cache = cache if cache is not None else tools.cache_dir() / CACHE_SUBDIR
    key = base_key(runtime_dependencies(repo_root))
    layer_path = cache / f"base-{key}.tar.gz"
    meta_path = cache / f"base-{key}.json"
    with _locked(cache / "lock"):
        if layer_path.is_file() and meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            meta["distributions"] = tuple(meta["distributions"])
            return BaseLayer(**{**meta, "path": layer_path})
        with tempfile.TemporaryDirectory(prefix="build-", dir=cache) as tmp:
            base = _build_base(runtime_dependencies(repo_root), Path(tmp), layer_path)
        meta = {k: v for k, v in asdict(base).items() if k != "path"}
        meta_tmp = meta_path.with_name(meta_path.name + ".tmp")
        meta_tmp.write_text(json.dumps(meta, indent=2) + "\n")
        meta_tmp.replace(meta_path)
        return base


# ---------------------------------------------------------------------------- kitpin layer


def build_wheel(repo_root: Path, dest: Path) -> Path:
    """kitpin's wheel, built from a copy of what the ``Containerfile`` copies (no stray
    ``build/`` or ``*.egg-info`` in the work tree)."""
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(repo_root / name, src / name)
    shutil.copytree(
        repo_root / "controller",
        src / "controller",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    out = dest / "wheel"
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
    argv += ["--no-deps", "--wheel-dir", str(out), str(src)]
    _run(argv, "building kitpin's wheel")
    (wheel,) = out.glob("kitpin-*.whl")
    return wheel


def _console_scripts(entry_points: str) -> dict[str, tuple[str, str]]:
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(entry_points)
    scripts: dict[str, tuple[str, str]] = {}
    if parser.has_section("console_scripts"):
        for name, value in parser.items("console_scripts"):
            module, _, attr = value.split("[")[0].strip().partition(":")
            scripts[name] = (module.strip(), attr.strip())
    return scripts


def _script(module: str, attr: str) -> bytes:
    top, _, rest = attr.partition(".")
    call = f"{top}.{rest}" if rest else top
    return (
        f"#!{VENV}/bin/python\n"
        f"import sys\n"
        f"from {module} import {top}\n"
        f'if __name__ == "__main__":\n'
        f"    sys.exit({call}())\n"
    ).encode()


def kitpin_layer(wheel: Path, base: BaseLayer, workdir: Path) -> modelkit.Blob:
    """The wheel unpacked into the venv's site-packages, with bytecode, plus its console scripts
    in ``/opt/kitpin/bin``: an uncompressed layer (:func:`harness.images.layer`)."""
    if importlib.util.MAGIC_NUMBER.hex() != base.magic:
        raise ImageError(
            f"kitpin's bytecode is compiled by this Python ({sys.version.split()[0]}), which "
            f"does not match the image's Python {base.python}: run the harness with "
            f"Python {base.python}"
        )
    root = workdir / "root"
    site = root / base.purelib.strip("/")
    scripts: dict[str, tuple[str, str]] = {}
    with zipfile.ZipFile(wheel) as whl:
        for name in whl.namelist():
            if name.endswith("/"):
                continue
            parts = name.split("/")
            if parts[0].endswith(".data"):
                if parts[1] not in ("purelib", "platlib"):
                    raise ImageError(f"{wheel.name}: {name} is not installable here")
                parts = parts[2:]
            target = site.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(whl.read(name))
            if parts[0].endswith(".dist-info") and parts[-1] == "entry_points.txt":
                scripts.update(_console_scripts(whl.read(name).decode()))
    dist_info = next(site.glob("*.dist-info"))
    (dist_info / "INSTALLER").write_text("harness.kitpin_image\n")
    packages = [p for p in site.iterdir() if p.suffix not in (".dist-info", ".data")]
    argv = [sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash"]
    argv += ["-s", str(root), "-p", "/", *(str(p) for p in sorted(packages))]
    _run(argv, "compiling kitpin's bytecode", env={**os.environ, "PYTHONHASHSEED": "0"})
    entries = [
        images.Entry(path=str(path.relative_to(root)), mode=0o644, data=path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file()
    ]
    entries += [
        images.Entry(path=f"{VENV}/bin/{name}", mode=0o755, data=_script(module, attr))
        for name, (module, attr) in sorted(scripts.items())
    ]
    if "kitpin" not in scripts:
        raise ImageError(f"{wheel.name} has no `kitpin` console script")
    return images.layer(entries)


# ---------------------------------------------------------------------------- the image


def image(base: BaseLayer, kitpin: modelkit.Blob) -> modelkit.Packed:
    """The OCI image manifest over the gzip'ed base layer and the kitpin layer."""
    base_blob = modelkit.Blob(media_type=MEDIA_TYPE_LAYER_GZIP, data=base.path.read_bytes())
    if base_blob.digest != base.digest:
        raise ImageError(f"{base.path} is corrupt (digest {base_blob.digest}): delete it")
    config_obj = {
        "architecture": ARCHITECTURE,
        "os": "linux",
        "config": {
            "User": f"{UID}:{GID}",
            "ExposedPorts": {"8443/tcp": {}},
            "Env": list(ENV),
            "Entrypoint": ["kitpin"],
            "Cmd": ["run", "--help"],
            "WorkingDir": "/",
            "Labels": LABELS,
        },
        "rootfs": {"type": "layers", "diff_ids": [base.diff_id, kitpin.digest]},
    }
    return images.packed(config_obj, (base_blob, kitpin))


def build(repo_root: Path = tools.REPO_ROOT) -> modelkit.Packed:
    """The image for ``repo_root`` (the base layer from the cache when there)."""
    base = base_layer(repo_root)
    with tempfile.TemporaryDirectory(prefix="kitpin-image-") as tmp:
        workdir = Path(tmp)
        wheel = build_wheel(repo_root, workdir)
        return image(base, kitpin_layer(wheel, base, workdir))


def kitpin_image(registry_host: str, *, repo_root: Path = tools.REPO_ROOT) -> str:
    """Build (or reuse) and push; returns 'HOST/kitpin-node/kitpin:<tag>@sha256:<digest>'.

    The tag is the project's version; the base layer is built once per set of inputs (a
    minute or two) and then taken from the cache, the kitpin layer is rebuilt every time.
    """
    started = time.monotonic()
    packed = build(repo_root)
    ref = images.push(registry_host, NAME, project_version(repo_root), packed)
    print(f"kitpin image {ref} ({time.monotonic() - started:.1f}s)", file=sys.stderr)
    return ref
