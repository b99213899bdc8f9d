"""`hotfolder status`: counts, jobs in flight and servers, as text or as JSON (the document
the status page shows), read from the folders and the daemon's live status files."""

from __future__ import annotations

import json
from typing import Any, TextIO

from hotfolder.config.model import Config
from hotfolder.daemon.status import collect


def run_status(config: Config, *, as_json: bool, out: TextIO) -> int:
    doc = collect(config)
    print(json.dumps(doc, indent=2) if as_json else format_text(doc), file=out)
    return 0


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
        for held in folder.get("being_written", []):
            who = ", ".join(f"pid {w['pid']} ({w['process']})" for w in held.get("writers", []))
            lines.append(f"  {held['file']}: being written for {held['seconds']:.0f} s"
                         + (f" by {who}" if who else "") + "; taken once its writer closes it")
    for server in doc["servers"]:
        state = {True: "up", False: "down", None: "unknown"}[server.get("up")]
        extra = f", {server['queue_remaining']} queued" if "queue_remaining" in server else ""
        error = f" ({server['last_error']})" if server.get("last_error") else ""
        lines.append(f"server {server['name']} {server['url']}: {state}{extra}{error}")
    return "\n".join(lines)
