"""The real KitOps ``kit`` CLI, when one is installed, run against the test registries.

Where it comes from: ``$KITPIN_KIT`` (the path of a ``kit`` binary; ``.ci/run`` sets it to
``../shared/tools/kit-1.7.0-19/kit`` when that file exists), else ``kit`` on ``PATH``.
Unlike the pinned Go tools (:mod:`harness.tools`), kit is optional: the Go module proxy does
not serve it, so ``hack/tools.sh`` cannot build it. :func:`find` raises :class:`KitNotFoundError`
saying where it looked; the tests that need kit skip with that reason (``tests/kit/``,
``tests/e2e/test_kit_e2e.py``) and ``make demo`` packs with :mod:`harness.modelkit` instead.
A ``$KITPIN_KIT`` that names no executable file is a mistake, not an absence: it raises
:class:`~harness.procs.HarnessError` and the tests fail.

:class:`Kit` runs every command with a home of its own (a throwaway directory unless given):

* ``--config DIR/config`` and ``KITOPS_HOME`` (kit's storage, credentials and caches; kit's
  default is ``$XDG_DATA_HOME/kitops``), ``HOME`` and ``XDG_*`` under ``DIR`` too, so no
  developer's ``~/.local/share/kitops`` or ``~/.docker`` is read or written;
* update notifications off (``kit version --show-update-notifications=false``, run once per
  home): otherwise every remote command asks ``api.github.com`` for the newest release;
* ``--progress none`` (no progress bars in logs);
* ``--plain-http`` on remote commands unless told otherwise: the test registries are plain
  HTTP on loopback (kit's other switch, ``--tls-verify=false``, still speaks TLS).

kit's local storage (``DIR/config/storage``) is an OCI image layout (``oci-layout``,
``blobs/sha256/<hex>``): :meth:`Kit.local_blob` reads the exact bytes ``kit pack`` wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import modelkit
from harness.procs import HarnessError

ENV_VARIABLE = "KITPIN_KIT"
"""The environment variable naming the ``kit`` binary to use (before ``PATH``)."""

TIMEOUT = 120.0
"""Seconds one kit command may take (each takes well under a second here)."""

FILE_MODE = 0o644
DIR_MODE = 0o755
"""Modes :func:`write_context` gives files and directories: kit records a file's permission
bits in its layers, and these are the ones :func:`harness.modelkit.tar_layer` writes."""

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PUSHED = re.compile(r"Pushed (sha256:[0-9a-f]{64})")


class KitNotFoundError(HarnessError):
    """No kit binary is installed here (the message says where :func:`find` looked)."""


def find() -> Path:
    """The ``kit`` to use: ``$KITPIN_KIT``, else ``kit`` on ``PATH``.

    Raises :class:`KitNotFoundError` when neither is there, and :class:`HarnessError` when
    ``$KITPIN_KIT`` is set but names no executable file."""
    if explicit := os.environ.get(ENV_VARIABLE):
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise HarnessError(f"{ENV_VARIABLE}={explicit} is not an executable file")
        return path.resolve()
    on_path = shutil.which("kit")
    if on_path is None:
        raise KitNotFoundError(
            f"the KitOps kit CLI is not installed: {ENV_VARIABLE} is not set and there is no "
            "`kit` on PATH (docs/kit.md; `.ci/run` sets "
            f"{ENV_VARIABLE} to ../shared/tools/kit-1.7.0-19/kit when that file exists)"
        )
    return Path(on_path).resolve()


def why_absent() -> str | None:
    """Why kit cannot be used here (a skip reason), or None when :func:`find` finds it.
    A misconfigured ``$KITPIN_KIT`` raises :class:`HarnessError` (a failure, not a skip)."""
    try:
        find()
    except KitNotFoundError as e:
        return str(e)
    return None


def layer_paths(kitfile: Mapping[str, Any]) -> list[str]:
    """The Kitfile paths that become layers (model, parts, code, datasets, docs), in kit's
    order; a ``model.path`` naming a parent ModelKit is not one."""
    _, specs = modelkit.normalise_kitfile(kitfile)
    return [spec.path for spec in specs]


def context_files(kitfile: Mapping[str, Any], *, seed: int = 0) -> dict[str, bytes]:
    """Deterministic bytes for every layer path of ``kitfile`` (:func:`modelkit.payload`):
    the same ``files`` for ``kit pack`` (:func:`write_context`) and the harness packer."""
    return {path: modelkit.payload(path, seed) for path in layer_paths(kitfile)}


def write_context(directory: Path, kitfile: Mapping[str, Any], files: Mapping[str, bytes]) -> Path:
    """Write a ``kit pack`` context: ``Kitfile`` (YAML) and every layer path's bytes from
    ``files`` (each layer path must be there), files ``0644`` and directories ``0755`` whatever
    the umask. Returns ``directory``."""
    missing = [p for p in layer_paths(kitfile) if p not in files]
    if missing:
        raise HarnessError(f"no bytes given for the Kitfile path(s) {', '.join(missing)}")
    directory.mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        target = directory / relative
        if directory.resolve() not in target.resolve().parents:
            raise HarnessError(f"{relative!r} is outside the context directory")
        for parent in reversed(target.relative_to(directory).parents[:-1]):
            (directory / parent).mkdir(exist_ok=True)
            (directory / parent).chmod(DIR_MODE)
        target.write_bytes(data)
        target.chmod(FILE_MODE)
    text = yaml.safe_dump(dict(kitfile), sort_keys=False, allow_unicode=False)
    (directory / "Kitfile").write_text(text)
    return directory


@dataclass(frozen=True, kw_only=True)
class Unpacked:
    """What ``kit unpack`` wrote: every file under the target directory, by relative path."""

    directory: Path
    files: Mapping[str, bytes]

    def sha256(self) -> dict[str, str]:
        """``{path: hex sha256}`` of every file but the Kitfile (kit rewrites that as YAML)."""
        return {
            path: hashlib.sha256(data).hexdigest()
            for path, data in self.files.items()
            if path != "Kitfile"
        }


class Kit:
    """``kit`` commands in ``workdir`` (a throwaway directory unless given), with a home of
    their own; see the module docstring."""

    def __init__(self, workdir: Path | None = None, *, path: Path | None = None) -> None:
        self.path = path if path is not None else find()
        self.workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="kit-"))
        self.home = self.workdir / "config"
        """kit's ``--config`` directory (storage, credentials, caches)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.transcript: list[str] = []
        """Every command run so far with its exit code and output (for a failing test)."""
        self.run("version", "--show-update-notifications=false")

    def env(self) -> dict[str, str]:
        user_home = self.workdir / "home"
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(user_home),
            "XDG_DATA_HOME": str(user_home / ".local" / "share"),
            "XDG_CONFIG_HOME": str(user_home / ".config"),
            "XDG_CACHE_HOME": str(user_home / ".cache"),
            "KITOPS_HOME": str(self.home),
            "DOCKER_CONFIG": str(user_home / ".docker"),
            "NO_COLOR": "1",
        }

    def argv(self, *args: str) -> list[str]:
        return [str(self.path), "--config", str(self.home), "--progress", "none", *args]

    def run(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,  # noqa: A002
    ) -> subprocess.CompletedProcess[str]:
        """``kit ARGS``; raises :class:`HarnessError` with its output when it fails and
        ``check`` is set."""
        result = subprocess.run(
            self.argv(*args),
            cwd=self.workdir,
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        self.transcript.append(
            f"$ kit {' '.join(args)}  (exit {result.returncode})\n{result.stdout}{result.stderr}"
        )
        if check and result.returncode != 0:
            raise HarnessError(
                f"kit {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n"
                f"{result.stderr}"
            )
        return result

    # -- commands ---------------------------------------------------------------------

    def version(self) -> str:
        """What ``kit version`` prints after ``Version:`` (``1.7.0-19-ga041892``): also what
        kit stamps into ``ml.kitops.modelkit.cli-version``."""
        out = self.run("version").stdout
        for line in out.splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
        raise HarnessError(f"kit version printed no version:\n{out}")

    def supports(self, command: str, flag: str) -> bool:
        """Whether ``kit COMMAND --help`` lists ``flag`` (``--use-model-pack`` came in 1.10)."""
        return flag in self.run(command, "--help").stdout

    def pack(self, context: Path, tag: str, *, extra: Sequence[str] = ()) -> str:
        """``kit pack CONTEXT -t TAG`` into local storage; the manifest digest."""
        self.run("pack", str(context), "-t", tag, *extra)
        return self.digest(tag)

    def push(self, reference: str, *, plain_http: bool = True) -> str:
        """``kit push REFERENCE`` (packed or tagged locally before); the digest kit pushed."""
        result = self.run("push", reference, *self._remote(plain_http))
        found = _PUSHED.search(result.stdout + result.stderr)
        if found is None:
            raise HarnessError(f"kit push {reference} printed no digest:\n{result.stdout}")
        return found.group(1)

    def tag(self, source: str, target: str) -> None:
        """``kit tag SOURCE TARGET`` in local storage."""
        self.run("tag", source, target)

    def inspect(
        self, reference: str, *, remote: bool = False, plain_http: bool = True
    ) -> dict[str, Any]:
        """``kit inspect [--remote] REFERENCE``: ``digest``, ``cliVersion``, ``kitfile``,
        ``manifest`` (re-serialised by kit: for exact bytes use :meth:`local_blob`)."""
        args = ["inspect", reference]
        if remote:
            args += ["--remote", *self._remote(plain_http)]
        answer = json.loads(self.run(*args).stdout)
        if not isinstance(answer, dict):
            raise HarnessError(f"kit inspect {reference} printed {answer!r}")
        return answer

    def digest(self, reference: str, *, remote: bool = False, plain_http: bool = True) -> str:
        """The manifest digest kit reports for ``reference`` (local storage unless remote)."""
        value = self.inspect(reference, remote=remote, plain_http=plain_http).get("digest")
        if not isinstance(value, str) or not _DIGEST.fullmatch(value):
            raise HarnessError(f"kit inspect {reference} reported digest {value!r}")
        return value

    def unpack(
        self,
        reference: str,
        directory: Path,
        *,
        plain_http: bool = True,
        filters: Sequence[str] = (),
    ) -> Unpacked:
        """``kit unpack REFERENCE -d DIRECTORY``; every file it wrote."""
        args = ["unpack", reference, "-d", str(directory), *self._remote(plain_http)]
        for f in filters:
            args += ["--filter", f]
        self.run(*args)
        files = {
            p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*"))
            if p.is_file()
        }
        return Unpacked(directory=directory, files=files)

    def login(
        self, registry: str, username: str, password: str, *, plain_http: bool = True
    ) -> None:
        """``kit login REGISTRY -u USER --password-stdin``; credentials stay in this home."""
        self.run(
            "login",
            registry,
            "-u",
            username,
            "--password-stdin",
            *self._remote(plain_http),
            input=password,
        )

    # -- local storage ----------------------------------------------------------------

    def local_blob(self, digest: str) -> bytes:
        """The exact bytes of blob ``digest`` in kit's local storage (an OCI image layout),
        checked against the digest."""
        if not _DIGEST.fullmatch(digest):
            raise HarnessError(f"not a sha256 digest: {digest!r}")
        path = self.home / "storage" / "blobs" / "sha256" / digest.removeprefix("sha256:")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise HarnessError(f"{digest} is not in kit's local storage ({path})") from None
        if modelkit.sha256_digest(data) != digest:
            raise HarnessError(f"{path} does not hash to {digest}")
        return data

    def local_manifest(self, reference: str) -> bytes:
        """The exact manifest bytes ``kit pack`` stored for ``reference``."""
        return self.local_blob(self.digest(reference))

    @staticmethod
    def _remote(plain_http: bool) -> list[str]:
        return ["--plain-http"] if plain_http else []
