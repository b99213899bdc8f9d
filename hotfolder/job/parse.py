"""Turn a job file's bytes into a `JobSpec`: a prompt, a spec of fields, or a whole workflow.

Everything a user can get wrong in a file is a `JobError` with a sentence that says what to
change; nothing here touches the network or the template.
"""

from __future__ import annotations

import codecs
import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from hotfolder.config.fields import JOB_FIELDS, Limits, check_field, check_priority, shown
from hotfolder.errors import JobError, Kind
from hotfolder.job.batchspec import (
    BATCH_KEYS,
    expand_spec,
    is_batch_spec,
    runs_from_csv,
    runs_from_jsonl,
    runs_from_lines,
)
from hotfolder.job.loaders import load_json, load_yaml
from hotfolder.jobfile import (
    InUse,
    Refused,
    has_control_chars,
    is_image_name,
    not_utf8,
    open_file,
    read_fd,
)
from hotfolder.workflow.graph import workflow_format
from hotfolder.workflow.gui2api.graph import expanded_size, read_workflow

SPEC_KEYS = (*JOB_FIELDS, "workflow", "set", "images", "priority")


@dataclass(frozen=True)
class JobSpec:
    kind: Literal["prompt", "spec", "workflow", "batch", "image"]  # image: dropped alone
    fields: Mapping[str, Any] = field(default_factory=dict)
    template: str | None = None  # a template name the job asked for
    sets: Mapping[str, Any] = field(default_factory=dict)  # "NODE.INPUT" -> value
    workflow: Mapping[str, Any] | None = None  # a complete workflow dropped as the job
    source_format: Literal["api", "gui"] = "api"  # "gui": the editor's Save, converted later
    runs: tuple[JobSpec, ...] = ()  # kind "batch": one spec per run
    seed_offset: int = 0  # a run of `count`: added to a fixed default seed
    images: Mapping[str, str] = field(default_factory=dict)  # image/mask/NODE -> file name
    priority: int = 0  # the job's own, within the folder's limits (added to the folder's)


def name_problem(name: Any) -> str | None:
    """Why `name` cannot be a file named by a job (a plain name in the same folder)."""
    if not isinstance(name, str) or not name:
        return "expected a file name"
    if "/" in name or "\\" in name or name in (".", ".."):
        return f"{name!r} must be a plain file name next to the job, without a path"
    if name.startswith("."):
        return f"{name!r} is a hidden name; hidden files are never taken"
    if has_control_chars(name) or not_utf8(name) or len(os.fsencode(name)) > 255:
        return f"{name!r} is not a usable file name"
    return None


def parse_images_field(value: Any, problems: list[str]) -> dict[str, str]:
    """A spec's `images`: one file name (the template's image), or NODE -> file name, where
    NODE is `image`, `mask`, or a node id, title or class_type."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = {"image": value}
    if not isinstance(value, Mapping) or not value:
        problems.append("images: expected a file name, or a mapping of node (image, mask, or "
                        "a node id, title or class) to a file name")
        return {}
    images: dict[str, str] = {}
    for ref, name in value.items():
        problem = name_problem(name)
        if not isinstance(ref, str) or not ref.strip():
            problems.append(f"images: {ref!r} is not a node (image, mask, or a node id, title "
                            "or class)")
        elif problem:
            problems.append(f"images.{ref}: {problem}")
        else:
            images[ref] = name
    return images


def parse_job(path: Path, limits: Limits | None = None, *, txt_mode: str = "whole") -> JobSpec:
    """A job file on its own (outside the daemon's claim): opened without following links,
    its size checked on the descriptor, parsed from what was read. An image is a job alone."""
    limits = limits or Limits()
    if is_image_name(path.name):
        return JobSpec(kind="image", images={"image": path.name})
    try:
        fd, st = open_file(path.parent, path.name)
    except Refused as exc:
        raise JobError(f"cannot read the job file: {exc.reason}", kind=Kind.REFUSED) from exc
    except (InUse, OSError) as exc:
        raise JobError(f"cannot read the job file: {getattr(exc, 'strerror', None) or exc}",
                       kind=Kind.UNREADABLE) from exc
    try:
        data = read_fd(fd, st, limits.max_job_bytes)
    finally:
        os.close(fd)
    return parse_bytes(path.name, data, limits, txt_mode=txt_mode)


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), or UTF-16 when it starts with a UTF-16 BOM."""
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise JobError("the file starts like UTF-16 text but is not valid UTF-16; save "
                           "it as UTF-8", kind=Kind.UNREADABLE,
                           incomplete=exc.reason == "truncated data") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        cut = exc.reason == "unexpected end of data"  # a character cut in half at the end
        raise JobError(f"the file is not UTF-8 text (bad byte at offset {exc.start}); "
                       "save it as UTF-8", kind=Kind.UNREADABLE, incomplete=cut) from exc
    if "\x00" in text:
        raise JobError("the file contains NUL bytes: it looks binary, not text",
                       kind=Kind.UNREADABLE)
    return text


def parse_bytes(name: str, data: bytes, limits: Limits | None = None, *,
                txt_mode: str = "whole") -> JobSpec:
    limits = limits or Limits()
    text = decode_text(data)
    suffix = Path(name).suffix.lower()
    if not text.strip():
        what = {".txt": "prompt file", ".csv": "CSV file"}.get(suffix, "file")
        raise JobError(f"the {what} is empty", kind=Kind.INVALID, incomplete=True)
    if suffix == ".txt" and txt_mode == "lines":
        return _batch(runs_from_lines(text, limits), limits)
    if suffix == ".csv":
        return _batch(runs_from_csv(text, limits), limits)
    if suffix == ".jsonl":
        return _batch(runs_from_jsonl(text, limits), limits)
    if suffix == ".txt":
        prompt = text.strip()
        problem = check_field("prompt", prompt, limits=limits)
        if problem:
            raise JobError(f"the prompt {problem}", kind=Kind.INVALID)
        return JobSpec(kind="prompt", fields={"prompt": prompt})
    if suffix == ".json":
        obj = load_json(text)
    elif suffix in (".yaml", ".yml"):
        obj = load_yaml(text)
    else:
        raise JobError(f"{suffix or 'files without an extension'} is not a job format",
                       kind=Kind.INVALID)
    return parse_object(obj, limits)


def parse_object(obj: Any, limits: Limits | None = None) -> JobSpec:
    limits = limits or Limits()
    kind = workflow_format(obj)
    if kind == "gui":  # converted later, with the server's node definitions, but a malformed
        # save fails now, whatever the server, and so does one too big once unfolded
        expanded_size(read_workflow(obj), max_nodes=limits.max_nodes,
                      max_links=limits.max_links, max_depth=limits.max_depth)
    elif kind == "api":
        _check_api_size(obj, limits)
    if kind is not None:
        return JobSpec(kind="workflow", workflow=obj, source_format=kind)
    if not isinstance(obj, Mapping):
        raise JobError(f"a job spec must be a mapping of fields, got {_kind(obj)}",
                       kind=Kind.INVALID)
    if is_batch_spec(obj):
        # the shared fields first, so a typo there is reported once, not once per run
        shared = _parse_spec({k: v for k, v in obj.items() if k not in BATCH_KEYS}, limits)
        runs = expand_spec({k: v for k, v in obj.items() if k != "priority"}, limits)
        return replace(_batch(runs, limits), priority=shared.priority)
    return _parse_spec(obj, limits)


def _check_api_size(workflow: Mapping[str, Any], limits: Limits) -> None:
    links = sum(1 for node in workflow.values() if isinstance(node.get("inputs"), Mapping)
                for value in node["inputs"].values() if isinstance(value, list))
    if len(workflow) > limits.max_nodes:
        raise JobError(f"the workflow has {len(workflow)} nodes; this folder takes workflows of "
                       f"up to {limits.max_nodes} (limits.max_nodes)", kind=Kind.TOO_LARGE)
    if links > limits.max_links:
        raise JobError(f"the workflow has {links} links; this folder takes workflows of up to "
                       f"{limits.max_links} (limits.max_links)", kind=Kind.TOO_LARGE)


def _batch(runs: list[dict[str, Any]], limits: Limits) -> JobSpec:
    specs = []
    for i, run in enumerate(runs, start=1):
        where = run.pop("_where", f"run {i}")
        offset = run.pop("_seed_offset", 0)
        if "priority" in run:  # a job's place in the queue: one for the whole file
            raise JobError(f"{where}: priority applies to a whole job, not to one run",
                           kind=Kind.INVALID)
        try:
            spec = _parse_spec(run, limits)
        except JobError as exc:
            raise JobError(f"{where}: {exc.message}", kind=exc.kind,
                           details=exc.details) from exc
        specs.append(replace(spec, seed_offset=offset))
    return JobSpec(kind="batch", runs=tuple(specs))


def _parse_spec(obj: Mapping[str, Any], limits: Limits) -> JobSpec:
    problems: list[str] = []
    fields: dict[str, Any] = {}
    for key, value in obj.items():
        if key not in SPEC_KEYS:
            close = difflib.get_close_matches(str(key), SPEC_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown field {shown(key)}{hint}")
        elif key in JOB_FIELDS:
            problem = check_field(key, value, limits=limits)
            if problem:
                problems.append(f"{key}: {problem}")
            else:
                fields[key] = value
    template = obj.get("workflow")
    if template is not None and not isinstance(template, str):
        problems.append(f"workflow: expected a template name, got {_kind(template)}")
        template = None
    sets = _parse_sets(obj.get("set"), problems, limits)
    images = parse_images_field(obj.get("images"), problems)
    priority = obj.get("priority", 0)
    problem = check_priority(priority, limits)
    if problem:
        problems.append(f"priority: {problem}")
    if problems:
        raise JobError("the job spec is invalid: " + "; ".join(problems)
                       + f". Known fields: {', '.join(SPEC_KEYS)}", kind=Kind.INVALID,
                       details={"problems": problems})
    return JobSpec(kind="spec", fields=fields, template=template, sets=sets, images=images,
                   priority=priority if not problem else 0)


def _parse_sets(value: Any, problems: list[str], limits: Limits) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"set: expected a mapping of NODE.INPUT to value, got {_kind(value)}")
        return {}
    sets: dict[str, Any] = {}
    for target, item in value.items():
        if not isinstance(target, str) or "." not in target.strip(".") :
            problems.append(f"set: {shown(target)} is not NODE.INPUT (NODE is a node id, title or "
                            "class_type, e.g. KSampler.steps)")
        elif isinstance(item, (Mapping, list)) or item is None:
            problems.append(f"set.{target}: expected a text, number or true/false, "
                            f"got {_kind(item)}")
        elif isinstance(item, str) and len(item) > limits.max_prompt_chars:
            problems.append(f"set.{target}: {len(item)} characters is more than this folder "
                            f"allows ({limits.max_prompt_chars}, limits.max_prompt_chars)")
        elif isinstance(item, float) and not math.isfinite(item):
            problems.append(f"set.{target}: not a finite number")
        else:
            sets[target] = item
    return sets


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a text"
    if value is None:
        return "nothing"
    return type(value).__name__
