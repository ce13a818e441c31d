"""``kitpin pin`` against the real CNCF distribution registry, with ModelKits packed in kit's
wire format (harness/modelkit.py): the shapes manifests come in from the wild, stdout,
``--in-place``, stdin, failures, ``--keep-going``, credentials and settings.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pin_helpers import PLACEHOLDER, TESTDATA, run_kitpin

from controller import manifests
from harness import modelkit, tools
from harness.registry import RegistryServer

pytestmark = pytest.mark.integration

PUSHED = {
    # repository (under the test's repo prefix), tag -> what kit pushes there
    ("llama", "production"): "kitops",
    ("llama-weights", "production"): "modelpack",  # an image volume; any artifact will do
    ("eval-set", "2024-06"): "kitops",
    ("summarizer", "v2"): "kitops",
    ("tokenizer", "v3"): "modelpack",
    ("embedder", "v1"): "kitops",
}
AUTH_USER = ("ci-bot", "pin-secret-4f2a")


def localise(text: str, registry: RegistryServer, repo: str) -> str:
    """Point the test data's ``registry.example.com:5000/ml/...`` at this test's repos."""
    return text.replace(f"{PLACEHOLDER}/ml/", f"{registry.host}/{repo}/")


def push_all(registry: RegistryServer, repo: str) -> dict[str, str]:
    """Push every ModelKit the test data names; ``{reference: digest}``."""
    digests: dict[str, str] = {}
    for seed, ((name, tag), fmt) in enumerate(sorted(PUSHED.items())):
        digest = modelkit.push_modelkit(registry, f"{repo}/{name}", tag, fmt=fmt, seed=seed)  # type: ignore[arg-type]
        digests[f"{registry.host}/{repo}/{name}:{tag}"] = digest
    return digests


def copy_testdata(dest: Path, registry: RegistryServer, repo: str, *names: str) -> list[Path]:
    paths = []
    for name in names:
        path = dest / name
        path.write_text(localise((TESTDATA / name).read_text(), registry, repo))
        paths.append(path)
    return paths


def pinned_references(text: str) -> list[str]:
    """Every ``name:tag@sha256:...`` in ``text`` (without a ``kit://`` in front)."""
    found = re.findall(r"[\w.:/\[\]-]+:[\w.-]+@sha256:[0-9a-f]{64}", text)
    return [r.removeprefix("kit://") for r in found]


def test_pins_every_shape_from_the_wild(
    tmp_path: Path, pin_registry: RegistryServer, pin_repo: str
) -> None:
    digests = push_all(pin_registry, pin_repo)
    names = [
        "multi-doc-comments.yaml",
        "kubectl-list.yaml",
        "helm-output.yaml",
        "kserve-inferenceservice.yaml",
        "kubectl-get.json",
        "not-kubernetes.yaml",
    ]
    paths = copy_testdata(tmp_path, pin_registry, pin_repo, *names)
    originals = {p: p.read_text() for p in paths}

    result = run_kitpin("pin", "--plain-http", "-f", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout

    host = pin_registry.host
    llama = f"{host}/{pin_repo}/llama:production"
    expected = [
        f"{llama}@{digests[llama]}",  # multi-doc: Deployment (the pinned Pod is left alone)
        f"{host}/{pin_repo}/eval-set:2024-06@{digests[f'{host}/{pin_repo}/eval-set:2024-06']}",
        f"{llama}@{digests[llama]}",  # helm output: StatefulSet
        f"{host}/{pin_repo}/llama-weights:production@"
        f"{digests[f'{host}/{pin_repo}/llama-weights:production']}",
        f"{host}/{pin_repo}/embedder:v1@{digests[f'{host}/{pin_repo}/embedder:v1']}",
        f"{llama}@{digests[llama]}",  # KServe storageUri (kit:// kept, checked below)
        f"{host}/{pin_repo}/tokenizer:v3@{digests[f'{host}/{pin_repo}/tokenizer:v3']}",
        # kubectl List: the Deployment only; its owned ReplicaSet is left alone
        f"{host}/{pin_repo}/summarizer:v2@{digests[f'{host}/{pin_repo}/summarizer:v2']}",
    ]
    found = pinned_references(out)
    assert sorted(r for r in found if "llama:v1@" not in r) == sorted(expected)
    assert f"storageUri: kit://{llama}@{digests[llama]}\n" in out
    # The input files are untouched, and the output is the inputs joined (in name order),
    # with nothing changed but the digests added.
    assert {p: p.read_text() for p in paths} == originals
    unpinned = out
    for digest in digests.values():
        unpinned = unpinned.replace(f"@{digest}", "")
    assert unpinned == manifests.concatenate([originals[p] for p in sorted(paths)])
    documents = manifests.scan(out, source="out").documents
    assert len(documents) == sum(
        len(manifests.scan(t, source="in").documents) for t in originals.values()
    )


def test_in_place_rewrites_only_reference_lines_and_is_idempotent(
    tmp_path: Path, pin_registry: RegistryServer, pin_repo: str
) -> None:
    digests = push_all(pin_registry, pin_repo)
    [path, untouched] = copy_testdata(
        tmp_path, pin_registry, pin_repo, "multi-doc-comments.yaml", "not-kubernetes.yaml"
    )
    before = path.read_text()
    os.utime(untouched, ns=(1, 1))
    path.chmod(0o640)

    result = run_kitpin("pin", "--plain-http", "--in-place", "-f", tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")

    after = path.read_text()
    llama = f"{pin_registry.host}/{pin_repo}/llama:production"
    old_lines, new_lines = before.splitlines(), after.splitlines()
    assert len(old_lines) == len(new_lines)
    diff = [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]
    assert diff[0] == (
        f"              value: {llama}   # pinned in CI",
        f"              value: {llama}@{digests[llama]}   # pinned in CI",
    )
    assert len(diff) == 2  # and the CronJob's kit unpack argument
    assert path.stat().st_mode & 0o777 == 0o640  # permissions kept
    assert untouched.stat().st_mtime_ns == 1  # nothing to pin: not rewritten
    assert not list(tmp_path.glob(".*.kitpin"))  # no temporary files left behind

    os.utime(path, ns=(2, 2))
    again = run_kitpin("pin", "--plain-http", "--in-place", "-f", tmp_path)
    assert again.returncode == 0, again.stderr
    assert path.read_text() == after
    assert path.stat().st_mtime_ns == 2  # already pinned: not rewritten


def test_stdin_to_stdout(pin_registry: RegistryServer, pin_repo: str) -> None:
    digest = modelkit.push_modelkit(pin_registry, f"{pin_repo}/embedder", "v1")
    text = localise((TESTDATA / "kubectl-get.json").read_text(), pin_registry, pin_repo)
    result = run_kitpin("pin", "--plain-http", stdin=text)
    assert result.returncode == 0, result.stderr
    ref = f"{pin_registry.host}/{pin_repo}/embedder:v1"
    assert result.stdout == text.replace(f'"{ref}"', f'"{ref}@{digest}"')
    assert json.loads(result.stdout)["spec"]["initContainers"][0]["env"][0]["value"] == (
        f"{ref}@{digest}"
    )


def test_one_failure_writes_nothing(
    tmp_path: Path, pin_registry: RegistryServer, pin_repo: str
) -> None:
    push_all(pin_registry, pin_repo)
    paths = copy_testdata(
        tmp_path, pin_registry, pin_repo, "multi-doc-comments.yaml", "helm-output.yaml"
    )
    # One reference in the second file names a tag nobody pushed.
    paths[1].write_text(paths[1].read_text().replace("llama:production", "llama:missing"))
    originals = [p.read_text() for p in paths]

    to_stdout = run_kitpin("pin", "--plain-http", "-f", paths[0], "-f", paths[1])
    assert to_stdout.returncode == 1
    assert to_stdout.stdout == ""
    line = (
        originals[1]
        .splitlines()
        .index(f'              value: "{pin_registry.host}/{pin_repo}/llama:missing"')
        + 1
    )
    assert (
        f"kitpin: error: {paths[1]}:{line}: StatefulSet release-name-llm: "
        f'initContainer "model" env MODELKIT_REF: cannot pin '
        f"'{pin_registry.host}/{pin_repo}/llama:missing': NotFound: "
    ) in to_stdout.stderr
    assert "nothing written: 1 of 4 reference(s) could not be pinned" in to_stdout.stderr

    in_place = run_kitpin("pin", "--plain-http", "--in-place", "-f", tmp_path)
    assert in_place.returncode == 1
    assert [p.read_text() for p in paths] == originals


def test_keep_going_writes_what_it_could(
    tmp_path: Path, pin_registry: RegistryServer, pin_repo: str
) -> None:
    digests = push_all(pin_registry, pin_repo)
    [path] = copy_testdata(tmp_path, pin_registry, pin_repo, "kserve-inferenceservice.yaml")
    text = path.read_text().replace("tokenizer:v3", "tokenizer:missing")
    path.write_text(text)

    result = run_kitpin("pin", "--plain-http", "--keep-going", "--in-place", "-f", path)
    assert result.returncode == 1
    assert "tokenizer:missing': NotFound" in result.stderr
    assert "nothing written" not in result.stderr
    llama = f"{pin_registry.host}/{pin_repo}/llama:production"
    assert path.read_text() == text.replace(
        f"storageUri: kit://{llama}\n", f"storageUri: kit://{llama}@{digests[llama]}\n"
    )


def test_one_request_per_distinct_reference(
    tmp_path: Path, pin_registry: RegistryServer, pin_repo: str
) -> None:
    digest = modelkit.push_modelkit(pin_registry, f"{pin_repo}/llama", "production")
    ref = f"{pin_registry.host}/{pin_repo}/llama:production"

    def pod(name: str) -> str:
        return (
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n"
            "  initContainers:\n"
            "    - name: kitops-init\n"
            "      image: x/kitops-init:1\n"
            f"      env: [{{name: MODELKIT_REF, value: {ref}}}]\n"
            "  containers: [{name: main, image: x/serve:1}]\n"
        )

    for n in range(3):
        (tmp_path / f"p{n}.yaml").write_text("---\n".join(pod(f"p{n}-{i}") for i in range(10)))
    result = run_kitpin("pin", "--plain-http", "-f", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"{ref}@{digest}") == 30
    path = f"/v2/{re.escape(pin_repo)}/llama/manifests/production"
    assert pin_registry.count_requests("GET", path) + pin_registry.count_requests("HEAD", path) == 1


def test_not_a_modelkit_fails_where_a_modelkit_is_expected(
    tmp_path: Path, pin_registry: RegistryServer, pin_repo: str
) -> None:
    digest = modelkit.push_image(pin_registry, f"{pin_repo}/serve", "1")
    ref = f"{pin_registry.host}/{pin_repo}/serve:1"
    env_site = tmp_path / "env.yaml"
    env_site.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
        "  initContainers: [{name: i, image: x/kitops-init:1, "
        f"env: [{{name: MODELKIT_REF, value: {ref}}}]}}]\n"
        "  containers: [{name: main, image: x/serve:1}]\n"
    )
    result = run_kitpin("pin", "--plain-http", "-f", env_site)
    assert result.returncode == 1
    # the webhook's words (pinning.not_a_modelkit_message)
    assert f"'{ref}' resolves to {digest}, which is not a ModelKit (config media type" in (
        result.stderr
    )
    assert "this field expects a KitOps ModelKit or a CNCF ModelPack" in result.stderr

    # An image volume may mount any OCI artifact: pinned.
    volume_site = tmp_path / "volume.yaml"
    volume_site.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
        "  containers: [{name: main, image: x/serve:1}]\n"
        f"  volumes: [{{name: v, image: {{reference: {ref}}}}}]\n"
    )
    result = run_kitpin("pin", "--plain-http", "-f", volume_site)
    assert result.returncode == 0, result.stderr
    assert f"reference: {ref}@{digest}}}" in result.stdout


def test_extra_sites_from_the_settings_file(
    tmp_path: Path, pin_registry: RegistryServer, pin_repo: str
) -> None:
    digest = modelkit.push_modelkit(pin_registry, f"{pin_repo}/llama", "production")
    ref = f"{pin_registry.host}/{pin_repo}/llama:production"
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "deadlineSeconds": 5,
                "sites": {
                    "extra": [
                        {
                            "group": "ml.example.com",
                            "kind": "ModelDeployment",
                            "paths": ["spec.models[*].source"],
                            "grammar": "kit",
                            "prefix": "kit://",
                        }
                    ]
                },
            }
        )
    )
    manifest = tmp_path / "md.yaml"
    text = (
        "apiVersion: ml.example.com/v1\nkind: ModelDeployment\nmetadata: {name: chat}\n"
        f"spec:\n  models:\n    - source: kit://{ref}  # the base model\n"
    )
    manifest.write_text(text)
    without = run_kitpin("pin", "--plain-http", "-f", manifest)
    assert (without.returncode, without.stdout) == (0, text)
    result = run_kitpin("pin", "--plain-http", "--settings", settings, "-f", manifest)
    assert result.returncode == 0, result.stderr
    assert result.stdout == text.replace(f"kit://{ref}", f"kit://{ref}@{digest}")


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    user, password = AUTH_USER
    with RegistryServer(
        workdir=tmp_path_factory.mktemp("pin-auth-registry"),
        name="pin-auth-registry",
        htpasswd={user: password},
        binary=tools.ensure("registry")["registry"],
    ) as server:
        yield server


def test_credentials_from_docker_config(
    tmp_path: Path, auth_registry: RegistryServer, pin_repo: str
) -> None:
    digest = modelkit.push_modelkit(auth_registry, f"{pin_repo}/llama", "v1", auth=AUTH_USER)
    ref = f"{auth_registry.host}/{pin_repo}/llama:v1"
    manifest = tmp_path / "p.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
        "  initContainers: [{name: i, image: x/kitops-init:1, "
        f"env: [{{name: MODELKIT_REF, value: {ref}}}]}}]\n"
        "  containers: [{name: main, image: x/serve:1}]\n"
    )
    anonymous = run_kitpin("pin", "--plain-http", "-f", manifest)
    assert anonymous.returncode == 1
    assert "Unauthorized" in anonymous.stderr

    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    auth = base64.b64encode(":".join(AUTH_USER).encode()).decode()
    (docker_config / "config.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"auth": auth}}})
    )
    result = run_kitpin("pin", "--plain-http", "--docker-config", docker_config, "-f", manifest)
    assert result.returncode == 0, result.stderr
    assert f"value: {ref}@{digest}}}" in result.stdout
