"""controller.jsonlimits, the one JSON decoder for what registries and Secrets send: bounded
depth without recursion, only DecodeError (a ValueError) on failure, never the document in
the message."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import jsonlimits


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [0, 1, 2, jsonlimits.MAX_DEPTH])
def test_up_to_the_limit_decodes(depth: int) -> None:
    value = jsonlimits.loads(nested(depth) if depth else b"7")
    for _ in range(depth - 1):
        assert isinstance(value, list)
        (value,) = value
    assert value == ([] if depth else 7)


@pytest.mark.parametrize("depth", [jsonlimits.MAX_DEPTH + 1, 1024, 1025, 49_999])
def test_past_the_limit_is_refused_without_recursion(depth: int) -> None:
    with pytest.raises(jsonlimits.DecodeError) as caught:
        jsonlimits.loads(nested(depth))
    assert str(caught.value) == "nested deeper than 64 levels of objects and arrays"
    assert isinstance(caught.value, ValueError)


def test_objects_and_arrays_count_alike_and_max_depth_is_the_callers() -> None:
    mixed = b'{"a": [{"b": [1]}]}'
    assert jsonlimits.loads(mixed, max_depth=4) == {"a": [{"b": [1]}]}
    with pytest.raises(jsonlimits.DecodeError):
        jsonlimits.loads(mixed, max_depth=3)
    assert jsonlimits.loads(b'"x"', max_depth=0) == "x"
    with pytest.raises(jsonlimits.DecodeError):
        jsonlimits.loads(b"{}", max_depth=0)
    with pytest.raises(ValueError):
        jsonlimits.loads(b"{}", max_depth=2000)


def test_depth_exceeds_walks_any_depth_iteratively() -> None:
    deep: list[object] = []
    for _ in range(200_000):
        deep = [deep]
    assert jsonlimits.depth_exceeds(deep, 64)
    assert not jsonlimits.depth_exceeds({"a": [1, {"b": None}]}, 3)
    assert jsonlimits.depth_exceeds({"a": [1, {"b": []}]}, 3)


SECRET = "hunter2-do-not-log"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'{"password": "' + SECRET.encode() + b'" oops}', "not valid JSON"),
        (b"\xff" + SECRET.encode(), "UTF-8"),
        (b"\xef\xbb\xbf{}", "BOM"),
        (b'{"a": NaN}', "not valid JSON"),
        (b'{"a": 1e400}', "infinity"),
        (b"[1,]", "trailing comma"),
        (b"", "not valid JSON"),
        (b'"\\ud800"', "surrogate"),
    ],
)
def test_failures_say_what_and_where_and_never_quote_the_document(data: bytes, why: str) -> None:
    with pytest.raises(jsonlimits.DecodeError) as caught:
        jsonlimits.loads(data)
    assert why in str(caught.value)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_position_is_line_and_column() -> None:
    with pytest.raises(jsonlimits.DecodeError) as caught:
        jsonlimits.loads(b'{\n  "a": x\n}')
    assert (caught.value.line, caught.value.column) == (2, 8)
    assert str(caught.value).endswith("(line 2, column 8)")


def test_huge_integers_are_floats_not_big_ints() -> None:
    """No 4,300-digit int conversion (Python refuses it with a ValueError of its own kind,
    and it costs quadratic time below that)."""
    value = jsonlimits.loads(b"9" * 300)
    assert isinstance(value, float)
    assert jsonlimits.loads(b"18446744073709551615") == 2**64 - 1


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(_VALUES)
def test_what_json_writes_within_the_limit_round_trips(value: object) -> None:
    encoded = json.dumps(value).encode()
    if jsonlimits.depth_exceeds(value, 4):
        with pytest.raises(jsonlimits.DecodeError):
            jsonlimits.loads(encoded, max_depth=4)
    else:
        assert jsonlimits.loads(encoded, max_depth=4) == value


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_any_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        jsonlimits.loads(data)
    except jsonlimits.DecodeError:
        pass


def test_too_many_values_are_refused_before_decoding() -> None:
    """4 MiB of ``[{},{},...]`` took ~190 MiB decoded: refused by a count, not decoded."""
    bomb = b"[" + b"{}," * (4 * 1024 * 1024 // 3 - 1) + b"{}]"
    with pytest.raises(jsonlimits.DecodeError) as caught:
        jsonlimits.loads(bomb)
    assert "more than 100000 values" in str(caught.value)
    assert jsonlimits.loads(b"[" + b"0," * 99_998 + b"0]") == [0] * 99_999
    with pytest.raises(jsonlimits.DecodeError):
        jsonlimits.loads(b"[" + b"0," * 99_999 + b"0]")
    assert jsonlimits.loads('{"a": [1, 2]}', max_values=5) == {"a": [1, 2]}  # 5 values
    with pytest.raises(jsonlimits.DecodeError):
        jsonlimits.loads('{"a": [1, 2]}', max_values=4)
