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
    ],
)
def test_invalid_yaml_names_the_file_and_line(text: str, line: int) -> None:
    with pytest.raises(manifests.ManifestError) as caught:
        manifests.scan(text, source="deploy/app.yaml")
    assert str(caught.value).startswith(f"deploy/app.yaml:{line}: not valid YAML: ")
    assert caught.value.reason == "InvalidManifest"


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
