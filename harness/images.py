"""Small OCI container images assembled by the harness, for the node (``harness/node.py``).

The node pulls nothing from the internet: its images are built here from files already on
this machine and pushed to the local registry (:class:`~harness.registry.RegistryServer`)
with the harness's own pushing code (:func:`harness.modelkit.push_packed`, the OCI
distribution API; no ``docker``, ``kit`` or ``crane``):

* :func:`busybox_image`: Debian's static busybox (package ``busybox-static``, ``/bin/busybox``)
  with a symlink for every applet (``busybox --list-full``), ``/tmp`` and a minimal
  ``/etc/passwd``; the app container of the demo runs it (``sha256sum`` of what kit unpacked);
* :func:`pause_image`: the same layer, ``sleep infinity`` as its entrypoint: the sandbox
  ("pause") image containerd runs for each Pod (containerd stops a sandbox with SIGKILL, so
  a ``sleep`` as PID 1 is enough);
* :func:`kit_image`: the busybox layer plus the real ``kit`` binary (static, :mod:`harness.kit`)
  at ``/usr/local/bin/kit``: the init container that runs ``kit unpack``. Its home
  (``KITOPS_HOME=/var/lib/kitops``) holds ``disable-update-notifications``, what
  ``kit version --show-update-notifications=false`` writes: without it every remote command
  asks ``api.github.com`` for the newest release (a DNS query leaves the machine, seen with
  ``strace -e trace=connect``); with it kit dials the registry on loopback only.

Layers are uncompressed tars (``application/vnd.oci.image.layer.v1.tar``, so a layer's digest
is its diff ID) with fixed times and owners: the same inputs give the same digests, and a
second push uploads nothing (the registry has every blob).

    pushed = images.push_node_images(registry.host, kit=kit_path)
    pushed.busybox                  # "127.0.0.1:PORT/kitpin-node/busybox:1@sha256:..."
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import modelkit
from harness.procs import HarnessError

BUSYBOX = Path("/bin/busybox")
"""Where Debian's ``busybox-static`` puts the static binary."""
REPOSITORY_PREFIX = "kitpin-node"
"""Repositories of the node's images in the local registry (``kitpin-node/busybox`` ...)."""
KIT_PATH = "usr/local/bin/kit"
KITOPS_HOME = "var/lib/kitops"
ENV = ("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/tmp")
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\n"


class ImageError(HarnessError):
    """An input of an image is missing or unusable (the message says how to get it)."""


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One tar entry: a regular file (``data``), a directory (neither) or a symlink (``link``)."""

    path: str
    mode: int = 0o755
    data: bytes | None = None
    link: str | None = None


def layer(entries: Sequence[Entry]) -> modelkit.Blob:
    """An uncompressed OCI layer holding ``entries`` (parent directories added), owned by
    root, mtime 0, in path order."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        path = entry.path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts)):
            by_path.setdefault("/".join(parts[:i]), Entry(path="/".join(parts[:i])))
        by_path[path] = Entry(path=path, mode=entry.mode, data=entry.data, link=entry.link)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(by_path):
            entry = by_path[path]
            info = tarfile.TarInfo(path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = entry.mode
            if entry.link is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link
                info.mode = 0o777
                tar.addfile(info)
            elif entry.data is not None:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
    return modelkit.Blob(media_type=modelkit.MEDIA_TYPE_IMAGE_LAYER, data=out.getvalue())


def image(
    layers: Sequence[modelkit.Blob],
    *,
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = (),
    env: Sequence[str] = ENV,
) -> modelkit.Packed:
    """An OCI image manifest (linux/amd64) over ``layers`` with this process configuration."""
    process: dict[str, Any] = {"Env": list(env), "WorkingDir": "/"}
    if entrypoint:
        process["Entrypoint"] = list(entrypoint)
    if cmd:
        process["Cmd"] = list(cmd)
    config_obj = {
        "architecture": "amd64",
        "os": "linux",
        "config": process,
        "rootfs": {"type": "layers", "diff_ids": [blob.digest for blob in layers]},
    }
    return packed(config_obj, layers)


def packed(config_obj: Mapping[str, Any], layers: Sequence[modelkit.Blob]) -> modelkit.Packed:
    """The image manifest over ``layers`` with the image configuration ``config_obj`` (whose
    ``rootfs.diff_ids`` name the layers' uncompressed digests)."""
    config = modelkit.Blob(
        media_type=modelkit.MEDIA_TYPE_IMAGE_CONFIG, data=modelkit.go_json(dict(config_obj))
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": modelkit.MEDIA_TYPE_MANIFEST,
        "config": config.descriptor(),
        "layers": [blob.descriptor() for blob in layers],
    }
    return modelkit.Packed(
        manifest=modelkit.go_json(manifest),
        media_type=modelkit.MEDIA_TYPE_MANIFEST,
        config=config,
        layers=tuple(layers),
    )


# ---------------------------------------------------------------------------- the images


def _static_busybox(busybox: Path) -> bytes:
    try:
        data = busybox.read_bytes()
    except FileNotFoundError:
        raise ImageError(
            f"{busybox} is missing: install Debian's busybox-static "
            "(`hack/tools.sh node` does, as root)"
        ) from None
    # A dynamically linked busybox (Debian's `busybox` package) has a PT_INTERP segment and
    # would not run in an image without a libc.
    if b"/lib64/ld-linux" in data[:4096] or b"/lib/ld-linux" in data[:4096]:
        raise ImageError(f"{busybox} is dynamically linked: install busybox-static instead")
    return data


def busybox_layer(busybox: Path = BUSYBOX) -> modelkit.Blob:
    """``/bin/busybox``, a symlink per applet, ``/tmp`` (1777), ``/etc/passwd`` and
    ``/etc/group``, empty ``/proc``, ``/sys``, ``/dev`` (the runtime mounts them)."""
    data = _static_busybox(busybox)
    listed = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True, timeout=10
    ).stdout.split()
    entries = [Entry(path="bin/busybox", data=data)]
    entries += [Entry(path=p, link="/bin/busybox") for p in listed if p != "bin/busybox"]
    entries += [Entry(path=p) for p in ("proc", "sys", "dev", "root", "usr/local/bin")]
    entries += [
        Entry(path="tmp", mode=0o1777),
        Entry(path="etc/passwd", mode=0o644, data=PASSWD),
        Entry(path="etc/group", mode=0o644, data=GROUP),
    ]
    return layer(entries)


def busybox_image(busybox: Path = BUSYBOX) -> modelkit.Packed:
    """Static busybox; ``sh`` by default."""
    return image([busybox_layer(busybox)], cmd=["/bin/sh"])


def pause_image(busybox: Path = BUSYBOX) -> modelkit.Packed:
    """The sandbox image: ``sleep infinity`` (the same layer as :func:`busybox_image`)."""
    return image([busybox_layer(busybox)], entrypoint=["/bin/sleep", "infinity"])


def kit_image(kit: Path, busybox: Path = BUSYBOX) -> modelkit.Packed:
    """Static busybox plus the ``kit`` binary at ``/usr/local/bin/kit`` (entrypoint), its
    home with update notifications off."""
    try:
        binary = kit.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read the kit binary {kit}: {e}") from e
    kit_layer = layer(
        [
            Entry(path=KIT_PATH, data=binary),
            Entry(path=f"{KITOPS_HOME}/disable-update-notifications", mode=0o644, data=b""),
        ]
    )
    return image(
        [busybox_layer(busybox), kit_layer],
        entrypoint=["/" + KIT_PATH],
        env=(*ENV, f"KITOPS_HOME=/{KITOPS_HOME}"),
    )


# ---------------------------------------------------------------------------- pushing


@dataclass(frozen=True, kw_only=True)
class NodeImages:
    """The node's images in the local registry, as pinned references (``host/repo:tag@digest``)."""

    busybox: str
    pause: str
    kit: str | None
    """None when no kit binary was given."""

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v is not None}


def push(registry: str, name: str, tag: str, packed: modelkit.Packed) -> str:
    """Push ``packed`` as ``<registry>/kitpin-node/<name>:<tag>`` over plain HTTP; the pinned
    reference."""
    repository = f"{REPOSITORY_PREFIX}/{name}"
    digest = modelkit.push_packed(registry, repository, tag, packed)
    return f"{registry}/{repository}:{tag}@{digest}"


def push_node_images(
    registry: str, *, kit: Path | None = None, busybox: Path = BUSYBOX
) -> NodeImages:
    """Assemble and push busybox, pause and (when ``kit`` is given) kit images to
    ``registry`` (``host:port``, plain HTTP)."""
    return NodeImages(
        busybox=push(registry, "busybox", "1", busybox_image(busybox)),
        pause=push(registry, "pause", "1", pause_image(busybox)),
        kit=push(registry, "kit", "1", kit_image(kit, busybox)) if kit is not None else None,
    )


def references(images: Mapping[str, str]) -> str:
    """``name: reference`` lines, for logs."""
    return "\n".join(f"  {name:8} {ref}" for name, ref in images.items())
