"""`kitpin run --dev` instances side by side (issue 16): each owns the webhook
configurations named after its port and deletes them, and only them, on exit; it finds the
dev cluster's kubeconfig and registry in ``$KITPIN_DEV_DIR/env`` (as `make dev-up` writes it)
and removes its temporary certificate directory when it stops."""

from __future__ import annotations

import contextlib
import os
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from controller import operator as kitpin_operator
from controller.admission import webhook
from harness import dev, modelkit, procs, tools
from harness.controlplane import Clients, ControlPlane
from tests.e2e.conftest import TEMPLATE_ENV, Registries, at, deployment, pinned_ref, ref_to

pytestmark = pytest.mark.e2e

TIMEOUT = 90.0


@dataclass(kw_only=True)
class DevKitpin:
    """One ``kitpin run --dev`` process with its own port and TMPDIR."""

    name: str
    port: int
    tmp: Path
    process: procs.Process

    @property
    def config_name(self) -> str:
        return kitpin_operator.dev_config_name(self.port)

    def temp_dirs(self) -> list[Path]:
        return sorted(self.tmp.glob("kitpin-dev-*"))


def _dev_configs(api: Clients) -> dict[str, list[dict[str, Any]]]:
    """Every webhook configuration a ``--dev`` instance names (``dev-*.kitpin.dev``), by
    kind, as the API returns them."""
    found: dict[str, list[dict[str, Any]]] = {}
    for kind, listing in (
        ("mutating", api.admission.list_mutating_webhook_configuration),
        ("validating", api.admission.list_validating_webhook_configuration),
    ):
        items = api.api_client.sanitize_for_serialization(listing().items)  # type: ignore[no-untyped-call]
        found[kind] = [
            i
            for i in items
            if i["metadata"]["name"].startswith("dev-")
            and i["metadata"]["name"].endswith(kitpin_operator.DEV_CONFIG_SUFFIX)
        ]
    return found


def _own(api: Clients, instance: DevKitpin) -> dict[str, dict[str, Any]]:
    return {
        kind: item
        for kind, items in _dev_configs(api).items()
        for item in items
        if item["metadata"]["name"] == instance.config_name
    }


def _registered(api: Clients, instance: DevKitpin) -> bool:
    """Both of the instance's configurations list a webhook with rules for Deployments,
    calling the instance's port."""
    own = _own(api, instance)
    if set(own) != {"mutating", "validating"}:
        return False
    pin, check = webhook.handler_ids(
        next(r for r in webhook.BUILTIN_RESOURCES if r.plural == "deployments")
    )
    for kind, hook_id in (("mutating", pin), ("validating", check)):
        hooks = {h["name"]: h for h in own[kind]["webhooks"] or []}
        hook = hooks.get(f"{hook_id}.{instance.config_name}")
        if hook is None or not any(r.get("resources") for r in hook.get("rules") or []):
            return False
        if not hook["clientConfig"]["url"].startswith(f"https://127.0.0.1:{instance.port}/"):
            return False
    return True


@pytest.fixture
def dev_dir(tmp_path: Path, control_plane: ControlPlane, registries: Registries) -> Path:
    """A ``.dev`` as `make dev-up` writes it, for this control plane and the plain registry."""
    directory = tmp_path / "dev"
    directory.mkdir()
    binaries = tools.ensure("kubectl", "helm")
    (directory / "env").write_text(
        dev.env_file(control_plane.kubeconfig, registries.plain.host, binaries)
    )
    return directory


@pytest.fixture
def start_dev(tmp_path: Path, dev_dir: Path) -> Iterator[Any]:
    started: list[DevKitpin] = []

    def start(name: str) -> DevKitpin:
        tmp = tmp_path / f"tmp-{name}"
        tmp.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}  # found in .dev/env
        env.update(
            KITPIN_DEV_DIR=str(dev_dir),
            TMPDIR=str(tmp),
            HOME=str(tmp_path / "home"),  # no ~/.kube/config to fall back on
            PYTHONUNBUFFERED="1",
        )
        env.pop("POD_NAMESPACE", None)
        port = procs.free_port()
        kitpin = Path(sys.executable).with_name("kitpin")
        process = procs.Process(
            f"kitpin-dev-{name}",
            [str(kitpin), "run", "--dev", f"--port={port}"],
            log_dir=tmp_path,
            env=env,
        ).start()
        instance = DevKitpin(name=name, port=port, tmp=tmp, process=process)
        started.append(instance)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

        def serving() -> bool:
            process.check_alive()
            return procs.http_ok(f"https://127.0.0.1:{port}/readyz", ssl_context=context)

        procs.wait_until(serving, timeout=TIMEOUT, what=f"kitpin {name} /readyz")
        return instance

    try:
        yield start
    finally:
        for instance in started:
            instance.process.stop()


def test_two_dev_instances_own_their_configurations(
    control_plane: ControlPlane,
    api: Clients,
    registries: Registries,
    start_dev: Any,
    namespace: str,
    repo: str,
) -> None:
    plain = registries.plain
    digest = modelkit.push_modelkit(plain, repo, "prod", seed=3)
    ref = ref_to(plain, repo, "prod")
    first: DevKitpin | None = None
    second: DevKitpin | None = None
    try:
        first = start_dev("first")
        second = start_dev("second")
        assert first.config_name != second.config_name
        for instance in (first, second):
            procs.wait_until(
                lambda i=instance: _registered(api, i),
                timeout=TIMEOUT,
                what=f"the webhook configurations of kitpin {instance.name}",
            )
            (certs,) = instance.temp_dirs()  # its certificates, while it runs
            assert (certs / "tls.key").exists()
        # Each found the dev cluster and the dev registry in .dev/env, no flags needed.
        assert "using the dev cluster's kubeconfig" in first.process.log_tail(400)
        assert f"trusting the dev registry {plain.host}" in first.process.log_tail(400)

        second.process.stop()
        assert not second.process.alive()
        assert not _own(api, second), "the stopped instance's configurations remain"
        assert list(second.tmp.iterdir()) == []  # its TMPDIR: no certificates, no key left
        assert _registered(api, first), "the first instance's configurations were touched"

        api.apps.create_namespaced_deployment(
            namespace,
            deployment("after-second-stopped", namespace, ref, replicas=0),  # type: ignore[arg-type]
        )
        stored = api.api_client.sanitize_for_serialization(  # type: ignore[no-untyped-call]
            api.apps.read_namespaced_deployment("after-second-stopped", namespace)
        )
        assert at(stored, TEMPLATE_ENV) == pinned_ref(plain, repo, "prod", digest)

        first.process.stop()
        assert _dev_configs(api) == {"mutating": [], "validating": []}
        assert list(first.tmp.iterdir()) == []
    except BaseException:
        for instance in (first, second):
            if instance is not None:
                print(instance.process.log_tail(120))
        print(control_plane.logs(40))
        raise
    finally:
        for instance in (first, second):
            if instance is None:
                continue
            for delete in (
                api.admission.delete_mutating_webhook_configuration,
                api.admission.delete_validating_webhook_configuration,
            ):
                with contextlib.suppress(ApiException):
                    delete(instance.config_name)
