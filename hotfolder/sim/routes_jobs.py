"""The jobs API of a newer ComfyUI (`/api/jobs…`), and what 0.3.64 answers in its place.

Derived from ComfyUI's source (server.py and comfy_execution/jobs.py, see
tests/fixtures/comfy-api/newer/): not recorded. A job is a queue item or a history entry seen
through one shape: `pending`, `in_progress`, then `completed`, `failed` or `cancelled` (an
interrupted prompt, whose history still says `status_str: "error"`). Unlike `/history/{id}`,
`GET /api/jobs/{id}` tells "still queued" from "never heard of it" (404).

0.3.64 has no such routes: its catch-all static route answers a GET with a 404 and an empty
`application/octet-stream` body and any other method with a 405, as the captures show.
"""

from __future__ import annotations

import uuid
from typing import Any

from hotfolder.sim.context import SimContext
from hotfolder.sim.web import Request, Response, json_response

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
HISTORY_STATUSES = {"completed", "failed", "cancelled"}
PREVIEWABLE = {"images", "video", "audio", "3d", "text"}
THREE_D = (".obj", ".fbx", ".gltf", ".glb", ".usdz")
TEXT_FILES = (".txt", ".md", ".json")
TEXT_PREVIEW_MAX = 1024


def get_jobs_absent(sim: SimContext, req: Request) -> Response:
    """0.3.64: GET (and HEAD) of any /api/jobs… path."""
    return Response(404, b"", "application/octet-stream")


def valid_job_id(value: Any) -> bool:
    """A canonical lowercase hyphenated UUID string, the only id form the server takes."""
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


# -- the job shape ---------------------------------------------------------------------------
def _prune(job: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in job.items() if value is not None}


def _metadata(extra_data: dict[str, Any]) -> tuple[Any, Any]:
    """(create_time, workflow_id): workflow_id is extra_pnginfo.workflow.id."""
    workflow = extra_data.get("extra_pnginfo", {}).get("workflow", {})
    return extra_data.get("create_time"), workflow.get("id")


def _previewable(media_type: str, item: dict[str, Any]) -> bool:
    if media_type in PREVIEWABLE:
        return True
    fmt = item.get("format", "")
    if fmt and (fmt.startswith("video/") or fmt.startswith("audio/")):
        return True
    return str(item.get("filename", "")).lower().endswith(THREE_D + TEXT_FILES)


def _as_item(item: Any) -> dict[str, Any] | None:
    """A dict entry as is; a 3D file name as a file entry; anything else None."""
    if isinstance(item, dict):
        return item
    if isinstance(item, str) and item.lower().endswith(THREE_D):
        return {"filename": item, "type": "output", "subfolder": "", "mediaType": "3d"}
    return None


def _node_items(outputs: dict[str, Any]):
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            continue
        for media_type, items in node_outputs.items():
            if media_type != "animated" and isinstance(items, list):
                for item in items:
                    yield node_id, media_type, item


def outputs_summary(outputs: dict[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
    """(outputs_count, previewable_outputs_count, preview_output).

    Preview preference: a saved visual output, any visual one, a saved text file, raw text.
    Raw text entries (PreviewAny's) can be the preview but are not counted as outputs.
    """
    count = previewable = 0
    slots: dict[str, dict[str, Any]] = {}
    for node_id, media_type, raw in _node_items(outputs):
        item = _as_item(raw)
        if item is None:
            if media_type == "text" and "output" not in slots and "text" not in slots:
                text = str(raw)
                preview = {"content": text[:TEXT_PREVIEW_MAX]}
                if len(text) > TEXT_PREVIEW_MAX:
                    preview["truncated"] = True
                slots["text"] = {**preview, "nodeId": node_id, "mediaType": media_type}
            continue
        count += 1
        if not _previewable(media_type, item):
            continue
        previewable += 1
        if "output" in slots:
            continue
        enriched = {**item, "nodeId": node_id}
        enriched.setdefault("mediaType", media_type)
        is_text = media_type == "text" or str(item.get("filename", "")).lower().endswith(
            TEXT_FILES)
        slot = "text_file" if is_text else ("output" if item.get("type") == "output" else "any")
        slots.setdefault(slot, enriched)
    for slot in ("output", "any", "text_file", "text"):
        if slot in slots:
            return count, previewable, slots[slot]
    return count, previewable, None


def _normalize_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    """What the jobs API shows of history outputs: 3D file names as entries, no None items."""
    out: dict[str, Any] = {}
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            out[node_id] = node_outputs
            continue
        out[node_id] = {
            media_type: (
                [_as_item(i) or i for i in items if i is not None]
                if media_type != "animated" and isinstance(items, list) else items
            )
            for media_type, items in node_outputs.items()
        }
    return out


def queue_job(item: list[Any], status: str, workflow: bool = False) -> dict[str, Any]:
    number, prompt_id, prompt, extra_data, _ = item
    create_time, workflow_id = _metadata(extra_data)
    job = _prune({
        "id": prompt_id, "status": status, "priority": number, "create_time": create_time,
        "outputs_count": 0, "previewable_outputs_count": 0, "workflow_id": workflow_id,
    })
    if workflow:
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def history_job(prompt_id: str, entry: dict[str, Any], full: bool = False) -> dict[str, Any]:
    number, _, prompt, extra_data, _ = entry["prompt"]
    create_time, workflow_id = _metadata(extra_data)
    status_info = entry.get("status") or {}
    outputs = entry.get("outputs", {})
    count, previewable, preview = outputs_summary(outputs)
    started = ended = error = None
    interrupted = False
    for message in status_info.get("messages", []):
        if not (isinstance(message, (list, tuple)) and len(message) >= 2):
            continue
        event, data = message[0], message[1]
        if not isinstance(data, dict):
            continue
        if event == "execution_start":
            started = data.get("timestamp")
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            ended = data.get("timestamp")
            error = data if event == "execution_error" else error
            interrupted = interrupted or event == "execution_interrupted"
    status = "completed"
    if status_info.get("status_str") == "error":
        status = "cancelled" if interrupted else "failed"
    job = _prune({
        "id": prompt_id, "status": status, "priority": number, "create_time": create_time,
        "execution_start_time": started, "execution_end_time": ended, "execution_error": error,
        "outputs_count": count, "previewable_outputs_count": previewable,
        "preview_output": preview, "workflow_id": workflow_id,
    })
    if full:
        job["outputs"] = _normalize_outputs(outputs)
        job["execution_status"] = status_info
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def _snapshot(sim: SimContext, prompt_id: str | None = None):
    engine = sim.engine
    with engine.mutex:  # one consistent view: a prompt is in the queue or in history
        running, pending = engine.current_queue()
        history = engine.get_history(prompt_id) if prompt_id is not None else \
            engine.get_history()
    return running, pending, history


# -- routes ----------------------------------------------------------------------------------
def _error(message: str, status: int = 400) -> Response:
    return json_response({"error": message}, status)


def _list_params(query: dict[str, str]) -> tuple[dict[str, Any], Response | None]:
    params: dict[str, Any] = {
        "status": None, "workflow_id": query.get("workflow_id"),
        "sort_by": query.get("sort_by", "created_at").lower(),
        "sort_order": query.get("sort_order", "desc").lower(), "limit": None, "offset": 0,
    }
    if query.get("status"):
        wanted = [s.strip().lower() for s in query["status"].split(",") if s.strip()]
        invalid = [s for s in wanted if s not in STATUSES]
        if invalid:
            return params, _error(f"Invalid status value(s): {', '.join(invalid)}. "
                                  f"Valid values: {', '.join(STATUSES)}")
        params["status"] = wanted
    if params["sort_by"] not in ("created_at", "execution_duration"):
        return params, _error("sort_by must be 'created_at' or 'execution_duration'")
    if params["sort_order"] not in ("asc", "desc"):
        return params, _error("sort_order must be 'asc' or 'desc'")
    if "limit" in query:
        try:
            params["limit"] = int(query["limit"])
        except ValueError:
            return params, _error("limit must be an integer")
        if params["limit"] <= 0:
            return params, _error("limit must be a positive integer")
    if "offset" in query:
        try:
            params["offset"] = max(0, int(query["offset"]))
        except ValueError:
            return params, _error("offset must be an integer")
    return params, None


def _sort_key(sort_by: str):
    if sort_by == "execution_duration":
        def duration(job: dict[str, Any]) -> Any:
            start, end = job.get("execution_start_time", 0), job.get("execution_end_time", 0)
            return end - start if end and start else 0
        return duration
    return lambda job: job.get("create_time", 0)


def get_jobs(sim: SimContext, req: Request) -> Response:
    params, problem = _list_params(req.query)
    if problem is not None:
        return problem
    wanted = params["status"] or list(STATUSES)
    running, pending, history = _snapshot(sim)
    jobs = []
    if "in_progress" in wanted:
        jobs += [queue_job(item, "in_progress") for item in running]
    if "pending" in wanted:
        jobs += [queue_job(item, "pending") for item in pending]
    if HISTORY_STATUSES & set(wanted):
        for prompt_id, entry in history.items():
            job = history_job(prompt_id, entry)
            if job["status"] in wanted:
                jobs.append(job)
    if params["workflow_id"]:
        jobs = [job for job in jobs if job.get("workflow_id") == params["workflow_id"]]
    jobs = sorted(jobs, key=_sort_key(params["sort_by"]),
                  reverse=params["sort_order"] == "desc")
    total, offset, limit = len(jobs), params["offset"], params["limit"]
    jobs = jobs[offset:] if offset > 0 else jobs
    jobs = jobs[:limit] if limit is not None else jobs
    pagination = {"offset": offset, "limit": limit, "total": total,
                  "has_more": offset + len(jobs) < total}
    return json_response({"jobs": jobs, "pagination": pagination})


def get_job(sim: SimContext, req: Request) -> Response:
    job_id = req.params["job_id"]
    running, pending, history = _snapshot(sim, job_id)
    if job_id in history:
        return json_response(history_job(job_id, history[job_id], full=True))
    for items, status in ((running, "in_progress"), (pending, "pending")):
        for item in items:
            if item[1] == job_id:
                return json_response(queue_job(item, status, workflow=True))
    return _error("Job not found", 404)


def cancel(sim: SimContext, job_id: str) -> bool:
    """Interrupt it if running, dequeue it if pending; finished or unknown: a no-op (False)."""
    engine = sim.engine
    running, pending, _ = _snapshot(sim, job_id)
    if any(item[1] == job_id for item in running):
        return engine.interrupt_if_running(job_id)
    if any(item[1] == job_id for item in pending):
        # it may have started in between: then it is the running one to interrupt
        return engine.delete_pending(job_id) or engine.interrupt_if_running(job_id)
    return False


def post_job_cancel(sim: SimContext, req: Request) -> Response:
    return json_response({"cancelled": cancel(sim, req.params["job_id"])})


def post_jobs_cancel(sim: SimContext, req: Request) -> Response:
    try:
        data = req.json()
    except ValueError:
        return _error("Request body must be valid JSON")
    job_ids = data.get("job_ids") if isinstance(data, dict) else None
    if not isinstance(job_ids, list):
        return _error("job_ids must be a list")
    invalid = [jid if isinstance(jid, str) else repr(jid)
               for jid in job_ids if not valid_job_id(jid)]
    if invalid:
        return json_response(
            {"error": "job_ids contains invalid id(s)", "invalid_ids": invalid}, 400)
    cancelled = False
    for job_id in job_ids:
        cancelled = cancel(sim, job_id) or cancelled
    return json_response({"cancelled": cancelled})
