"""Reading the YAML of settings-like files: :func:`load` and :func:`load_file`, and
:class:`GuardedLoader`, PyYAML's safe loader without its escapes.

Every YAML file an operator writes for kitpin is read here: the settings file (``kitpin run
--settings``, the chart's ConfigMap), the registry config (``--registry-config``) and the
kubeconfig's users (``kubeapi.kubeconfig_auth_plugin``). ``kitpin pin`` and ``kitpin check``
read manifests with :mod:`controller.manifests`, whose loader is a :class:`GuardedLoader` too.

What differs from ``yaml.safe_load``:

- values PyYAML's constructors cannot build (``!!int x``, an integer of more than 4,300
  digits, a ``\\U`` escape beyond Unicode, an impossible explicit ``!!timestamp``) are a YAML
  error at their line and column (:class:`GuardedLoader`), never the ``ValueError``,
  ``TypeError`` or ``OverflowError`` PyYAML lets escape;
- timestamps stay strings: YAML 1.1 reads ``2001-02-03`` as a date and ``2001-02-30`` as an
  error; no kitpin setting is a date, so both are the text written (``!!timestamp`` too);
- a key given twice in one mapping is an error naming both lines, not the last one silently
  winning (a typo must not fall back to another value; ``duplicate_keys=True`` for files other
  programs own, such as a kubeconfig);
- nesting too deep for PyYAML's recursive composer is an error, not a ``RecursionError``.

Every failure is a :class:`LoadError`, a ``ValueError`` whose message names the source, the
line and column (from 1), what is wrong and what to do::

    kitpin.yaml:3:15: not valid YAML: mapping values are not allowed here; fix the YAML
    syntax there (a value holding ': ' or starting with '{', '[', '*', '&', '!', '%', '@' or
    '`' must be quoted)

Callers map it to their own error (``ConfigError`` for settings). PyYAML only, no I/O but
the one file :func:`load_file` reads: the bottom floor, importable from every layer.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

__all__ = [
    "CONSTRUCTOR_FAILURES",
    "GuardedLoader",
    "LoadError",
    "load",
    "load_file",
    "unreadable",
]

TIMESTAMP_TAG: Final = "tag:yaml.org,2002:timestamp"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"

CONSTRUCTOR_FAILURES: Final = (ValueError, TypeError, LookupError, AttributeError, OverflowError)
"""What PyYAML's safe constructors raise on a scalar they cannot build (``int('x')``,
``datetime(2001, 2, 30)``, ``bool_values['x']``, ``''[0]`` for an empty ``!!int``, a
timestamp that does not match); its own ``ConstructorError`` is a ``YAMLError``, not one of
these."""

_TAG_NAMES: Final = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    TIMESTAMP_TAG: "a date or timestamp",
    "tag:yaml.org,2002:binary": "base64 binary",
}

SYNTAX_ADVICE: Final = (
    "fix the YAML syntax there (a value holding ': ' or starting with '{', '[', '*', '&', "
    "'!', '%', '@' or '`' must be quoted)"
)
"""What to do about a syntax error, after the message."""


class LoadError(ValueError):
    """A YAML text kitpin cannot read. ``str()`` is the whole message (source, line, column,
    the problem, what to do); ``line`` and ``column`` count from 1 (0: unknown)."""

    def __init__(self, message: str, *, source: str, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.source = source
        self.line = line
        self.column = column


def unreadable(node: Node, e: Exception) -> str:
    """The message for a value PyYAML's constructor for its tag could not build."""
    what = _TAG_NAMES.get(node.tag, node.tag.replace("tag:yaml.org,2002:", "!!"))
    value = node.value if isinstance(node, ScalarNode) else ""
    shown = value if len(value) <= 40 else f"{value[:30]}... ({len(value):,} characters)"
    if isinstance(e, KeyError):
        detail = "not one of the words YAML reads as one"
    elif isinstance(e, ValueError) and "integer string conversion" in str(e):
        detail = f"Python reads integers of at most {sys.get_int_max_str_digits():,} digits"
    elif isinstance(node, ScalarNode) and not value:
        detail = "it is empty"
    elif isinstance(e, AttributeError | TypeError | IndexError):
        detail = "not written the way that type is"
    else:
        detail = str(e)
    return (
        f"cannot read {shown!r} as {what} ({detail}); quote it if it is meant as a string, "
        "or correct the value"
    )


class GuardedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with what it lets escape as ``ValueError`` and kin on some input
    (an impossible date, ``!!int x``, a ``\\U`` escape beyond Unicode) a YAML error with its
    line, like any other. The base of this module's loader and of ``manifests``'."""

    def scan_flow_scalar_non_spaces(self, double: bool, start_mark: yaml.Mark) -> Any:
        """PyYAML's, with a ``\\U`` escape beyond U+10FFFF (``"\\U0a001000"``) a
        :class:`yaml.scanner.ScannerError` instead of the ``ValueError``/``OverflowError``
        of ``chr``."""
        try:
            return super().scan_flow_scalar_non_spaces(double, start_mark)
        except (ValueError, OverflowError):
            raise yaml.scanner.ScannerError(
                "while scanning a double-quoted scalar",
                start_mark,
                "found an escape beyond the last Unicode character (\\U0010FFFF)",
                self.get_mark(),
            ) from None

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """PyYAML's, with the errors of its value constructors as YAML errors at the node.

        The parser accepts scalars that its resolver then types as something Python cannot
        build: ``2001-02-30`` (a timestamp), ``!!int x``, an integer beyond Python's
        4,300-digit limit (``sys.get_int_max_str_digits``), a time zone of ``+99:00``.
        PyYAML lets the ``ValueError``/``KeyError``/... of its constructors escape; here they
        are a :class:`yaml.constructor.ConstructorError` with the node's line."""
        try:
            return super().construct_object(node, deep)
        except CONSTRUCTOR_FAILURES as e:
            raise yaml.constructor.ConstructorError(
                None, None, unreadable(node, e), node.start_mark
            ) from None


class _Loader(GuardedLoader):
    """:class:`GuardedLoader` for settings: timestamps are strings, duplicate keys errors."""

    duplicate_keys = False

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not self.duplicate_keys:
            seen: dict[object, Node] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                key = (key_node.tag, key_node.value)
                first = seen.setdefault(key, key_node)
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"the key {key_node.value!r} is given twice (first at line "
                        f"{first.start_mark.line + 1}); keep one",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep)


class _LenientLoader(_Loader):
    duplicate_keys = True


def _as_text(loader: yaml.SafeLoader, node: Node) -> object:
    """An explicit ``!!timestamp`` reads as the text written too."""
    return loader.construct_yaml_str(node)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != TIMESTAMP_TAG]
    for first, resolvers in GuardedLoader.yaml_implicit_resolvers.items()
}
_Loader.add_constructor(TIMESTAMP_TAG, _as_text)


def _position(e: yaml.YAMLError, text: str) -> tuple[int, int, str]:
    """(line, column, problem) of a PyYAML error; line and column from 1."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        if e.context and e.problem and e.context_mark is not None:
            problem = f"{problem} ({e.context} at line {e.context_mark.line + 1})"
        if mark is None:
            return 0, 0, problem
        return mark.line + 1, mark.column + 1, problem
    if isinstance(e, yaml.reader.ReaderError):
        before = text[: e.position]
        line = before.count("\n") + 1
        column = e.position - (before.rfind("\n") + 1) + 1
        return line, column, f"{e.reason} (character #x{e.character:04x}); remove it"
    return 0, 0, str(e)


def load(text: str, *, source: str, duplicate_keys: bool = False) -> object:
    """The one document of ``text`` as plain data (None when empty). ``source`` names it in
    messages (a file name). Raises :class:`LoadError`; see the module docstring.
    ``duplicate_keys=True`` lets the last of two equal keys win, as ``yaml.safe_load`` does."""
    loader: _Loader | None = None
    try:
        loader = (_LenientLoader if duplicate_keys else _Loader)(text)  # checks characters
        return loader.get_single_data()
    except yaml.YAMLError as e:
        line, column, problem = _position(e, text)
        where = f"{source}:{line}:{column}" if line else source
        if "could not determine a constructor" in problem:
            advice = "; remove the tag (these files use none) or quote the value"
        elif isinstance(e, yaml.constructor.ConstructorError | yaml.reader.ReaderError):
            advice = ""  # the problem says what to do
        elif "'\\t'" in problem:
            advice = "; indent with spaces: YAML does not allow tabs there"
        elif "escape" in problem:
            advice = "; correct the escape sequence, or use single quotes for a literal '\\'"
        elif isinstance(e, yaml.composer.ComposerError) and "single document" in problem:
            advice = "; this file holds one document: remove the second '---' and what follows"
        else:
            advice = f"; {SYNTAX_ADVICE}"
        raise LoadError(
            f"{where}: not valid YAML: {problem}{advice}", source=source, line=line, column=column
        ) from None
    except RecursionError:
        raise LoadError(
            f"{source}: nested too deeply for kitpin to read; flatten it", source=source
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_file(
    path: str | os.PathLike[str], *, source: str | None = None, duplicate_keys: bool = False
) -> object:
    """:func:`load` of a UTF-8 file (``source`` defaults to the path). ``OSError`` passes
    through for the caller to phrase; text that is not UTF-8 is a :class:`LoadError` naming
    the line."""
    name = source if source is not None else os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise LoadError(
            f"{name}:{line}: not UTF-8 text; save the file as UTF-8", source=name, line=line
        ) from None
    return load(text, source=name, duplicate_keys=duplicate_keys)
