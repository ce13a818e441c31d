"""``kitpin pin`` without a registry: inputs, outputs, usage errors and exit codes.

References that need a registry are in the integration tests; here the inputs either have
none, have only invalid ones, or point at a closed port.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from pin_helpers import read_testdata, run_kitpin

from controller import cli

NO_REFS = "# a comment\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1'}\n"


def pod(value: str) -> str:
    return (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
        "  initContainers:\n"
        "    - name: kitops-init\n"
        "      image: ghcr.io/kitops-ml/kitops-init:v1\n"
        f"      env: [{{name: MODELKIT_REF, value: '{value}'}}]\n"
        "  containers: [{name: main, image: x/serve:1}]\n"
    )


def stdin(monkeypatch: pytest.MonkeyPatch, data: bytes, *, tty: bool = False) -> None:
    wrapper = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    monkeypatch.setattr(wrapper, "isatty", lambda: tty)
    monkeypatch.setattr("sys.stdin", wrapper)


def test_file_without_references_is_printed_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text(NO_REFS)
    assert cli.main(["pin", "-f", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == NO_REFS
    assert err == ""


def test_non_kubernetes_files_pass_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = read_testdata("not-kubernetes.yaml")
    (tmp_path / "ci.yaml").write_text(text)
    assert cli.main(["pin", "-f", str(tmp_path / "ci.yaml")]) == 0
    assert capsys.readouterr().out == text


def test_several_inputs_are_joined_with_separators(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yaml").write_text("a: 1")  # no final newline
    (tmp_path / "b.yml").write_text("---\nb: 2\n")
    (tmp_path / "c.json").write_text('{"c": 3}\n')
    (tmp_path / "README.md").write_text("not a manifest: [\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "d.yaml").write_text("d: 4\n")
    assert cli.main(["pin", "-f", str(tmp_path)]) == 0
    assert capsys.readouterr().out == 'a: 1\n---\nb: 2\n---\n{"c": 3}\n'
    assert cli.main(["pin", "-R", "-f", str(tmp_path)]) == 0
    assert capsys.readouterr().out == 'a: 1\n---\nb: 2\n---\n{"c": 3}\n---\nd: 4\n'
    # a file named twice is read once
    assert cli.main(["pin", "-f", str(tmp_path), "-f", str(tmp_path / "a.yaml")]) == 0
    assert capsys.readouterr().out.count("a: 1") == 1


def test_stdin_without_dash_f(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, NO_REFS.encode())
    assert cli.main(["pin"]) == 0
    assert capsys.readouterr().out == NO_REFS


def test_stdin_with_dash_f_dash_and_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yaml").write_text("a: 1\n")
    stdin(monkeypatch, b"s: 1\n")
    assert cli.main(["pin", "-f", "-", "-f", str(tmp_path / "a.yaml")]) == 0
    assert capsys.readouterr().out == "s: 1\n---\na: 1\n"


def test_terminal_stdin_without_input_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, b"", tty=True)
    assert cli.main(["pin"]) == 2
    assert "no input: give -f FILE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pin", "--in-place"], "--in-place rewrites files"),
        (["pin", "--in-place", "-f", "-"], "--in-place rewrites files"),
        (["pin", "-f", "/nonexistent/x.yaml"], "/nonexistent/x.yaml: no such file"),
        (["pin", "-f", "-", "-f", "-"], "stdin) is given more than once"),
        (["pin", "--deadline", "0", "-f", "-"], "--deadline must be > 0"),
        (["pin", "--settings", "/nonexistent/s.yaml", "-f", "-"], "cannot read settings"),
        (["pin", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stdin(monkeypatch, NO_REFS.encode())
    try:
        code = cli.main(args)
    except SystemExit as e:  # argparse
        code = int(e.code or 0)
    assert code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert message in err


def test_invalid_yaml_names_file_and_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "a.yaml"
    good.write_text(NO_REFS)
    bad = tmp_path / "b.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n")
    assert cli.main(["pin", "-f", str(good), "-f", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"kitpin: {bad}:5: not valid YAML: ")


UNBUILDABLE = {
    "impossible-date": ("2001-02-30", "'2001-02-30' as a date or timestamp"),
    "int-tag": ("!!int x", "'x' as an integer"),
    "int-digits": ("1" * 4301, "Python reads integers of at most 4,300 digits"),
}
"""A metadata value PyYAML's resolver types but cannot build: (as written, what the error
says). Before kitpin read them, each was a traceback (ValueError) and exit code 1."""


@pytest.mark.parametrize(("value", "message"), UNBUILDABLE.values(), ids=UNBUILDABLE.keys())
def test_values_yaml_cannot_build_exit_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    good = tmp_path / "a.yaml"
    good.write_text(pod("127.0.0.1:1/ml/llama:production"))
    before = good.read_text()
    bad = tmp_path / "b.yaml"
    bad.write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  x: {value}\n")
    assert cli.main(["pin", "--in-place", "-f", str(good), "-f", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"kitpin: {bad}:5: not valid YAML: cannot read ")
    assert message in err and "Traceback" not in err
    assert good.read_text() == before  # nothing half-applied


def test_console_script_as_post_renderer_refuses_an_impossible_date() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  at: 2001-02-30\n"
    result = run_kitpin("pin", stdin=f"{NO_REFS}---\n{text}")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("kitpin: <stdin>:11: not valid YAML: cannot read '2001-02-30'")
    assert "Traceback" not in result.stderr


def test_an_escape_beyond_unicode_exits_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by tests/fuzz: PyYAML's scanner let chr()'s ValueError escape (a traceback)."""
    path = tmp_path / "cm.yaml"
    path.write_text('apiVersion: v1\nkind: ConfigMap\ndata:\n  a: "\\U0011FFFF"\n')
    assert cli.main(["pin", "-f", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"kitpin: {path}:4: not valid YAML: found an escape beyond the last ")


def test_not_utf8_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"a: 1\nb: caf\xe9\n")
    assert cli.main(["pin", "-f", str(path)]) == 2
    assert f"{path}:2: not UTF-8 text" in capsys.readouterr().err


def test_invalid_reference_writes_nothing_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(pod("llama:production"))
    before = path.stat()
    assert cli.main(["pin", "--in-place", "-f", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f'{path}:8: Pod p: initContainer "kitops-init" env MODELKIT_REF: ' in err
    assert "nothing written" in err
    assert path.stat().st_mtime_ns == before.st_mtime_ns


def test_unreachable_registry_exits_1_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.yaml"
    text = pod("127.0.0.1:1/ml/llama:production")  # port 1: connection refused
    path.write_text(text)
    assert cli.main(["pin", "--plain-http", "--in-place", "-f", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{path}:8: " in err and "cannot pin '127.0.0.1:1/ml/llama:production'" in err
    assert "Unreachable" in err
    assert path.read_text() == text


def test_in_place_without_changes_does_not_touch_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text(NO_REFS)
    os.utime(path, ns=(1, 1))
    assert cli.main(["pin", "--in-place", "-f", str(path)]) == 0
    assert capsys.readouterr() == ("", "")
    assert path.stat().st_mtime_ns == 1


def test_unresolvable_sites_are_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.yaml"
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
        "  initContainers:\n"
        "    - name: kitops-init\n"
        "      image: ghcr.io/kitops-ml/kitops-init:v1\n"
        "      env:\n"
        "        - name: MODELKIT_REF\n"
        "          valueFrom: {secretKeyRef: {name: models, key: ref}}\n"
        "  containers: [{name: main, image: x/serve:1}]\n"
    )
    path.write_text(text)
    assert cli.main(["pin", "-f", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == text
    assert err.startswith(f"kitpin: warning: {path}:10: Pod p: ")


def test_console_script_reads_stdin_as_a_post_renderer() -> None:
    result = run_kitpin("pin", stdin=NO_REFS)
    assert (result.returncode, result.stdout, result.stderr) == (0, NO_REFS, "")


def test_help_lists_the_pin_flags() -> None:
    result = run_kitpin("pin", "--help")
    assert result.returncode == 0
    for flag in ("--in-place", "--keep-going", "--plain-http", "--settings", "--docker-config"):
        assert flag in result.stdout
    assert "--post-renderer kitpin --post-renderer-args pin" in result.stdout
