"""ModelKits packed and pushed by the real ``kit`` CLI, pinned by kitpin through the real
apiserver, then pulled back by kit by the pinned reference (issue 19, part 5).

kit comes from ``$KITPIN_KIT`` or ``PATH`` (:mod:`harness.kit`); without it the module is
skipped with the reason. Each :class:`~harness.kit.Kit` has a home of its own, so every
``unpack``/``inspect`` below reads the registry, never kit's local storage; all talk plain HTTP
to the loopback registry (``--plain-http``). kit accepts both pinned spellings,
``host/repo:tag@sha256:...`` (what kitpin writes) and ``host/repo@sha256:...``, and fetches the
manifest by the digest in both: the registry's access log shows no request for the tag.

A failing test prints kit's transcript (every command, exit code and output) with its
captured output, besides the kitpin, registry and control plane logs the e2e conftest adds.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from harness import kit as harness_kit
from harness import modelkit
from harness.registry import RegistryServer
from tests.e2e.conftest import TEMPLATE_ENV, Kitpin, at, deployment, pinned_ref, pins, ref_to

_KIT_ABSENT = harness_kit.why_absent()

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(_KIT_ABSENT is not None, reason=_KIT_ABSENT or ""),
]

Kits = Callable[[str], harness_kit.Kit]


@pytest.fixture
def kits(tmp_path: Path) -> Iterator[Kits]:
    """``kits(name)`` → a new :class:`~harness.kit.Kit` with an empty home under ``tmp_path``.
    Their transcripts are printed at teardown (shown by pytest for a failing test only)."""
    path = harness_kit.find()
    made: list[harness_kit.Kit] = []

    def make(name: str) -> harness_kit.Kit:
        made.append(harness_kit.Kit(tmp_path / f"kit-{name}", path=path))
        return made[-1]

    yield make
    for kit in made:
        print(f"--- kit transcript ({kit.workdir.name}) ---")
        print("\n".join(kit.transcript))


def _random_files(kitfile: Mapping[str, Any]) -> dict[str, bytes]:
    """Fresh random bytes for every layer path: nothing another test pushed can match."""
    return {path: secrets.token_bytes(3000) for path in harness_kit.layer_paths(kitfile)}


def _hashes(files: Mapping[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}


def _kit_manifest_requests(registry: RegistryServer, repository: str, reference: str) -> int:
    """GET/HEAD ``/v2/<repository>/manifests/<reference>`` sent by kit (its User-Agent is
    ``kitops-cli/<version>``; kitpin's own requests, e.g. its drift watch, are not counted).
    kit has exited before this is read, so its requests are in the log already."""
    line = re.compile(
        rf'"(?:GET|HEAD) /v2/{re.escape(repository)}/manifests/{re.escape(reference)} HTTP/'
        r'[^"]*" .*"kitops-cli/'
    )
    text = registry.log_path.read_text(errors="replace")
    return sum(1 for entry in text.splitlines() if line.search(entry))


def test_kit_pushed_modelkit_is_pinned_and_unpacks_by_the_pinned_digest(
    kitpin: Kitpin, namespace: str, repo: str, kits: Kits, tmp_path: Path
) -> None:
    registry = kitpin.registries.plain
    packer = kits("packer")
    kitfile = modelkit.default_kitfile("llama")  # model + code + datasets + docs
    first_files = _random_files(kitfile)
    tagged = ref_to(registry, repo, "production")
    packed = packer.pack(harness_kit.write_context(tmp_path / "v1", kitfile, first_files), tagged)
    first = packer.push(tagged)
    assert first == packed

    created = kitpin.create(deployment("llama", namespace, tagged))

    assert created.ok, created.stderr
    pinned = pinned_ref(registry, repo, "production", first)
    assert at(created.obj, TEMPLATE_ENV) == pinned
    record = pins(created.obj)
    assert record is not None
    assert record[TEMPLATE_ENV]["from"] == tagged
    assert record[TEMPLATE_ENV]["digest"] == first

    # kit inspect --remote agrees with the digest kitpin pinned, by tag and by the pin.
    assert kits("inspect-tag").digest(tagged, remote=True) == first
    assert kits("inspect-pin").digest(pinned, remote=True) == first

    # The tag moves to a new ModelKit.
    second_files = _random_files(kitfile)
    packer.pack(harness_kit.write_context(tmp_path / "v2", kitfile, second_files), tagged)
    second = packer.push(tagged)
    assert second != first
    assert kits("inspect-moved").digest(tagged, remote=True) == second

    # kit unpack of the pinned reference (both spellings) restores the bytes packed first,
    # fetched by digest: kit never asks for the tag.
    tag_asked = _kit_manifest_requests(registry, repo, "production")
    digest_asked = _kit_manifest_requests(registry, repo, first)
    by_pin = kits("unpack-pin").unpack(pinned, tmp_path / "out-pin")
    by_digest = kits("unpack-digest").unpack(
        f"{registry.host}/{repo}@{first}", tmp_path / "out-digest"
    )
    assert by_pin.sha256() == _hashes(first_files)
    assert by_digest.sha256() == _hashes(first_files)
    assert _kit_manifest_requests(registry, repo, "production") == tag_asked
    assert _kit_manifest_requests(registry, repo, first) >= digest_asked + 2

    # Unpacking the tag itself now gives the new bytes: what the pin protects against.
    assert kits("unpack-tag").unpack(tagged, tmp_path / "out-tag").sha256() == _hashes(second_files)


def test_kit_child_of_a_parent_modelkit_is_pinned_and_unpacks_with_its_parent(
    kitpin: Kitpin, namespace: str, repo: str, kits: Kits, tmp_path: Path
) -> None:
    """A Kitfile whose ``model.path`` is a parent ModelKit: kitpin pins the child; kit pulls
    the child by that digest and then its parent by the tag the child's Kitfile names (the
    pin does not reach the parent: KitOps issue #899, ModelKit reference notes §1)."""
    registry = kitpin.registries.plain
    packer = kits("packer")
    parent_repo, child_repo = f"{repo}/base", f"{repo}/tuned"
    parent_tag = ref_to(registry, parent_repo, "v1")
    parent_kitfile: dict[str, Any] = {
        "manifestVersion": "1.0.0",
        "package": {"name": "base"},
        "model": {"name": "base", "path": "base.safetensors", "format": "safetensors"},
    }
    parent_files = _random_files(parent_kitfile)
    packer.pack(
        harness_kit.write_context(tmp_path / "parent", parent_kitfile, parent_files), parent_tag
    )
    packer.push(parent_tag)
    child_kitfile: dict[str, Any] = {
        "manifestVersion": "1.0.0",
        "package": {"name": "tuned", "version": "1.1.0"},
        "model": {"name": "tuned", "path": parent_tag},
        "datasets": [{"name": "tune", "path": "data/tune.jsonl"}],
        "docs": [{"path": "README.md"}],
    }
    child_files = _random_files(child_kitfile)
    child_tag = ref_to(registry, child_repo, "v1")
    # kit pack resolves the parent from its local storage (packed above).
    packer.pack(
        harness_kit.write_context(tmp_path / "child", child_kitfile, child_files), child_tag
    )
    child = packer.push(child_tag)

    created = kitpin.create(deployment("tuned", namespace, child_tag))

    assert created.ok, created.stderr
    pinned = pinned_ref(registry, child_repo, "v1", child)
    assert at(created.obj, TEMPLATE_ENV) == pinned

    child_tag_asked = _kit_manifest_requests(registry, child_repo, "v1")
    parent_tag_asked = _kit_manifest_requests(registry, parent_repo, "v1")
    unpacked = kits("unpack").unpack(pinned, tmp_path / "out")
    assert unpacked.sha256() == _hashes({**parent_files, **child_files})
    assert _kit_manifest_requests(registry, child_repo, "v1") == child_tag_asked
    assert _kit_manifest_requests(registry, parent_repo, "v1") > parent_tag_asked, (
        "kit no longer pulls the parent by its tag: update docs/kit.md and this test"
    )
