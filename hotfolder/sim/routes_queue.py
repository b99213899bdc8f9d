"""Endpoints of the prompt queue: submit (`/prompt`), `/queue`, `/history`, `/interrupt`, `/free`.

These are what a client drives a job with, so each answers with the captured status codes and
body shapes of ComfyUI 0.3.64, including its crashes: a malformed body or a GUI workflow as
`prompt` is a plain-text 500, `/history?max_items=abc` too. Kept apart from the file
endpoints (`routes_files`) and the route table (`routes`), which imports these handlers.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from hotfolder.sim.context import SimContext
from hotfolder.sim.routes_jobs import valid_job_id
from hotfolder.sim.validate import PromptCrash, validate_prompt
from hotfolder.sim.web import Request, Response, empty, json_response, trouble


def _field(data: Any, key: str, default: Any = None) -> Any:
    """`key in data` then `data[key]`, as ComfyUI reads request bodies (a list has no keys)."""
    return data[key] if isinstance(data, dict) and key in data else default


def _no_prompt() -> Response:
    error = {
        "type": "no_prompt",
        "message": "No prompt provided",
        "details": "No prompt provided",
        "extra_info": {},
    }
    return json_response({"error": error, "node_errors": {}}, 400)


INVALID_PROMPT_ID = {  # newer servers, derived from ComfyUI's source
    "type": "invalid_prompt_id",
    "message": "prompt_id must be a valid UUID",
    "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
               "omit it to let the server generate one",
    "extra_info": {},
}


def post_prompt(sim: SimContext, req: Request) -> Response:
    engine = sim.engine
    delay = sim.fault_state.faults.prompt_delay_seconds
    if delay:
        time.sleep(delay)  # a server slow to take the prompt: the client may give up first
    if sim.fault_state.take_http_5xx():
        sim.counters["http_5xx_injected"] += 1
        return trouble()
    try:
        data = req.json()
        if "number" in data:
            number: Any = float(data["number"])
        else:
            number = engine.next_number(front="front" in data and bool(data["front"]))
        if "prompt" not in data:
            sim.counters["prompts_rejected"] += 1
            return _no_prompt()
        prompt = data["prompt"]
        if not sim.api.uuid_prompt_ids:
            prompt_id = str(data.get("prompt_id", uuid.uuid4()))  # any string, as recorded
        elif data.get("prompt_id") is None:
            prompt_id = str(uuid.uuid4())
        elif valid_job_id(data["prompt_id"]):
            prompt_id = data["prompt_id"]
        else:
            sim.counters["prompts_rejected"] += 1
            return json_response({"error": dict(INVALID_PROMPT_ID), "node_errors": {}}, 400)
        partial = _field(data, "partial_execution_targets")
        ok, error, outputs, node_errors = validate_prompt(
            prompt, sim.catalog, partial, missing_node_type=sim.api.missing_node_type
        )
        extra_data = _field(data, "extra_data", {})
        if "client_id" in data:
            extra_data["client_id"] = data["client_id"]
    except (ValueError, TypeError, KeyError, AttributeError, PromptCrash):
        sim.counters["prompts_rejected"] += 1
        return trouble()
    if not ok:
        sim.counters["prompts_rejected"] += 1
        return json_response({"error": error, "node_errors": node_errors}, 400)
    engine.put(number, prompt_id, prompt, extra_data, outputs)
    if sim.fault_state.take_http_5xx_after_queue():
        sim.counters["http_5xx_after_queue"] += 1
        return trouble()  # queued all the same: it runs
    return json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})


def get_prompt(sim: SimContext, req: Request) -> Response:
    return json_response(sim.engine.queue_info())


def get_queue(sim: SimContext, req: Request) -> Response:
    running, pending = sim.engine.current_queue()
    return json_response({"queue_running": running, "queue_pending": pending})


def post_queue(sim: SimContext, req: Request) -> Response:
    data = req.json()
    if _field(data, "clear"):
        sim.engine.clear_pending()
    if _field(data, "delete") is not None:
        for prompt_id in data["delete"]:
            sim.engine.delete_pending(prompt_id)
    return empty(200)


def get_history(sim: SimContext, req: Request) -> Response:
    max_items = int(req.query["max_items"]) if "max_items" in req.query else None
    offset = int(req.query["offset"]) if "offset" in req.query else -1
    return json_response(sim.engine.get_history(max_items=max_items, offset=offset))


def get_history_item(sim: SimContext, req: Request) -> Response:
    return json_response(sim.engine.get_history(req.params["prompt_id"]))


def post_history(sim: SimContext, req: Request) -> Response:
    data = req.json()
    if _field(data, "clear"):
        sim.engine.clear_history()
    if _field(data, "delete") is not None:
        for prompt_id in data["delete"]:
            sim.engine.delete_history(prompt_id)
    return empty(200)


def post_interrupt(sim: SimContext, req: Request) -> Response:
    data = req.json_or({})
    sim.engine.interrupt(data.get("prompt_id"))
    return empty(200)


def post_free(sim: SimContext, req: Request) -> Response:
    body = req.json_or({})
    if isinstance(body, dict) and body.get("unload_models") is True:
        sim.engine.models.unload()
    return empty(200)
