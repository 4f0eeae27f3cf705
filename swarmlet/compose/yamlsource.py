"""YAML text -> plain Python values plus the line of every key path.

Compose reads YAML 1.2, so only `true`/`false` are booleans: `yes`, `on`, `no`, `off`
stay strings here (fields that want a boolean accept them later), and `22:22` is a
string rather than a YAML 1.1 base-60 integer.

Speed matters here (a 200-service stack is ~16 000 lines), so:
- libyaml composes the node tree, and our loader's `resolve` only notes whether a
  scalar was plain: the implicit resolvers run later, inline, and only for plain
  scalars whose first character can start a null, boolean, number or merge key;
- nodes become values in one pass, without a constructor;
- key path -> line is answered lazily from the node tree (`LineMap`), so a file
  without errors builds no path tuples for its ~60 000 nodes;
- strings holding a `$` are noted on the way, so interpolation visits only those.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from swarmlet.compose.errors import ComposeIssue, Path_, format_path

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
# The tag our loader gives an untagged plain scalar, resolved later by `_plain`.
_PLAIN = "swarmlet:plain-scalar"


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The composer calls these three for every node."""

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            return _PLAIN if implicit[0] else _STR
        return _MAP if kind is MappingNode else _SEQ

    # Path resolvers are never registered on the safe loader: nothing to track.
    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


# The safe loader's implicit resolvers, by first character ("" for the empty scalar).
_RESOLVERS: dict[str, list] = {k: list(v) for k, v in _BaseLoader.yaml_implicit_resolvers.items() if k is not None}
_ANY_FIRST: list = list(_BaseLoader.yaml_implicit_resolvers.get(None, []))
if _ANY_FIRST:  # nothing registers these by default; keep the general rule if someone did
    _RESOLVERS = {k: v + _ANY_FIRST for k, v in _RESOLVERS.items()}



class _Everything:
    def __contains__(self, item: object) -> bool:
        return True


# First characters that may make a plain scalar something other than a string.
_MAYBE_SPECIAL: Any = _Everything() if _ANY_FIRST else frozenset(_RESOLVERS)
_MISSING = object()
_TRUE_FALSE = {"true": True, "false": False}
_CONSTRUCTOR = SafeConstructor()


def _tagged(tag: str, node: ScalarNode) -> Any:
    """A scalar's value by its (resolved or explicit) tag."""
    text = node.value
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return _TRUE_FALSE.get(text.lower(), text)
    if tag == _INT and ":" not in text:  # base-60 numbers are YAML 1.1 only
        if text.isdigit() and (text[0] != "0" or len(text) == 1) and text.isascii():
            return int(text)
        return _CONSTRUCTOR.construct_yaml_int(node)
    if tag == _FLOAT and ":" not in text:
        return _CONSTRUCTOR.construct_yaml_float(node)
    return text


def _plain(node: ScalarNode) -> Any:
    """An untagged plain scalar: what the safe loader's resolvers make of it. The
    result depends on the text alone (and is immutable), so callers may memoise it."""
    text = node.value
    resolvers = _RESOLVERS.get(text[:1]) if not _ANY_FIRST else _RESOLVERS.get(text[:1], _ANY_FIRST)
    if resolvers:
        for tag, regexp in resolvers:
            if regexp.match(text):
                return _tagged(tag, node)
    return text


def scalar_value(node: ScalarNode) -> Any:
    tag = node.tag
    if tag is _PLAIN:
        return _plain(node)
    return node.value if tag == _STR else _tagged(tag, node)


def _is_merge_key(node: Any) -> bool:
    return node.__class__ is ScalarNode and node.tag is _PLAIN and node.value == "<<"


class _MergeError(Exception):
    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


def _flatten(node: MappingNode, cache: dict[int, tuple[list, int]]) -> tuple[list, int]:
    """The node's entries with `<<` merges expanded (as SafeConstructor.flatten_mapping,
    without changing the node), and how many came from merges. Cached per node: an
    aliased node is visited once per place it is used."""
    cached = cache.get(id(node))
    if cached is not None:
        return cached
    merged: list = []
    own: list = []
    for key_node, value_node in node.value:
        if not _is_merge_key(key_node):
            own.append((key_node, value_node))
        elif value_node.__class__ is MappingNode:
            merged.extend(_flatten(value_node, cache)[0])
        elif value_node.__class__ is SequenceNode:
            parts = []
            for sub in value_node.value:
                if sub.__class__ is not MappingNode:
                    raise _MergeError(f"expected a mapping for merging, but found {sub.id}")
                parts.append(_flatten(sub, cache)[0])
            for part in reversed(parts):
                merged.extend(part)
        else:
            raise _MergeError(f"expected a mapping or list of mappings for merging, but found {value_node.id}")
    result = (merged + own, len(merged))
    cache[id(node)] = result
    return result


class LineMap:
    """{key path: line} answered from the node tree: a mapping entry's line is its key's,
    a list item's is where the item starts. Each mapping is indexed on first use."""

    def __init__(self, root: Any, entries: dict[int, tuple[list, int]]):
        self._root = root
        self._entries = entries  # flattened mappings, shared with the converter
        self._index: dict[int, dict[Any, tuple[int, Any]]] = {}

    def _children(self, node: MappingNode) -> dict[Any, tuple[int, Any]]:
        index = self._index.get(id(node))
        if index is None:
            index = {}
            entries, merged = self._entries.get(id(node)) or _flatten_or_own(node, self._entries)
            own: set[str] = set()
            for position, (key_node, value_node) in enumerate(entries):
                if key_node.__class__ is not ScalarNode:
                    continue
                key = scalar_value(key_node)
                key = key if key.__class__ is str else str(key)
                if position >= merged:
                    if key in own:
                        continue
                    own.add(key)
                index[key] = (key_node.start_mark.line + 1, value_node)
            self._index[id(node)] = index
        return index

    def get(self, path: Path_, default: int | None = None) -> int | None:
        node, line = self._root, default
        if not path:
            return default
        for part in path:
            if node.__class__ is MappingNode:
                if part.__class__ is not str:
                    return default
                found = self._children(node).get(part)
                if found is None:
                    return default
                line, node = found
            elif node.__class__ is SequenceNode:
                if part.__class__ is not int or not 0 <= part < len(node.value):
                    return default
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return default
        return line

    def __contains__(self, path: Path_) -> bool:
        return self.get(path) is not None

    def __getitem__(self, path: Path_) -> int:
        line = self.get(path)
        if line is None:
            raise KeyError(path)
        return line


def _flatten_or_own(node: MappingNode, cache: dict[int, tuple[list, int]]) -> tuple[list, int]:
    try:
        return _flatten(node, cache)
    except _MergeError:
        own = ([(k, v) for k, v in node.value if not _is_merge_key(k)], 0)
        cache[id(node)] = own
        return own


@dataclass
class ParsedYaml:
    data: Any                       # None when the text is not YAML (or is empty)
    lines: Any                      # LineMap, or {} when there is no tree
    issues: list[ComposeIssue]
    # Where strings holding "$" sit: (container, key or index, path of the container).
    # None when the list cannot stand for the whole tree (a merged key was overridden).
    dollars: list[tuple[Any, Any, Path_]] | None = field(default_factory=list)


class _Converter:
    def __init__(self, file: str):
        self.file = file
        self.flattened: dict[int, tuple[list, int]] = {}
        self.issues: list[ComposeIssue] = []
        self.dollars: list[tuple[Any, Any, Path_]] | None = []
        self.memo: dict[str, Any] = {}  # plain scalar text -> value

    def error(self, path: Path_, line: int, message: str) -> None:
        self.issues.append(ComposeIssue(self.file, format_path(path), line, message))

    def value(self, node: Any, path: Path_) -> Any:
        cls = node.__class__
        if cls is MappingNode:
            return self.mapping(node, path)
        if cls is SequenceNode:
            return self.sequence(node, path)
        value = scalar_value(node)
        if value.__class__ is str and "$" in value:
            self.dollars = None  # a lone string: let interpolation walk it
        return value

    def sequence(self, node: SequenceNode, path: Path_) -> list:
        result: list = []
        append = result.append
        dollars = self.dollars
        memo = self.memo
        for index, child in enumerate(node.value):
            cls = child.__class__
            if cls is ScalarNode:
                # Scalar conversion is written out in both sequence() and mapping() on
                # purpose: a helper call per scalar costs ~20 ms of a 70 ms load of a
                # 200-service file (docs/compose.md, "Speed"). Keep the two in step.
                tag = child.tag
                if tag is _PLAIN:
                    text = child.value
                    if text[:1] in _MAYBE_SPECIAL:
                        value = memo.get(text, _MISSING)
                        if value is _MISSING:
                            value = memo[text] = _plain(child)
                    else:
                        value = text
                elif tag == _STR:
                    value = child.value
                else:
                    value = _tagged(tag, child)
                if value.__class__ is str and "$" in value and dollars is not None:
                    dollars.append((result, index, path))
                append(value)
            elif cls is MappingNode:
                append(self.mapping(child, path + (index,)))
            else:
                append(self.sequence(child, path + (index,)))
        return result

    def mapping(self, node: MappingNode, path: Path_) -> dict[str, Any]:
        entries = node.value
        merged = 0
        for key_node, _ in entries:
            if key_node.value == "<<" and _is_merge_key(key_node):
                try:
                    entries, merged = _flatten(node, self.flattened)
                except _MergeError as exc:
                    first = next(k for k, _ in node.value if _is_merge_key(k))
                    self.error(path, first.start_mark.line + 1, f"invalid merge key <<: {exc.problem}")
                    entries, merged = _flatten_or_own(node, self.flattened)
                break
        result: dict[str, Any] = {}
        own: set[str] | None = set() if merged else None
        dollars = self.dollars
        memo = self.memo
        for position, (key_node, child) in enumerate(entries):
            if key_node.__class__ is not ScalarNode:
                self.error(path, key_node.start_mark.line + 1, "expected a plain key, found a mapping or a list")
                continue
            tag = key_node.tag
            if tag is _PLAIN:
                key = key_node.value
                if key[:1] in _MAYBE_SPECIAL:
                    key = memo.get(key, _MISSING)
                    if key is _MISSING:
                        key = memo[key_node.value] = _plain(key_node)
                    if key.__class__ is not str:
                        key = str(key)
            elif tag == _STR:
                key = key_node.value
            else:
                key = str(_tagged(tag, key_node))
            # Keys brought in by `<<` may be overridden; a key written twice may not.
            if own is None:
                if key in result:
                    self.error(path + (key,), key_node.start_mark.line + 1, f'duplicate key "{key}"')
                    continue
            elif position >= merged:
                if key in own:
                    self.error(path + (key,), key_node.start_mark.line + 1, f'duplicate key "{key}"')
                    continue
                own.add(key)
            if own is not None and key in result:
                self.dollars = dollars = None  # an overridden value was already converted
            cls = child.__class__
            if cls is ScalarNode:
                # Scalar conversion is written out in both sequence() and mapping() on
                # purpose: a helper call per scalar costs ~20 ms of a 70 ms load of a
                # 200-service file (docs/compose.md, "Speed"). Keep the two in step.
                tag = child.tag
                if tag is _PLAIN:
                    text = child.value
                    if text[:1] in _MAYBE_SPECIAL:
                        value = memo.get(text, _MISSING)
                        if value is _MISSING:
                            value = memo[text] = _plain(child)
                    else:
                        value = text
                elif tag == _STR:
                    value = child.value
                else:
                    value = _tagged(tag, child)
                if value.__class__ is str and "$" in value and dollars is not None:
                    dollars.append((result, key, path))
                result[key] = value
            elif cls is MappingNode:
                result[key] = self.mapping(child, path + (key,))
            else:
                result[key] = self.sequence(child, path + (key,))
            dollars = self.dollars
        return result


def _line(exc: yaml.MarkedYAMLError, node: yaml.Node | None = None) -> int:
    mark = exc.problem_mark or exc.context_mark or (node.start_mark if node else None)
    return mark.line + 1 if mark else 1


def load_yaml(text: str, file: str) -> ParsedYaml:
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        message = " ".join(p for p in (exc.context, exc.problem) if p)
        return ParsedYaml(None, {}, [ComposeIssue(file, "", _line(exc), f"invalid YAML: {message}")])
    except yaml.YAMLError as exc:
        return ParsedYaml(None, {}, [ComposeIssue(file, "", None, f"invalid YAML: {exc}")])
    if root is None:
        return ParsedYaml(None, {}, [])
    converter = _Converter(file)
    data = converter.value(root, ())
    return ParsedYaml(data, LineMap(root, converter.flattened), converter.issues, converter.dollars)


def parse_yaml(text: str, file: str) -> tuple[Any, Any, list[ComposeIssue]]:
    """Returns (data, {key path: line}, issues). data is None when the text is not YAML."""
    parsed = load_yaml(text, file)
    return parsed.data, parsed.lines, parsed.issues
