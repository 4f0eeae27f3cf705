"""YAML text -> plain Python values plus the line of every key path.

Compose reads YAML 1.2, so only `true`/`false` are booleans: `yes`, `on`, `no`, `off`
stay strings here (fields that want a boolean accept them later), and `22:22` is a
string rather than a YAML 1.1 base-60 integer.
"""
from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from swarmlet.compose.errors import ComposeIssue, Path_, format_path

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"


class _Converter:
    def __init__(self, file: str):
        self.file = file
        self.constructor = SafeConstructor()
        self.lines: dict[Path_, int] = {}
        self.flattened: dict[int, tuple[list, int]] = {}
        self.issues: list[ComposeIssue] = []

    def error(self, path: Path_, line: int, message: str) -> None:
        self.issues.append(ComposeIssue(self.file, format_path(path), line, message))

    def value(self, node: yaml.Node, path: Path_) -> Any:
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.item(child, path + (i,)) for i, child in enumerate(node.value)]
        return self.scalar(node)

    def item(self, node: yaml.Node, path: Path_) -> Any:
        self.lines[path] = node.start_mark.line + 1
        return self.value(node, path)

    def flatten(self, node: yaml.MappingNode) -> tuple[list, int]:
        """The node's entries with `<<` merges expanded, and how many came from merges.
        Cached: an aliased node is visited once per place it is used."""
        if id(node) not in self.flattened:
            own = sum(1 for key, _ in node.value if key.tag != _MERGE)
            self.constructor.flatten_mapping(node)
            self.flattened[id(node)] = (list(node.value), len(node.value) - own)
        return self.flattened[id(node)]

    def mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any] | None:
        merge_keys = [key for key, _ in node.value if key.tag == _MERGE]  # flatten removes them
        try:
            entries, merged = self.flatten(node)
        except yaml.MarkedYAMLError as exc:
            line = merge_keys[0].start_mark.line + 1 if merge_keys else _line(exc, node)
            self.error(path, line, f"invalid merge key <<: {exc.problem}")
            entries, merged = [(k, v) for k, v in node.value if k.tag != _MERGE], 0
        result: dict[str, Any] = {}
        own_keys: set[str] = set()
        for index, (key_node, value_node) in enumerate(entries):
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.error(path, line, "expected a plain key, found a mapping or a list")
                continue
            key = str(self.scalar(key_node))
            if index >= merged:
                # Keys brought in by `<<` may be overridden; a key written twice may not.
                if key in own_keys:
                    self.error(path + (key,), line, f'duplicate key "{key}"')
                    continue
                own_keys.add(key)
            self.lines[path + (key,)] = line
            result[key] = self.value(value_node, path + (key,))
        return result

    def scalar(self, node: yaml.ScalarNode) -> Any:
        tag, text = node.tag, node.value
        if tag == _NULL:
            return None
        if tag == _BOOL:
            return {"true": True, "false": False}.get(text.lower(), text)
        if tag in (_INT, _FLOAT) and ":" not in text:  # base-60 numbers are YAML 1.1 only
            construct = self.constructor.construct_yaml_int if tag == _INT else self.constructor.construct_yaml_float
            return construct(node)
        return text


def _line(exc: yaml.MarkedYAMLError, node: yaml.Node | None = None) -> int:
    mark = exc.problem_mark or exc.context_mark or (node.start_mark if node else None)
    return mark.line + 1 if mark else 1


def parse_yaml(text: str, file: str) -> tuple[Any, dict[Path_, int], list[ComposeIssue]]:
    """Returns (data, {key path: line}, issues). data is None when the text is not YAML."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        message = " ".join(p for p in (exc.context, exc.problem) if p)
        return None, {}, [ComposeIssue(file, "", _line(exc), f"invalid YAML: {message}")]
    except yaml.YAMLError as exc:
        return None, {}, [ComposeIssue(file, "", None, f"invalid YAML: {exc}")]
    converter = _Converter(file)
    data = converter.value(root, ()) if root is not None else None
    return data, converter.lines, converter.issues
