"""refs.parse, table-driven: what each grammar accepts, how it normalises, what it refuses."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from controller import errors, refs

D = "sha256:" + "0123456789abcdef" * 4
D2 = "sha256:" + "f" * 64


@dataclass(frozen=True, kw_only=True)
class Ok:
    text: str
    grammar: refs.Grammar
    registry: str
    repository: str
    tag: str = "latest"
    tag_explicit: bool = False
    digest: str | None = None
    name: str | None = None
    """Defaults to the text without ``kit://``, tag and digest when None."""


VALID = [
    # --- image grammar: Docker Hub defaults
    Ok(text="nginx", grammar="image", registry="docker.io", repository="library/nginx"),
    Ok(
        text="nginx:1.27",
        grammar="image",
        registry="docker.io",
        repository="library/nginx",
        tag="1.27",
        tag_explicit=True,
        name="nginx",
    ),
    Ok(text="org/model", grammar="image", registry="docker.io", repository="org/model"),
    Ok(text="org/team/model", grammar="image", registry="docker.io", repository="org/team/model"),
    Ok(
        text="docker.io/nginx",
        grammar="image",
        registry="docker.io",
        repository="library/nginx",
    ),
    Ok(
        text="index.docker.io/nginx",
        grammar="image",
        registry="docker.io",
        repository="library/nginx",
    ),
    Ok(
        text="registry-1.docker.io/org/model:v1",
        grammar="image",
        registry="docker.io",
        repository="org/model",
        tag="v1",
        tag_explicit=True,
        name="registry-1.docker.io/org/model",
    ),
    Ok(
        text="Docker.IO/nginx",
        grammar="image",
        registry="docker.io",
        repository="library/nginx",
    ),
    # localhost is a registry in the image grammar, with or without a port
    Ok(text="localhost/model", grammar="image", registry="localhost", repository="model"),
    Ok(text="localhost:5000/model", grammar="image", registry="localhost:5000", repository="model"),
    # ... but a single component "localhost" is a Docker Hub repository
    Ok(text="localhost", grammar="image", registry="docker.io", repository="library/localhost"),
    # an uppercase first component is a host (container runtimes' rule), lowercased
    Ok(text="MyRegistry/model", grammar="image", registry="MyRegistry", repository="model"),
    Ok(
        text="ghcr.io/kitops-ml/kitops-init:v1.5.0",
        grammar="image",
        registry="ghcr.io",
        repository="kitops-ml/kitops-init",
        tag="v1.5.0",
        tag_explicit=True,
        name="ghcr.io/kitops-ml/kitops-init",
    ),
    # --- kit grammar
    Ok(
        text="registry.example.com/myorg/model:prod",
        grammar="kit",
        registry="registry.example.com",
        repository="myorg/model",
        tag="prod",
        tag_explicit=True,
        name="registry.example.com/myorg/model",
    ),
    Ok(
        text="kit://registry.example.com/myorg/model:prod",
        grammar="kit",
        registry="registry.example.com",
        repository="myorg/model",
        tag="prod",
        tag_explicit=True,
        name="registry.example.com/myorg/model",
    ),
    Ok(text="localhost:5000/model", grammar="kit", registry="localhost:5000", repository="model"),
    Ok(text="jozu.ml/org/model", grammar="kit", registry="jozu.ml", repository="org/model"),
    # kit does not know Docker Hub's library/ namespace; aliases are still folded
    Ok(text="docker.io/model", grammar="kit", registry="docker.io", repository="model"),
    Ok(text="index.docker.io/org/m", grammar="kit", registry="docker.io", repository="org/m"),
    # --- both: ports, IPv6, nesting, case, tags, digests
    Ok(
        text="reg.example.com:5000/llama:production",
        grammar="kit",
        registry="reg.example.com:5000",
        repository="llama",
        tag="production",
        tag_explicit=True,
        name="reg.example.com:5000/llama",
    ),
    Ok(
        text="reg.example.com:05000/llama",
        grammar="image",
        registry="reg.example.com:5000",
        repository="llama",
    ),
    Ok(text="reg:1/a", grammar="kit", registry="reg:1", repository="a"),
    Ok(text="reg:65535/a", grammar="kit", registry="reg:65535", repository="a"),
    Ok(
        text="[::1]:5000/repo:tag",
        grammar="kit",
        registry="[::1]:5000",
        repository="repo",
        tag="tag",
        tag_explicit=True,
        name="[::1]:5000/repo",
    ),
    Ok(
        text="[::1]:5000/repo:tag",
        grammar="image",
        registry="[::1]:5000",
        repository="repo",
        tag="tag",
        tag_explicit=True,
        name="[::1]:5000/repo",
    ),
    Ok(text="[FE80::1]/repo", grammar="image", registry="[fe80::1]", repository="repo"),
    Ok(
        text="10.0.0.1:5000/a/b/c/d",
        grammar="kit",
        registry="10.0.0.1:5000",
        repository="a/b/c/d",
    ),
    Ok(
        text="Reg.Example.COM/org/model",
        grammar="kit",
        registry="reg.example.com",
        repository="org/model",
    ),
    Ok(
        text="reg.io/a.b/c_d/e__f/g-h/i---j/0",
        grammar="image",
        registry="reg.io",
        repository="a.b/c_d/e__f/g-h/i---j/0",
    ),
    Ok(
        text="reg.io/m:V1.0_rc-1",
        grammar="kit",
        registry="reg.io",
        repository="m",
        tag="V1.0_rc-1",
        tag_explicit=True,
        name="reg.io/m",
    ),
    Ok(
        text="reg.io/m:_x",
        grammar="kit",
        registry="reg.io",
        repository="m",
        tag="_x",
        tag_explicit=True,
        name="reg.io/m",
    ),
    Ok(
        text="reg.io/m:" + "a" * 128,
        grammar="kit",
        registry="reg.io",
        repository="m",
        tag="a" * 128,
        tag_explicit=True,
        name="reg.io/m",
    ),
    Ok(
        text=f"reg.io/m:v1@{D}",
        grammar="kit",
        registry="reg.io",
        repository="m",
        tag="v1",
        tag_explicit=True,
        digest=D,
        name="reg.io/m",
    ),
    Ok(
        text=f"reg.io/m@{D}",
        grammar="kit",
        registry="reg.io",
        repository="m",
        digest=D,
        name="reg.io/m",
    ),
    Ok(
        text=f"nginx@{D}",
        grammar="image",
        registry="docker.io",
        repository="library/nginx",
        digest=D,
        name="nginx",
    ),
    Ok(
        text=f"kit://reg.io/m:v1@{D}",
        grammar="kit",
        registry="reg.io",
        repository="m",
        tag="v1",
        tag_explicit=True,
        digest=D,
        name="reg.io/m",
    ),
]


def _default_name(case: Ok) -> str:
    text = case.text.removeprefix("kit://")
    return text.split("@")[0].rsplit(":", 1)[0] if case.tag_explicit else text.split("@")[0]


@pytest.mark.parametrize("case", VALID, ids=lambda c: f"{c.grammar}:{c.text[:60]}")
def test_valid(case: Ok) -> None:
    ref = refs.parse(case.text, grammar=case.grammar)
    assert ref == refs.Reference(
        registry=case.registry,
        repository=case.repository,
        tag=case.tag,
        tag_explicit=case.tag_explicit,
        digest=case.digest,
        grammar=case.grammar,
        name=case.name if case.name is not None else _default_name(case),
    )


@dataclass(frozen=True, kw_only=True)
class Bad:
    text: str
    grammar: refs.Grammar
    words: tuple[str, ...]
    """Every one of these must appear in the message (they say what is wrong / what to do)."""
    local: bool = False


BAD = [
    # --- kit grammar: no registry means kit's local storage
    Bad(
        text="myorg/model:prod",
        grammar="kit",
        local=True,
        words=(
            "'myorg/model:prod' has no registry host",
            "local storage",
            "Pod",
            "'registry.example.com/myorg/model:prod'",
        ),
    ),
    Bad(
        text="model",
        grammar="kit",
        local=True,
        words=("no registry host", "'registry.example.com/model'"),
    ),
    Bad(
        text="kit://myorg/model",
        grammar="kit",
        local=True,
        words=("'kit://registry.example.com/myorg/model'",),
    ),
    Bad(
        text="localhost/model:prod",
        grammar="kit",
        local=True,
        words=("no registry host", "with a port", "'localhost:5000/model:prod'"),
    ),
    Bad(
        text="registry.example.com",
        grammar="kit",
        local=True,
        words=("no registry host", "add the repository", "'registry.example.com/<repository>'"),
    ),
    Bad(text="MyOrg/model", grammar="kit", words=("lowercase",)),
    Bad(text=f"myorg/model@{D}", grammar="kit", local=True, words=("no registry host",)),
    # --- schemes
    Bad(
        text="kit://reg.io/m:v1",
        grammar="image",
        words=("'kit://'", "image reference has no scheme", "'reg.io/m:v1'"),
    ),
    Bad(
        text="https://reg.io/m",
        grammar="kit",
        words=("URL scheme 'https://'", "'reg.io/m'", "'kit://reg.io/m'"),
    ),
    Bad(text="oci://reg.io/m", grammar="image", words=("URL scheme 'oci://'", "'reg.io/m'")),
    Bad(text="KIT://reg.io/m", grammar="kit", words=("'KIT://'", "only 'kit://'")),
    Bad(text="kit://", grammar="kit", words=("nothing after 'kit://'",)),
    Bad(text="kit://kit://reg.io/m", grammar="kit", words=("'://' twice",)),
    Bad(text="reg.io/m://x", grammar="kit", words=("not a URL",)),
    # --- characters: never trimmed
    Bad(text="", grammar="kit", words=("is empty",)),
    Bad(text=" reg.io/m", grammar="kit", words=("whitespace", "' '", "position 0", "trim")),
    Bad(text="reg.io/m:v1\n", grammar="image", words=("whitespace", r"'\n'", "position 11")),
    Bad(text="reg.io/m\t:v1", grammar="image", words=("whitespace", r"'\t'")),
    Bad(text="reg.io/m\u00a0", grammar="image", words=("whitespace",)),
    Bad(text="reg.io/m\x00", grammar="kit", words=("control", r"'\x00'", "position 8")),
    Bad(text="reg.io/m\x7f", grammar="kit", words=("control", r"'\x7f'")),
    Bad(text="reg.io/\u200bm", grammar="kit", words=("invisible", r"'\u200b'")),
    Bad(text="reg.io/modèl", grammar="kit", words=("non-ASCII", "'è'", "position 10")),
    Bad(text="r" * 5000, grammar="image", words=("5000 characters", "4096")),
    # --- repository
    Bad(
        text="reg.io/Org/Model:v1",
        grammar="kit",
        words=("uppercase", "must be lowercase", "'org/model'"),
    ),
    Bad(text="Nginx", grammar="image", words=("lowercase", "'nginx'")),
    Bad(text="reg.io/-m", grammar="kit", words=("invalid repository path component", "'-m'")),
    Bad(text="reg.io/m-", grammar="kit", words=("'m-'", "cannot start or end")),
    Bad(text="reg.io/a..b", grammar="image", words=("'a..b'",)),
    Bad(text="reg.io/a___b", grammar="image", words=("'a___b'",)),
    Bad(text="reg.io/a_b!", grammar="image", words=("'a_b!'",)),
    Bad(text="reg.io//m", grammar="kit", words=("empty path component", "'//'")),
    Bad(text="reg.io/m/", grammar="kit", words=("ends its name with '/'",)),
    Bad(text="/reg.io/m", grammar="image", words=("starts with '/'",)),
    Bad(text="reg.io/", grammar="image", words=("'/'",)),
    Bad(text=":v1", grammar="image", words=("no repository name",)),
    Bad(text=f"@{D}", grammar="kit", words=("no repository name",)),
    Bad(
        text="a" * 64,
        grammar="image",
        words=("image ID", "64 hex"),
    ),
    Bad(
        text="reg.io/" + "/".join(["abcdefghij"] * 25),
        grammar="kit",
        words=("255",),
    ),
    # --- tag
    Bad(text="reg.io/m:", grammar="kit", words=("no tag", "remove the ':'")),
    Bad(text=f"reg.io/m:@{D}", grammar="kit", words=("no tag before '@'",)),
    Bad(text="reg.io/m:-v1", grammar="kit", words=("invalid tag", "'-v1'", "cannot")),
    Bad(text="reg.io/m:.v1", grammar="kit", words=("invalid tag", "'.v1'")),
    Bad(text="reg.io/m:v+1", grammar="kit", words=("invalid tag", "'v+1'")),
    Bad(text="reg.io/m:a:b", grammar="image", words=("':' inside", "'m:a'", "once")),
    Bad(text="reg.io/m:" + "a" * 129, grammar="kit", words=("129 characters", "128")),
    # --- digest
    Bad(text="reg.io/m@", grammar="kit", words=("no digest", "remove the '@'")),
    Bad(
        text="reg.io/m@sha512:" + "a" * 128,
        grammar="kit",
        words=("'sha512'", "kitpin pins sha256 digests: expected sha256:<64 lowercase hex>"),
    ),
    Bad(
        text="reg.io/m@sha256:" + "A" * 64,
        grammar="kit",
        words=("uppercase", "kitpin pins sha256 digests: expected sha256:<64 lowercase hex>"),
    ),
    Bad(
        text="reg.io/m@sha256:" + "a" * 63,
        grammar="image",
        words=("63 hex digits", "kitpin pins sha256 digests"),
    ),
    Bad(
        text="reg.io/m@sha256:" + "a" * 65,
        grammar="image",
        words=("65 hex digits", "kitpin pins sha256 digests"),
    ),
    Bad(
        text="reg.io/m@sha256:" + "g" * 64,
        grammar="kit",
        words=("not hexadecimal", "kitpin pins sha256 digests"),
    ),
    Bad(text="reg.io/m@" + "a" * 64, grammar="kit", words=("no algorithm", "sha256")),
    Bad(text=f"reg.io/m@{D}@{D}", grammar="kit", words=("more than one '@'",)),
    Bad(text="reg.io/m@latest", grammar="image", words=("no algorithm",)),
    # --- registry host and port
    Bad(text="reg.io:0/m", grammar="kit", words=("port '0'", "1 to 65535")),
    Bad(text="reg.io:65536/m", grammar="kit", words=("port '65536'", "1 to 65535")),
    Bad(text="reg.io:" + "9" * 4000 + "/m", grammar="kit", words=("1 to 65535",)),
    Bad(text="reg.io:http/m", grammar="kit", words=("'http'", "not a number")),
    Bad(text="reg.io:/m", grammar="image", words=("no port",)),
    Bad(text=":5000/m", grammar="kit", words=("no host name",)),
    Bad(text="reg..io/m", grammar="kit", words=("empty label", "'reg..io'")),
    Bad(text=".reg.io/m", grammar="kit", words=("empty label",)),
    Bad(text="reg.io./m", grammar="image", words=("empty label",)),
    Bad(text="-reg.io/m", grammar="kit", words=("'-reg'", "cannot start or end with '-'")),
    Bad(text="re_g.io/m", grammar="kit", words=("invalid registry host", "'re_g'")),
    Bad(text="fe80::1/m", grammar="kit", words=("IPv6", "brackets", "'[::1]:5000")),
    Bad(text="[::1/m", grammar="kit", words=("unclosed '['",)),
    Bad(text="[::g]/m", grammar="kit", words=("not an IPv6 address",)),
    Bad(text="[1::2::3]/m", grammar="image", words=("not an IPv6 address",)),
    Bad(text="[fe80::1%eth0]/m", grammar="image", words=("not an IPv6 address",)),
    Bad(text="[::1]x/m", grammar="kit", words=("'x'", "only ':PORT'")),
    Bad(text="[::1]:0/m", grammar="kit", words=("1 to 65535",)),
]


@pytest.mark.parametrize("case", BAD, ids=lambda c: f"{c.grammar}:{c.text[:50]!r}")
def test_invalid(case: Bad) -> None:
    with pytest.raises(errors.ReferenceError) as caught:
        refs.parse(case.text, grammar=case.grammar)
    error = caught.value
    assert isinstance(error, errors.LocalReferenceError) is case.local
    assert error.text == case.text
    assert error.reason == ("LocalReference" if case.local else "InvalidReference")
    for word in case.words:
        assert word in error.message


def test_long_text_is_shortened_in_the_message() -> None:
    with pytest.raises(errors.ReferenceError) as caught:
        refs.parse("reg.io/m:" + "a" * 1000, grammar="kit")
    assert len(caught.value.message) < 400
    assert "(1009 characters)" in caught.value.message


def test_non_string_is_a_reference_error() -> None:
    with pytest.raises(errors.ReferenceError, match="expected a reference string, got int"):
        refs.parse(42, grammar="image")  # type: ignore[arg-type]


@pytest.mark.parametrize("grammar", ["image", "kit"])
def test_same_text_both_grammars_where_they_agree(grammar: refs.Grammar) -> None:
    ref = refs.parse(f"reg.example.com:5000/llama:production@{D}", grammar=grammar)
    assert ref.canonical == f"reg.example.com:5000/llama@{D}"


def test_grammars_disagree_on_a_bare_namespace() -> None:
    assert refs.parse("myorg/model:prod", grammar="image").canonical == (
        "docker.io/myorg/model:prod"
    )
    with pytest.raises(errors.LocalReferenceError):
        refs.parse("myorg/model:prod", grammar="kit")


# --- rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "grammar", "pinned"),
    [
        (
            "reg.example.com:5000/llama:production",
            "kit",
            f"reg.example.com:5000/llama:production@{D2}",
        ),
        ("kit://reg.example.com/llama", "kit", f"reg.example.com/llama:latest@{D2}"),
        ("Reg.Example.com/llama:v1", "kit", f"Reg.Example.com/llama:v1@{D2}"),
        ("nginx", "image", f"nginx:latest@{D2}"),
        ("index.docker.io/org/m:v1", "image", f"index.docker.io/org/m:v1@{D2}"),
        ("[::1]:5000/repo:tag", "image", f"[::1]:5000/repo:tag@{D2}"),
        (f"reg.io/m:v1@{D}", "kit", f"reg.io/m:v1@{D2}"),
    ],
)
def test_pinned_keeps_the_users_spelling(text: str, grammar: refs.Grammar, pinned: str) -> None:
    assert refs.parse(text, grammar=grammar).pinned(D2) == pinned


@pytest.mark.parametrize(
    ("text", "grammar", "canonical"),
    [
        ("nginx", "image", "docker.io/library/nginx:latest"),
        ("Reg.IO:05000/m:v1", "kit", "reg.io:5000/m:v1"),
        (f"reg.io/m:v1@{D}", "kit", f"reg.io/m@{D}"),
        ("registry-1.docker.io/library/nginx:1", "image", "docker.io/library/nginx:1"),
    ],
)
def test_canonical(text: str, grammar: refs.Grammar, canonical: str) -> None:
    ref = refs.parse(text, grammar=grammar)
    assert ref.canonical == canonical
    assert ref.is_pinned is (ref.digest is not None)


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("reg.io/m", "reg.io/m:latest"),
        ("reg.io/m:v1", "reg.io/m:v1"),
        (f"reg.io/m@{D}", f"reg.io/m@{D}"),
        (f"reg.io/m:v1@{D}", f"reg.io/m:v1@{D}"),
        ("kit://reg.io/m:v1", "reg.io/m:v1"),
    ],
)
def test_str(text: str, rendered: str) -> None:
    assert str(refs.parse(text, grammar="kit")) == rendered
