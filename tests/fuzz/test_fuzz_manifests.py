"""controller.manifests on any text (what ``kitpin pin`` / ``kitpin check`` and Helm's
post-renderer read): a Manifest or a ManifestError naming the source, never another
exception; and when references are pinned, only their scalars change, byte for byte."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import yaml
from fuzz_helpers import (
    JSON_SCALARS,
    REFERENCES,
    YAML_KEYS,
    YAML_SCALARS,
    fuzz,
    kubernetes_objects,
    workloads,
)
from hypothesis import example
from hypothesis import strategies as st

from controller import errors, manifests, sites

SOURCE = "fuzz/app.yaml"

FRAGMENTS = st.sampled_from(
    [
        "a", "b", "x", ":", ": ", "- ", "-", "[", "]", "{", "}", ", ", "'", '"', "\n", "\n", "  ",
        "    ", "\t", "# c", "&x ", "*x", "!!int ", "!!str ", "!!float ", "!!bool ", "!!binary ",
        "!!timestamp ", "!!set ", "!!omap ", "!!map ", "!!seq ", "!!null ", "!!python/name:x ",
        "!tag ", "!<tag:x> ", "<<: ", "? ", "|", ">", "|-", ">+2", "---\n", "...\n",
        "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "2001-02-30", "2001-12-14t21:59:43.10-05:00",
        "1_000", "0x1F", "0o17", "0b101", "190:20:30", "1e5", ".nan", ".inf", "~", "null", "yes",
        "Off", "kind: Pod\n", "apiVersion: v1\n", "metadata: {name: p}\n", "spec:\n",
        "  initContainers:\n", "  - name: kitops-init\n", "    env:\n",
        "    - {name: MODELKIT_REF, value: ", "MODELKIT_REF", "value: ", "\\u00e9", "\\x",
        "\x85", "\u2028", "\u2029", "\ufeff", "\xa0", "\r\n", "\r", "\x07", "é", "9" * 30,
    ]
)  # fmt: skip
SOUP = st.lists(FRAGMENTS | REFERENCES, max_size=40).map("".join)
"""Token soup: every indicator, tag and directive YAML knows, in any order."""

TAGS = st.sampled_from(
    ["", "", "", "!!int ", "!!float ", "!!bool ", "!!null ", "!!timestamp ", "!!binary ",
     "!!str ", "!!set ", "!!omap ", "!!pairs ", "!!map ", "!!seq ", "!x ", "&a ", "!!merge "]
)  # fmt: skip
SCALARS = st.one_of(
    st.sampled_from(
        [
            "2001-02-30",
            "2001-13-01",
            "2001-01-01 00:00:00 +99:00",
            "2001-02-03t04:05:06.7z",
            "1" * 4301,
            "0x" + "f" * 5000,
            "0b",
            "0x",
            "1:2:3:4:5",
            "-.inf",
            "x",
            "~",
            "yes",
            "[]",
            "{}",
            "[a, b]",
            "{a: 1}",
            "=",
            "<<",
            "9" * 400 + ".5e9999",
            "'q'",
            '"\\x"',
            "|\n  b",
        ]
    ),
    st.from_regex(
        r"[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,2}([ tT][0-9]{1,2}:[0-9]{2}:[0-9]{2}(\.[0-9]*)?"
        r"( ?[-+][0-9]{1,2}(:[0-9]{2})?|Z)?)?",
        fullmatch=True,
    ),
    st.from_regex(r"[-+]?(0[box])?[0-9a-f_:.]{0,12}(e[-+]?[0-9]{1,4})?", fullmatch=True),
)
"""Values the YAML 1.1 resolver types (dates, numbers in every base, sexagesimal) or a tag
asks to build, valid or not."""
LINES = st.lists(
    st.tuples(st.sampled_from(["a", "spec", "- x", "? k", "<<"]), TAGS, SCALARS).map(
        lambda t: f"{t[0]}: {t[1]}{t[2]}\n"
    ),
    min_size=1,
    max_size=4,
).map("".join)
"""Mappings of such values, one per line."""

DEPTHS = st.integers(1, 1500)
DEEP = st.one_of(
    DEPTHS.map(lambda n: "[" * n + "]" * n),
    DEPTHS.map(lambda n: "a: " + "{b: " * n + "c" + "}" * n),
    DEPTHS.map(lambda n: "".join(f"{' ' * i}- \n" for i in range(0, 2 * n, 2))),
    DEPTHS.map(lambda n: "".join(f"{' ' * i}k:\n" for i in range(n)) + " " * n + "v"),
    DEPTHS.map(lambda n: "a: &a " + "[" * n + "]" * n + "\nb: *a\n"),
)
"""Nesting around and beyond what PyYAML's recursive composer and constructor take (a few
hundred levels); each such case costs up to a second, so they have their own property."""

DUMP_OPTIONS = st.fixed_dictionaries(
    {
        "default_flow_style": st.sampled_from([False, True, None]),
        "default_style": st.sampled_from([None, None, "'", '"']),
        "explicit_start": st.booleans(),
        "explicit_end": st.booleans(),
        "width": st.sampled_from([80, 20, 4096]),
        "indent": st.sampled_from([2, 4]),
        "allow_unicode": st.booleans(),
        "sort_keys": st.booleans(),
    }
)
OBJECTS = st.one_of(
    workloads(),
    workloads(),
    kubernetes_objects(),
    kubernetes_objects(YAML_KEYS, YAML_SCALARS),
    JSON_SCALARS,
)


@st.composite
def dumped(draw: st.DrawFn) -> str:
    """Real manifests: objects written by PyYAML in any style, several per stream."""
    objects = draw(st.lists(OBJECTS, min_size=1, max_size=3))
    return yaml.safe_dump_all(objects, **draw(DUMP_OPTIONS))


VALID_REFERENCES = st.sampled_from(
    [
        "registry.example.com/ml/llama:production",
        "kit://registry.example.com/ml/llama:v1",
        "reg.io:443/a/b",
        "127.0.0.1:5000/m:1",
        "[::1]:5000/m:latest",
        "ghcr.io/acme/m:v1@sha256:" + "a" * 64,
        "Reg.Example.com/ml/llama",
        "reg.io/a/b:1.0",
        "reg.io/a/b:null",
        "reg.io/a/b:2001-02-03",
        "reg.io/a/b:1e3",
    ]
)
"""References that parse, some of whose tags read as other types when written plain."""


@st.composite
def pinnable(draw: st.DrawFn) -> str:
    """Streams of workloads whose every site holds a valid reference, in any style, with
    comments between the lines: most of their sites are pinned."""
    objects = []
    for obj in draw(st.lists(workloads(), min_size=1, max_size=3)):
        found = sites.find(obj)
        values = {s.path: s.render(draw(VALID_REFERENCES)) for s in found.sites}
        objects.append(sites.apply(obj, values))
    lines = yaml.safe_dump_all(objects, **draw(DUMP_OPTIONS)).splitlines(keepends=True)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(st.sampled_from(["# a comment\n", "\n", "  # indented\n"])))
    return "".join(lines)


@st.composite
def damaged(draw: st.DrawFn) -> str:
    """A real manifest with a few bytes changed: almost YAML."""
    text = draw(dumped())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        end = at + draw(st.integers(0, 8))
        text = text[:at] + draw(FRAGMENTS | st.just("")) + text[end:]
    return text


TEXTS = st.one_of(st.text(max_size=80), SOUP, LINES, dumped(), damaged(), pinnable(), pinnable())


def fake_digest(canonical: str) -> str:
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def assert_only_the_scalars_changed(text: str, result: str, edits: list[manifests.Edit]) -> None:
    """``result`` is ``text`` with each edited scalar's span replaced by a piece holding the
    new value, and every other byte as it was, in order."""
    spans = sorted({(e.located.start, e.located.end, e.value) for e in edits})
    gaps, at = [], 0
    for start, end, _ in spans:
        gaps.append(text[at:start])
        at = end
    gaps.append(text[at:])
    pattern = "(.*?)".join(re.escape(g) for g in gaps)
    match = re.fullmatch(pattern, result, re.DOTALL)
    assert match is not None, "bytes outside the pinned scalars changed"
    for (_, _, value), piece in zip(spans, match.groups(), strict=True):
        assert value in piece


@example(text="a: 2001-02-30\n")  # found by the attack on issue 15: a ValueError escaped
@example(text="a: !!int x\n")
@example(text="a: " + "1" * 4301 + "\n")
@example(text="0: !!int")  # found by this property: an IndexError escaped
@example(text='a: "\\U0011FFFF"')  # found by this property: chr()'s ValueError escaped
@fuzz(text=TEXTS)
def test_any_text_scans_plans_and_splices_or_is_a_manifest_error(text: str) -> None:
    try:
        manifest = manifests.scan(text, source=SOURCE)
    except errors.ManifestError as e:
        assert str(e).startswith(SOURCE), e
        assert e.reason == "InvalidManifest"
        return
    plan = manifests.plan(manifest)
    for problem in plan.problems:
        assert problem.reason in ("InvalidReference", "LocalReference", "AliasedValue")
    edits = [manifests.edit(p, fake_digest(p.ref.canonical)) for p in plan.pins]
    try:
        result = manifests.splice(manifest, edits)
    except errors.ManifestError as e:
        # The one refusal that is the user's to fix; any other means splice wrote text that
        # did not mean what it should ("Please report this"): a bug, even if caught.
        assert "spans several lines" in str(e), e
        return
    if not edits:
        assert result == text
        return
    assert_only_the_scalars_changed(text, result, edits)

    again = manifests.scan(result, source=SOURCE)
    values: dict[int, dict[str, str]] = {}
    for e in edits:
        values.setdefault(e.located.document, {})[e.located.pointer] = e.value
    assert len(again.documents) == len(manifest.documents)
    for before, after in zip(manifest.documents, again.documents, strict=True):
        expected: Any = before.obj
        if before.index in values:
            expected = sites.apply(expected, values[before.index])
        assert after.obj == expected  # PyYAML's NaN is one object: == holds
    replan = manifests.plan(again)
    assert not replan.pins  # pinning is idempotent: everything pinned stays pinned
    assert manifests.splice(again, []) == result


@example(first="a: 1\n", second="\ufeffb: 2\n")  # found by this property
@example(first="0", second="---0")  # and this one
@example(first="", second="a: 0x" + "f" * 4000)  # an integer too long for repr()
@example(first="0", second="\xa0")  # found by this property: a no-break space is content
@fuzz(examples=50, first=TEXTS, second=TEXTS)
def test_concatenated_streams_read_as_one_after_the_other(first: str, second: str) -> None:
    """Several inputs are printed as one stream (``kitpin pin -f a -f b``)."""
    try:
        a = manifests.scan(first, source="a.yaml")
        b = manifests.scan(second, source="b.yaml")
    except errors.ManifestError:
        return
    joined = manifests.scan(manifests.concatenate([first, second]), source="joined.yaml")
    assert [d.obj for d in joined.documents] == [d.obj for d in (*a.documents, *b.documents)]


@fuzz(examples=10, deep_examples=300, text=DEEP)
def test_deep_nesting_is_read_or_refused_as_a_manifest_error(text: str) -> None:
    try:
        manifest = manifests.scan(text, source=SOURCE)
    except errors.ManifestError as e:
        assert str(e).startswith(SOURCE), e
        return
    manifests.plan(manifest)
