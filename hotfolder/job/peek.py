"""What a waiting inbox file asks for, before it is claimed: its models and its priority.

The scheduler (daemon/schedule.py) chooses which waiting file a free server takes, so it must
know this while the file still waits. This is a read-only look, as careful as the claim: opened
without following links, no bigger than the folder's `max_job_bytes`, parsed with the job
loaders' own limits. Anything it cannot tell is "unknown models" and the folder's priority:
the job is then scheduled by priority and drop order alone, and its real parse (job/parse.py)
says what is wrong with it. Results are kept per (path, inode, size, mtime), so a file handed
on again is not read again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotfolder.config.model import FolderConfig, Template
from hotfolder.errors import JobError
from hotfolder.job.loaders import load_json, load_yaml
from hotfolder.job.parse import decode_text
from hotfolder.jobfile import InUse, Refused, is_image_name, open_file, read_fd
from hotfolder.workflow.bindings import resolve_target
from hotfolder.workflow.graph import workflow_format
from hotfolder.workflow.models import is_model_input, models_of

CACHE_SIZE = 10_000  # looks remembered; the oldest are forgotten first


@dataclass(frozen=True)
class Peek:
    models: frozenset[str] | None  # None: not known before the job runs
    priority: int  # the job's effective priority: the folder's plus its own


class Peeker:
    """Looks at waiting files, remembering what it saw (one per daemon; used by one thread)."""

    def __init__(self, templates: Mapping[str, Template]) -> None:
        self.templates = templates
        self._template_models: dict[str, frozenset[str] | None] = {}
        self._seen: dict[tuple[Any, ...], Peek] = {}

    def update(self, templates: Mapping[str, Template]) -> None:
        """A reloaded config: its templates may differ."""
        self.templates = templates
        self._template_models.clear()
        self._seen.clear()

    def look(self, folder: FolderConfig, path: Path) -> Peek:
        suffix = path.suffix.lower()
        if suffix == ".txt" or is_image_name(path.name):  # no overrides: the folder's template
            return Peek(self.template_models(folder.template), folder.priority)
        if suffix not in (".json", ".yaml", ".yml"):
            return Peek(None, folder.priority)  # a job folder, a CSV or JSONL batch
        try:
            st = os.lstat(path)
        except OSError:
            return Peek(None, folder.priority)
        key = (folder.name, str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        peek = self._seen.get(key)
        if peek is None:
            peek = self._read(folder, path, suffix)
            if len(self._seen) >= CACHE_SIZE:
                self._seen.pop(next(iter(self._seen)))
            self._seen[key] = peek
        return peek

    def template_models(self, name: str) -> frozenset[str] | None:
        if name not in self._template_models:
            template = self.templates.get(name)
            self._template_models[name] = (models_of(template.workflow) if template is not None
                                           and template.source_format == "api" else None)
        return self._template_models[name]

    def _read(self, folder: FolderConfig, path: Path, suffix: str) -> Peek:
        try:
            fd, st = open_file(path.parent, path.name)
            try:
                data = read_fd(fd, st, folder.limits.max_job_bytes)
            finally:
                os.close(fd)
            text = decode_text(data)
            obj = load_json(text) if suffix == ".json" else load_yaml(text)
        except (JobError, OSError, Refused, InUse, ValueError, RecursionError):
            return Peek(None, folder.priority)
        return Peek(self._models(folder, obj), folder.priority + _own_priority(folder, obj))

    def _models(self, folder: FolderConfig, obj: Any) -> frozenset[str] | None:
        kind = workflow_format(obj)
        if kind == "api":
            return models_of(obj)
        if kind == "gui" or not isinstance(obj, Mapping):
            return None  # a GUI save's models are known once converted, with a server's help
        name = obj.get("workflow", folder.template)
        template = self.templates.get(name) if isinstance(name, str) else None
        models = self.template_models(name) if template is not None else None
        matrix = obj.get("matrix")
        if models is None or (isinstance(matrix, Mapping) and any(
                isinstance(k, str) and is_model_input(k.rpartition(".")[2]) for k in matrix)):
            return None  # runs that differ in their models
        sets = obj.get("set")
        if not isinstance(sets, Mapping) or not any(
                isinstance(k, str) and is_model_input(k.rpartition(".")[2]) for k in sets):
            return models
        assert template is not None
        return _with_sets(template.workflow, sets)


def _with_sets(workflow: Mapping[str, Any], sets: Mapping[str, Any]) -> frozenset[str] | None:
    """The template's models after the job's `set:` of model inputs (only loaders are copied)."""
    loaders = {nid: {"class_type": node.get("class_type"), "inputs": dict(node.get("inputs", {}))}
               for nid, node in workflow.items() if isinstance(node, Mapping)
               and "Loader" in str(node.get("class_type"))}
    for target, value in sets.items():
        if not isinstance(target, str) or not is_model_input(target.rpartition(".")[2]):
            continue
        try:
            node_id, input_name = resolve_target(workflow, target)
        except JobError:
            return None
        if node_id in loaders:
            loaders[node_id]["inputs"][input_name] = value
    return models_of(loaders)


def _own_priority(folder: FolderConfig, obj: Any) -> int:
    """The job's `priority`, held to the folder's range (outside it, the job fails anyway)."""
    value = obj.get("priority", 0) if isinstance(obj, Mapping) else 0
    if not isinstance(value, int) or isinstance(value, bool):
        return 0
    return max(folder.limits.min_priority, min(folder.limits.max_priority, value))

