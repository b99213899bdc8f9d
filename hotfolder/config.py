"""Load the YAML config into frozen dataclasses, collecting every problem with its key path.

The rest of the code only ever sees `Config`; nothing else reads YAML. Relative paths resolve
against the config file's folder so `hotfolder run --config DIR/hotfolder.yaml` works from
any working directory.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from hotfolder.errors import ConfigError
from hotfolder.fields import JOB_FIELDS, Limits, check_field
from hotfolder.secrets import SecretError, read_secret, register

DEFAULT_EXTENSIONS = (".txt", ".json", ".yaml", ".yml")
CONFIG_SEARCH = ("./config/hotfolder.yaml", "/etc/hotfolder/hotfolder.yaml")
# fields a template binding may name, besides the job fields
BINDABLE = (*JOB_FIELDS, "filename_prefix")


@dataclass(frozen=True)
class ServerConfig:
    url: str
    name: str
    weight: float = 1.0  # relative speed: a server twice as fast takes twice the share
    tags: tuple[str, ...] = ()
    max_in_flight: int | None = None  # overrides comfy.max_in_flight for this server
    # Authorization and extra headers, secrets resolved; never printed (repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    verify: bool | str = True  # TLS certificate check: on, off, or a CA bundle path


@dataclass(frozen=True)
class ComfyConfig:
    """How hotfolder talks to every ComfyUI server."""

    request_timeout: float = 30.0
    poll_interval: float = 1.0
    max_in_flight: int = 2
    retries_5xx: int = 3
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    job_timeout: float = 3600.0
    failover_seconds: float = 10.0  # a server silent this long: its jobs go to another
    max_output_bytes: int = 4 * 1024**3  # a bigger /view answer is cut off, the job failed
    delete_history: bool = False
    websocket: bool = True


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    workflow: Mapping[str, Any]  # never mutated: each job patches its own deep copy
    bindings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


SUBFOLDERS = ("inbox", "processing", "outbox", "done", "failed")


@dataclass(frozen=True)
class FolderConfig:
    name: str
    root: Path
    template: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    settle_seconds: float = 1.0
    include_temp_outputs: bool = False
    job_timeout: float | None = None
    watch: str = "auto"  # auto | native | poll
    rescan_seconds: float = 30.0
    ignore: tuple[str, ...] = ()
    server_tags: tuple[str, ...] = ()  # only servers with one of these tags (none: any)
    limits: Limits = field(default_factory=Limits)
    accept_workflows: bool = True  # whole API workflows dropped as jobs
    deny_classes: tuple[str, ...] = ()  # node class_types a job may never run (patterns)
    allow_set: tuple[str, ...] = ("*",)  # NODE.INPUT patterns `set:` may change
    file_mode: int | None = None  # permissions for outputs and moved files, e.g. 0o664
    prune_days: float | None = None  # delete files in done/ and failed/ older than this
    # each defaults to <root>/<name>; outbox, done and failed may live on another file system
    dirs: Mapping[str, Path] = field(default_factory=dict)

    def _dir(self, name: str) -> Path:
        return self.dirs.get(name) or self.root / name

    @property
    def inbox(self) -> Path:
        return self._dir("inbox")

    @property
    def processing(self) -> Path:
        return self._dir("processing")

    @property
    def outbox(self) -> Path:
        return self._dir("outbox")

    @property
    def done(self) -> Path:
        return self._dir("done")

    @property
    def failed(self) -> Path:
        return self._dir("failed")

    def all_dirs(self) -> list[Path]:
        return [self._dir(name) for name in SUBFOLDERS]


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"  # auto | console | json


@dataclass(frozen=True)
class Config:
    path: Path | None
    servers: tuple[ServerConfig, ...]
    comfy: ComfyConfig
    templates: Mapping[str, Template]
    folders: tuple[FolderConfig, ...]
    log: LogConfig
    stop_grace_seconds: float = 30.0  # keep below systemd's TimeoutStopSec


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
        "`hotfolder init DIR` (looked in " + ", ".join(CONFIG_SEARCH) + ")"
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
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    return parse_config(data if data is not None else {}, base=path.resolve().parent, path=path)


class _Problems:
    """Collects "key.path: what is wrong" lines so the user sees all of them at once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.lines.append(f"{where}: {what}")

    def mapping(self, value: Any, where: str, known: tuple[str, ...]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(where, f"expected a mapping of keys, got {type(value).__name__}")
            return {}
        for key in value:
            if key not in known:
                self.add(_join(where, str(key)), "unknown key (known: " + ", ".join(known) + ")")
        return value

    def number(self, data: Mapping[str, Any], key: str, where: str, default: float,
               *, minimum: float = 0.0, integer: bool = False) -> Any:
        value = data.get(key, default)
        ok_type = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type):
            kind = "a whole number" if integer else "a number"
            self.add(_join(where, key), f"expected {kind}, got {value!r}")
            return default
        if value < minimum:
            self.add(_join(where, key), f"must be at least {minimum:g}, got {value}")
            return default
        return value

    def boolean(self, data: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.add(_join(where, key), f"expected true or false, got {value!r}")
            return default
        return value

    def choice(self, data: Mapping[str, Any], key: str, where: str, default: str,
               choices: tuple[str, ...]) -> str:
        value = data.get(key, default)
        if value not in choices:
            self.add(_join(where, key), f"expected one of {', '.join(choices)}, got {value!r}")
            return default
        return str(value)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def parse_config(data: Any, *, base: Path, path: Path | None = None) -> Config:
    p = _Problems()
    top = p.mapping(data, "", ("servers", "comfy", "workflows", "folders", "log",
                              "stop_grace_seconds"))
    servers = _servers(top.get("servers"), base, p)
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
    if p.lines:
        raise ConfigError(p.lines)
    return Config(path=path, servers=servers, comfy=comfy, templates=templates,
                  folders=folders, log=log,
                  stop_grace_seconds=p.number(top, "stop_grace_seconds", "", 30.0))


def _servers(value: Any, base: Path, p: _Problems) -> tuple[ServerConfig, ...]:
    if value is None:
        value = ["http://127.0.0.1:8188"]
    if not isinstance(value, list) or not value:
        p.add("servers", "expected a non-empty list of ComfyUI URLs")
        return ()
    servers: list[ServerConfig] = []
    for i, item in enumerate(value):
        where = f"servers[{i}]"
        if isinstance(item, str):
            item = {"url": item}
        entry = p.mapping(item, where, ("url", "name", "weight", "tags", "max_in_flight",
                                        "token", "basic_auth", "headers", "verify",
                                        "ca_bundle"))
        url = entry.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            p.add(_join(where, "url"), f"expected an http:// or https:// URL, got {url!r}")
            continue
        name = entry.get("name", parts.netloc)
        if not isinstance(name, str) or not name:
            p.add(_join(where, "name"), f"expected a non-empty string, got {name!r}")
            continue
        if any(s.name == name for s in servers):
            p.add(_join(where, "name"), f"duplicate server name {name!r}")
        servers.append(ServerConfig(
            url=url.rstrip("/"), name=name,
            weight=p.number(entry, "weight", where, 1.0, minimum=0.01),
            tags=_patterns(entry.get("tags"), _join(where, "tags"), p),
            max_in_flight=(p.number(entry, "max_in_flight", where, 2, minimum=1, integer=True)
                           if "max_in_flight" in entry else None),
            headers=_auth(entry, where, p), verify=_verify(entry, where, base, p)))
    return tuple(servers)


def _auth(entry: Mapping[str, Any], where: str, p: _Problems) -> dict[str, str]:
    """Headers for a secured server: Bearer token, basic auth and extra headers, whose values
    come from env vars, files or systemd credentials (or plain text, for non-secrets)."""
    headers: dict[str, str] = {}

    def secret(value: Any, key: str) -> str | None:
        try:
            return read_secret(value)
        except SecretError as exc:
            p.add(_join(where, key), str(exc))
            return None

    if entry.get("token") is not None:
        token = secret(entry["token"], "token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
    basic = entry.get("basic_auth")
    if basic is not None:
        data = p.mapping(basic, _join(where, "basic_auth"), ("user", "password"))
        user = data.get("user")
        password = secret(data.get("password"), "basic_auth.password")
        if not isinstance(user, str) or not user or ":" in user:
            p.add(_join(where, "basic_auth.user"), f"expected a user name, got {user!r}")
        elif password:
            pair = base64.b64encode(f"{user}:{password}".encode()).decode()
            register(pair)
            headers["Authorization"] = f"Basic {pair}"
    extra = p.mapping(entry.get("headers"), _join(where, "headers"),
                      tuple(entry.get("headers") or ()))
    for name, value in extra.items():
        text = value if isinstance(value, str) else secret(value, f"headers.{name}")
        if text is not None:
            headers[str(name)] = text
    return headers


def _verify(entry: Mapping[str, Any], where: str, base: Path,
            p: _Problems) -> bool | str:
    verify = entry.get("verify", True)
    if not isinstance(verify, bool):
        p.add(_join(where, "verify"), f"expected true or false, got {verify!r}")
        return True
    bundle = entry.get("ca_bundle")
    if bundle is not None:
        path = (base / str(bundle)).resolve()
        if not path.is_file():
            p.add(_join(where, "ca_bundle"), f"file not found: {path}")
            return True
        if not verify:
            p.add(_join(where, "ca_bundle"), "ca_bundle and verify: false contradict")
        return str(path)
    return verify


def _comfy(value: Any, p: _Problems) -> ComfyConfig:
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
        delete_history=p.boolean(data, "delete_history", "comfy", d.delete_history),
        websocket=p.boolean(data, "websocket", "comfy", d.websocket),
    )


def _templates(value: Any, base: Path, p: _Problems) -> dict[str, Template]:
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
                   p: _Problems) -> Template | None:
    if not isinstance(raw_path, str) or not raw_path:
        p.add(_join(where, "path"), f"expected a file path, got {raw_path!r}")
        return None
    path = (base / raw_path).resolve()
    try:
        workflow = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        p.add(where if where.startswith("folders") else _join(where, "path"),
              f"file not found: {path}")
        return None
    except (OSError, ValueError) as exc:
        p.add(_join(where, "path"), f"cannot read {path} as JSON: {exc}")
        return None
    from hotfolder.parse import workflow_format  # local: parse imports config's siblings only

    kind = workflow_format(workflow)
    if kind != "api":
        hint = (" (this is a GUI workflow: export it with \"Save (API Format)\")"
                if kind == "gui" else "")
        p.add(_join(where, "path"), f"{path} is not an API-format workflow{hint}")
        return None
    bindings: dict[str, tuple[str, ...]] = {}
    raw = p.mapping(raw_bindings, _join(where, "bindings"), BINDABLE)
    for key, targets in raw.items():
        if isinstance(targets, str):
            targets = [targets]
        if (not isinstance(targets, list) or not targets
                or not all(isinstance(t, str) and "." in t for t in targets)):
            p.add(_join(where, f"bindings.{key}"),
                  "expected NODE.INPUT or a list of them (NODE: id, title or class)")
            continue
        bindings[str(key)] = tuple(targets)
    return Template(name=name, path=path, workflow=workflow, bindings=bindings)


_FOLDER_KEYS = ("name", "root", "workflow", "defaults", "extensions", "settle_seconds",
                "include_temp_outputs", "job_timeout", "watch", "rescan_seconds", "ignore",
                "file_mode", "prune_days", "server_tags", "limits", "accept_workflows",
                "deny_classes", "allow_set", *SUBFOLDERS)


def _folders(value: Any, base: Path, templates: dict[str, Template],
             p: _Problems) -> tuple[FolderConfig, ...]:
    if not isinstance(value, list) or not value:
        p.add("folders", "expected a non-empty list of hot folders")
        return ()
    folders: list[FolderConfig] = []
    for i, item in enumerate(value):
        where = f"folders[{i}]"
        data = p.mapping(item, where, _FOLDER_KEYS)
        root = data.get("root")
        if not isinstance(root, str) or not root:
            p.add(_join(where, "root"), f"expected a folder path, got {root!r}")
            continue
        name = data.get("name", Path(root).name)
        template = _folder_template(data.get("workflow"), base, templates, where, p)
        folder = FolderConfig(
            name=str(name),
            root=(base / root).resolve(),
            template=template or "",
            defaults=_defaults(data.get("defaults"), _join(where, "defaults"), p),
            extensions=_extensions(data.get("extensions"), _join(where, "extensions"), p),
            settle_seconds=p.number(data, "settle_seconds", where, 1.0),
            include_temp_outputs=p.boolean(data, "include_temp_outputs", where, False),
            job_timeout=(p.number(data, "job_timeout", where, 0.0, minimum=0.1)
                         if "job_timeout" in data else None),
            watch=p.choice(data, "watch", where, "auto", ("auto", "native", "poll")),
            rescan_seconds=p.number(data, "rescan_seconds", where, 30.0, minimum=0.1),
            ignore=_patterns(data.get("ignore"), _join(where, "ignore"), p),
            server_tags=_patterns(data.get("server_tags"), _join(where, "server_tags"), p),
            limits=_limits(data.get("limits"), _join(where, "limits"), p),
            accept_workflows=p.boolean(data, "accept_workflows", where, True),
            deny_classes=_patterns(data.get("deny_classes"), _join(where, "deny_classes"), p),
            allow_set=(_patterns(data.get("allow_set"), _join(where, "allow_set"), p)
                       if "allow_set" in data else ("*",)),
            file_mode=_mode(data.get("file_mode"), _join(where, "file_mode"), p),
            prune_days=(p.number(data, "prune_days", where, 0.0, minimum=0.001)
                        if data.get("prune_days") is not None else None),
            dirs={key: (base / data[key]).resolve() for key in SUBFOLDERS
                  if isinstance(data.get(key), str) and data[key]},
        )
        for key in SUBFOLDERS:
            if key in data and not (isinstance(data[key], str) and data[key]):
                p.add(_join(where, key), f"expected a folder path, got {data[key]!r}")
        for other in folders:
            if other.name == folder.name:
                p.add(_join(where, "name"), f"duplicate folder name {folder.name!r}")
            if other.root == folder.root:
                p.add(_join(where, "root"), f"{folder.root} is already used by {other.name!r}")
        folders.append(folder)
    return tuple(folders)


def _folder_template(value: Any, base: Path, templates: dict[str, Template], where: str,
                     p: _Problems) -> str | None:
    """A folder's workflow is a template name from `workflows:` or a path to an API JSON."""
    if not isinstance(value, str) or not value:
        p.add(_join(where, "workflow"), f"expected a template name or file path, got {value!r}")
        return None
    if value in templates:
        return value
    if not value.endswith(".json"):
        known = ", ".join(templates) or "none defined"
        p.add(_join(where, "workflow"),
              f"unknown template {value!r} (templates under workflows: {known})")
        return None
    template = _load_template(value, value, None, base, _join(where, "workflow"), p)
    if template is None:
        return None
    templates.setdefault(value, template)
    return value


def _defaults(value: Any, where: str, p: _Problems) -> dict[str, Any]:
    data = p.mapping(value, where, JOB_FIELDS)
    out: dict[str, Any] = {}
    for key, item in data.items():
        if key not in JOB_FIELDS:
            continue
        problem = check_field(key, item, in_defaults=True)
        if problem:
            p.add(_join(where, key), problem)
        else:
            out[key] = item
    return out


def _limits(value: Any, where: str, p: _Problems) -> Limits:
    d = Limits()
    data = p.mapping(value, where, tuple(Limits.__dataclass_fields__))
    return Limits(**{key: p.number(data, key, where, getattr(d, key), minimum=1, integer=True)
                     for key in Limits.__dataclass_fields__})


def _patterns(value: Any, where: str, p: _Problems) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        p.add(where, "expected a list of file name patterns such as ['*.bak', 'draft-*']")
        return ()
    return tuple(value)


def _mode(value: Any, where: str, p: _Problems) -> int | None:
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


def _extensions(value: Any, where: str, p: _Problems) -> tuple[str, ...]:
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
