"""YAML documents osbuilder did not write (a guest's osbuilder.yaml, host configs), read as JSON
types within limits: a depth, and an alias expansion (documents.py holds the other limits).
Apart from documents.py so that what reads no YAML (recipes, `distros`) does not import it."""

from __future__ import annotations

from typing import Any

import yaml

from osbuilder.foundation.errors import UserError

YAML_DEPTH_LIMIT = 64
YAML_NODE_LIMIT = 200_000  # nodes after aliases are expanded: a summary of 5,000 packages has ~25,000


class _JsonLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader (libyaml's where PyYAML has it: a summary lists every package) making
    only what JSON can hold: timestamps stay strings; binary values, sets and other tagged
    types are refused."""


_JsonLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _tag in ("binary", "set", "omap", "pairs", "timestamp"):
    _JsonLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", None)  # type: ignore[arg-type]
_JsonLoader.yaml_constructors = {tag: constructor for tag, constructor in _JsonLoader.yaml_constructors.items()
                                 if constructor is not None}


def _expanded_nodes(root: yaml.Node, source: str, fix: str) -> None:
    """Refuse a document whose aliases expand past YAML_NODE_LIMIT nodes (a billion laughs:
    a few hundred bytes that name one list from another, again and again)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            sizes[id(node)] = 1 + sum(sizes.get(id(c), 0) for c in children)
            if sizes[id(node)] > YAML_NODE_LIMIT:
                raise UserError(f"{source}: its aliases expand to more than {YAML_NODE_LIMIT} values, the reader's "
                                "limit", fix)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)


def load_yaml_document(text: str, source: str, fix: str) -> Any:
    """One YAML document as JSON types, within the depth and expansion limits."""
    def refused(exc: yaml.YAMLError) -> UserError:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        return UserError(f"{source}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})", fix)

    try:
        depth = 0
        for event in yaml.parse(text, Loader=_JsonLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > YAML_DEPTH_LIMIT:
                    raise UserError(f"{source}: nested deeper than {YAML_DEPTH_LIMIT} levels, the reader's limit", fix)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        loader = _JsonLoader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return None
            _expanded_nodes(root, source, fix)
            return loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.constructor.ConstructorError as exc:
        raise UserError(f"{source}: {exc.problem} (only strings, numbers, booleans, lists and mappings are read)",
                        fix) from None
    except yaml.YAMLError as exc:
        raise refused(exc) from None
