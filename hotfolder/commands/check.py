"""`hotfolder check`: the config, every template, and every server, reported in one go.

Problems found here would otherwise surface one failed job at a time; a template naming a
node class the server lacks (the tutorial's `CheckpointSimple`) is caught before any job runs.
A GUI-format template is converted with each server's node definitions, which says whether it
can be, and the result is checked like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TextIO

from hotfolder.comfy.client import ComfyClient
from hotfolder.config.model import Config
from hotfolder.credentials import redact
from hotfolder.errors import JobError, ServerError
from hotfolder.workflow.bindings import find_bindings
from hotfolder.workflow.check import check_workflow
from hotfolder.workflow.gui2api.convert import convert


def run_checks(config: Config, out: TextIO) -> list[str]:
    problems: list[str] = []

    def say(text: str) -> None:
        out.write(redact(text))

    say(f"config: {config.path} is valid\n")
    for name, template in config.templates.items():
        if template.source_format == "gui":
            say(f"template {name} ({template.path}): a GUI-format workflow; it will be "
                "converted to the API format with each server's node definitions\n")
        else:
            say(f"template {name} ({template.path}): fields with a place: "
                f"{_fields(template.workflow, template.bindings)}\n")
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
            where = f"workflows.{name} on {server.name}"
            workflow = template.workflow
            if template.source_format == "gui":
                try:
                    workflow = convert(template.workflow, object_info)
                except JobError as exc:
                    problems.append(f"{where}: {exc.message}")
                    continue
                say(f"template {name} on {server.name}: converts to {len(workflow)} nodes; "
                    f"fields with a place: {_fields(workflow, template.bindings)}\n")
            # inputs the editor adds for itself (SaveGLB's preview) are not the user's typos
            problems.extend(check_workflow(workflow, object_info, name=where,
                                           unknown_inputs=template.source_format != "gui"))
    if problems:
        say(f"\n{len(problems)} problem(s):\n")
        for line in problems:
            say(f"  - {line}\n")
    else:
        say("\nall good\n")
    return problems


def _fields(workflow: Mapping[str, Any], bindings: Mapping[str, Any]) -> str:
    return ", ".join(sorted(set(find_bindings(workflow)) | set(bindings)))
