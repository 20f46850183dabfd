"""One traversal and rewrite toolkit for every IR level.

IR nodes are frozen dataclasses whose children are fields holding a node or a tuple of nodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any


def is_node(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def children(node: Any) -> Iterator[Any]:
    """The child nodes of `node`, in field order (tuples are flattened one level)."""
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        if is_node(value):
            yield value
        elif isinstance(value, tuple):
            yield from (item for item in value if is_node(item))


def walk(node: Any) -> Iterator[Any]:
    """Pre-order walk over `node` and all its descendants."""
    yield node
    for child in children(node):
        yield from walk(child)


def _map_field(value: Any, fn: Callable[[Any], Any]) -> Any:
    if is_node(value):
        return fn(value)
    if isinstance(value, tuple) and any(is_node(item) for item in value):
        return tuple(fn(item) if is_node(item) else item for item in value)
    return value


def map_children(node: Any, fn: Callable[[Any], Any]) -> Any:
    """`node` with `fn` applied to each direct child; the same object if nothing changed."""
    changes = {}
    for field in dataclasses.fields(node):
        old = getattr(node, field.name)
        new = _map_field(old, fn)
        if new is not old and new != old:
            changes[field.name] = new
    return dataclasses.replace(node, **changes) if changes else node


def postwalk(node: Any, rule: Callable[[Any], Any | None]) -> Any:
    """Rebuild bottom-up; `rule` returns a replacement or None to keep the node."""
    rebuilt = map_children(node, lambda child: postwalk(child, rule))
    replaced = rule(rebuilt)
    return rebuilt if replaced is None else replaced


def prewalk(node: Any, rule: Callable[[Any], Any | None]) -> Any:
    """Rewrite top-down: a replaced node is not visited again, its children are."""
    replaced = rule(node)
    node = node if replaced is None else replaced
    return map_children(node, lambda child: prewalk(child, rule))


def fixpoint(node: Any, rule: Callable[[Any], Any | None], limit: int = 100) -> Any:
    """Apply `postwalk(rule)` until nothing changes."""
    for _ in range(limit):
        new = postwalk(node, rule)
        if new == node:
            return new
        node = new
    raise RuntimeError(f"rewrite did not reach a fixpoint in {limit} rounds")
