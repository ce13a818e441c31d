"""controller.manifests: finding references in YAML text and splicing pinned values in.

Every test checks the bytes, not only the parsed result: pinning may change the pinned
scalars and nothing else.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from pin_helpers import (
    changed_lines,
    fake_digest,
    load_all,
    pin_text,
    read_testdata,
)

from controller import manifests, sites

REF = "registry.example.com/ml/llama:production"
PINNED = f"{REF}@{fake_digest('registry.example.com/ml/llama:production')}"


def pod(value_yaml: str, *, extra: str = "") -> str:
    """A Pod whose kitops-init MODELKIT_REF value is ``value_yaml`` (as written)."""
    return (
        "apiVersion: v1\n"
        "kind: Pod\n"
        "metadata: {name: p}\n"
        "spec:\n"
        "  initContainers:\n"
        "    - name: kitops-init\n"
        "      image: ghcr.io/kitops-ml/kitops-init:v1.7.0\n"
        "      env:\n"
        "        - name: MODELKIT_REF\n"
        f"          value: {value_yaml}\n"
        f"{extra}"
        "  containers: [{name: main, image: ghcr.io/example/serve:1}]\n"
    )


def env_value(doc: Any) -> Any:
    return doc["spec"]["initContainers"][0]["env"][0]["value"]


# ---------------------------------------------------------------------------------------
# Scalar styles


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (REF, PINNED),
        (f"'{REF}'", f"'{PINNED}'"),
        (f'"{REF}"', f'"{PINNED}"'),
        (f"{REF}   # the model", f"{PINNED}   # the model"),
        (f"'{REF}' # quoted, commented", f"'{PINNED}' # quoted, commented"),
        (f"!!str {REF}", f"!!str {PINNED}"),
        (f"&model {REF}", f"&model {PINNED}"),
    ],
    ids=["plain", "single", "double", "plain-comment", "single-comment", "tag", "anchor"],
)
def test_each_style_is_kept(written: str, expected: str) -> None:
    text = pod(written)
    out = pin_text(text)
    assert out == text.replace(f"value: {written}", f"value: {expected}")
    assert env_value(yaml.safe_load(out)) == PINNED


@pytest.mark.parametrize("indicator", ["|-", ">-", "|+"])
def test_block_scalar_keeps_its_header_and_indentation(indicator: str) -> None:
    value = f"{indicator}\n            {REF}\n"
    text = pod(value.rstrip("\n"))
    if indicator == "|+":
        # keep chomping: the value ends with a newline, which no reference has
        plan = manifests.plan(manifests.scan(text, source="t.yaml"))
        assert [p.reason for p in plan.problems] == ["InvalidReference"]
        return
    out = pin_text(text)
    assert changed_lines(text, out) == [(f"            {REF}\n", f"            {PINNED}\n")]
    assert env_value(yaml.safe_load(out)) == PINNED


def test_flow_mappings_and_sequences() -> None:
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
        "  initContainers: [{name: kitops-init, image: x/kitops-init:1, "
        f"env: [{{name: MODELKIT_REF, value: {REF}}}]}}]\n"
        "  containers:\n"
        "    - {name: kit, image: ghcr.io/kitops-ml/kitops:v1, "
        "args: [unpack, 'registry.example.com/ml/lora:v1', -d, /m]}\n"
    )
    out = pin_text(text)
    lora = "registry.example.com/ml/lora:v1"
    assert out == text.replace(f"value: {REF}}}", f"value: {PINNED}}}").replace(
        f"'{lora}'", f"'{lora}@{fake_digest(lora)}'"
    )
    doc = yaml.safe_load(out)
    assert doc["spec"]["containers"][0]["args"] == [
        "unpack",
        f"{lora}@{fake_digest(lora)}",
        "-d",
        "/m",
    ]


def test_json_input_stays_json() -> None:
    text = read_testdata("kubectl-get.json")
    out = pin_text(text, source="kubectl-get.json")
    ref = "registry.example.com:5000/ml/embedder:v1"
    assert changed_lines(text, out) == [
        (f'                        "value": "{ref}"\n',
         f'                        "value": "{ref}@{fake_digest(ref)}"\n'),
    ]  # fmt: skip
    import json

    assert json.loads(out)["spec"]["initContainers"][0]["env"][0]["value"].endswith(
        fake_digest(ref)
    )


def test_crlf_line_endings_are_kept() -> None:
    text = pod(REF).replace("\n", "\r\n")
    out = pin_text(text)
    assert out == text.replace(REF, PINNED)
    assert "\n" not in out.replace("\r\n", "")


def test_plain_value_that_would_read_as_another_type_is_quoted() -> None:
    # Not reachable with a valid reference today; the renderer must still never emit a
    # plain scalar that reads back as something else.
    assert manifests._render_flow(None, "a: b") == '"a: b"'
    assert manifests._render_flow(None, "123") == '"123"'
    assert manifests._render_flow(None, "null") == '"null"'
    assert manifests._render_flow(None, "a #b") == '"a #b"'
    assert manifests._render_flow(None, "reg.io/a:1@sha256:ab") == "reg.io/a:1@sha256:ab"
    assert manifests._render_flow("'", "it's") == "'it''s'"


# ---------------------------------------------------------------------------------------
# Streams


def test_multi_document_file_with_comments_changes_only_the_references() -> None:
    text = read_testdata("multi-doc-comments.yaml")
    out = pin_text(text, source="multi-doc-comments.yaml")
    llama = "registry.example.com:5000/ml/llama:production"
    evalset = "registry.example.com:5000/ml/eval-set:2024-06"
    assert changed_lines(text, out) == [
        (f"              value: {llama}   # pinned in CI\n",
         f"              value: {llama}@{fake_digest(llama)}   # pinned in CI\n"),
        (f"                - '{evalset}'\n",
         f"                - '{evalset}@{fake_digest(evalset)}'\n"),
    ]  # fmt: skip
    # The already pinned Pod and the unknown Widget kept their (tag-only) values.
    assert out.count(f'{llama}"') == 1  # the Widget
    docs = load_all(out)
    assert len(docs) == len(load_all(text)) == 5  # the comments before the first --- stay


def test_untouched_documents_are_byte_for_byte_identical() -> None:
    text = read_testdata("multi-doc-comments.yaml")
    out = pin_text(text)
    before, after = re.split(r"(?m)^---", text), re.split(r"(?m)^---", out)
    assert len(before) == len(after)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed == [1, 3]  # the Deployment and the CronJob


def test_non_kubernetes_documents_pass_through() -> None:
    text = read_testdata("not-kubernetes.yaml")
    manifest = manifests.scan(text, source="not-kubernetes.yaml")
    assert list(manifest.located) == []
    assert [d.obj for d in manifest.documents][2:] == ["plain scalar document", ["a", "list"]]
    # unknown tags (!Sub, !GetAtt) read as their untagged values
    assert manifest.documents[1].obj == {
        "Resources": {
            "Bucket": {
                "Type": "AWS::S3::Bucket",
                "Properties": {
                    "BucketName": "${AWS::StackName}-models",
                    "Tags": ["Other", "Tags"],
                },
            }
        }
    }
    assert pin_text(text) == text


def test_empty_and_comment_only_streams() -> None:
    for text in ["", "# nothing\n", "---\n---\n", "---\n...\n"]:
        assert pin_text(text) == text


def test_kind_list_items_are_objects() -> None:
    text = read_testdata("kubectl-list.yaml")
    manifest = manifests.scan(text, source="kubectl-list.yaml")
    located = list(manifest.located)
    assert [(loc.pointer, loc.obj) for loc in located] == [
        ("/items/0/spec/template/spec/initContainers/0/env/0/value",
         "Deployment ml/summarize (items[0])"),
        ("/items/1/spec/template/spec/initContainers/0/env/0/value",
         "ReplicaSet ml/summarize-5d8f7c9b6d (items[1])"),
    ]  # fmt: skip
    plan = manifests.plan(manifest)
    # The ReplicaSet is owned by the Deployment: the webhook leaves owned templates alone.
    assert [p.located.pointer for p in plan.pins] == [located[0].pointer]
    assert [reason for _, reason in plan.kept] == ["TemplateOwnedByController"]
    out = pin_text(text)
    ref = "registry.example.com:5000/ml/summarizer:v2"
    assert changed_lines(text, out) == [
        (f"            value: {ref}\n", f"            value: {ref}@{fake_digest(ref)}\n")
    ]


def test_typed_list_items_inherit_kind_and_api_version() -> None:
    text = (
        "apiVersion: v1\nkind: PodList\nitems:\n"
        "- metadata: {name: a}\n"
        "  spec:\n"
        "    initContainers:\n"
        f"    - {{name: i, image: x/kitops-init:1, env: [{{name: MODELKIT_REF, value: {REF}}}]}}\n"
    )
    out = pin_text(text)
    assert out == text.replace(REF, PINNED)
    assert [loc.obj for loc in manifests.scan(text, source="t").located] == ["Pod a (items[0])"]


def test_helm_output_shape() -> None:
    text = read_testdata("helm-output.yaml")
    out = pin_text(text, source="helm-output.yaml")
    llama = "registry.example.com:5000/ml/llama:production"
    weights = "registry.example.com:5000/ml/llama-weights:production"
    assert changed_lines(text, out) == [
        (f'              value: "{llama}"\n',
         f'              value: "{llama}@{fake_digest(llama)}"\n'),
        (f'            reference: "{weights}"\n',
         f'            reference: "{weights}@{fake_digest(weights)}"\n'),
    ]  # fmt: skip


def test_kserve_inference_service_keeps_the_kit_prefix() -> None:
    text = read_testdata("kserve-inferenceservice.yaml")
    out = pin_text(text)
    llama = "registry.example.com:5000/ml/llama:production"
    tokenizer = "registry.example.com:5000/ml/tokenizer:v3"
    assert changed_lines(text, out) == [
        (f"      storageUri: kit://{llama}\n",
         f"      storageUri: kit://{llama}@{fake_digest(llama)}\n"),
        (f"            value: {tokenizer}\n",
         f"            value: {tokenizer}@{fake_digest(tokenizer)}\n"),
    ]  # fmt: skip
    # gs:// is not a ModelKit: untouched
    assert "storageUri: gs://kfserving-examples/models/sklearn/1.0/model\n" in out


# ---------------------------------------------------------------------------------------
# The webhook's rules


def test_already_pinned_references_are_left_alone() -> None:
    pinned = f"{REF}@sha256:{'1' * 64}"
    text = pod(pinned)
    plan = manifests.plan(manifests.scan(text, source="t"))
    assert plan.pins == () and plan.problems == ()
    assert [reason for _, reason in plan.kept] == ["AlreadyPinned"]
    assert pin_text(text) == text


def test_digest_only_reference_is_left_alone() -> None:
    text = pod(f"registry.example.com/ml/llama@sha256:{'2' * 64}")
    assert pin_text(text) == text


def test_pinning_twice_gives_the_same_bytes() -> None:
    for name in [
        "multi-doc-comments.yaml",
        "kubectl-list.yaml",
        "helm-output.yaml",
        "kserve-inferenceservice.yaml",
        "kubectl-get.json",
    ]:
        once = pin_text(read_testdata(name))
        assert pin_text(once) == once, name


def test_tag_is_kept_and_default_tag_spelled_out() -> None:
    out = pin_text(pod("registry.example.com/ml/llama"))
    canonical = "registry.example.com/ml/llama:latest"
    assert env_value(yaml.safe_load(out)) == f"{canonical}@{fake_digest(canonical)}"


def test_invalid_reference_is_a_problem_with_file_and_line() -> None:
    text = pod("llama:production")  # kit grammar: no registry host means kit's local storage
    plan = manifests.plan(manifests.scan(text, source="deploy/app.yaml"))
    assert plan.pins == ()
    [problem] = plan.problems
    assert problem.reason == "LocalReference"  # kit's local storage, which a Pod does not have
    assert str(problem).startswith(
        'deploy/app.yaml:10: Pod p: initContainer "kitops-init" env MODELKIT_REF: '
    )


def test_unresolvable_sites_are_reported_with_their_line() -> None:
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
        "  initContainers:\n"
        "    - name: kitops-init\n"
        "      image: ghcr.io/kitops-ml/kitops-init:v1\n"
        "      env:\n"
        "        - name: MODELKIT_REF\n"
        "          valueFrom: {configMapKeyRef: {name: models, key: ref}}\n"
    )
    manifest = manifests.scan(text, source="t.yaml")
    [u] = list(manifest.unresolvable)
    assert str(u).startswith('t.yaml:10: Pod p: initContainer "kitops-init" env MODELKIT_REF:')
    assert pin_text(text) == text


def test_extra_sites_from_settings() -> None:
    text = (
        "apiVersion: ml.example.com/v1\nkind: ModelDeployment\nmetadata: {name: m}\n"
        "spec:\n  models:\n"
        f"    - source: {REF}  # first\n"
        "    - source: registry.example.com/ml/lora:v1\n"
    )
    assert pin_text(text) == text  # unknown kind without the settings
    extra = sites.ExtraSite.from_mapping(
        {"group": "ml.example.com", "kind": "ModelDeployment", "paths": ["spec.models[*].source"]}
    )
    out = pin_text(text, settings=sites.SitesSettings(extra_sites=(extra,)))
    lora = "registry.example.com/ml/lora:v1"
    assert out == text.replace(REF, PINNED).replace(lora, f"{lora}@{fake_digest(lora)}")


def test_custom_env_names_from_settings() -> None:
    text = pod(REF).replace("MODELKIT_REF", "MODEL_URI")
    assert pin_text(text) == text
    out = pin_text(text, settings=sites.SitesSettings(env_names=("MODEL_URI",)))
    assert out == text.replace(REF, PINNED)


# ---------------------------------------------------------------------------------------
# Aliases


def test_aliased_value_is_a_problem_not_a_silent_change() -> None:
    text = (
        "x-model: &model registry.example.com/ml/llama:production\n"
        "---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
        "  initContainers:\n"
        "    - name: a\n"
        "      image: x/kitops-init:1\n"
        "      env: [{name: MODELKIT_REF, value: &ref registry.example.com/ml/a:1}]\n"
        "    - name: b\n"
        "      image: x/kitops-init:1\n"
        "      env: [{name: MODELKIT_REF, value: *ref}]\n"
        "  containers: [{name: main, image: x/serve:1}]\n"
    )
    plan = manifests.plan(manifests.scan(text, source="t.yaml"))
    assert plan.pins == ()
    assert [p.reason for p in plan.problems] == ["AliasedValue", "AliasedValue"]
    assert "write the reference out" in str(plan.problems[0])


def test_merge_key_values_are_shared() -> None:
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
        "  initContainers:\n"
        "    - &init\n"
        "      name: a\n"
        "      image: x/kitops-init:1\n"
        f"      env: [{{name: MODELKIT_REF, value: {REF}}}]\n"
        "    - <<: *init\n"
        "      name: b\n"
        "  containers: [{name: main, image: x/serve:1}]\n"
    )
    plan = manifests.plan(manifests.scan(text, source="t.yaml"))
    assert {p.reason for p in plan.problems} == {"AliasedValue"}


def test_anchor_used_nowhere_else_is_pinned_in_place() -> None:
    text = pod(f"&model {REF}")
    assert pin_text(text) == text.replace(REF, PINNED)


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    text = "\n".join(lines) + "\n"
    with pytest.raises(manifests.ManifestError, match=r"bomb\.yaml:1: .*alias"):
        manifests.scan(text, source="bomb.yaml")


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(manifests.ManifestError, match=r"r\.yaml:1: .*recursive"):
        manifests.scan("a: &a [1, *a]\n", source="r.yaml")


# ---------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n   bad: indent\n", 5),
        ("a: 1\n---\nb: [unclosed\n", 4),
        ("a: 1\n---\nkey: value: other\n", 3),
        ("a: 'unterminated\n", 2),
        ("a: *nowhere\n", 1),
        ("ok: 1\nbell: \x07\n", 2),
        ('ok: 1\nescape: "\\U0011FFFF"\n', 2),  # found by tests/fuzz: chr()'s ValueError
        ('ok: 1\nescape: "\\UFFFFFFFF"\n', 2),  # and its OverflowError
    ],
)
def test_invalid_yaml_names_the_file_and_line(text: str, line: int) -> None:
    with pytest.raises(manifests.ManifestError) as caught:
        manifests.scan(text, source="deploy/app.yaml")
    assert str(caught.value).startswith(f"deploy/app.yaml:{line}: not valid YAML: ")
    assert caught.value.reason == "InvalidManifest"


UNBUILDABLE = {
    "date": ("created: 2001-02-30", "'2001-02-30' as a date or timestamp (day is out of range"),
    "int-tag": ("replicas: !!int x", "'x' as an integer (invalid literal"),
    "int-digits": (
        "big: " + "1" * 4301,
        "as an integer (Python reads integers of at most 4,300 digits)",
    ),
    "bool-tag": ("ok: !!bool maybe", "'maybe' as a boolean"),
    "float-tag": ("ratio: !!float x", "'x' as a number"),
    "timestamp-tag": ("when: !!timestamp soon", "'soon' as a date or timestamp"),
    "time-zone": ("at: 2001-01-01 00:00:00 +99:00", "as a date or timestamp (offset must be"),
    # found by tests/fuzz: an empty tagged scalar made PyYAML raise IndexError
    "empty-int": ("replicas: !!int", "'' as an integer (it is empty)"),
    "empty-float": ("ratio: !!float ''", "'' as a number (it is empty)"),
}
"""Values PyYAML's parser accepts and its constructors cannot build: (line, what the error
says). PyYAML raises ValueError/KeyError/IndexError/AttributeError for them, not a
YAMLError."""


@pytest.mark.parametrize(("line", "message"), UNBUILDABLE.values(), ids=UNBUILDABLE.keys())
def test_values_yaml_cannot_build_name_the_file_line_and_value(line: str, message: str) -> None:
    text = f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---\ndata:\n  {line}\n"
    with pytest.raises(manifests.ManifestError) as caught:
        manifests.scan(text, source="deploy/app.yaml")
    error = str(caught.value)
    assert error.startswith("deploy/app.yaml:6: not valid YAML: cannot read ")
    assert message in error
    assert "quote it if it is meant as a string" in error
    assert caught.value.reason == "InvalidManifest"
    assert len(error) < 400  # a 4,301-digit value is not printed whole


def test_quoted_values_yaml_cannot_build_are_strings() -> None:
    text = "a: '2001-02-30'\nb: !!str 2001-02-30\nc: '" + "1" * 4301 + "'\n"
    [document] = manifests.scan(text, source="a.yaml").documents
    assert document.obj == {"a": "2001-02-30", "b": "2001-02-30", "c": "1" * 4301}


def test_splice_refuses_conflicting_edits() -> None:
    text = pod(REF)
    manifest = manifests.scan(text, source="t")
    [pin] = manifests.plan(manifest).pins
    edits = [manifests.edit(pin, f"sha256:{'a' * 64}"), manifests.edit(pin, f"sha256:{'b' * 64}")]
    with pytest.raises(manifests.ManifestError, match="two different pinned values"):
        manifests.splice(manifest, edits)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x: y", "rewriting the references made invalid YAML"),
        ("123", "would change more than the references"),
    ],
)
def test_splice_verifies_its_output(
    value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were the renderer ever to write a value unquoted where it must be quoted, reading the
    # output back catches it before anything is written.
    monkeypatch.setattr(manifests, "_render_flow", lambda style, value: value)
    manifest = manifests.scan(pod(REF), source="t.yaml")
    [pin] = manifests.plan(manifest).pins
    with pytest.raises(manifests.ManifestError, match=message):
        manifests.splice(manifest, [manifests.Edit(located=pin.located, value=value)])


def test_splice_verification_survives_an_integer_too_long_to_print(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Comparing the documents printed them: an integer of more than 4,300 digits beside a
    reference made a wrong rewrite a ValueError instead of the ManifestError below."""
    monkeypatch.setattr(manifests, "_render_flow", lambda style, value: value)
    manifest = manifests.scan(pod(REF, extra="  big: 0x" + "f" * 4000 + "\n"), source="t.yaml")
    [pin] = manifests.plan(manifest).pins
    with pytest.raises(manifests.ManifestError, match="would change more than the references"):
        manifests.splice(manifest, [manifests.Edit(located=pin.located, value="123")])


def test_multi_line_block_scalar_is_refused() -> None:
    text = pod(f"|-\n            {REF}\n            more")
    manifest = manifests.scan(text, source="t.yaml")
    located = next(iter(manifest.located))
    edit = manifests.Edit(located=located, value=PINNED)
    with pytest.raises(manifests.ManifestError, match=r"t\.yaml:10: the block scalar"):
        manifests.splice(manifest, [edit])


def test_concatenate_separates_streams() -> None:
    assert manifests.concatenate(["a: 1\n", "b: 2\n"]) == "a: 1\n---\nb: 2\n"
    assert manifests.concatenate(["a: 1", "---\nb: 2\n"]) == "a: 1\n---\nb: 2\n"
    assert manifests.concatenate(["a: 1\n"]) == "a: 1\n"
    # a stream that opens its first document itself gets no extra (empty) document
    assert manifests.concatenate(["a: 1\n", "# c\n\n---\nb: 2\n"]) == "a: 1\n# c\n\n---\nb: 2\n"
    assert manifests.concatenate(["a: 1\n", "%YAML 1.1\n---\nb: 2\n"]).count("---") == 1
    assert manifests.concatenate(["a: 1\n", "# only a comment\n"]) == "a: 1\n# only a comment\n"
    assert manifests.concatenate(["a: 1\n", "b: 2 # ---\n"]) == "a: 1\n---\nb: 2 # ---\n"
    for texts in (["a: 1\n", "# c\n---\nb: 2\n", "c: 3\n"], ["---\na: 1\n...\n", "b: 2"]):
        joined = manifests.concatenate(texts)
        assert len(manifests.scan(joined, source="j").documents) == sum(
            len(manifests.scan(t, source="t").documents) for t in texts
        )


def test_concatenate_leaves_out_the_byte_order_mark_of_later_streams() -> None:
    """Found by tests/fuzz: a second file saved with a BOM read as ``{'\ufeffb': 2}``."""
    joined = manifests.concatenate(["\ufeffa: 1\n", "\ufeffb: 2\n", "\ufeff---\nc: 3\n", "\ufeff"])
    assert joined == "\ufeffa: 1\n---\nb: 2\n---\nc: 3\n"
    documents = manifests.scan(joined, source="j").documents
    assert [d.obj for d in documents] == [{"a": 1}, {"b": 2}, {"c": 3}]


def test_concatenate_knows_a_plain_scalar_from_a_document_start() -> None:
    """Found by tests/fuzz: ``---0`` is a plain scalar, not ``---``: a stream starting with
    it needs the separator, or it continues the previous stream's last scalar."""
    joined = manifests.concatenate(["a: 0", "---0\n"])
    assert joined == "a: 0\n---\n---0\n"
    assert [d.obj for d in manifests.scan(joined, source="j").documents] == [{"a": 0}, "---0"]
    assert manifests.concatenate(["a: 0\n", "--- b\n"]) == "a: 0\n--- b\n"
    assert manifests.concatenate(["a: 0\n", "---\tb\n"]) == "a: 0\n---\tb\n"
    assert manifests.concatenate(["a: 0\n", "---\r\nb: 1\r\n"]) == "a: 0\n---\r\nb: 1\r\n"


@pytest.mark.parametrize(
    "second",
    ["\xa0", " \xa0x", "# c\x85b: 1", "\u2028b: 1\n", "\x85\n", "# only\u2029", "  \n# c\n"],
)
def test_concatenate_reads_lines_as_yaml_does(second: str) -> None:
    """Found by tests/fuzz: a no-break space is content to YAML (not a blank line), and
    ``\\x85``/``\\u2028`` end lines (so ``# c\\x85b: 1`` is a comment, then content)."""
    first = "a: 0"
    joined = manifests.concatenate([first, second])
    assert [d.obj for d in manifests.scan(joined, source="j").documents] == [
        d.obj for t in (first, second) for d in manifests.scan(t, source="t").documents
    ]


def test_json_indented_with_tabs() -> None:
    # `jq --tab` output: YAML 1.2 allows tabs as separation inside flow collections.
    text = (
        '{\n\t"apiVersion": "v1",\n\t"kind": "Pod",\n\t"metadata": {"name": "p"},\n'
        '\t"spec": {\n\t\t"initContainers": [{\n\t\t\t"name": "kitops-init",\n'
        '\t\t\t"image": "x/kitops-init:1",\n'
        f'\t\t\t"env": [{{"name": "MODELKIT_REF", "value": "{REF}"}}]\n'
        "\t\t}]\n\t}\n}\n"
    )
    assert pin_text(text) == text.replace(f'"{REF}"', f'"{PINNED}"')
    # Tabs still never indent block context.
    with pytest.raises(manifests.ManifestError, match=r"t:2: .*'\\t'"):
        manifests.scan("a:\n\tb: 1\n", source="t")


def test_byte_order_mark_is_kept() -> None:
    text = "\ufeff" + pod(REF)
    assert pin_text(text) == text.replace(REF, PINNED)
