"""A job file's JSON or YAML read into Python values, closed against hostile input.

A dropped file is untrusted: a repeated key, a JSON constant (NaN), a number of thousands
of digits, a YAML tag that builds objects, or an alias bomb are refused with a sentence that
says where, and every message is one line (it ends up in an error file and a log line).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from hotfolder.config.fields import shown
from hotfolder.errors import JobError, Kind
from hotfolder.yamlerror import yaml_problem


class _UniqueKeyError(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _UniqueKeyError(f"the key {shown(key)} appears twice")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def number_problem(exc: ValueError) -> str:
    """A conversion error in words: Python refuses integers of over 4300 digits."""
    if "Exceeds the limit" in str(exc):
        return "a number has more than 4300 digits"
    return str(exc)[:200]


def load_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs, parse_constant=_no_constants)
    except _UniqueKeyError as exc:
        raise JobError(f"invalid JSON: {exc}", kind=Kind.INVALID) from exc
    except json.JSONDecodeError as exc:
        raise JobError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                       kind=Kind.INVALID, incomplete=True) from exc
    except RecursionError as exc:
        raise JobError("invalid JSON: nested too deeply", kind=Kind.INVALID) from exc
    except ValueError as exc:
        raise JobError(f"invalid JSON: {number_problem(exc)}", kind=Kind.INVALID) from exc


class _JobLoader(yaml.SafeLoader):
    """`safe_load` for job files, closed further: a date stays text (a job has no field for
    one), binary, sets and ordered maps are refused, a number has at most NUMBER_DIGITS
    digits (a YAML 1.1 base-60 number of 800 KB costs seconds of CPU to read), and aliases
    may not unfold the document past YAML_NODE_BUDGET nodes (a 450-byte alias bomb would
    otherwise become billions of values in the first message or log line that shows it)."""


_JobLoader.yaml_implicit_resolvers = {  # no implicit dates: 2024-01-01 stays the text it is
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YAML_NODE_BUDGET = 100_000
NUMBER_DIGITS = 100


def _number(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = str(node.value)
    if len(text) > NUMBER_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"a number of {len(text)} characters (at most {NUMBER_DIGITS})",
            node.start_mark)
    if ":" in text:
        raise yaml.constructor.ConstructorError(
            None, None, f"{text!r} would be read as a base-60 number; quote it if it is text",
            node.start_mark)
    if node.tag.endswith(":int"):
        return yaml.SafeLoader.construct_yaml_int(loader, node)
    return yaml.SafeLoader.construct_yaml_float(loader, node)


def _refused_tag(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None, None, f"{node.tag.rsplit(':', 1)[-1]} values are not taken in job files",
        node.start_mark)


_JobLoader.add_constructor("tag:yaml.org,2002:int", _number)
_JobLoader.add_constructor("tag:yaml.org,2002:float", _number)
for _tag in ("timestamp", "binary", "set", "omap", "pairs"):
    _JobLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refused_tag)


def _unfolded_size(root: yaml.Node, budget: int) -> int:
    """How many nodes the document has with every alias unfolded, counted once per shared
    node (no unfolding), and refused past `budget` or when an alias contains itself."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        if finished:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(node)] > budget:
                raise JobError(f"the YAML is not valid: its aliases (*name) unfold it to more "
                               f"than {budget} values; write the values out instead",
                               kind=Kind.TOO_LARGE)
            continue
        if id(node) in sizes:
            continue
        if id(node) in on_path:
            raise JobError("the YAML is not valid: an alias (*name) contains itself",
                           kind=Kind.INVALID)
        on_path.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def load_yaml(text: str) -> Any:
    loader = _JobLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _unfolded_size(node, YAML_NODE_BUDGET)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise JobError(yaml_problem(exc), kind=Kind.INVALID, incomplete=True) from exc
    except RecursionError as exc:
        raise JobError("the YAML is not valid: nested too deeply", kind=Kind.INVALID) from exc
    except ValueError as exc:  # a number too long to convert
        raise JobError(f"the YAML is not valid: {number_problem(exc)}",
                       kind=Kind.INVALID) from exc
    finally:
        loader.dispose()
