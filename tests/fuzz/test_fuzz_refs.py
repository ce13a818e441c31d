"""refs.parse on any text: a Reference or a ReferenceError, never another exception; every
Reference survives its own renderings (str, canonical, pinned) unchanged."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fuzz_helpers import REFERENCES, fuzz
from hypothesis import example
from hypothesis import strategies as st

from controller import errors, refs

ALPHABET = "abcxyzABCZ0189./:@-_~[]%+#!? kit\t\n\x00é\u200b"
"""Every character the grammar gives a meaning to, and some it refuses."""

DIGESTS = st.binary(min_size=32, max_size=32).map(lambda b: f"sha256:{b.hex()}")
HOSTS = st.sampled_from(
    [
        "registry.example.com", "Reg.Example.COM", "reg.io:443", "127.0.0.1:5000", "[::1]:5000",
        "[fe80::1%25eth0]:5000", "localhost:5000", "localhost", "index.docker.io",
        "registry-1.docker.io", "docker.io", "a-.b", "x" * 64 + ".io", "reg.io:0", "reg.io:65536",
    ]
)  # fmt: skip
PATHS = st.lists(
    st.from_regex(r"[a-z0-9]{1,6}((\.|_|__|-+)[a-z0-9]{1,4}){0,2}", fullmatch=True),
    min_size=1,
    max_size=4,
).map("/".join)
TAGS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@st.composite
def built(draw: st.DrawFn) -> str:
    """Texts assembled from the grammar's parts, most of them valid."""
    text = ""
    if draw(st.booleans()):
        text += draw(HOSTS) + "/"
    text += draw(PATHS)
    if draw(st.booleans()):
        text += ":" + draw(TAGS)
    if draw(st.booleans()):
        text += "@" + draw(DIGESTS | st.sampled_from(["sha256:", "sha512:" + "a" * 128, "md5:x"]))
    if draw(st.booleans()):
        text = draw(st.sampled_from(["kit://", "KIT://", "oci://", "docker://"])) + text
    return text


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A reference with a few characters inserted, deleted, repeated or changed."""
    text = draw(REFERENCES | built())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "repeat", "upper"]))
        if edit == "insert":
            text = text[:at] + draw(st.text(ALPHABET, min_size=1, max_size=3)) + text[at:]
        elif edit == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 4)) :]
        elif edit == "repeat":
            text = text[:at] + text[at:] * draw(st.integers(2, 80))
        else:
            text = text[:at] + text[at:].upper()
    return text


TEXTS = st.one_of(
    st.text(max_size=40),
    st.text(ALPHABET, max_size=60),
    built(),
    mutated(),
    st.integers(0, 5000).map(lambda n: "reg.io/" + "a" * n),  # around the length limits
)
GRAMMARS = st.sampled_from(["kit", "image"])


def same_except_tag_spelling(a: refs.Reference, b: refs.Reference) -> bool:
    return replace(a, tag_explicit=b.tag_explicit) == b


@example(text="A/0", grammar="image", digest="sha256:" + "0" * 64)  # found by the property
@fuzz(text=TEXTS, grammar=GRAMMARS, digest=DIGESTS)
def test_parse_returns_a_reference_or_raises_reference_error(
    text: str, grammar: refs.Grammar, digest: str
) -> None:
    try:
        ref = refs.parse(text, grammar=grammar)
    except errors.ReferenceError as e:
        assert e.reason in ("InvalidReference", "LocalReference")
        assert str(e)  # the message says what to fix
        return
    assert len(ref.canonical_name) <= refs.MAX_NAME_LENGTH
    # lowercased, but for a host only its uppercase marks as one (``MyRegistry/model``)
    assert ref.registry == ref.registry.lower() or not any(c in ref.registry for c in ".:[")
    assert ref.digest is None or (ref.digest.startswith("sha256:") and len(ref.digest) == 71)
    assert ref.grammar == grammar

    # str(): the user's spelling, tag written out when there is no digest
    assert same_except_tag_spelling(refs.parse(str(ref), grammar=grammar), ref)

    # canonical: the cache key parses back to itself
    again = refs.parse(ref.canonical, grammar=grammar)
    assert again.canonical == ref.canonical
    assert (again.registry, again.repository, again.digest) == (
        ref.registry,
        ref.repository,
        ref.digest,
    )

    # pinned(): name as written, tag kept, the new digest
    pinned = refs.parse(ref.pinned(digest), grammar=grammar)
    assert (pinned.registry, pinned.repository, pinned.tag, pinned.name) == (
        ref.registry,
        ref.repository,
        ref.tag,
        ref.name,
    )
    assert pinned.digest == digest
    assert pinned.canonical == f"{ref.canonical_name}@{digest}"


@pytest.mark.parametrize(
    "text", ["A/0", "MyRegistry/ml/model:v1", "MyRegistry/m@sha256:" + "c" * 64]
)
def test_a_host_only_its_uppercase_marks_stays_a_host_in_canonical(text: str) -> None:
    """Found by the property: ``A/0`` is host ``A`` (the runtimes' rule), but its canonical
    form was ``a/0:latest``, which reads as Docker Hub's ``docker.io/a/0``."""
    ref = refs.parse(text, grammar="image")
    again = refs.parse(ref.canonical, grammar="image")
    assert again.canonical == ref.canonical
    assert again.registry == ref.registry == text.partition("/")[0]
