"""Nested JSON lists against a tensor shape: their values in row-major order, or where and how they first differ from it."""

from __future__ import annotations

from typing import Any


class ShapeMismatch(ValueError):
    """At `path` (indices from the outermost list) a list of `expected` items was due; `got` is what was there."""

    def __init__(self, path: tuple[int, ...], expected: int, got: Any):
        super().__init__(f"at {list(path)}: expected a list of {expected} items")
        self.path, self.expected, self.got = path, expected, got

    def got_text(self, items: str = "items") -> str:
        """'27 items' for a list, else the kind of value that was there."""
        if isinstance(self.got, list):
            return f"{len(self.got)} {items}"
        return {bool: "a boolean", type(None): "null", str: "a string", dict: "an object",
                int: "a number", float: "a number"}.get(type(self.got), type(self.got).__name__)


def flatten(data: Any, shape: tuple[int, ...] | list[int]) -> list:
    """`data` nested exactly as `shape` (lists of lists), as one flat row-major list; ShapeMismatch where it is not."""
    level = [data]
    for depth, size in enumerate(shape):
        below: list = []
        for i, node in enumerate(level):
            if not isinstance(node, list) or len(node) != size:
                raise ShapeMismatch(_unravel(i, shape[:depth]), size, node)
            below.extend(node)
        level = below
    return level


def _unravel(i: int, shape: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """The indices of the i-th node (row-major) of a nesting of `shape`."""
    path = []
    for size in reversed(shape):
        i, r = divmod(i, size)
        path.append(r)
    return tuple(reversed(path))
