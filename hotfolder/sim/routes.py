"""The route table of the simulated ComfyUI, and the small read-only endpoints.

`match` is how the server finds a handler (or tells 404 from 405), for the API version the
simulator imitates (`api`). The endpoints a client drives a job with live in `routes_queue`
(prompt, queue, history, interrupt), `routes_jobs` (the newer jobs API) and `routes_files`
(view, uploads); here are the informational ones (`/object_info`, `/system_stats`,
`/features`, `/models`, ...) and the simulator's own `/sim/*`. Every one answers with the
captured status codes and body shapes, because a robust client has to be tested against
exactly those (and, for the newer API, with the shapes derived from ComfyUI's source).
"""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Callable

from hotfolder.sim.api import ApiBehaviour
from hotfolder.sim.catalog import MODEL_FOLDERS, models_in
from hotfolder.sim.context import SimContext
from hotfolder.sim.routes_files import get_view, post_upload_image, post_upload_mask
from hotfolder.sim.routes_jobs import (
    get_job,
    get_jobs,
    get_jobs_absent,
    post_job_cancel,
    post_jobs_cancel,
)
from hotfolder.sim.routes_queue import (
    get_history,
    get_history_item,
    get_prompt,
    get_queue,
    post_free,
    post_history,
    post_interrupt,
    post_prompt,
    post_queue,
)
from hotfolder.sim.web import Request, Response, empty, json_response

Handler = Callable[[SimContext, Request], Response]
MAX_UPLOAD_SIZE = 100 * 1024 * 1024
FEATURES = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}
# newer servers list the comfy* packages of their requirements.txt (values not recorded)
COMFY_PACKAGES = (("comfyui-frontend-package", "1.27.10"),
                  ("comfyui-workflow-templates", "0.1.95"),
                  ("comfyui-embedded-docs", "0.2.6"))


def get_object_info(sim: SimContext, req: Request) -> Response:
    return json_response(sim.catalog.all())


def get_object_info_class(sim: SimContext, req: Request) -> Response:
    name = req.params["node_class"]
    info = sim.catalog.info(name)
    return json_response({} if info is None else {name: info})


def get_system_stats(sim: SimContext, req: Request) -> Response:
    ram = 16 * 1024**3
    device = {
        "name": "hotfolder-sim (simulated GPU)",
        "type": "cpu",
        "index": None,
        "vram_total": ram,
        "vram_free": ram,
        "torch_vram_total": ram,
        "torch_vram_free": ram,
    }
    system = {
        "os": os.name,
        "ram_total": ram,
        "ram_free": ram,
        "comfyui_version": sim.api.comfyui_version,
        "required_frontend_version": "1.27.10",
        "installed_templates_version": "0.1.95",
        "required_templates_version": "0.1.95",
        "python_version": sys.version,
        "pytorch_version": f"simulated ({platform.python_implementation()})",
        "embedded_python": False,
        "argv": [
            "main.py",
            "--listen",
            sim.host,
            "--port",
            str(sim.port),
            "--output-directory",
            sim.output_dir,
        ],
    }
    if sim.api.system_stats_extras:  # derived from ComfyUI's source, in its key order
        packages = [{"name": name, "installed": version, "required": version}
                    for name, version in COMFY_PACKAGES]
        items = list(system.items())
        items.insert(7, ("comfy_package_versions", packages))
        items.insert(11, ("deploy_environment", "local-git"))
        system = dict(items, os=sys.platform)
    return json_response({"system": system, "devices": [device]})


def get_features(sim: SimContext, req: Request) -> Response:
    return json_response(dict(FEATURES))


def get_models(sim: SimContext, req: Request) -> Response:
    return json_response(list(MODEL_FOLDERS))


def get_models_folder(sim: SimContext, req: Request) -> Response:
    files = models_in(req.params["folder"])
    return empty(404) if files is None else json_response(files)


def get_embeddings(sim: SimContext, req: Request) -> Response:
    return json_response([])


def get_root(sim: SimContext, req: Request) -> Response:
    html = (
        b"<!doctype html><title>ComfyUI simulator</title><p>hotfolder ComfyUI API simulator "
        b"(no web UI). See /system_stats, /object_info, /queue, /history.</p>"
    )
    return Response(200, html, "text/html; charset=utf-8")


def get_sim_faults(sim: SimContext, req: Request) -> Response:
    return json_response(sim.fault_state.snapshot())


def post_sim_faults(sim: SimContext, req: Request) -> Response:
    try:
        return json_response(sim.fault_state.update(req.json()))
    except ValueError as exc:
        return json_response({"error": str(exc)}, 400)


def get_sim_stats(sim: SimContext, req: Request) -> Response:
    return json_response(sim.stats())


def get_sim_runs(sim: SimContext, req: Request) -> Response:
    return json_response(sim.engine.models.report())


Route = tuple[str, re.Pattern[str], Handler]


def _compiled(entries: list[tuple[str, str, Handler]]) -> list[Route]:
    return [(method, re.compile(f"^{pattern}$"), handler) for method, pattern, handler in entries]


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    (method, re.compile(f"^{pattern}$"), handler)
    for method, pattern, handler in [
        ("GET", "/", get_root),
        ("GET", "/prompt", get_prompt),
        ("POST", "/prompt", post_prompt),
        ("GET", "/queue", get_queue),
        ("POST", "/queue", post_queue),
        ("GET", "/history", get_history),
        ("POST", "/history", post_history),
        ("GET", "/history/(?P<prompt_id>[^/]+)", get_history_item),
        ("POST", "/interrupt", post_interrupt),
        ("POST", "/free", post_free),
        ("GET", "/view", get_view),
        ("POST", "/upload/image", post_upload_image),
        ("POST", "/upload/mask", post_upload_mask),
        ("GET", "/object_info", get_object_info),
        ("GET", "/object_info/(?P<node_class>[^/]+)", get_object_info_class),
        ("GET", "/system_stats", get_system_stats),
        ("GET", "/features", get_features),
        ("GET", "/models", get_models),
        ("GET", "/models/(?P<folder>[^/]+)", get_models_folder),
        ("GET", "/embeddings", get_embeddings),
        ("GET", "/sim/faults", get_sim_faults),
        ("POST", "/sim/faults", post_sim_faults),
        ("GET", "/sim/stats", get_sim_stats),
        ("GET", "/sim/runs", get_sim_runs),
    ]
]

# derived from ComfyUI's source: only under /api/ there
JOBS_ROUTES = _compiled([
    ("GET", "/api/jobs", get_jobs),
    ("GET", "/api/jobs/(?P<job_id>[^/]+)", get_job),
    ("POST", "/api/jobs/(?P<job_id>[^/]+)/cancel", post_job_cancel),
    ("POST", "/api/jobs/cancel", post_jobs_cancel),
])
# as recorded from 0.3.64: a GET-only catch-all, so other methods get a 405
NO_JOBS_ROUTES = _compiled([("GET", "/api/jobs(?:/.*)?", get_jobs_absent)])


def match(
    method: str, path: str, api: ApiBehaviour
) -> tuple[Handler | None, dict[str, str], bool]:
    """(handler, path params, path_known). path_known without handler means 405."""
    known = False
    for route_method, pattern, handler in ROUTES + (JOBS_ROUTES if api.jobs_api
                                                    else NO_JOBS_ROUTES):
        found = pattern.match(path)
        if found is None:
            continue
        known = True
        if route_method == method or (method == "HEAD" and route_method == "GET"):
            return handler, found.groupdict(), True
    return None, {}, known
