"""Execution order and cache keys, chosen the way ComfyUI 0.3.64 chooses them.

Order matters to clients that show progress per node, and the cache decides which nodes run at
all. ComfyUI keys its (CLASSIC) output cache by an input signature: the class, the constant
inputs and the signatures of the linked ancestors, not the node id; it keeps only the entries of
the prompt being run (newer servers keep earlier prompts' results too: `trim_cache`). The order
comes from a stack-based walk of the inputs plus a preference for output nodes and nodes close
to them; the captures' orders are reproduced by both rules.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def _inputs(prompt: dict[str, Any], node_id: str) -> dict[str, Any]:
    node = prompt.get(node_id)
    if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
        return {}
    return node["inputs"]


def signatures(prompt: dict[str, Any], input_dir: str) -> dict[str, str]:
    """A content hash per node id; equal hashes mean "same result", whatever the node id."""
    memo: dict[str, str] = {}

    def sig(node_id: str, path: tuple[str, ...]) -> str:
        if node_id in memo:
            return memo[node_id]
        if node_id in path or node_id not in prompt:
            return f"missing:{node_id!r}"
        node = prompt[node_id]
        class_type = node.get("class_type") if isinstance(node, dict) else None
        parts: list[Any] = [class_type]
        inputs = _inputs(prompt, node_id)
        for key in sorted(inputs):
            value = inputs[key]
            if is_link(value) and value[0] in prompt:
                parts.append([key, "link", sig(value[0], (*path, node_id)), value[1]])
            else:
                parts.append([key, "const", value])
        if class_type in ("LoadImage", "LoadImageMask"):
            # IS_CHANGED of the real node hashes the file; size and mtime are enough here.
            try:
                stat = os.stat(os.path.join(input_dir, str(inputs.get("image", ""))))
                parts.append([stat.st_size, stat.st_mtime_ns])
            except OSError:
                parts.append(None)
        text = json.dumps(parts, sort_keys=True, default=str)
        memo[node_id] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return memo[node_id]

    return {node_id: sig(node_id, ()) for node_id in prompt}


def trim_cache(cache: dict[str, Any], used: set[str], limit: int) -> None:
    """Forget cached results, oldest first (the dict's order is the recency).

    limit 0 is the CLASSIC cache of 0.3.64: only what the current prompt uses stays. Otherwise
    (newer servers, whose default cache keeps earlier prompts' results too; derived from
    ComfyUI's source) what the prompt uses becomes the most recent, and the oldest others go
    while there are more than `limit`.
    """
    if limit <= 0:
        for stale in [key for key in cache if key not in used]:
            del cache[stale]
        return
    for key in [key for key in cache if key in used]:
        cache[key] = cache.pop(key)
    for stale in [key for key in cache if key not in used][: max(0, len(cache) - limit)]:
        del cache[stale]


class ExecutionList:
    """Which node runs next: ready nodes only, outputs first, then nodes feeding outputs."""

    def __init__(
        self,
        prompt: dict[str, Any],
        is_output: Callable[[str], bool],
        is_cached: Callable[[str], bool],
    ) -> None:
        self.prompt = prompt
        self.is_output = is_output
        self.is_cached = is_cached
        self.pending: dict[str, bool] = {}
        self.blocking: dict[str, dict[str, bool]] = {}
        self.block_count: dict[str, int] = {}

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            current = stack.pop()
            if current in self.pending:
                continue
            self.pending[current] = True
            self.blocking.setdefault(current, {})
            self.block_count.setdefault(current, 0)
            for value in _inputs(self.prompt, current).values():
                if is_link(value) and value[0] in self.prompt:
                    if not self.is_cached(value[0]):
                        stack.append(value[0])
                    links.append((value[0], current))
        for source, target in links:
            if self.is_cached(source):
                continue
            self.add_node(source)
            if target not in self.blocking[source]:
                self.blocking[source][target] = True
                self.block_count[target] += 1

    def is_empty(self) -> bool:
        return not self.pending

    def stage(self) -> str:
        ready = [n for n in self.pending if self.block_count.get(n, 0) == 0]
        if not ready:
            raise RuntimeError("Dependency cycle detected")
        for node in ready:
            if self.is_output(node):
                return node
        for node in ready:
            if any(self.is_output(b) for b in self.blocking.get(node, {})):
                return node
        for node in ready:
            for blocked in self.blocking.get(node, {}):
                if any(self.is_output(b) for b in self.blocking.get(blocked, {})):
                    return node
        return ready[0]

    def complete(self, node_id: str) -> None:
        self.pending.pop(node_id, None)
        for blocked in self.blocking.pop(node_id, {}):
            self.block_count[blocked] -= 1

    def will_run(self) -> list[str]:
        """Nodes currently queued to execute (not served from the cache)."""
        return [n for n in self.pending if not self.is_cached(n)]
