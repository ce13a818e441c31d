"""RFC 6901 JSON pointers and the RFC 6902 JSON patches kitpin writes. Pure.

``escape`` / ``split`` are the one escaping rule (``~`` ↔ ``~0``, ``/`` ↔ ``~1``); ``get``
reads the value at a pointer; ``apply`` writes pinned strings at the pointers
:func:`controller.sites.find` returned; ``json_patch`` turns such values (and annotation
changes) into the JSON patch of an admission answer, and ``patch`` applies one. ``apply`` and
``patch`` are copy-on-write: only the mappings and lists along the changed paths are copied,
every other branch is shared with the input, which is never mutated.

A pointer that does not exist raises :class:`LookupError`: callers pass pointers that ``find``
returned (or patches ``json_patch`` built), so this is a programming error, not bad user input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, NotRequired, TypedDict

__all__ = ["MAP", "SEQ", "PatchOp", "apply", "escape", "get", "json_patch", "patch", "split"]

# isinstance() against a tuple that starts with the concrete JSON types is ~3x faster than
# against the Mapping ABC alone, and objects from an AdmissionReview are dicts and lists.
MAP: Final = (dict, Mapping)
SEQ: Final = (list, tuple)


class PatchOp(TypedDict):
    """One RFC 6902 operation, of the three kitpin writes."""

    op: Literal["add", "replace", "remove"]
    path: str
    value: NotRequired[Any]


def escape(token: str) -> str:
    """Escape one JSON-pointer reference token (RFC 6901: ``~`` → ``~0``, ``/`` → ``~1``)."""
    if "~" in token or "/" in token:
        return token.replace("~", "~0").replace("/", "~1")
    return token


def split(pointer: str) -> list[str]:
    """The unescaped reference tokens of ``pointer``; :class:`LookupError` if it is not one."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise LookupError(f"{pointer!r} is not a JSON pointer: it must be empty or start with /")
    tokens = pointer[1:].split("/")
    if "~" not in pointer:
        return tokens
    out = []
    for token in tokens:
        if "~" in token:
            if re.search(r"~(?![01])", token):
                raise LookupError(f"{pointer!r}: bad escape in {token!r} (only ~0 and ~1 exist)")
            token = token.replace("~1", "/").replace("~0", "~")
        out.append(token)
    return out


def _step(container: object, token: str, pointer: str) -> object:
    if isinstance(container, MAP):
        if token in container:
            return container[token]
        raise LookupError(f"{pointer}: no member {token!r}")
    if isinstance(container, SEQ):
        if token.isascii() and token.isdigit() and (token == "0" or token[0] != "0"):
            index = int(token)
            if index < len(container):
                return container[index]
        raise LookupError(f"{pointer}: no item {token!r} in a list of {len(container)}")
    raise LookupError(f"{pointer}: {token!r} is below a {type(container).__name__}")


def get(obj: object, pointer: str) -> object:
    """The value at RFC 6901 ``pointer`` in ``obj``; :class:`LookupError` if there is none."""
    current = obj
    for token in split(pointer):
        current = _step(current, token, pointer)
    return current


def _parent(root: dict[str, Any], pointer: str, fresh: set[int]) -> tuple[Any, str]:
    """The container of the value at ``pointer`` in ``root``, and the last token. Every
    container on the way that is not ``fresh`` (already a copy) is copied once and put in
    its parent's place: what copy-on-write changes below it touches only copies."""
    tokens = split(pointer)
    if not tokens:
        raise LookupError("the empty pointer names the whole object, not a member of it")
    parent: Any = root
    for token in tokens[:-1]:
        child = _step(parent, token, pointer)
        if id(child) not in fresh:
            if isinstance(child, MAP):
                child = dict(child)
            elif isinstance(child, SEQ):
                child = list(child)
            else:
                raise LookupError(f"{pointer}: {token!r} is a {type(child).__name__}")
            fresh.add(id(child))
            parent[int(token) if isinstance(parent, list) else token] = child
        parent = child
    return parent, tokens[-1]


def apply(obj: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """A new object with the string at each JSON pointer of ``values`` replaced.

    Copy-on-write (see the module docstring). A pointer that does not exist or does not point
    at a string raises :class:`LookupError`.
    """
    root: dict[str, Any] = dict(obj)
    fresh: set[int] = {id(root)}
    for pointer, new in values.items():
        parent, last = _parent(root, pointer, fresh)
        current = _step(parent, last, pointer)
        if not isinstance(current, str):
            raise LookupError(f"{pointer}: holds a {type(current).__name__}, not a string")
        if not isinstance(new, str):
            raise TypeError(f"{pointer}: the new value must be a string, got {type(new).__name__}")
        parent[int(last) if isinstance(parent, list) else last] = new
    return root


def patch(obj: Mapping[str, Any], ops: Iterable[PatchOp]) -> dict[str, Any]:
    """A new object with the RFC 6902 ``add``/``replace``/``remove`` operations applied in
    order, copy-on-write (see the module docstring). ``replace`` and ``remove`` need the member
    or item to exist; ``add`` sets a member, or inserts an item (``-`` appends)."""
    root: dict[str, Any] = dict(obj)
    fresh: set[int] = {id(root)}
    for op in ops:
        pointer = op["path"]
        parent, last = _parent(root, pointer, fresh)
        key: int | str = last
        if isinstance(parent, list):
            if op["op"] == "add":
                if last not in ("-", str(len(parent))):
                    _step(parent, last, pointer)  # an index in the list
                parent.insert(len(parent) if last == "-" else int(last), op["value"])
                continue
            _step(parent, last, pointer)  # it must exist
            key = int(last)
        elif op["op"] != "add":
            _step(parent, last, pointer)  # it must exist
        if op["op"] == "remove":
            del parent[key]
        else:
            parent[key] = op["value"]
    return root


def json_patch(
    obj: Mapping[str, Any],
    *,
    values: Mapping[str, str],
    annotations: Mapping[str, str | None],
) -> list[PatchOp]:
    """The RFC 6902 patch that writes ``values`` (strings by JSON pointer, as :func:`apply`)
    and sets ``annotations`` (None removes) on ``obj``: what kopf would compute by
    deep-copying the object, applying the changes and diffing the whole of it, at a tiny
    fraction of the cost. ``values`` replace strings that exist at their pointers (the sites
    found them there); annotations are added, replaced or removed (a removal of an absent key
    is no operation, as in kopf)."""
    ops: list[PatchOp] = [
        {"op": "replace", "path": pointer, "value": value} for pointer, value in values.items()
    ]
    if annotations:
        meta = obj.get("metadata")
        current = meta.get("annotations") if isinstance(meta, Mapping) else None
        if not isinstance(meta, Mapping):
            ops.append({"op": "add", "path": "/metadata", "value": {}})
        if not isinstance(current, Mapping):
            new = {k: v for k, v in annotations.items() if v is not None}
            if new:
                ops.append({"op": "add", "path": "/metadata/annotations", "value": new})
        else:
            for key, value in annotations.items():
                path = "/metadata/annotations/" + escape(key)
                if value is None:
                    if key in current:
                        ops.append({"op": "remove", "path": path})
                elif key in current:
                    if current[key] != value:
                        ops.append({"op": "replace", "path": path, "value": value})
                else:
                    ops.append({"op": "add", "path": path, "value": value})
    return ops
