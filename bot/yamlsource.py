"""YAML that remembers where each value came from, so errors can name the line.

Operator files are untrusted input. Before anything is built from a file: it must be a regular file of
at most MAX_FILE_BYTES, nested at most MAX_DEPTH deep, and hold at most MAX_VALUES values once its
aliases are expanded (a "billion laughs" is a few lines of anchors that expand to 10⁹ values). Each
limit is a problem on the line where it was crossed, never an exception.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from bot.problems import Problem

try:  # libyaml scans and parses in C, several times faster; composing (where the limits are) stays ours
    from yaml._yaml import CParser as _FastParser
except ImportError:  # PyYAML built without libyaml
    _FastParser = None

PathKey = tuple[str | int, ...]

MAX_FILE_BYTES = 1 << 20  # 1 MiB: the shipped scripts are a few KiB each
MAX_DEPTH = 64            # levels of nesting, aliases expanded; a journey needs about six
MAX_VALUES = 100_000      # values, aliases expanded: what validation and line-tracking walk through


class YamlLimitError(yaml.MarkedYAMLError):
    """A document past the nesting or alias-expansion limits; `fix` says what to do."""

    def __init__(self, problem: str, fix: str, mark: yaml.Mark) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.fix = fix


class LimitedComposer(Composer):
    """Composing that counts depth and values as they come, so a hostile document is refused before it
    is built: an alias counts as everything it stands for, and one that names a value it is inside is
    refused (it would be infinitely deep).
    """

    def __init__(self) -> None:
        Composer.__init__(self)  # not super(): in the pure-Python loader the next class is SafeLoader
        self._depth = 0
        self._values = 0
        self._open_anchors: set[str] = set()
        self._shapes: dict[int, tuple[int, int]] = {}  # id(node) → (values written out, height)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise YamlLimitError(f"alias *{event.anchor} is inside the value it names",
                                     "an alias can only repeat a value written before it", event.start_mark)
            node = super().compose_node(parent, index)
            values, height = self._shape(node)
            self._count(values, event.start_mark)
            if self._depth + height > MAX_DEPTH:
                raise self._too_deep(event.start_mark)
            return node
        if self._depth >= MAX_DEPTH:
            raise self._too_deep(event.start_mark)
        self._count(1, event.start_mark)
        anchor = event.anchor
        if anchor is not None:
            self._open_anchors.add(anchor)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open_anchors.discard(anchor)

    def _count(self, values: int, mark: yaml.Mark) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise YamlLimitError(f"the file holds more than {MAX_VALUES:,} values once its aliases (*name) are "
                                 "expanded", "write the values out, or repeat fewer of them", mark)

    def _too_deep(self, mark: yaml.Mark) -> YamlLimitError:
        return YamlLimitError(f"values are nested more than {MAX_DEPTH} levels deep",
                              "flatten the structure; a journey needs about six levels", mark)

    def _shape(self, node: yaml.Node) -> tuple[int, int]:
        """Values and height of a composed node written out; shared parts are measured once."""
        known = self._shapes.get(id(node))
        if known is not None:
            return known
        values, height = 1, 0
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:  # recursion is bounded: composed nodes are at most MAX_DEPTH high
            child_values, child_height = self._shape(child)
            values += child_values
            height = max(height, child_height)
            if values > MAX_VALUES:
                break  # already too many: the exact number does not matter
        shape = (values, height + 1)
        self._shapes[id(node)] = shape
        return shape


if _FastParser is not None:
    class OperatorLoader(LimitedComposer, _FastParser, SafeConstructor, Resolver):
        """A safe loader: libyaml's parser, our limited composer, the safe constructor; see the resolvers below."""

        def __init__(self, stream: str) -> None:
            _FastParser.__init__(self, stream)
            LimitedComposer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
else:
    class OperatorLoader(LimitedComposer, yaml.SafeLoader):  # type: ignore[no-redef]
        """A safe loader with the limited composer; see the resolvers below."""

        def __init__(self, stream: str) -> None:
            yaml.SafeLoader.__init__(self, stream)
            LimitedComposer.__init__(self)


# only true/false are booleans: YAML 1.1 would read `on:` or `no` as booleans
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
    """Parse `text`; on a syntax error or a broken limit return the problem with its line instead of raising."""
    loader = OperatorLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except YamlLimitError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        return None, [Problem(path, line, f"{exc.problem} — {exc.fix}")]
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)  # libyaml gives a number
        return None, [Problem(path, line, f"YAML syntax: character U+{code:04X} is not allowed in YAML — "
                                          "remove control characters")]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = exc.problem or "not valid YAML"
        return None, [Problem(path, line, f"YAML syntax: {what} — check indentation, colons and quotes")]
    except yaml.YAMLError as exc:
        return None, [Problem(path, 1, f"YAML syntax: {' '.join(str(exc).split())} — check the file is valid YAML")]
    finally:
        loader.dispose()
    doc = YamlDocument(path=path, data=data)
    problems: list[Problem] = []
    if node is not None:
        _walk(node, (), doc, problems)
    return doc, problems


def read_operator_file(path: Path, shown: str,
                       max_bytes: int = MAX_FILE_BYTES) -> tuple[str | None, list[Problem]]:
    """The file's text, or the problem: not a regular file (a FIFO would block), too large, not UTF-8.

    The size is checked before reading, and no more than the limit is ever read.
    """
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        return None, [Problem(shown, 1, f"cannot read the file ({exc.strerror}) — check it exists and is UTF-8")]
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None, [Problem(shown, 1, "is not a regular file — replace it with a YAML file")]
        too_big = Problem(shown, 1, f"the file is larger than {max_bytes / 2**20:g} MiB — an operator file holds "
                                    "a few pages of text; split it or remove what does not belong")
        if info.st_size > max_bytes:
            return None, [too_big]
        raw = file.read(max_bytes + 1)
    if len(raw) > max_bytes:  # it grew after fstat
        return None, [too_big]
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        return None, [Problem(shown, 1, f"cannot read the file ({exc.reason} at byte {exc.start}) — "
                                        "check it exists and is UTF-8")]


def load_yaml(path: Path, display: str | None = None) -> tuple[YamlDocument | None, list[Problem]]:
    shown = display or str(path)
    text, problems = read_operator_file(path, shown)
    if text is None:
        return None, problems
    return parse_yaml(text, shown)
