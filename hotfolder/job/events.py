"""The events a finished job sends to its webhooks, queued on disk before the job is filed.

finish.py records each event here before the job file leaves processing/, so a crash after
the job is done cannot lose it: a crash before the move replays the finish and writes the same
event again, under the same id (derived from the job's id, which its saved record keeps), and
a receiver can tell the repeat. One file per event and destination, written atomically, in
`processing/.hotfolder-events/`: on the jobs' own storage, and hidden, so the watcher, the
orphan scan, `status` and prune pass it by. The daemon's sender (daemon/webhooks.py) delivers
and removes them.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog

from hotfolder.config.model import FolderConfig
from hotfolder.config.webhooks import WebhookConfig
from hotfolder.fsutil import write_json

log = structlog.get_logger()

QUEUE = ".hotfolder-events"
SUFFIX = ".json"
MAX_LISTED = 1000  # outputs listed in one event; a bigger batch says how many were left out
MAX_BODY = 1024 * 1024  # past this, the sidecar or error report is left out of the body
MAX_ITEM = 4 * MAX_BODY  # a queue file bigger than this was not written by us

# set whenever an event is queued, so the sender looks at once instead of at its next scan;
# module-wide because the finish step has no handle on the daemon (a spurious wake is harmless)
queued = threading.Event()


def queue_dir(folder: FolderConfig) -> Path:
    return folder.processing / QUEUE


def event_id(job_id: str, event: str) -> str:
    """The `webhook-id`: one job ends once, so its id and the event type name the event."""
    return f"msg_{job_id}_{event.rsplit('.', 1)[-1]}"


@dataclass(frozen=True)
class Queued:
    """A queue file, known from its name alone (nothing is read to schedule it)."""

    path: Path
    event_id: str
    ident: str  # the destination's WebhookConfig.ident
    mtime: float  # when it was queued


def parse_name(name: str) -> tuple[str, str] | None:
    """`<event id>.<destination>.json` -> (event id, destination), or None for other files."""
    if name.startswith(".") or not name.endswith(SUFFIX):
        return None
    stem = name[: -len(SUFFIX)]
    eid, _, ident = stem.rpartition(".")
    return (eid, ident) if eid and len(ident) == 16 else None


def pending(folder: FolderConfig) -> list[Queued]:
    """The folder's queued events, oldest first."""
    found = []
    try:
        entries = list(os.scandir(queue_dir(folder)))
    except OSError:
        return []
    for entry in entries:
        parsed = parse_name(entry.name)
        if parsed is None:
            continue
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        found.append(Queued(Path(entry.path), parsed[0], parsed[1], mtime))
    return sorted(found, key=lambda q: (q.mtime, q.path.name))


def read_item(path: Path) -> dict[str, Any] | None:
    """A queue file's content, or None if it is gone, foreign or damaged."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(MAX_ITEM + 1)
        item = json.loads(raw) if len(raw) <= MAX_ITEM else None
    except (OSError, ValueError):
        return None
    ok = isinstance(item, dict) and all(isinstance(item.get(k), str)
                                        for k in ("id", "type", "job", "folder", "body"))
    return item if ok else None


def record(folder: FolderConfig, hooks: Sequence[WebhookConfig], event: str, job_id: str,
           data: Mapping[str, Any]) -> int:
    """Queue the event for each webhook that wants it; returns how many were written. A
    queue that cannot be written is logged, never fails the job."""
    chosen = [h for h in hooks if h.wants(folder.name, event)]
    if not chosen:
        return 0
    eid = event_id(job_id, event)
    body = _body(event, data)
    directory = queue_dir(folder)
    written = 0
    try:
        directory.mkdir(exist_ok=True)
        waiting = _counts(p.name for p in directory.iterdir())
        for hook in chosen:
            name = f"{eid}.{hook.ident}{SUFFIX}"
            if waiting.get(hook.ident, 0) >= hook.max_pending \
                    and not (directory / name).exists():
                log.error("webhook.queue_full", url=hook.shown, event_id=eid,
                          pending=waiting[hook.ident], max_pending=hook.max_pending,
                          action="this event is not queued")
                continue
            write_json(directory / name, {"id": eid, "type": event, "job": data["job"],
                                          "folder": folder.name, "body": body},
                       replace=True, compact=True)
            written += 1
    except OSError as exc:
        log.error("webhook.not_queued", event_id=eid, error=str(exc),
                  note="the job finishes; this event will not be sent")
    if written:
        queued.set()
    return written


def _counts(names: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        parsed = parse_name(name)
        if parsed is not None:
            counts[parsed[1]] = counts.get(parsed[1], 0) + 1
    return counts


def _body(event: str, data: Mapping[str, Any]) -> str:
    """The JSON text sent; stored as text so every attempt sends (and signs) the same bytes."""
    doc = {"type": event, "timestamp": datetime.now(timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z"), "data": dict(data)}
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(text.encode("utf-8")) > MAX_BODY:
        for key in ("sidecar", "error"):
            if key in doc["data"]:
                doc["data"][key] = {"omitted": f"larger than {MAX_BODY} bytes; see the file"}
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)
    return text


# -- what the events say ----------------------------------------------------------------------


def outputs(outbox: Path, paths: Iterable[Path]) -> dict[str, Any]:
    """`outputs`: each file's path relative to the outbox and its size, at most MAX_LISTED."""
    listed: list[dict[str, Any]] = []
    omitted = 0
    for path in paths:
        if len(listed) >= MAX_LISTED:
            omitted += 1
            continue
        try:
            size: int | None = os.stat(path, follow_symlinks=False).st_size
        except OSError:
            size = None
        listed.append({"path": path.relative_to(outbox).as_posix(), "bytes": size})
    return {"outputs": listed, **({"outputs_omitted": omitted} if omitted else {})}


def batch_data(outbox: Path, manifest: Path, status: str, runs: Sequence[str],
               files: Iterable[Path]) -> dict[str, Any]:
    """What a batch's event adds: its status, run counts and manifest, and its outputs."""
    return {"status": status, "manifest": manifest.relative_to(outbox).as_posix(),
            "runs": {"total": len(runs), "done": sum(r == "done" for r in runs),
                     "failed": sum(r == "failed" for r in runs)},
            **outputs(outbox, files)}
