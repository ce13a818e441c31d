"""`kitpin run` before it serves: without an apiserver it says what to do in one line and
exits 2 (no traceback), leaves no temporary files; its flags for arming; what `--dev` reads
from ``$KITPIN_DEV_DIR/env`` (as `make dev-up` writes it, :func:`harness.dev.env_file`)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller import errors
from controller import operator as kitpin_operator
from controller.cli import app
from harness import dev


def kitpin_run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``kitpin run ARGS`` with no cluster anywhere: no service account (not in a pod), a
    HOME without ~/.kube/config, an empty dev dir, ``env`` on top."""
    script = Path(sys.executable).parent / "kitpin"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "controller.cli"]
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "POD_NAMESPACE")
    }
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    environ.update(
        HOME=str(tmp_path / "home"),
        TMPDIR=str(tmp_path / "tmp"),
        KITPIN_DEV_DIR=str(tmp_path / "no-dev"),
        **env,
    )
    return subprocess.run(
        [*command, "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=tmp_path,
        check=False,
    )


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr  # no traceback, no log noise
    (line,) = lines
    assert line.startswith("kitpin run: error: ")
    for advice in ("set KUBECONFIG", "make dev-up", "in a cluster"):
        assert advice in line
    return line


def test_a_kubeconfig_that_does_not_exist_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "kubeconfig"
    done = kitpin_run(tmp_path, "--dev", KUBECONFIG=str(missing))
    line = _one_error_line(done)
    assert str(missing) in line
    assert list((tmp_path / "tmp").iterdir()) == []  # no kitpin-dev-* left behind


def test_no_kubeconfig_at_all_is_one_line_and_exit_2(tmp_path: Path) -> None:
    line = _one_error_line(
        kitpin_run(tmp_path, "--tls-cert=/nonexistent.crt", "--tls-key=/nonexistent.key")
    )
    assert "no kubeconfig" in line


def test_a_kubeconfig_that_is_not_yaml_is_one_line_and_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("clusters: [unclosed\n")
    line = _one_error_line(kitpin_run(tmp_path, "--dev", KUBECONFIG=str(broken)))
    assert str(broken) in line


def test_tls_flags_are_required_without_dev(tmp_path: Path) -> None:
    done = kitpin_run(tmp_path)
    assert done.returncode == 2
    assert "--tls-cert and --tls-key are required" in done.stderr


# --------------------------------------------------------------------------- flags


def _args(*argv: str) -> argparse.Namespace:
    return app.build_parser().parse_args(["run", *argv])


def test_arming_flags() -> None:
    args = _args(
        "--arm-webhooks=kitpin,kitpin-extra",
        "--arm-webhooks=kitpin",
        "--arm-service=kitpin",
        "--arm-interval=3",
    )
    armed = kitpin_operator._arming_settings(args, "kitpin-system")
    assert armed is not None
    assert armed.configurations == ("kitpin", "kitpin-extra")
    assert (armed.failure_policy, armed.service, armed.namespace, armed.interval) == (
        "Fail",
        "kitpin",
        "kitpin-system",
        3.0,
    )
    assert kitpin_operator._arming_settings(_args(), None) is None


@pytest.mark.parametrize(
    ("argv", "namespace", "problem"),
    [
        (["--arm-service=kitpin"], "ns", "without --arm-webhooks"),
        (["--arm-webhooks=kitpin", "--arm-service=kitpin"], None, "needs kitpin's namespace"),
        (["--arm-webhooks=a/b"], "ns", "not a webhook configuration name"),
        (["--arm-webhooks=kitpin", "--arm-interval=0"], "ns", "positive"),
    ],
)
def test_arming_flags_that_cannot_work(
    argv: list[str], namespace: str | None, problem: str
) -> None:
    with pytest.raises(errors.ConfigError, match=problem):
        kitpin_operator._arming_settings(_args(*argv), namespace)


def test_arm_failure_policy_is_fail_or_ignore() -> None:
    with pytest.raises(SystemExit):
        _args("--arm-failure-policy=Sometimes")


# --------------------------------------------------------------------------- --dev and .dev


def test_dev_config_names_are_per_port() -> None:
    assert kitpin_operator.dev_config_name(8443) == "dev-8443.kitpin.dev"
    assert kitpin_operator.dev_config_name(8443) != kitpin_operator.dev_config_name(8444)


def test_dev_env_file_names_the_cluster_the_registry_and_the_pinned_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools_dir = tmp_path / "tools cache" / "kubernetes-v1"
    binaries = {"kubectl": tools_dir / "kubectl", "helm": tmp_path / "helm-v3" / "helm"}
    text = dev.env_file(tmp_path / "kube config", "127.0.0.1:5000", binaries)
    (tmp_path / "env").write_text(text)
    # What `. .dev/env` does in a shell.
    shell = subprocess.run(
        ["bash", "-c", f'. "{tmp_path / "env"}" && echo "$KUBECONFIG|$KITPIN_REGISTRY|$PATH"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    kubeconfig, registry, path = shell.stdout.strip().split("|")
    assert (kubeconfig, registry) == (str(tmp_path / "kube config"), "127.0.0.1:5000")
    assert path.split(":") == [str(tools_dir), str(tmp_path / "helm-v3"), "/usr/bin", "/bin"]
    # What `kitpin run --dev` reads from it.
    monkeypatch.setenv("KITPIN_DEV_DIR", str(tmp_path))
    assert kitpin_operator._dev_env("KITPIN_REGISTRY") == "127.0.0.1:5000"


def test_dev_uses_the_dev_kubeconfig_only_when_kubeconfig_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}")
    (tmp_path / "env").write_text(dev.env_file(kubeconfig, "127.0.0.1:5000", {}))
    monkeypatch.setenv("KITPIN_DEV_DIR", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", "/elsewhere/config")
    kitpin_operator._use_dev_kubeconfig()
    assert os.environ["KUBECONFIG"] == "/elsewhere/config"
    monkeypatch.delenv("KUBECONFIG")
    kitpin_operator._use_dev_kubeconfig()
    assert os.environ["KUBECONFIG"] == str(kubeconfig)
