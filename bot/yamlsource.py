"""YAML that remembers where each value came from, so errors can name the line."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import re

import yaml

from bot.problems import Problem

PathKey = tuple[str | int, ...]


class OperatorLoader(yaml.SafeLoader):
    """SafeLoader where only true/false are booleans: YAML 1.1 would read `on:` or `no` as booleans."""


OperatorLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
OperatorLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


@dataclass
class YamlDocument:
    """Parsed data plus the 1-based line of every key path (and where block text starts)."""

    path: str
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)
    text_starts: dict[PathKey, int] = field(default_factory=dict)
    key_lines: dict[PathKey, int] = field(default_factory=dict)  # where a mapping key itself is written

    def line(self, *key: str | int) -> int:
        """Line of the deepest known prefix of `key` (falls back to the parent's line)."""
        for end in range(len(key), -1, -1):
            if key[:end] in self.lines:
                return self.lines[key[:end]]
        return 1

    def key_line(self, *key: str | int) -> int:
        """Line of the key itself (`foo:` rather than the block under it): where an unknown key is."""
        return self.key_lines.get(key, self.line(*key))

    def text_line(self, *key: str | int) -> int:
        """Line where the text of a string value begins (the line after `|` for block scalars)."""
        return self.text_starts.get(key, self.line(*key))

    def problem(self, key: PathKey, message: str) -> Problem:
        return Problem(self.path, self.line(*key), message)


def _walk(node: yaml.Node, key: PathKey, doc: YamlDocument, problems: list[Problem]) -> None:
    doc.lines.setdefault(key, node.start_mark.line + 1)
    if isinstance(node, yaml.ScalarNode):
        block = node.style in ("|", ">")
        doc.text_starts[key] = node.start_mark.line + (2 if block else 1)
    elif isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            name = str(key_node.value)
            if name in seen:
                problems.append(
                    Problem(doc.path, key_node.start_mark.line + 1,
                            f"key '{name}' appears twice — keep one, the second would silently win")
                )
            seen.add(name)
            doc.lines[key + (name,)] = value_node.start_mark.line + 1
            doc.key_lines[key + (name,)] = key_node.start_mark.line + 1
            _walk(value_node, key + (name,), doc, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, key + (index,), doc, problems)


def parse_yaml(text: str, path: str) -> tuple[YamlDocument | None, list[Problem]]:
    """Parse `text`; on a syntax error return the problem with its line instead of raising."""
    try:
        node = yaml.compose(text, Loader=OperatorLoader)
        data = yaml.load(text, Loader=OperatorLoader)  # noqa: S506 — OperatorLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = exc.problem or "not valid YAML"
        return None, [Problem(path, line, f"YAML syntax: {what} — check indentation, colons and quotes")]
    except yaml.YAMLError as exc:
        return None, [Problem(path, 1, f"YAML syntax: {exc} — check the file is valid YAML")]
    doc = YamlDocument(path=path, data=data)
    problems: list[Problem] = []
    if node is not None:
        _walk(node, (), doc, problems)
    return doc, problems


def load_yaml(path: Path, display: str | None = None) -> tuple[YamlDocument | None, list[Problem]]:
    shown = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(shown, 1, f"cannot read the file ({exc}) — check it exists and is UTF-8")]
    return parse_yaml(text, shown)
