"""Batch jobs: one dropped file, many runs.

A spec's `count`, `prompts` and `matrix`, a `.csv` (a run per row), a `.jsonl` (a spec per
line) and, where the folder says `txt_mode: lines`, a `.txt` (a prompt per line) all become a
`JobSpec` of kind "batch" whose `runs` are ordinary specs. Everything is checked before the
first run is submitted, so a typo fails the whole file at once instead of run 37 of 40; the
number of runs is computed before anything is expanded, so `count: 1000000` costs nothing.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Mapping
from typing import Any

from hotfolder.config.fields import JOB_FIELDS, SEED_MAX, Limits, check_field, shown
from hotfolder.errors import JobError, Kind

BATCH_KEYS = ("count", "prompts", "matrix")


def is_batch_spec(obj: Any) -> bool:
    return isinstance(obj, Mapping) and any(key in obj for key in BATCH_KEYS)


def expand_spec(obj: Mapping[str, Any], limits: Limits) -> list[dict[str, Any]]:
    """The run specs (plain mappings, parsed later like any spec) of a batch spec.

    Order: prompts outermost, then the matrix in its keys' order, then the count, so runs of
    one prompt stay together. With `count`, a whole-number seed S gives the runs S, S+1, …;
    otherwise each run gets its own random seed (recorded in the manifest).
    """
    base = {k: v for k, v in obj.items() if k not in BATCH_KEYS}
    count = _count(obj.get("count"))
    prompts = _prompts(obj.get("prompts"), limits)
    if prompts is not None and "prompt" in base:
        raise JobError("a batch spec has both `prompt` and `prompts`; keep one", kind=Kind.INVALID)
    axes = _matrix(obj.get("matrix"), limits)
    total = count * (len(prompts) if prompts is not None else 1) * math.prod(
        len(values) for _, values in axes)
    check_run_count(total, limits)
    seed = base.get("seed")
    runs = []
    for prompt in prompts if prompts is not None else [None]:
        for combination in itertools.product(*(values for _, values in axes)):
            for i in range(count):
                run = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
                if prompt is not None:
                    run["prompt"] = prompt
                for (key, _), value in zip(axes, combination, strict=True):
                    if key in JOB_FIELDS:
                        run[key] = value
                    else:
                        run.setdefault("set", {})[key] = value
                if count > 1 and isinstance(seed, int) and not isinstance(seed, bool):
                    run["seed"] = (seed + i) % (SEED_MAX + 1)
                elif count > 1:
                    run["_seed_offset"] = i  # a folder's fixed default seed counts up too
                runs.append(run)
    return runs


def check_run_count(total: int, limits: Limits) -> None:
    if total < 1:
        raise JobError("the batch has no runs", kind=Kind.INVALID)
    if total > limits.max_runs:
        raise JobError(f"the batch asks for {total} runs; this folder allows at most "
                       f"{limits.max_runs} per job (limits.max_runs)", kind=Kind.TOO_LARGE,
                       details={"runs": total, "max_runs": limits.max_runs})


def _count(value: Any) -> int:
    if value is None:
        return 1
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise JobError(f"count: expected a whole number of runs (1 or more), got {shown(value)}",
                       kind=Kind.INVALID)
    return value


def _prompts(value: Any, limits: Limits) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise JobError("prompts: expected a non-empty list of prompt texts", kind=Kind.INVALID)
    for i, item in enumerate(value):
        problem = check_field("prompt", item, limits=limits)
        if problem:
            raise JobError(f"prompts[{i}]: {problem}", kind=Kind.INVALID)
    return list(value)


def _matrix(value: Any, limits: Limits) -> list[tuple[str, list[Any]]]:
    if value is None:
        return []
    if not isinstance(value, Mapping) or not value:
        raise JobError("matrix: expected a mapping of field (or NODE.INPUT) to a list of "
                       'values, e.g. {"cfg": [5, 7], "steps": [20, 30]}', kind=Kind.INVALID)
    axes = []
    for key, values in value.items():
        if not isinstance(values, list) or not values:
            raise JobError(f"matrix.{key}: expected a non-empty list of values",
                           kind=Kind.INVALID)
        if key in JOB_FIELDS:
            for i, item in enumerate(values):
                problem = check_field(key, item, limits=limits)
                if problem:
                    raise JobError(f"matrix.{key}[{i}]: {problem}", kind=Kind.INVALID)
        elif not isinstance(key, str) or "." not in key.strip("."):
            raise JobError(f"matrix: {shown(key)} is neither a job field ({', '.join(JOB_FIELDS)}) "
                           "nor NODE.INPUT (e.g. KSampler.steps)", kind=Kind.INVALID)
        axes.append((str(key), list(values)))
    return axes


def runs_from_csv(text: str, limits: Limits) -> list[dict[str, Any]]:
    """A run per row; the header names job fields or NODE.INPUT targets. Empty cells are left
    to the folder's defaults; numbers are read as numbers where the field wants one."""
    try:
        rows = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as exc:  # e.g. a quoted cell left open at the end: a file cut short?
        why = (f"a cell is longer than {csv.field_size_limit()} characters"
               if "field limit" in str(exc) else str(exc))
        raise JobError(f"the CSV file cannot be read: {why}", kind=Kind.INVALID,
                       incomplete="end of data" in str(exc)) from exc
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise JobError("the CSV file is empty", kind=Kind.INVALID)
    header = [cell.strip() for cell in rows[0]]
    for column, name in enumerate(header, start=1):
        if not name:
            raise JobError(f"CSV header: column {column} has no name", kind=Kind.INVALID)
        if name not in JOB_FIELDS and name != "workflow" and "." not in name.strip("."):
            raise JobError(f"CSV header: {shown(name)} is neither a job field "
                           f"({', '.join(JOB_FIELDS)}), `workflow`, nor NODE.INPUT",
                           kind=Kind.INVALID)
    if len(set(header)) != len(header):
        raise JobError("CSV header: a column name appears twice", kind=Kind.INVALID)
    check_run_count(len(rows) - 1, limits)
    runs = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) > len(header):
            raise JobError(f"CSV line {line}: {len(row)} cells but {len(header)} columns",
                           kind=Kind.INVALID)
        run: dict[str, Any] = {}
        for name, cell in zip(header, row, strict=False):
            cell = cell.strip()
            if not cell:
                continue
            if name in JOB_FIELDS or name == "workflow":
                run[name] = _typed(name, cell)
            else:
                run.setdefault("set", {})[name] = _scalar(cell)
        runs.append({"_where": f"CSV line {line}", **run})
    return runs


def runs_from_jsonl(text: str, limits: Limits) -> list[dict[str, Any]]:
    """A spec per non-empty line (each may set any field, `set:` or `workflow`)."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    check_run_count(len(lines), limits)
    runs = []
    for n, line in lines:
        try:
            obj = json.loads(line)
        except ValueError as exc:
            why = ("a number has more than 4300 digits" if "Exceeds the limit" in str(exc)
                   else str(exc)[:200])
            raise JobError(f"JSONL line {n}: not valid JSON ({why})", kind=Kind.INVALID,
                           incomplete=n == lines[-1][0]) from exc
        except RecursionError as exc:
            raise JobError(f"JSONL line {n}: nested too deeply", kind=Kind.INVALID) from exc
        if not isinstance(obj, Mapping):
            raise JobError(f"JSONL line {n}: expected a job spec object", kind=Kind.INVALID)
        if is_batch_spec(obj):
            raise JobError(f"JSONL line {n}: count, prompts and matrix are for one spec "
                           "file; in JSONL each line is one run", kind=Kind.INVALID)
        runs.append({"_where": f"JSONL line {n}", **obj})
    return runs


def runs_from_lines(text: str, limits: Limits) -> list[dict[str, Any]]:
    """`txt_mode: lines`: a prompt per non-empty line; lines starting with # are comments."""
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    check_run_count(len(prompts), limits)
    return [{"_where": f"prompt {i}", "prompt": p} for i, p in enumerate(prompts, start=1)]


_INTS = {"seed", "steps", "width", "height", "batch_size"}
_FLOATS = {"cfg", "denoise"}


def _typed(name: str, cell: str) -> Any:
    if name in _INTS and cell != "random":
        try:
            return int(cell)
        except ValueError:
            return cell  # reported by the field check with the field's own words
    if name in _FLOATS:
        try:
            return float(cell)
        except ValueError:
            return cell
    return cell


def _scalar(cell: str) -> Any:
    """A NODE.INPUT cell: true/false, a whole number, a number, or the text itself."""
    lowered = cell.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            value = convert(cell)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            return cell
        return value
    return cell
