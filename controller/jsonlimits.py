"""Decoding JSON that kitpin did not write, with bounds on its values and nesting: :func:`loads`.

Everything a registry or a Secret sends is decoded here: manifests, config blobs (Kitfiles),
OCI error bodies, token answers, ``.dockerconfigjson`` / ``.dockercfg``. Their size is capped
before they get here (by the reader of the body); this bounds the rest:

- values: decoded, every ``{}`` of ``[{},{},...]`` is a 64-byte dict: 4 MiB of it took
  ~190 MiB. A document that may hold more than ``max_values`` (default :data:`MAX_VALUES`)
  values, object keys included, is refused before it is decoded (:func:`values_exceed`).
- depth: Python's :mod:`json` decodes recursively, so ``[[[[...`` a few thousand levels deep
  raised ``RecursionError`` (not a ``ValueError``) and escaped every error mapping. orjson
  decodes without recursing on the Python stack and refuses more than 1,024 levels; the
  result is then walked without recursion (an explicit stack) and refused beyond
  ``max_depth`` (default :data:`MAX_DEPTH`), so code that walks a decoded document
  recursively never meets a deep one either.
- numbers: an integer beyond 64 bits decodes as a float (orjson), never as a big int that
  costs quadratic time to convert (Python refuses more than 4,300 digits with a
  ``ValueError`` of another kind); a number that overflows a double is an error.
- text: UTF-8 only (no BOM, no lone surrogates); ``NaN`` and ``Infinity`` are not JSON.

Every failure is a :class:`DecodeError`, a ``ValueError`` whose message says what was wrong
and where (line and column) and never quotes the document (a Secret's content must not reach
a log). Callers map it to their own error (``BadResponseError`` for a registry's answer,
``ConfigError`` naming the Secret).

Pure, stdlib and orjson only: the bottom floor, importable from every layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import orjson

__all__ = [
    "MAX_DEPTH",
    "MAX_VALUES",
    "ORJSON_MAX_DEPTH",
    "DecodeError",
    "depth_exceeds",
    "loads",
    "values_exceed",
]

MAX_DEPTH: Final = 64
"""Containers (objects, arrays) nested at most this deep. An OCI manifest or index nests 4
levels, a token answer 1, an OCI error body 3 plus its free-form ``detail``, a docker
config.json 3, a Kitfile about 6 (more with deeply structured ``parameters``): 64 leaves
ample room and keeps any recursive walk of the result far from Python's recursion limit."""

MAX_VALUES: Final = 100_000
"""Values (object keys included) in one document at most, as :func:`values_exceed` counts
them (a bound: ``[{},{}]`` counts 4). A ModelKit manifest has a few dozen, an index of 500
platforms about 5,000; the costliest document let through (50,000 empty objects) takes
~6 MiB decoded."""

ORJSON_MAX_DEPTH: Final = 1024
"""orjson's own, fixed limit (it raises a ``JSONDecodeError`` beyond it)."""


class DecodeError(ValueError):
    """``data`` is not JSON kitpin accepts. ``why`` says what was wrong (without quoting the
    document); ``line`` and ``column`` (1-based) where, when known."""

    def __init__(self, why: str, *, line: int | None = None, column: int | None = None) -> None:
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(f"{why}{where}")
        self.why = why
        self.line = line
        self.column = column


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> object:
    """``data`` decoded, nested at most ``max_depth`` containers deep (a scalar is depth 0,
    ``[]`` depth 1) and holding at most ``max_values`` values (object keys count). Raises
    :class:`DecodeError`, never ``RecursionError``."""
    if not 0 <= max_depth <= ORJSON_MAX_DEPTH:
        raise ValueError(f"max_depth must be from 0 to {ORJSON_MAX_DEPTH}, not {max_depth}")
    if values_exceed(data, max_values):
        raise DecodeError(
            f"more than {max_values} values (counted by the [ {{ , and : in it); not a "
            "manifest, Kitfile, token answer or docker config.json"
        )
    failure: tuple[str, int, int] | None = None
    try:
        document: object = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        # msg is orjson's description (never the document), lineno/colno the position.
        failure = (e.msg, e.lineno, e.colno)
    if failure is not None:  # raised out here: the orjson error (it holds .doc) is no context
        why, line, column = failure
        if "depth" in why or "recursion" in why:
            raise DecodeError(_too_deep(max_depth))
        raise DecodeError(f"not valid JSON: {why}", line=line, column=column)
    if depth_exceeds(document, max_depth):
        raise DecodeError(_too_deep(max_depth))
    return document


def depth_exceeds(document: object, max_depth: int) -> bool:
    """Whether ``document`` (decoded JSON: dicts, lists, scalars) nests containers deeper
    than ``max_depth``. Iterative: any depth is walked without recursion, in time linear in
    the number of values."""
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        children: Iterable[object]
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > max_depth:
            return True
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def values_exceed(data: bytes | str, max_values: int) -> bool:
    """Whether the JSON text ``data`` may hold more than ``max_values`` values, without
    decoding it. In JSON every value but the first follows a ``[``, ``{``, ``,`` or ``:``
    (object keys included), so their count plus one bounds the values. Counted inside
    strings too (C-speed, linear, no tokenizer that hostile text could slow down): a
    document is refused early only if it has that many of these characters in all, far more
    than a manifest, a Kitfile, a token answer or a docker config.json holds."""
    if isinstance(data, bytes):
        found = data.count(b"[") + data.count(b"{") + data.count(b",") + data.count(b":")
    else:
        found = data.count("[") + data.count("{") + data.count(",") + data.count(":")
    return found >= max_values


def _too_deep(max_depth: int) -> str:
    return f"nested deeper than {max_depth} levels of objects and arrays"
