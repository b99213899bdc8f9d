"""What is going on, as one document: per-folder counts, jobs in flight, server states.

The daemon writes its live part (jobs, servers) next to each folder's jobs, in
`processing/.hotfolder-status.json`, about once a second; `hotfolder status` adds the counts
it reads from the folders themselves. That works across users and without any port, and with
the daemon stopped it still tells what is on disk.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hotfolder.client import ComfyClient
from hotfolder.config import Config, FolderConfig, ServerConfig
from hotfolder.fsutil import write_json
from hotfolder.secrets import redact

STATUS_FILE = ".hotfolder-status.json"
FRESH_SECONDS = 15.0


def status_path(folder: FolderConfig) -> Path:
    return folder.processing / STATUS_FILE


def folder_counts(folder: FolderConfig) -> dict[str, int]:
    """Counted from the folders themselves (done/ and failed/ are listed, never read)."""

    def count(directory: Path, keep: Any) -> int:
        try:
            return sum(1 for e in os.scandir(directory) if keep(e.name) and e.is_file())
        except OSError:
            return 0

    def is_job(name: str) -> bool:
        return not name.startswith(".") and Path(name).suffix.lower() in folder.extensions

    return {
        "waiting": count(folder.inbox, is_job),
        "running": count(folder.processing, lambda n: not n.startswith(".")),
        "done": count(folder.done, lambda n: not n.startswith(".")),
        "failed": count(folder.failed,
                        lambda n: not n.startswith(".") and not n.endswith(".error.json")),
    }


def write_live(folder: FolderConfig, jobs: list[dict[str, Any]],
               servers: list[dict[str, Any]]) -> None:
    write_json(status_path(folder), {
        "pid": os.getpid(), "host": socket.gethostname(), "updated_at": time.time(),
        "folder": folder.name, "jobs": jobs, "servers": servers}, replace=True)


def _read_live(folder: FolderConfig) -> dict[str, Any] | None:
    try:
        data = json.loads(status_path(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def collect(config: Config, *, probe: bool = True) -> dict[str, Any]:
    """The status document of `hotfolder status --json`."""
    now = time.time()
    folders, servers, daemon = [], None, None
    for folder in config.folders:
        live = _read_live(folder)
        fresh = live is not None and now - float(live.get("updated_at", 0)) < FRESH_SECONDS
        if fresh and live is not None:
            servers = servers or live.get("servers")
            daemon = daemon or {"running": True, "pid": live.get("pid"),
                                "host": live.get("host"),
                                "age_seconds": round(now - live["updated_at"], 1)}
        folders.append({"name": folder.name, "root": str(folder.root),
                        "counts": folder_counts(folder),
                        "jobs": live.get("jobs", []) if fresh and live else []})
    if servers is None:
        servers = [_probe(s, config.comfy.request_timeout) if probe
                   else {"name": s.name, "url": s.url, "up": None} for s in config.servers]
    return redact({"daemon": daemon or {"running": False}, "folders": folders,
                   "servers": servers})


def _probe(server: ServerConfig, timeout: float) -> dict[str, Any]:
    name, url = server.name, server.url
    client = ComfyClient(url, name=name, timeout=min(timeout, 3.0), headers=server.headers,
                         verify=server.verify)
    try:
        remaining = client.queue_remaining()
    except Exception as exc:  # noqa: BLE001 - any failure means "down", said in last_error
        return {"name": name, "url": url, "up": False, "last_error": str(exc)}
    return {"name": name, "url": url, "up": True, "queue_remaining": remaining}


def status_line(counts: dict[str, int], servers: Iterable[dict[str, Any]]) -> str:
    """One line for systemd's STATUS= and the log: counts, then each server up or down."""
    parts = ", ".join(f"comfy@{s['name']} {'up' if s.get('up') else 'down'}" for s in servers)
    return (f"{counts.get('running', 0)} running, {counts.get('waiting', 0)} waiting, "
            f"{counts.get('done', 0)} done, {counts.get('failed', 0)} failed; {parts}")


def format_text(doc: dict[str, Any]) -> str:
    lines = []
    daemon = doc["daemon"]
    if daemon.get("running"):
        lines.append(f"daemon: running (pid {daemon.get('pid')} on {daemon.get('host')})")
    else:
        lines.append("daemon: not running (no fresh status from it)")
    for folder in doc["folders"]:
        c = folder["counts"]
        lines.append(f"folder {folder['name']} ({folder['root']}): {c['waiting']} waiting, "
                     f"{c['running']} running, {c['done']} done, {c['failed']} failed")
        for job in folder["jobs"]:
            progress = job.get("progress")
            step = f"step {progress['step']}/{progress['steps']}" if progress else job["phase"]
            lines.append(f"  {job['job']}: {step} on {job.get('server') or '-'}, prompt "
                         f"{job.get('prompt_id') or '-'}, {job['age_seconds']:.0f} s old")
    for server in doc["servers"]:
        state = {True: "up", False: "down", None: "unknown"}[server.get("up")]
        extra = f", {server['queue_remaining']} queued" if "queue_remaining" in server else ""
        error = f" ({server['last_error']})" if server.get("last_error") else ""
        lines.append(f"server {server['name']} {server['url']}: {state}{extra}{error}")
    return "\n".join(lines)
