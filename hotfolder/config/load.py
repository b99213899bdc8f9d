"""Load the YAML config into the dataclasses of model.py, collecting every problem with its
key path.

The rest of the code only ever sees `Config`; nothing else reads YAML. Relative paths resolve
against the config file's folder so `hotfolder run --config DIR/hotfolder.yaml` works from
any working directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hotfolder.config.fields import JOB_FIELDS, PRIORITY_LIMITS, Limits, check_field
from hotfolder.config.http import parse_http
from hotfolder.config.model import (
    DEFAULT_EXTENSIONS,
    LEASE_SECONDS,
    SUBFOLDERS,
    ComfyConfig,
    Config,
    FolderConfig,
    LogConfig,
    OutputPolicy,
    Template,
)
from hotfolder.config.problems import Problems, join, patterns
from hotfolder.config.schedule import parse_schedule
from hotfolder.config.servers import parse_servers
from hotfolder.config.webhooks import parse_webhooks
from hotfolder.errors import ConfigError, JobError
from hotfolder.invocation import command
from hotfolder.jobfile import IMAGE_EXTENSIONS
from hotfolder.workflow.graph import takes_images, workflow_format
from hotfolder.workflow.gui2api.graph import read_workflow
from hotfolder.yamlerror import yaml_problem

CONFIG_SEARCH = ("./config/hotfolder.yaml", "/etc/hotfolder/hotfolder.yaml")
# fields a template binding may name, besides the job fields: `image` and `mask` are where a
# job's input image and mask go (by default the LoadImage and LoadImageMask nodes)
BINDABLE = (*JOB_FIELDS, "filename_prefix", "image", "mask")


def find_config(explicit: str | os.PathLike[str] | None) -> Path:
    """The config file by precedence: --config, $HOTFOLDER_CONFIG, ./config, /etc."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("HOTFOLDER_CONFIG")
    if env:
        return Path(env)
    for candidate in CONFIG_SEARCH:
        if Path(candidate).is_file():
            return Path(candidate)
    raise ConfigError([
        "no config file found: pass --config PATH, set HOTFOLDER_CONFIG, or create one with "
        f"`{command('init', 'DIR')}` (looked in " + ", ".join(CONFIG_SEARCH) + ")"
    ])


def load_config(path: str | os.PathLike[str]) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: {yaml_problem(exc)}"]) from exc
    return parse_config(data if data is not None else {}, base=path.resolve().parent, path=path)


def parse_config(data: Any, *, base: Path, path: Path | None = None) -> Config:
    p = Problems()
    top = p.mapping(data, "", ("servers", "comfy", "workflows", "folders", "log",
                              "stop_grace_seconds", "lease_seconds", "http", "webhooks",
                              "schedule"))
    servers = parse_servers(top.get("servers"), base, p)
    comfy = _comfy(top.get("comfy"), p)
    templates = _templates(top.get("workflows"), base, p)
    folders = _folders(top.get("folders"), base, templates, p)
    known_tags = {t for s in servers for t in s.tags}
    for i, folder in enumerate(folders):
        missing = [t for t in folder.server_tags if t not in known_tags]
        if missing:
            p.add(f"folders[{i}].server_tags", f"no server has the tag(s) {', '.join(missing)} "
                  f"(server tags: {', '.join(sorted(known_tags)) or 'none'})")
    log_data = p.mapping(top.get("log"), "log", ("level", "format"))
    log = LogConfig(
        level=p.choice(log_data, "level", "log", "info", ("debug", "info", "warning", "error")),
        format=p.choice(log_data, "format", "log", "auto", ("auto", "console", "json")),
    )
    http = parse_http(top.get("http"), p)
    webhooks = parse_webhooks(top.get("webhooks"), tuple(f.name for f in folders), p)
    schedule = parse_schedule(top.get("schedule"), p)
    if p.lines:
        raise ConfigError(p.lines)
    return Config(path=path, servers=servers, comfy=comfy, templates=templates,
                  folders=folders, log=log,
                  stop_grace_seconds=p.number(top, "stop_grace_seconds", "", 30.0),
                  lease_seconds=p.number(top, "lease_seconds", "", LEASE_SECONDS, minimum=2.0),
                  http=http, webhooks=webhooks, schedule=schedule)


def _comfy(value: Any, p: Problems) -> ComfyConfig:
    d = ComfyConfig()
    data = p.mapping(value, "comfy", tuple(ComfyConfig.__dataclass_fields__))
    return ComfyConfig(
        request_timeout=p.number(data, "request_timeout", "comfy", d.request_timeout, minimum=0.1),
        poll_interval=p.number(data, "poll_interval", "comfy", d.poll_interval, minimum=0.01),
        max_in_flight=p.number(data, "max_in_flight", "comfy", d.max_in_flight, minimum=1,
                               integer=True),
        retries_5xx=p.number(data, "retries_5xx", "comfy", d.retries_5xx, integer=True),
        backoff_initial=p.number(data, "backoff_initial", "comfy", d.backoff_initial, minimum=0.01),
        backoff_max=p.number(data, "backoff_max", "comfy", d.backoff_max, minimum=0.01),
        job_timeout=p.number(data, "job_timeout", "comfy", d.job_timeout, minimum=0.1),
        failover_seconds=p.number(data, "failover_seconds", "comfy", d.failover_seconds),
        max_output_bytes=p.number(data, "max_output_bytes", "comfy", d.max_output_bytes,
                                  minimum=1, integer=True),
        max_outputs=p.number(data, "max_outputs", "comfy", d.max_outputs, minimum=1,
                             integer=True),
        max_job_output_bytes=p.number(data, "max_job_output_bytes", "comfy",
                                      d.max_job_output_bytes, minimum=1, integer=True),
        max_answer_bytes=p.number(data, "max_answer_bytes", "comfy", d.max_answer_bytes,
                                  minimum=1024, integer=True),
        download_timeout=p.number(data, "download_timeout", "comfy", d.download_timeout,
                                  minimum=1),
        min_download_rate=p.number(data, "min_download_rate", "comfy", d.min_download_rate,
                                   integer=True),
        delete_history=p.boolean(data, "delete_history", "comfy", d.delete_history),
        websocket=p.boolean(data, "websocket", "comfy", d.websocket),
    )


def _templates(value: Any, base: Path, p: Problems) -> dict[str, Template]:
    templates: dict[str, Template] = {}
    data = value if value is not None else {}
    if not isinstance(data, Mapping):
        p.add("workflows", "expected a mapping of template name to file")
        return templates
    for name, entry in data.items():
        where = f"workflows.{name}"
        if isinstance(entry, str):
            entry = {"path": entry}
        entry = p.mapping(entry, where, ("path", "bindings"))
        template = _load_template(str(name), entry.get("path"), entry.get("bindings"), base,
                                  where, p)
        if template is not None:
            templates[str(name)] = template
    return templates


def _load_template(name: str, raw_path: Any, raw_bindings: Any, base: Path, where: str,
                   p: Problems) -> Template | None:
    if not isinstance(raw_path, str) or not raw_path:
        p.add(join(where, "path"), f"expected a file path, got {raw_path!r}")
        return None
    path = (base / raw_path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            p.add(join(where, "path"), f"{path} is empty")
            return None
        workflow = json.loads(text)
    except FileNotFoundError:
        p.add(where if where.startswith("folders") else join(where, "path"),
              f"file not found: {path}")
        return None
    except json.JSONDecodeError as exc:
        p.add(join(where, "path"), f"{path} is not valid JSON at line {exc.lineno}, column "
                                   f"{exc.colno}: {exc.msg}")
        return None
    except (OSError, ValueError) as exc:
        p.add(join(where, "path"), f"cannot read {path} as JSON: {exc}")
        return None

    kind = workflow_format(workflow)
    if kind is None:
        p.add(join(where, "path"), f"{path} is not a ComfyUI workflow (neither API format nor "
                                   "a GUI save with nodes and links)")
        return None
    if kind == "gui":  # converted per job with the server's definitions; its shape is known now
        try:
            read_workflow(workflow)
        except JobError as exc:
            p.add(join(where, "path"), f"{path}: {exc.message}")
            return None
    bindings: dict[str, tuple[str, ...]] = {}
    raw = p.mapping(raw_bindings, join(where, "bindings"), BINDABLE)
    for key, targets in raw.items():
        if isinstance(targets, str):
            targets = [targets]
        if (not isinstance(targets, list) or not targets
                or not all(isinstance(t, str) and "." in t for t in targets)):
            p.add(join(where, f"bindings.{key}"),
                  "expected NODE.INPUT or a list of them (NODE: id, title or class)")
            continue
        bindings[str(key)] = tuple(targets)
    return Template(name=name, path=path, workflow=workflow, bindings=bindings,
                    source_format=kind)


_FOLDER_KEYS = ("name", "root", "workflow", "defaults", "extensions", "settle_seconds",
                "include_temp_outputs", "job_timeout", "watch", "ready", "rescan_seconds", "ignore",
                "file_mode", "prune_days", "server_tags", "limits", "accept_workflows",
                "deny_classes", "allow_set", "txt_mode", "batch_fail", "image_mode",
                "image_wait_seconds", "output_format", "output_quality", "metadata", "priority",
                *SUBFOLDERS)


def _folders(value: Any, base: Path, templates: dict[str, Template],
             p: Problems) -> tuple[FolderConfig, ...]:
    if not isinstance(value, list) or not value:
        p.add("folders", "expected a non-empty list of hot folders")
        return ()
    folders: list[FolderConfig] = []
    for i, item in enumerate(value):
        where = f"folders[{i}]"
        data = p.mapping(item, where, _FOLDER_KEYS)
        root = data.get("root")
        if not isinstance(root, str) or not root:
            p.add(join(where, "root"), f"expected a folder path, got {root!r}")
            continue
        name = data.get("name", Path(root).name)
        template = _folder_template(data.get("workflow"), base, templates, where, p)
        image_mode = p.choice(data, "image_mode", where, "off", ("off", "per-file"))
        extensions = _extensions(data.get("extensions"), join(where, "extensions"), p)
        if image_mode == "per-file":
            extensions += tuple(e for e in IMAGE_EXTENSIONS if e not in extensions)
            _check_per_file(templates.get(template or ""), join(where, "image_mode"), p)
        folder = FolderConfig(
            name=str(name),
            root=(base / root).resolve(),
            template=template or "",
            defaults=_defaults(data.get("defaults"), join(where, "defaults"), p),
            extensions=extensions,
            image_mode=image_mode,
            image_wait_seconds=p.number(data, "image_wait_seconds", where, 10.0),
            output=_output_policy(data, where, p),
            priority=p.number(data, "priority", where, 0, minimum=-1_000_000,
                              maximum=1_000_000, integer=True),
            settle_seconds=p.number(data, "settle_seconds", where, 1.0),
            include_temp_outputs=p.boolean(data, "include_temp_outputs", where, False),
            job_timeout=(p.number(data, "job_timeout", where, 0.0, minimum=0.1)
                         if "job_timeout" in data else None),
            watch=p.choice(data, "watch", where, "auto", ("auto", "native", "poll")),
            ready=p.choice(data, "ready", where, "auto", ("auto", "settle")),
            rescan_seconds=p.number(data, "rescan_seconds", where, 30.0, minimum=0.1),
            ignore=patterns(data.get("ignore"), join(where, "ignore"), p),
            server_tags=patterns(data.get("server_tags"), join(where, "server_tags"), p),
            limits=_limits(data.get("limits"), join(where, "limits"), p),
            accept_workflows=p.boolean(data, "accept_workflows", where, True),
            deny_classes=patterns(data.get("deny_classes"), join(where, "deny_classes"), p),
            allow_set=(patterns(data.get("allow_set"), join(where, "allow_set"), p)
                       if "allow_set" in data else ("*",)),
            file_mode=_mode(data.get("file_mode"), join(where, "file_mode"), p),
            txt_mode=p.choice(data, "txt_mode", where, "whole", ("whole", "lines")),
            batch_fail=p.choice(data, "batch_fail", where, "all", ("all", "any")),
            prune_days=(p.number(data, "prune_days", where, 0.0, minimum=0.001)
                        if data.get("prune_days") is not None else None),
            dirs={key: (base / data[key]).resolve() for key in SUBFOLDERS
                  if isinstance(data.get(key), str) and data[key]},
        )
        for key in SUBFOLDERS:
            if key in data and not (isinstance(data[key], str) and data[key]):
                p.add(join(where, key), f"expected a folder path, got {data[key]!r}")
        for other in folders:
            if other.name == folder.name:
                p.add(join(where, "name"), f"duplicate folder name {folder.name!r}")
            if other.root == folder.root:
                p.add(join(where, "root"), f"{folder.root} is already used by {other.name!r}")
        folders.append(folder)
    return tuple(folders)


def _folder_template(value: Any, base: Path, templates: dict[str, Template], where: str,
                     p: Problems) -> str | None:
    """A folder's workflow is a template name from `workflows:` or a path to a workflow JSON."""
    if not isinstance(value, str) or not value:
        p.add(join(where, "workflow"), f"expected a template name or file path, got {value!r}")
        return None
    if value in templates:
        return value
    if not value.endswith(".json"):
        known = ", ".join(templates) or "none defined"
        p.add(join(where, "workflow"),
              f"unknown template {value!r} (templates under workflows: {known})")
        return None
    template = _load_template(value, value, None, base, join(where, "workflow"), p)
    if template is None:
        return None
    templates.setdefault(value, template)
    return value


def _output_policy(data: Mapping[str, Any], where: str, p: Problems) -> OutputPolicy:
    fmt = p.choice(data, "output_format", where, "png", ("png", "jpeg", "webp"))
    quality = p.number(data, "output_quality", where, 90, minimum=1, maximum=100, integer=True)
    if "output_quality" in data and fmt == "png":  # a setting that would silently do nothing
        p.add(join(where, "output_quality"), "applies to output_format jpeg or webp only; "
              "png outputs are delivered as ComfyUI wrote them")
    return OutputPolicy(format=fmt, quality=quality,
                        metadata=p.choice(data, "metadata", where, "keep", ("keep", "strip")))


def _check_per_file(template: Template | None, where: str, p: Problems) -> None:
    """`image_mode: per-file` makes each dropped image a job: the template must load one."""
    if template is not None and not takes_images(template.workflow, template.bindings):
        p.add(where, f"per-file needs a workflow with a LoadImage node (or bindings.image) to "
                     f"take each image; {template.name!r} has none")


def _defaults(value: Any, where: str, p: Problems) -> dict[str, Any]:
    data = p.mapping(value, where, JOB_FIELDS)
    out: dict[str, Any] = {}
    for key, item in data.items():
        if key not in JOB_FIELDS:
            continue
        problem = check_field(key, item, in_defaults=True)
        if problem:
            p.add(join(where, key), problem)
        else:
            out[key] = item
    return out


def _limits(value: Any, where: str, p: Problems) -> Limits:
    d = Limits()
    data = p.mapping(value, where, tuple(Limits.__dataclass_fields__))
    values = {key: p.number(data, key, where, getattr(d, key), integer=True,
                            minimum=-1_000_000 if key in PRIORITY_LIMITS else 1,
                            maximum=1_000_000 if key in PRIORITY_LIMITS else None)
              for key in Limits.__dataclass_fields__}
    if values["min_priority"] > values["max_priority"]:
        p.add(join(where, "min_priority"), f"must not be above max_priority "
              f"({values['min_priority']} > {values['max_priority']})")
    return Limits(**values)


def _mode(value: Any, where: str, p: Problems) -> int | None:
    """Permissions as quoted octal text ("0664"): a bare YAML 664 or 0664 is ambiguous."""
    if value is None:
        return None
    try:
        mode = int(value, 8) if isinstance(value, str) else -1
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        p.add(where, f"expected permissions as quoted octal text such as \"0664\", "
                     f"got {value!r}")
        return None
    return mode


def _extensions(value: Any, where: str, p: Problems) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_EXTENSIONS
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        p.add(where, "expected a list of file extensions such as [.txt, .json]")
        return DEFAULT_EXTENSIONS
    exts = tuple(v.lower() if v.startswith(".") else "." + v.lower() for v in value)
    unsupported = [e for e in exts if e not in DEFAULT_EXTENSIONS]
    if unsupported:
        p.add(where, f"unsupported job extension(s) {', '.join(unsupported)}; "
                     f"supported: {', '.join(DEFAULT_EXTENSIONS)}")
    return exts
