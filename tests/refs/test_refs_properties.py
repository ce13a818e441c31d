"""refs.parse properties: valid references survive rendering; nothing else ever escapes."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from controller import errors, refs

LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
MIXED_ALNUM = LOWER_ALNUM + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

digests = st.binary(min_size=32, max_size=32).map(lambda b: f"sha256:{b.hex()}")

alnum_runs = st.text(LOWER_ALNUM, min_size=1, max_size=8)
separators = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def path_components(draw: st.DrawFn) -> str:
    parts = [draw(alnum_runs)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(separators), draw(alnum_runs)]
    return "".join(parts)


@st.composite
def host_labels(draw: st.DrawFn) -> str:
    inner = draw(st.text(MIXED_ALNUM + "-", max_size=10))
    first = draw(st.sampled_from(MIXED_ALNUM))
    if not inner:
        return first
    return first + inner + draw(st.sampled_from(MIXED_ALNUM))


ports = st.integers(1, 65535).map(str)


@st.composite
def hosts(draw: st.DrawFn) -> tuple[str, str]:
    """(as written, normalised) ``host[:port]`` that both grammars take as a registry."""
    kind = draw(st.sampled_from(["dns", "localhost", "ipv6", "ipv4"]))
    if kind == "dns":
        labels = draw(st.lists(host_labels(), min_size=2, max_size=4))
        host = ".".join(labels)
    elif kind == "localhost":
        host = draw(st.sampled_from(["localhost", "LocalHost"]))
    elif kind == "ipv6":
        host = f"[{draw(st.ip_addresses(v=6)).compressed}]"
    else:
        host = str(draw(st.ip_addresses(v=4)))
    port = draw(ports) if kind == "localhost" else draw(st.none() | ports)
    written = host if port is None else f"{host}:{port}"
    normalised = host.lower() if port is None else f"{host.lower()}:{port}"
    if normalised in refs.DOCKER_HUB_ALIASES:
        normalised = refs.DOCKER_HUB
    return written, normalised


tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", fullmatch=True)


@st.composite
def valid_texts(draw: st.DrawFn) -> tuple[str, refs.Grammar, str, str, str | None, str | None]:
    """(text, grammar, registry, repository, tag, digest) for a valid reference."""
    grammar: refs.Grammar = draw(st.sampled_from(["image", "kit"]))
    path = draw(st.lists(path_components(), min_size=1, max_size=4))
    tag = draw(st.none() | tags)
    digest = draw(st.none() | digests)
    if grammar == "image" and draw(st.booleans()):
        # Docker Hub shorthand: a lowercase first component without '.' or ':'.
        assume(path[0] != "localhost" and "." not in path[0])
        name, registry = "/".join(path), refs.DOCKER_HUB
        assume(len(path) > 1 or len(path[0]) != 64)
    else:
        written, registry = draw(hosts())
        name = f"{written}/{'/'.join(path)}"
    repository = "/".join(path)
    if grammar == "image" and registry == refs.DOCKER_HUB and len(path) == 1:
        repository = f"library/{repository}"
    assume(len(f"{registry}/{repository}") <= refs.MAX_NAME_LENGTH)
    text = name
    if tag is not None:
        text += f":{tag}"
    if digest is not None:
        text += f"@{digest}"
    if grammar == "kit" and draw(st.booleans()):
        text = refs.KIT_SCHEME + text
    return text, grammar, registry, repository, tag, digest


@settings(max_examples=300)
@given(valid_texts(), digests)
def test_valid_references_round_trip(
    case: tuple[str, refs.Grammar, str, str, str | None, str | None], pin: str
) -> None:
    text, grammar, registry, repository, tag, digest = case
    ref = refs.parse(text, grammar=grammar)
    assert (ref.registry, ref.repository, ref.digest) == (registry, repository, digest)
    assert ref.tag == (tag or refs.DEFAULT_TAG)
    assert ref.tag_explicit is (tag is not None)
    assert ref.grammar == grammar

    again = refs.parse(str(ref), grammar=grammar)
    # str() writes ':latest' out when there is no digest, so only tag_explicit may change.
    assert replace(again, tag_explicit=ref.tag_explicit) == ref
    assert again.tag_explicit is (ref.tag_explicit or ref.digest is None)

    pinned = refs.parse(ref.pinned(pin), grammar=grammar)
    assert (pinned.registry, pinned.repository, pinned.tag) == (
        ref.registry,
        ref.repository,
        ref.tag,
    )
    assert pinned.digest == pin
    assert pinned.name == ref.name
    assert pinned.canonical == f"{ref.canonical_name}@{pin}"


def _only_reference_errors(text: str) -> None:
    for grammar in ("image", "kit"):
        try:
            ref = refs.parse(text, grammar=grammar)
        except errors.ReferenceError as error:
            assert error.text == text
            assert error.message
        else:
            assert ref.registry
            assert ref.repository
            assert ref.tag


REFERENCE_ALPHABET = "abcAZ09:/@._-[]sh256kit \t\n\x00é"


@settings(max_examples=300)
@given(st.text())
def test_arbitrary_text_raises_only_reference_errors(text: str) -> None:
    _only_reference_errors(text)


@settings(max_examples=300)
@given(st.text(REFERENCE_ALPHABET, max_size=40))
def test_reference_shaped_text_raises_only_reference_errors(text: str) -> None:
    _only_reference_errors(text)


@settings(max_examples=300)
@given(valid_texts(), st.data())
def test_mutated_references_raise_only_reference_errors(
    case: tuple[str, refs.Grammar, str, str, str | None, str | None], data: st.DataObject
) -> None:
    text = case[0]
    position = data.draw(st.integers(0, len(text)))
    insert = data.draw(st.text(REFERENCE_ALPHABET + "\u200b\r", min_size=1, max_size=3))
    cut = data.draw(st.integers(0, 3))
    _only_reference_errors(text[:position] + insert + text[position + cut :])


@settings(max_examples=50)
@given(
    st.integers(refs.MAX_REFERENCE_LENGTH - 10, refs.MAX_REFERENCE_LENGTH + 2000),
    st.sampled_from(["a", "/", ":", "9", "reg.io/", "@"]),
)
def test_very_long_text_raises_only_reference_errors(length: int, unit: str) -> None:
    text = (unit * length)[:length]
    _only_reference_errors(text)
    _only_reference_errors("reg.io:" + "9" * length + "/m")
    _only_reference_errors("reg.io/m:" + "a" * length)
