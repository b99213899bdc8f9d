"""PyYAML's errors as one line a person can act on.

PyYAML's own text spans several lines (context, a quoted source line, a caret) meant for a
terminal; an error file, a log line or a config report wants one sentence with the place.
"""

from __future__ import annotations

import yaml

MAX_PROBLEM = 300  # characters of PyYAML's wording kept (it may quote the document)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """`the YAML is not valid at line 3, column 7: mapping values are not allowed here`."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"the YAML is not valid: {_one_line(str(exc))}"
    problem = _one_line(exc.problem or "")
    context = _one_line(exc.context or "")
    if context and problem.startswith("but "):  # "expected a single document ... but found"
        problem = f"{context} {problem}"
    elif context and not problem:
        problem = context
    elif context.startswith("while "):
        problem = f"{problem} ({context})"
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"the YAML is not valid{where}: {problem or 'no reason given'}"


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_PROBLEM else text[: MAX_PROBLEM - 1] + "…"
