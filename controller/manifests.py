"""ModelKit references in Kubernetes YAML text, and rewriting them in place. Pure, no I/O.

``kitpin pin`` (and later ``kitpin check``) read manifests from files, directories, stdin or
Helm's post-renderer pipe; this module does everything between the text and the registry:

``scan(text, source=..., settings=...)``
    parses a multi-document YAML stream (``---`` separated, comments anywhere, JSON too)
    into :class:`Document` values and finds every reference with :func:`sites.find`, the
    same code and the same :class:`sites.SitesSettings` the webhook uses. ``kind: List``
    (and typed lists such as ``DeploymentList``) are looked into: each of ``items[*]`` is
    an object of its own. Every :class:`Located` site knows its source, line and column
    and the exact span of its scalar in the text. Documents that are not Kubernetes
    objects, and kinds ``sites`` does not know, have no sites.
``plan(manifest)``
    applies the webhook's rules (:mod:`controller.admission.pinning`) to each site: a reference
    that already carries a digest is left alone; a workload template with a controller
    owner is left alone (its owner was pinned); an invalid reference is a :class:`Problem`.
    What remains is a :class:`Pin` to resolve.
``edit(pin, digest)`` and ``splice(manifest, edits)``
    build the pinned value (``site.prefix + name:tag@digest``: tag and ``kit://`` kept)
    and write it over the scalar's span in the original text.

Formatting is preserved by construction: the output is the input text with only the
changed scalars' characters replaced, so comments, key order, indentation, quoting,
document separators, line endings and every untouched document stay byte for byte. The
new scalar keeps the old one's style (plain, ``'single'``, ``"double"``, or the content
line of a ``|``/``>`` block); a plain scalar whose new text would read as something else
is double-quoted instead. :func:`splice` then parses its own output and checks that
every document equals the original with exactly the pinned values changed; if not, it
raises instead of returning text that means something else.

YAML aliases: a value reached through an alias (``*name``, or a ``<<:`` merge) is the
anchored value itself, shared by every place that uses it, so it cannot be changed in one
place only; such sites are a :class:`Problem` asking to write the reference out. Streams
whose aliases expand beyond :data:`MAX_EXPANDED_NODES` nodes (a "billion laughs") or that
refer to themselves are refused, as the apiserver refuses them.

Errors: :class:`ManifestError` (a subclass of :class:`errors.KitpinError`, reason
``InvalidManifest``) names the source and line, e.g. ``deploy/app.yaml:12: not valid
YAML: mapping values are not allowed here``. That includes values the YAML parser accepts
but cannot build (``2001-02-30`` read as a date, ``!!int x``, an integer of more than
4,300 digits): ``deploy/app.yaml:3: not valid YAML: cannot read '2001-02-30' as a date or
timestamp (day is out of range for month); quote it if it is meant as a string, ...``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from controller import errors, refs, sites, yamlload
from controller.admission import pinning

__all__ = [
    "MAX_EXPANDED_NODES",
    "Document",
    "Edit",
    "Located",
    "LocatedUnresolvable",
    "Manifest",
    "ManifestError",
    "Pin",
    "Plan",
    "Problem",
    "Reason",
    "concatenate",
    "edit",
    "plan",
    "scan",
    "splice",
]

MAX_EXPANDED_NODES: Final = 1_000_000
"""Most nodes one document may expand to through aliases. Real manifests have a few
thousand; the limit stops alias bombs before :func:`sites.find` walks them."""

MAX_LIST_DEPTH: Final = 4
"""How deep ``kind: List`` documents nest inside each other before kitpin stops looking."""

_STR_TAG: Final = "tag:yaml.org,2002:str"


ManifestError = errors.ManifestError
"""Re-exported here, where it is raised; defined in the one hierarchy of errors.py."""


class Reason:
    """Why a site is not pinned (used in messages and tests)."""

    INVALID_REFERENCE: Final = errors.ReferenceError.reason
    """(or ``LocalReference``, the reason of :class:`errors.LocalReferenceError`)"""
    ALIASED: Final = "AliasedValue"
    ALREADY_PINNED: Final = "AlreadyPinned"
    OWNED: Final = pinning.Reason.OWNED


# ---------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, kw_only=True, slots=True)
class Located:
    """One :class:`sites.Site` in a source text."""

    source: str
    """File name, or ``<stdin>``."""

    document: int
    """Index of the document in the stream, from 0."""

    pointer: str
    """RFC 6901 pointer from the document's root to the string (``/items/2/...`` inside a
    ``kind: List``)."""

    site: sites.Site
    """What :func:`sites.find` found; its ``path`` is relative to the list item, if any."""

    obj: str
    """The object for messages: ``Deployment team-a/llama``."""

    line: int
    """Line of the scalar, from 1."""

    column: int
    """Column of the scalar, from 1."""

    start: int
    """Index of the scalar's first character in the text (after any anchor or tag)."""

    end: int
    """Index just past the scalar (past the closing quote; for blocks, past the content)."""

    style: str | None
    """``None`` (plain), ``'``, ``"``, ``|`` or ``>``."""

    shared: bool
    """The value is reached through a YAML alias or merge key: other places share it."""

    owned_template: bool = False
    """The site belongs to a workload with a controller owner (a ReplicaSet of a
    Deployment, a Job of a CronJob): the webhook never rewrites those, nor does
    :func:`plan`."""

    @property
    def position(self) -> str:
        """``source:line``."""
        return f"{self.source}:{self.line}"

    def __str__(self) -> str:
        return f"{self.position}: {self.obj}: {self.site.where}"


@dataclass(frozen=True, kw_only=True, slots=True)
class LocatedUnresolvable:
    """A place holding a reference kitpin cannot see (``valueFrom``, a shell script)."""

    source: str
    line: int
    obj: str
    unresolvable: sites.Unresolvable

    def __str__(self) -> str:
        u = self.unresolvable
        return f"{self.source}:{self.line}: {self.obj}: {u.where}: {u.why}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Document:
    """One document of a stream."""

    index: int
    line: int
    """Line where the document's content starts, from 1."""
    obj: object
    """The document as plain data (what ``yaml.safe_load`` gives; unknown tags read as
    their untagged value)."""
    located: tuple[Located, ...]
    unresolvable: tuple[LocatedUnresolvable, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Manifest:
    """A parsed source text and every reference in it."""

    source: str
    text: str
    documents: tuple[Document, ...]

    @property
    def located(self) -> Iterator[Located]:
        for document in self.documents:
            yield from document.located

    @property
    def unresolvable(self) -> Iterator[LocatedUnresolvable]:
        for document in self.documents:
            yield from document.unresolvable


@dataclass(frozen=True, kw_only=True, slots=True)
class Pin:
    """A site whose reference must be resolved to be pinned."""

    located: Located
    ref: refs.Reference


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    """A site that cannot be pinned whatever the registry says."""

    located: Located
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.located}: {self.message}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """What :func:`plan` decided for every site of a manifest."""

    pins: tuple[Pin, ...] = ()
    problems: tuple[Problem, ...] = ()
    kept: tuple[tuple[Located, str], ...] = ()
    """Sites left as they are, with the reason (``AlreadyPinned``, ``TemplateOwnedBy...``)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Edit:
    """Write ``value`` (the whole string, prefix included) at ``located``."""

    located: Located
    value: str


# ---------------------------------------------------------------------------------------
# Parsing


def _construct_untagged(loader: yaml.SafeLoader, node: Node) -> object:
    """Application tags (``!Ref``, ``!vault``) read as the value they tag: non-Kubernetes
    documents pass through, so they must not stop the scan."""
    if isinstance(node, MappingNode):
        return loader.construct_mapping(node)
    if isinstance(node, SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


class _Loader(yamlload.GuardedLoader):
    """The safe loader, remembering where each scalar token starts: a node's own start
    mark includes its anchor and tag, and a pin must replace the scalar only. What PyYAML
    lets escape as ``ValueError`` and kin on some input (an impossible date, ``!!int x``, a
    ``\\U`` escape beyond Unicode) is a YAML error here, with its line, like any other
    (:class:`yamlload.GuardedLoader`, shared with the settings loaders)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.scalar_starts: dict[int, yaml.Mark] = {}

    def scan_to_next_token(self) -> None:
        """PyYAML's, plus YAML 1.2's tabs as separation inside flow collections, so that JSON
        indented with tabs (``jq --tab``) reads. Tabs never indent block context."""
        if self.index == 0 and self.peek() == "\ufeff":
            self.forward()
        while True:
            while self.peek() == " " or (self.flow_level and self.peek() == "\t"):
                self.forward()
            if self.peek() == "#":
                while self.peek() not in "\0\r\n\x85\u2028\u2029":
                    self.forward()
            if not self.scan_line_break():  # type: ignore[no-untyped-call]
                return
            if not self.flow_level:
                self.allow_simple_key = True

    def get_token(self) -> Any:
        token = super().get_token()  # type: ignore[no-untyped-call]
        if type(token) is yaml.ScalarToken:
            self.scalar_starts[token.end_mark.index] = token.start_mark
        return token


_Loader.add_constructor(None, _construct_untagged)


def _mark_line(e: yaml.YAMLError) -> tuple[int, str]:
    """(line from 1, description) of a PyYAML error."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        if e.context and e.problem and e.context_mark is not None:
            problem = f"{problem} ({e.context} at line {e.context_mark.line + 1})"
        return (mark.line + 1 if mark is not None else 1), problem
    if isinstance(e, yaml.reader.ReaderError):
        return 0, f"{e.reason} (character {e.character!r})"
    return 1, str(e)


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _graph(root: Node, source: str, text: str) -> dict[int, int]:
    """How many parents each node has (alias targets have more than one); refuses
    recursive aliases and alias bombs. Iterative: deep documents do not hit the
    recursion limit here."""
    parents: dict[int, int] = {id(root): 0}
    size: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        children = _children(node)
        if finished:
            in_progress.discard(key)
            total = 1 + sum(size[id(c)] for c in children)
            if total > MAX_EXPANDED_NODES:
                raise ManifestError(
                    f"{source}:{_line_of(text, root.start_mark.index)}: this document expands "
                    f"to more than {MAX_EXPANDED_NODES:,} nodes through YAML aliases; "
                    "kitpin (like the apiserver) refuses alias bombs"
                )
            size[key] = total
            continue
        if key in size:
            continue
        in_progress.add(key)
        stack.append((node, True))
        for child in children:
            child_key = id(child)
            parents[child_key] = parents.get(child_key, 0) + 1
            if child_key in in_progress:
                raise ManifestError(
                    f"{source}:{child.start_mark.line + 1}: a YAML alias refers to a value "
                    "that contains it (a recursive structure); Kubernetes objects cannot be "
                    "recursive"
                )
            if child_key not in size:
                stack.append((child, False))
    return parents


def _node_at(root: Node, pointer: str, parents: Mapping[int, int]) -> tuple[Node | None, bool]:
    """The node at ``pointer`` and whether any node on the way is shared."""
    node: Node | None = root
    shared = False
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, MappingNode):
            found: Node | None = None
            for key, value in node.value:  # last wins, as in the constructed dict
                if isinstance(key, ScalarNode) and key.tag == _STR_TAG and key.value == token:
                    found = value
            node = found
        elif isinstance(node, SequenceNode) and token.isdigit():
            index = int(token)
            node = node.value[index] if index < len(node.value) else None
        else:
            node = None
        if node is None:
            return None, shared
        if parents.get(id(node), 0) > 1:
            shared = True
    return node, shared


def _describe(obj: Mapping[str, Any]) -> str:
    kind = obj.get("kind")
    metadata = obj.get("metadata")
    name = namespace = None
    if isinstance(metadata, Mapping):
        name, namespace = metadata.get("name"), metadata.get("namespace")
    what = kind if isinstance(kind, str) else "object"
    if isinstance(name, str):
        return f"{what} {namespace}/{name}" if isinstance(namespace, str) else f"{what} {name}"
    return what


def _objects(
    obj: object, pointer: str = "", depth: int = 0
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each object of a document, with its pointer: the document itself, and the items of
    ``kind: List`` / ``<Kind>List`` documents (typed lists' items get the list's apiVersion
    and the item kind when they do not say, as the apiserver returns them)."""
    if not isinstance(obj, Mapping):
        return
    yield pointer, obj
    kind = obj.get("kind")
    items = obj.get("items")
    if (
        depth >= MAX_LIST_DEPTH
        or not isinstance(kind, str)
        or not kind.endswith("List")
        or not isinstance(items, list)
    ):
        return
    item_kind = kind[: -len("List")]
    api_version = obj.get("apiVersion")
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        if item_kind and isinstance(api_version, str) and "kind" not in item:
            item = {"apiVersion": api_version, "kind": item_kind, **item}
        yield from _objects(item, f"{pointer}/items/{i}", depth + 1)


def scan(text: str, *, source: str, settings: sites.SitesSettings | None = None) -> Manifest:
    """Parse ``text`` (a YAML stream) and find every ModelKit reference in it.

    Raises :class:`ManifestError` naming ``source`` and the line when the text is not
    valid YAML, holds a value its tag cannot be built from (``a: 2001-02-30``), refers to
    itself, nests too deeply, or expands beyond :data:`MAX_EXPANDED_NODES`.
    """
    site_settings = settings if settings is not None else sites.SitesSettings()
    documents: list[Document] = []
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # checks for unprintable characters first
        while loader.check_node():
            root = loader.get_node()
            if root is None:  # check_node said there is one
                break
            obj = loader.construct_document(root)
            documents.append(
                _document(
                    len(documents), root, obj, loader.scalar_starts, text, source, site_settings
                )
            )
    except yaml.YAMLError as e:
        line, problem = _mark_line(e)
        if line == 0 and isinstance(e, yaml.reader.ReaderError):
            line = _line_of(text, e.position)
        raise ManifestError(f"{source}:{line}: not valid YAML: {problem}") from None
    except RecursionError:
        raise ManifestError(
            f"{source}: nested too deeply for kitpin to read; Kubernetes objects are not"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    return Manifest(source=source, text=text, documents=tuple(documents))


def _document(
    index: int,
    root: Node,
    obj: object,
    scalar_starts: Mapping[int, yaml.Mark],
    text: str,
    source: str,
    settings: sites.SitesSettings,
) -> Document:
    line = root.start_mark.line + 1
    located: list[Located] = []
    unresolvable: list[LocatedUnresolvable] = []
    parents = _graph(root, source, text)
    if isinstance(obj, Mapping):
        seen: set[str] = set()
        for base, item in _objects(obj):
            findings = sites.find(item, settings)
            if findings is sites.EMPTY:
                continue
            what = _describe(item)
            owned = sites.is_template(item, settings) and sites.controller_owner(item) is not None
            if base:  # a list item: items[2], or items[0].items[1] in nested lists
                steps = base.split("/")[1:]
                pairs = zip(steps[::2], steps[1::2], strict=True)
                what += " (" + ".".join(f"{k}[{i}]" for k, i in pairs) + ")"
            for site in findings.sites:
                pointer = base + site.path
                if pointer in seen:
                    continue
                seen.add(pointer)
                node, shared = _node_at(root, pointer, parents)
                if not isinstance(node, ScalarNode):  # cannot happen: sites found a string
                    continue
                start = scalar_starts.get(node.end_mark.index, node.start_mark)
                located.append(
                    Located(
                        source=source,
                        document=index,
                        pointer=pointer,
                        site=site,
                        obj=what,
                        line=start.line + 1,
                        column=start.column + 1,
                        start=start.index,
                        end=node.end_mark.index,
                        style=node.style,
                        shared=shared,
                        owned_template=owned,
                    )
                )
            for u in findings.unresolvable:
                node, _ = _node_at(root, base + u.path, parents)
                where = node.start_mark.line + 1 if node is not None else line
                unresolvable.append(
                    LocatedUnresolvable(source=source, line=where, obj=what, unresolvable=u)
                )
    return Document(
        index=index,
        line=line,
        obj=obj,
        located=tuple(located),
        unresolvable=tuple(unresolvable),
    )


# ---------------------------------------------------------------------------------------
# Deciding


def plan(manifest: Manifest) -> Plan:
    """Apply the webhook's rules to every site (see the module docstring)."""
    pins: list[Pin] = []
    problems: list[Problem] = []
    kept: list[tuple[Located, str]] = []
    for document in manifest.documents:
        for located in document.located:
            site = located.site
            try:
                ref = refs.parse(site.reference_text, grammar=site.grammar)
            except errors.ReferenceError as e:
                problems.append(Problem(located=located, reason=e.reason, message=str(e)))
                continue
            if ref.digest is not None:
                kept.append((located, Reason.ALREADY_PINNED))
                continue
            if located.owned_template:
                kept.append((located, Reason.OWNED))
                continue
            if located.shared:
                problems.append(
                    Problem(
                        located=located,
                        reason=Reason.ALIASED,
                        message=f"'{site.value}' comes from a YAML anchor (through an alias "
                        "or a <<: merge) that other places share, so kitpin cannot pin it "
                        "here alone; write the reference out in this place",
                    )
                )
                continue
            pins.append(Pin(located=located, ref=ref))
    return Plan(pins=tuple(pins), problems=tuple(problems), kept=tuple(kept))


def edit(pin: Pin, digest: str) -> Edit:
    """The pinned value for ``pin``: its prefix (``kit://``), name and tag as written, and
    ``digest``: ``reg/llama:production`` → ``reg/llama:production@sha256:…``."""
    return Edit(located=pin.located, value=pin.located.site.render(pin.ref.pinned(digest)))


# ---------------------------------------------------------------------------------------
# Rewriting

_PLAIN_SAFE = re.compile(r"[A-Za-z0-9_./@+~][A-Za-z0-9_./:@+~%=-]*")
_PLAIN_RESOLVER = yaml.resolver.Resolver()


def _plain_ok(value: str) -> bool:
    """Whether ``value`` written plain reads back as this same string, in block and flow
    context alike (no ``,[]{}#``, no ``: ``, not a number, bool, null or timestamp)."""
    return (
        _PLAIN_SAFE.fullmatch(value) is not None
        and not value.endswith(":")
        and _PLAIN_RESOLVER.resolve(ScalarNode, value, (True, False)) == _STR_TAG  # type: ignore[no-untyped-call]
    )


def _render_flow(style: str | None, value: str) -> str:
    if style is None and _plain_ok(value):
        return value
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    return json.dumps(value)  # JSON strings are valid YAML double-quoted scalars


def _block_content(text: str, located: Located) -> tuple[int, int]:
    """Span of the one content line of a ``|``/``>`` block scalar holding the value."""
    header_end = text.find("\n", located.start, located.end)
    if header_end < 0:
        raise ManifestError(f"{located.position}: cannot find the block scalar's content")
    i = header_end + 1
    while i < located.end:
        line_end = text.find("\n", i, located.end)
        if line_end < 0:
            line_end = located.end
        line = text[i:line_end].rstrip("\r")
        content = line.lstrip(" ")
        if content:
            start = i + (len(line) - len(content))
            if content.rstrip(" \t") != located.site.value:
                break
            return start, start + len(located.site.value)
        i = line_end + 1
    raise ManifestError(
        f"{located.position}: the block scalar holding '{located.site.value}' spans several "
        "lines; write the reference on one line to have it pinned"
    )


def _same(a: object, b: object) -> bool:
    """Equal, or printed the same (``NaN != NaN``, yet the text did not change). An integer
    too long to print (more than 4,300 digits) is not the same as anything it differs from."""
    if a == b:
        return True
    try:
        return repr(a) == repr(b)
    except ValueError:
        return False


def splice(manifest: Manifest, edits: Iterable[Edit]) -> str:
    """``manifest.text`` with each edit's value written over its scalar, nothing else
    changed. Checks the result by parsing it again: every document must equal the
    original with exactly the edited strings replaced (:class:`ManifestError` otherwise).
    """
    text = manifest.text
    by_start: dict[int, Edit] = {}
    for e in edits:
        previous = by_start.get(e.located.start)
        if previous is not None and previous.value != e.value:
            raise ManifestError(
                f"{e.located.position}: two different pinned values for the same text "
                f"({previous.value!r} and {e.value!r})"
            )
        by_start[e.located.start] = e
    if not by_start:
        return text
    pieces: list[str] = []
    at = 0
    for start in sorted(by_start):
        e = by_start[start]
        located = e.located
        if located.style in ("|", ">"):
            begin, end = _block_content(text, located)
            new = e.value
        else:
            begin, end = located.start, located.end
            new = _render_flow(located.style, e.value)
        if begin < at:
            raise ManifestError(f"{located.position}: overlapping edits")
        pieces.append(text[at:begin])
        pieces.append(new)
        at = end
    pieces.append(text[at:])
    result = "".join(pieces)
    _verify(manifest, by_start.values(), result)
    return result


def _verify(manifest: Manifest, edits: Iterable[Edit], result: str) -> None:
    values: dict[int, dict[str, str]] = {}
    for e in edits:
        values.setdefault(e.located.document, {})[e.located.pointer] = e.value
    try:
        after = list(yaml.load_all(result, Loader=_Loader))
    except yaml.YAMLError as e:
        line, problem = _mark_line(e)
        raise ManifestError(
            f"{manifest.source}:{line}: rewriting the references made invalid YAML "
            f"({problem}); nothing was written. Please report this"
        ) from None
    if len(after) != len(manifest.documents):
        raise ManifestError(
            f"{manifest.source}: rewriting the references changed the number of documents; "
            "nothing was written. Please report this"
        )
    for document, new in zip(manifest.documents, after, strict=True):
        expected = document.obj
        if document.index in values:
            assert isinstance(expected, Mapping)
            expected = sites.apply(expected, values[document.index])
        if not _same(expected, new):
            raise ManifestError(
                f"{manifest.source}:{document.line}: rewriting the references would change "
                "more than the references in this document; nothing was written. Please "
                "report this"
            )


_LINE_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")
"""YAML's line breaks (PyYAML's): a ``\\x85`` or ``\\u2028`` ends a line as ``\\n`` does."""
_BLANK_OR_COMMENT = re.compile(r"[ \t]*(?:#.*)?")
"""A line YAML reads as nothing: spaces and tabs (not any Unicode space: a no-break space is
content), maybe a comment."""
_OPENS = re.compile(r"---(?:[ \t]|$)|%")
"""A document start marker (``---`` alone or before a blank: ``---0`` is a plain scalar) or a
directive (``%YAML``)."""


def _opens_document(text: str) -> bool:
    """Whether ``text`` needs no ``---`` in front: its first line that is not blank or a
    comment starts a document explicitly (``---``) or with a directive (``%YAML``), or it
    has no such line at all (a separator would add an empty document)."""
    at = 0
    while True:
        found = _LINE_BREAK.search(text, at)
        line = text[at : found.start() if found else len(text)]
        if not _BLANK_OR_COMMENT.fullmatch(line):
            return _OPENS.match(line) is not None
        if found is None:
            return True
        at = found.end()


def concatenate(texts: Sequence[str]) -> str:
    """Several streams as one, as ``kubectl`` would read them one after the other: a
    ``---`` line goes between two streams unless the second starts a document itself. A
    byte order mark only begins a stream: the one of a later stream (a file saved by an
    editor that writes one) is left out, as reading that file alone skips it; inside the
    joined stream it would become part of the first key (``\ufeffapiVersion``)."""
    out: list[str] = []
    for t in texts:
        if out:
            t = t.removeprefix("\ufeff")
            if not out[-1].endswith("\n"):
                out.append("\n")
            if not _opens_document(t):
                out.append("---\n")
        out.append(t)
    return "".join(out)
