"""`hotfolder check`: the config, every template, and every server, reported in one go.

Problems found here would otherwise surface one failed job at a time; a template naming a
node class the server lacks (the tutorial's `CheckpointSimple`) is caught before any job runs.
"""

from __future__ import annotations

from typing import TextIO

from hotfolder.check import check_workflow
from hotfolder.client import ComfyClient
from hotfolder.config import Config
from hotfolder.errors import ServerError
from hotfolder.patch import find_bindings
from hotfolder.secrets import redact


def run_checks(config: Config, out: TextIO) -> list[str]:
    problems: list[str] = []

    def say(text: str) -> None:
        out.write(redact(text))

    say(f"config: {config.path} is valid\n")
    for name, template in config.templates.items():
        fields = sorted(find_bindings(template.workflow))
        fields = sorted(set(fields) | set(template.bindings))
        say(f"template {name} ({template.path}): fields with a place: {', '.join(fields)}\n")
    for folder in config.folders:
        say(f"folder {folder.name}: {folder.root} using template {folder.template}\n")
    for i, server in enumerate(config.servers):
        client = ComfyClient(server.url, name=server.name, timeout=config.comfy.request_timeout,
                             headers=server.headers, verify=server.verify)
        try:
            object_info = client.object_info()
        except ServerError as exc:
            problems.append(f"servers[{i}] {server.url}: {exc.message}")
            continue
        say(f"server {server.name}: answers, {len(object_info)} node classes\n")
        for name, template in config.templates.items():
            problems.extend(check_workflow(template.workflow, object_info,
                                           name=f"workflows.{name} on {server.name}"))
    if problems:
        say(f"\n{len(problems)} problem(s):\n")
        for line in problems:
            say(f"  - {line}\n")
    else:
        say("\nall good\n")
    return problems
