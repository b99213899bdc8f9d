"""Parse result + template = the workflow to submit: the patch stage of a job.

Chooses the base (the folder's template, the job's own workflow, either converted from the
editor's GUI format with a server's node definitions), puts the job's fields and `set:`
values in place, binds its images (uploaded at submission, once the server is known), and
records what was asked for the sidecar. Runs of a batch come here one by one.
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Mapping
from typing import Any

import structlog

from hotfolder.config.fields import SEED_MAX
from hotfolder.config.model import FolderConfig
from hotfolder.errors import JobError, Kind, ServerError, Stopping
from hotfolder.job.companions import attach_images
from hotfolder.job.context import Context
from hotfolder.job.naming import job_stem, safe_prefix_part
from hotfolder.job.parse import JobSpec
from hotfolder.job.state import JobState, Record
from hotfolder.retry import Backoff
from hotfolder.workflow.bindings import (
    check_classes_allowed,
    check_links,
    check_sets_allowed,
    find_bindings,
    patch_workflow,
)
from hotfolder.workflow.gui2api.convert import convert
from hotfolder.workflow.gui2api.detect import node_types

log = structlog.get_logger()

SEED_RANDOM_MAX = 2**50  # what ComfyUI's own "randomize" produces; well inside every seed input


def _check_prompt_size(workflow: Mapping[str, Any], limit: int) -> None:
    size = len(json.dumps(workflow, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limit:
        raise JobError(f"the workflow to send is {size} bytes; this folder sends prompts of up "
                       f"to {limit} bytes (limits.max_prompt_bytes)", kind=Kind.TOO_LARGE)


def prepare(ctx: Context, folder: FolderConfig, state: JobState, spec: JobSpec,
            record: Record) -> dict[str, Any]:
    """The workflow to submit for this job (or this run of a batch)."""
    prefix = f"hotfolder/{safe_prefix_part(job_stem(state.source or state.name))}-" \
             f"{state.tag}"
    if spec.kind == "workflow":
        assert spec.workflow is not None
        if not folder.accept_workflows:
            raise JobError("this folder does not accept whole workflows "
                           "(accept_workflows: false); drop a prompt or a job spec",
                           kind=Kind.REFUSED)
        base = spec.workflow
        if spec.source_format == "gui":
            base = to_api(ctx, folder, state, base, record)
        check_links(base)
        template_name = "(workflow in the job file)"
        overrides: Mapping[str, tuple[str, ...]] = {}
        values: dict[str, Any] = {"seed": folder.defaults.get("seed", "random")}
        optional = {"seed", "filename_prefix"}
    else:
        template_name = spec.template or folder.template
        template = ctx.config.templates.get(template_name)
        if template is None:
            known = ", ".join(sorted(ctx.config.templates)) or "none"
            raise JobError(f"unknown workflow template {template_name!r}; the config "
                           f"defines: {known}", kind=Kind.INVALID)
        base, overrides = template.workflow, template.bindings
        if template.source_format == "gui":
            base = to_api(ctx, folder, state, base, record)
        values = {**folder.defaults, **spec.fields}
        # defaults the template has no place for are skipped (the implicit random seed
        # too: an upscale has none); the job's own fields are not
        optional = (({*folder.defaults, "seed"} - set(spec.fields))
                    | {"filename_prefix"})
        values.setdefault("seed", "random")
    seed = values.pop("seed")
    if spec.seed_offset and isinstance(seed, int) and not isinstance(seed, bool):
        seed = (seed + spec.seed_offset) % (SEED_MAX + 1)  # run N of a `count` batch
    if seed != "keep":
        if state.seed is None:
            state.seed = secrets.randbelow(SEED_RANDOM_MAX) if seed == "random" else seed
        values["seed"] = state.seed
    values["filename_prefix"] = prefix
    check_sets_allowed(base, spec.sets, folder.allow_set)
    workflow = patch_workflow(base, template_name=template_name, overrides=overrides,
                              values=values, sets=spec.sets, optional=optional)
    attach_images(folder, state, spec, workflow, overrides=overrides,
                  template_name=template_name, wait=ctx.wait)  # uploaded in submit()
    check_classes_allowed(workflow, folder.deny_classes)
    _check_prompt_size(workflow, folder.limits.max_prompt_bytes)
    used = find_bindings(workflow)

    def first(field_name: str) -> Any:
        targets = used.get(field_name) or []
        return workflow[targets[0][0]]["inputs"][targets[0][1]] if targets else None

    record.workflow, record.kind = template_name, spec.kind
    record.prompt, record.negative, record.seed = first("prompt"), first("negative"), first("seed")
    record.fields = {k: v for k, v in values.items() if k != "filename_prefix"}
    record.set, record.filename_prefix = dict(spec.sets), prefix
    return workflow

def to_api(ctx: Context, folder: FolderConfig, state: JobState, gui: Mapping[str, Any],
           record: Record) -> dict[str, Any]:
    """A GUI-format workflow converted with the node definitions of a server this job may
    run on: one that is up (the one it is on already, when resumed), else one that is down
    (its cached definitions, or asked again with backoff). A server that cannot be asked
    makes the job wait, never fail."""
    comfy = ctx.config.comfy
    retry = Backoff(comfy.backoff_initial, min(comfy.backoff_max, 5.0)).start()
    while True:
        if ctx.stop.is_set():
            raise Stopping
        ctx.check_cancelled(folder, state)
        servers = sorted(ctx.pool.eligible(folder.server_tags),
                         key=lambda s: (not s.up, s.name != state.server))
        if servers:
            server = servers[0]
            try:
                info = ctx.object_info.get(server.client, node_types(gui), epoch=server.epoch)
            except ServerError as exc:
                ctx.pool.mark_down(server, exc)
            else:
                # seeded by the job, so a resumed job picks the same dynamic-prompt options
                workflow = convert(gui, info, rng=random.Random(state.job_id))
                record.converted_from, record.converted_with = "gui", server.name
                log.info("job.converted", server=server.name, nodes=len(workflow))
                return workflow
        retry.pause(ctx.stop)
