"""The kitpin.dev/pinned record as read back from an object: user-writable, so bounded."""

from __future__ import annotations

import json

from controller.admission import pins


def _with(annotation: str) -> dict[str, object]:
    return {"metadata": {"annotations": {pins.PINNED_ANNOTATION: annotation}}}


def test_read_keeps_string_fields_of_each_record() -> None:
    text = json.dumps({"/spec/x": {"from": "r.io/m:v1", "digest": "sha256:" + "a" * 64, "n": 1}})
    assert pins.read(_with(text)) == {
        "/spec/x": {"from": "r.io/m:v1", "digest": "sha256:" + "a" * 64}
    }


def test_an_unreadable_or_deeply_nested_record_counts_as_none() -> None:
    assert pins.read(_with("{not json")) == {}
    assert pins.read(_with("[1]")) == {}
    # 100,000 levels: json.loads would raise RecursionError (a 500 for the review)
    assert pins.read(_with('{"a":' * 100_000 + "1" + "}" * 100_000)) == {}
