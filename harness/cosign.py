"""The real ``cosign`` CLI (sigstore), built from the Go module proxy by ``hack/tools.sh``
into the tools cache, run against the test registries.

:func:`binary` finds it the way :mod:`harness.tools` finds the other pinned binaries
(``$KITPIN_TOOLS_DIR/cosign``, else ``<cache>/cosign-$COSIGN_VERSION/cosign``) and builds
it when missing (never a skip). :class:`Cosign` runs it in a throwaway home: no
``~/.docker`` or ``~/.sigstore`` of the developer's is read or written, keys are written
unencrypted-by-password (``COSIGN_PASSWORD`` empty), prompts are answered yes, and nothing
leaves the machine (``--tlog-upload=false``: no Rekor; plain HTTP to the loopback registry
with ``--allow-insecure-registry``).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import tools
from harness.procs import HarnessError

VERSION_VARIABLE = "COSIGN_VERSION"
TIMEOUT = 120.0
"""Seconds one cosign command may take (each takes well under a few seconds here)."""


def candidates() -> list[Path]:
    """Every place :func:`binary` looks for ``cosign``, in order."""
    places: list[Path] = []
    if tools_dir := os.environ.get("KITPIN_TOOLS_DIR"):
        places.append(Path(tools_dir) / "cosign")
    version = tools.versions().get(VERSION_VARIABLE)
    if not version:
        raise HarnessError(f"{tools.TOOLS_ENV} does not pin {VERSION_VARIABLE}")
    places.append(tools.cache_dir() / f"cosign-{version}" / "cosign")
    return places


def binary() -> Path:
    """The pinned ``cosign``, built by ``hack/tools.sh`` first when it is missing."""
    for place in candidates():
        if place.is_file() and os.access(place, os.X_OK):
            return place
    result = subprocess.run(
        ["bash", str(tools.TOOLS_SH), "build"],
        cwd=tools.REPO_ROOT,
        stdout=subprocess.DEVNULL,
        check=False,
    )
    for place in candidates():
        if place.is_file() and os.access(place, os.X_OK):
            return place
    raise HarnessError(
        f"cosign not found (looked in: {', '.join(map(str, candidates()))}) and hack/tools.sh "
        f"exited {result.returncode}; run `make tools` to see why"
    )


@dataclass(frozen=True)
class KeyPair:
    key: Path
    """The private key (encrypted with the empty password, as cosign writes it)."""
    pub: Path

    @property
    def public_pem(self) -> str:
        return self.pub.read_text()


class Cosign:
    """``cosign`` commands in ``workdir`` (a throwaway home unless given)."""

    def __init__(self, workdir: Path | None = None, *, path: Path | None = None) -> None:
        self.path = path if path is not None else binary()
        self.workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="cosign-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        home = self.workdir / "home"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "DOCKER_CONFIG": str(home / ".docker"),
            "TUF_ROOT": str(home / ".sigstore"),
            "COSIGN_PASSWORD": "",
            "COSIGN_YES": "true",
        }
        env.update(extra or {})
        return env

    def run(
        self, *args: str, env: Mapping[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``cosign ARGS``; raises :class:`HarnessError` with its output when it fails and
        ``check`` is set."""
        result = subprocess.run(
            [str(self.path), *args],
            cwd=self.workdir,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        if check and result.returncode != 0:
            raise HarnessError(
                f"cosign {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n"
                f"{result.stderr}"
            )
        return result

    def version(self) -> str:
        out = self.run("version").stdout
        for line in out.splitlines():
            if line.startswith("GitVersion:"):
                return line.split(":", 1)[1].strip()
        return out.strip()

    def generate_key_pair(self, prefix: str = "cosign") -> KeyPair:
        """``cosign generate-key-pair`` (ECDSA P-256): ``<prefix>.key`` and ``<prefix>.pub``."""
        self.run("generate-key-pair", "--output-key-prefix", prefix)
        return KeyPair(self.workdir / f"{prefix}.key", self.workdir / f"{prefix}.pub")

    def import_key_pair(self, private_pem: bytes, prefix: str) -> KeyPair:
        """``cosign import-key-pair`` of a PKCS #8 PEM (RSA, ECDSA or Ed25519)."""
        source = self.workdir / f"{prefix}.import.pem"
        source.write_bytes(private_pem)
        self.run("import-key-pair", "--key", str(source), "--output-key-prefix", prefix)
        return KeyPair(self.workdir / f"{prefix}.key", self.workdir / f"{prefix}.pub")

    def sign(
        self,
        reference: str,
        keys: KeyPair,
        *,
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``cosign sign --key`` without a transparency log, to a plain-HTTP registry."""
        return self.run(
            "sign",
            "--key",
            str(keys.key),
            "--tlog-upload=false",
            "--allow-insecure-registry",
            *options,
            reference,
            env=env,
        )

    def verify(
        self,
        reference: str,
        pub: Path,
        *,
        options: Sequence[str] = ("--insecure-ignore-tlog=true",),
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``cosign verify --key``; not checked: read ``returncode``."""
        return self.run(
            "verify",
            "--key",
            str(pub),
            "--allow-insecure-registry",
            *options,
            reference,
            env=env,
            check=False,
        )

    def minimal_trusted_root(self) -> Path:
        """A trusted root with no authorities: what ``cosign verify`` of a sigstore bundle
        asks for (``--trusted-root``) when it cannot reach the public TUF repository and the
        signature was made with a key and no log."""
        path = self.workdir / "trusted_root.json"
        path.write_text(
            '{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}'
        )
        return path
