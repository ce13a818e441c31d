"""Properties of pinning YAML text: whatever the style, only the reference changes."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pin_helpers import changed_lines, fake_digest, pin_text

from controller import manifests, refs

HOSTS = st.sampled_from(["registry.example.com", "127.0.0.1:5000", "reg.io:443", "[::1]:5000"])
COMPONENT = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,4})?", fullmatch=True)
TAGS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", fullmatch=True)


@st.composite
def references(draw: st.DrawFn) -> str:
    path = "/".join(draw(st.lists(COMPONENT, min_size=1, max_size=3)))
    tag = draw(st.one_of(st.none(), TAGS))
    prefix = draw(st.sampled_from(["", "kit://"]))
    return f"{prefix}{draw(HOSTS)}/{path}" + (f":{tag}" if tag else "")


def render(value: str, style: str) -> str:
    if style == "plain":
        return value
    if style == "single":
        return f"'{value}'"
    if style == "double":
        return f'"{value}"'
    return f"{style}\n          {value}"  # a block scalar, content indented under the key


STYLES = st.sampled_from(["plain", "single", "double", "|-", ">-"])
COMMENTS = st.sampled_from(["", "  # pinned by CI", " #x"])
DECORATIONS = st.sampled_from(["", "!!str ", "&m "])


def pinned(value: str) -> str:
    """What the webhook writes for an env site: ``name:tag@digest``, with a ``kit://`` the user
    wrote kept in front."""
    ref = refs.parse(value, grammar="kit")
    scheme = "kit://" if value.startswith("kit://") else ""
    return scheme + ref.pinned(fake_digest(ref.canonical))


@settings(max_examples=300, deadline=None)
@given(
    value=references(),
    style=STYLES,
    comment=COMMENTS,
    decoration=DECORATIONS,
    before=st.booleans(),
)
def test_only_the_reference_changes(
    value: str, style: str, comment: str, decoration: str, before: bool
) -> None:
    assume(not (style == "plain" and value.startswith("[")))  # not valid YAML as input
    if style in ("|-", ">-"):
        comment = comment and "  # c"  # a comment after a block header
        written = f"{decoration}{style}{comment}\n          {value}"
    else:
        written = f"{decoration}{render(value, style)}{comment}"
    doc = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
        "  initContainers:\n"
        "    - name: kitops-init\n"
        "      image: ghcr.io/kitops-ml/kitops-init:v1\n"
        "      env:\n"
        "      - name: MODELKIT_REF\n"
        f"        value: {written}\n"
        "  containers: [{name: main, image: x/serve:1}]\n"
    )
    other = "# other\napiVersion: v1\nkind: ConfigMap\ndata: {a: '1'}\n"
    text = f"{other}---\n{doc}" if before else f"{doc}---\n{other}"
    out = pin_text(text)
    [(old, new)] = changed_lines(text, out)
    expected = pinned(value)
    if style == "plain" and "[" in expected:
        # an IPv6 registry ([::1]:5000): "[" is a flow indicator, so a pinned plain value
        # that contains one is double-quoted (it must read back the same in flow context)
        assert new == old.replace(value, f'"{expected}"')
    else:
        assert new == old.replace(value, expected)
    docs: list[Any] = list(yaml.safe_load_all(out))
    pod = docs[1] if before else docs[0]
    assert pod["spec"]["initContainers"][0]["env"][0]["value"] == expected
    assert pin_text(out) == out


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.floats(allow_nan=False)
)
DATA = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    documents=st.lists(DATA, min_size=1, max_size=3),
    flow=st.sampled_from([None, True, False]),
)
def test_documents_without_references_pass_through(
    documents: list[object], flow: bool | None
) -> None:
    text = yaml.safe_dump_all(documents, default_flow_style=flow, allow_unicode=True)
    manifest = manifests.scan(text, source="t")
    assert [d.obj for d in manifest.documents] == list(yaml.safe_load_all(text))
    assert pin_text(text) == text
