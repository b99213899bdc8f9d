"""The simulator's two API modes against tests/fixtures/comfy-api/newer/.

`api="0.3.64"` (the default) must answer the newer API the way the recorded 0.3.64 did
(`api_jobs_*`, `prompt_client_supplied_*`: recorded). `api="newer"` must answer as
`newest_source_expected.json` says a current ComfyUI does (derived from its source, not
recorded; its values in <> are placeholders, so those are compared by shape).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from simtools import OPEN, wait_until

from hotfolder.sim import SimServer
from hotfolder.sim.cli import build_parser
from hotfolder.sim.graph import trim_cache

FIXTURES = Path(__file__).parent / "fixtures" / "comfy-api"
NEWER = FIXTURES / "newer"
TIMEOUT = 15.0
OUTPUT_KEYS = {"filename", "subfolder", "type"}
NEW_OUTPUT_KEYS = {"metadata", "id", "preview_id"}


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


(INVALID_ID, MISSING_TYPE, NO_CLASS_TYPE, JOB_LIST, BAD_STATUS, JOB, UNKNOWN_JOB, CANCEL,
 CANCEL_BAD_IDS, CANCEL_NOT_LIST, QUEUE) = load(NEWER / "newest_source_expected.json")["cases"]
RECORDED_JOBS = sorted(NEWER.glob("api_jobs_*.json"))
RECORDED_PROMPT_IDS = sorted(NEWER.glob("prompt_client_supplied_*.json"))


def workflow(name: str) -> dict[str, Any]:
    return load(FIXTURES / "workflows" / f"{name}.json")


def red(color: int = 16711680, prefix: str = "hotfolder/empty") -> dict[str, Any]:
    prompt = workflow("empty_image_save")
    prompt["1"]["inputs"]["color"] = color
    prompt["2"]["inputs"]["filename_prefix"] = prefix
    return prompt


class Api:
    def __init__(self, sim: SimServer) -> None:
        self.sim = sim
        self.session = requests.Session()
        OPEN.append(self.session)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.sim.url + path, timeout=TIMEOUT, **kwargs)

    def get(self, path: str) -> requests.Response:
        return self.request("GET", path)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def submit(self, prompt: dict[str, Any], **extra: Any) -> str:
        response = self.post("/prompt", json={"prompt": copy.deepcopy(prompt), **extra})
        assert response.status_code == 200, response.text
        return response.json()["prompt_id"]

    def history(self, prompt_id: str) -> dict[str, Any]:
        return wait_until(lambda: self.get(f"/history/{prompt_id}").json().get(prompt_id),
                          f"history of {prompt_id}")

    def run(self, prompt: dict[str, Any], **extra: Any) -> tuple[str, dict[str, Any]]:
        prompt_id = self.submit(prompt, **extra)
        return prompt_id, self.history(prompt_id)

    def job(self, prompt_id: str) -> dict[str, Any]:
        response = self.get(f"/api/jobs/{prompt_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_running(self, prompt_id: str) -> None:
        wait_until(lambda: any(item[1] == prompt_id
                               for item in self.get("/queue").json()["queue_running"]),
                   f"{prompt_id} running")


def canonical(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def outputs(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for node in entry["outputs"].values() for item in node.get("images", [])]


def files(sim: SimServer) -> set[str]:
    return {name for _, _, names in os.walk(sim.output_dir) for name in names}


@pytest.fixture
def newer(make_sim: Callable[..., SimServer], tmp_path: Path) -> Api:
    return Api(make_sim(api="newer", output_dir=tmp_path / "newer-output"))


@pytest.fixture
def old(make_sim: Callable[..., SimServer], tmp_path: Path) -> Api:
    return Api(make_sim(output_dir=tmp_path / "old-output"))


# -- the mode switch -------------------------------------------------------------------------
def test_api_mode_names(make_sim: Callable[..., SimServer]) -> None:
    assert make_sim().api.name == "0.3.64"
    assert make_sim(api="newer").api.comfyui_version == "0.38.1"
    with pytest.raises(ValueError, match="unknown api 'bogus'"):
        SimServer(api="bogus")
    assert build_parser().parse_args([]).api == "0.3.64"
    assert build_parser().parse_args(["--api", "newer"]).api == "newer"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--api", "0.4"])


def test_cli_api_newer(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from hotfolder.sim import main; "
         "sys.exit(main(sys.argv[1:]))", "--port", "0", "--port-file", str(port_file),
         "--api", "newer"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        port = int(wait_until(lambda: port_file.exists() and port_file.read_text().strip(),
                              "port file"))
        base = f"http://127.0.0.1:{port}"
        stats = requests.get(base + "/system_stats", timeout=TIMEOUT).json()
        assert stats["system"]["comfyui_version"] == "0.38.1"
        assert requests.get(base + "/api/jobs", timeout=TIMEOUT).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- what 0.3.64 answered to the newer API (recorded) ----------------------------------------
@pytest.mark.parametrize("path", RECORDED_JOBS, ids=lambda p: p.stem)
def test_recorded_jobs_answer_in_0_3_64_mode(path: Path, old: Api) -> None:
    capture = load(path)
    request = capture["request"]
    response = old.request(request["method"], request["path"], json=request.get("json_body"))
    assert response.status_code == capture["status"]
    assert response.headers["Content-Type"] == capture["response_headers"]["Content-Type"]
    assert response.text == capture["response_body_text"]


NEWER_ANSWERS = {  # the same requests, answered by the newer server (ids unknown to it)
    "api_jobs_cancel_batch": (200, {"cancelled": False}),
    "api_jobs_cancel_one": (200, {"cancelled": False}),
    "api_jobs_get_completed": (404, UNKNOWN_JOB["response_json"]),
    "api_jobs_get_interrupted": (404, UNKNOWN_JOB["response_json"]),
    "api_jobs_get_running": (404, UNKNOWN_JOB["response_json"]),
    "api_jobs_get_unknown": (404, UNKNOWN_JOB["response_json"]),
    "api_jobs_list": (200, {"jobs": [], "pagination": {"offset": 0, "limit": None, "total": 0,
                                                       "has_more": False}}),
    "api_jobs_list_after": (200, {"jobs": [], "pagination": {"offset": 0, "limit": 3,
                                                             "total": 0, "has_more": False}}),
    "api_jobs_list_bad_status": (BAD_STATUS["status"], BAD_STATUS["response_json"]),
    "api_jobs_list_while_running": (200, {"jobs": [], "pagination": {
        "offset": 0, "limit": None, "total": 0, "has_more": False}}),
}


@pytest.mark.parametrize("path", RECORDED_JOBS, ids=lambda p: p.stem)
def test_recorded_jobs_requests_in_newer_mode(path: Path, newer: Api) -> None:
    request = load(path)["request"]
    response = newer.request(request["method"], request["path"], json=request.get("json_body"))
    assert (response.status_code, response.json()) == NEWER_ANSWERS[path.stem]
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"


def test_0_3_64_has_no_job_for_a_real_prompt(old: Api) -> None:
    prompt_id, _ = old.run(red())
    response = old.get(f"/api/jobs/{prompt_id}")
    assert (response.status_code, response.content) == (404, b"")
    assert response.headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize("path", RECORDED_PROMPT_IDS, ids=lambda p: p.stem)
def test_client_prompt_id_in_both_modes(path: Path, old: Api, newer: Api) -> None:
    capture = load(path)
    body = capture["request"]["json_body"]
    recorded = old.post("/prompt", json=body)  # 0.3.64 takes any string, as recorded
    assert recorded.status_code == capture["status"] == 200
    assert recorded.json()["prompt_id"] == capture["response_json"]["prompt_id"]
    answer = newer.post("/prompt", json=body)
    if canonical(body["prompt_id"]):
        assert answer.status_code == 200
        assert answer.json()["prompt_id"] == body["prompt_id"]
    else:
        assert (answer.status_code, answer.json()) == (INVALID_ID["status"],
                                                       INVALID_ID["response_json"])


def test_newer_prompt_ids(newer: Api) -> None:
    generated = newer.post("/prompt", json={"prompt": red(), "prompt_id": None}).json()
    assert str(uuid.UUID(generated["prompt_id"])) == generated["prompt_id"]
    for bad in (42, "", "{" + str(uuid.uuid4()) + "}", uuid.uuid4().hex):
        answer = newer.post("/prompt", json={"prompt": red(), "prompt_id": bad})
        assert (answer.status_code, answer.json()) == (400, INVALID_ID["response_json"])
    same = str(uuid.uuid4())  # not an idempotency key: a repeated id runs again
    assert newer.submit(red(1), prompt_id=same) == newer.submit(red(2), prompt_id=same)
    assert outputs(newer.history(same))


# -- unknown or missing class_type ------------------------------------------------------------
def test_missing_node_type(old: Api, newer: Api) -> None:
    recorded = load(FIXTURES / "prompt_error_unknown_class_type.json")
    prompt = recorded["request"]["json_body"]["prompt"]
    assert (prompt["4"]["class_type"], prompt["4"]["_meta"]["title"]) == (
        "CheckpointSimple", "Load Checkpoint")
    answer = old.post("/prompt", json={"prompt": prompt})
    assert (answer.status_code, answer.json()) == (400, recorded["response_json"])
    answer = newer.post("/prompt", json={"prompt": prompt})
    assert (answer.status_code, answer.json()) == (MISSING_TYPE["status"],
                                                   MISSING_TYPE["response_json"])
    untitled = copy.deepcopy(prompt)
    del untitled["4"]["_meta"]  # then the source names the node by its class_type
    error = newer.post("/prompt", json={"prompt": untitled}).json()["error"]
    assert error["message"] == "Node 'CheckpointSimple' not found. " \
                               "The custom node may not be installed."
    assert error["extra_info"]["node_title"] == "CheckpointSimple"


def test_missing_class_type(old: Api, newer: Api) -> None:
    prompt = workflow("txt2img_tiny_sd15")
    del prompt["4"]["class_type"]
    answer = newer.post("/prompt", json={"prompt": prompt})
    assert (answer.status_code, answer.json()) == (NO_CLASS_TYPE["status"],
                                                   NO_CLASS_TYPE["response_json"])
    del prompt["4"]["_meta"]
    error = newer.post("/prompt", json={"prompt": prompt}).json()["error"]
    assert error["message"].startswith("Node 'ID #4' has no class_type.")
    assert error["extra_info"] == {"node_id": "4", "class_type": None, "node_title": None}
    assert old.post("/prompt", json={"prompt": prompt}).json()["error"]["type"] == \
        "invalid_prompt"


# -- the jobs API ------------------------------------------------------------------------------
def test_job_list_while_one_runs(newer: Api) -> None:
    done = [newer.run(red(color))[0] for color in (1, 2, 3, 4)]
    newer.sim.job_seconds = 30.0
    running = newer.submit(red(5), client_id="c1")
    newer.wait_running(running)
    listing = newer.get("/api/jobs?limit=2").json()
    expected = JOB_LIST["response_json"]
    assert listing["pagination"] == expected["pagination"]  # offset 0, limit 2, total 5, more
    first, second = listing["jobs"]
    assert (first["id"], first["status"], second["id"], second["status"]) == (
        running, "in_progress", done[-1], "completed")
    for job, shape in zip(listing["jobs"], expected["jobs"], strict=True):
        assert set(job) == set(shape), job
    assert set(second["preview_output"]) == set(expected["jobs"][1]["preview_output"]) \
        | NEW_OUTPUT_KEYS
    assert (second["preview_output"]["nodeId"], second["preview_output"]["mediaType"]) == (
        "2", "images")
    assert second["outputs_count"] == second["previewable_outputs_count"] == 1
    assert second["execution_start_time"] <= second["execution_end_time"]
    assert [j["id"] for j in newer.get("/api/jobs?sort_order=asc").json()["jobs"]] == \
        [*done, running]
    page = newer.get("/api/jobs?offset=3&limit=5").json()
    assert [j["id"] for j in page["jobs"]] == done[:2][::-1]
    assert page["pagination"] == {"offset": 3, "limit": 5, "total": 5, "has_more": False}
    only = newer.get("/api/jobs?status=pending,in_progress").json()["jobs"]
    assert [j["id"] for j in only] == [running]
    by_duration = newer.get("/api/jobs?status=completed&sort_by=execution_duration").json()
    assert sorted(j["id"] for j in by_duration["jobs"]) == sorted(done)
    assert newer.post(f"/api/jobs/{running}/cancel").json() == {"cancelled": True}


@pytest.mark.parametrize(("query", "error"), [
    ("status=bogus", BAD_STATUS["response_json"]["error"]),
    ("status=completed,Nope,,x", "Invalid status value(s): nope, x. Valid values: pending, "
                                 "in_progress, completed, failed, cancelled"),
    ("sort_by=name", "sort_by must be 'created_at' or 'execution_duration'"),
    ("sort_order=up", "sort_order must be 'asc' or 'desc'"),
    ("limit=0", "limit must be a positive integer"),
    ("limit=two", "limit must be an integer"),
    ("offset=1.5", "offset must be an integer"),
])
def test_job_list_rejects(query: str, error: str, newer: Api) -> None:
    response = newer.get(f"/api/jobs?{query}")
    assert (response.status_code, response.json()) == (400, {"error": error})


def test_job_of_each_state(newer: Api) -> None:
    done, entry = newer.run(red(), client_id="c1")
    job = newer.job(done)
    assert set(job) == set(JOB["response_json"])
    assert (job["status"], job["priority"]) == ("completed", entry["prompt"][0])
    assert job["execution_status"] == entry["status"]
    assert job["outputs"] == entry["outputs"]
    assert set(outputs(job)[0]) == set(JOB["response_json"]["outputs"]["9"]["images"][0]) \
        | {"preview_id"}
    assert job["workflow"] == {"prompt": entry["prompt"][2], "extra_data": entry["prompt"][3]}
    assert set(job["workflow"]["extra_data"]) == {"client_id", "create_time"}
    failed, _ = newer.run(workflow("runtime_error_save_outside_output"))
    job = newer.job(failed)
    assert job["status"] == "failed"
    assert "outside the output folder" in job["execution_error"]["exception_message"]
    assert [j["id"] for j in newer.get("/api/jobs?status=failed").json()["jobs"]] == [failed]
    newer.sim.job_seconds = 30.0
    running, pending = newer.submit(red(1)), newer.submit(red(2))
    newer.wait_running(running)
    assert (newer.job(running)["status"], newer.job(pending)["status"]) == (
        "in_progress", "pending")
    assert "workflow" in newer.job(pending) and "outputs" not in newer.job(pending)
    unknown = newer.get(f"/api/jobs/{uuid.uuid4()}")
    assert (unknown.status_code, unknown.json()) == (404, UNKNOWN_JOB["response_json"])
    assert newer.get(f"/history/{pending}").json() == {}  # what /history cannot tell apart
    newer.post("/queue", json={"clear": True})
    newer.post("/interrupt")


def test_cancel_one_job(newer: Api) -> None:
    finished, _ = newer.run(red())
    newer.sim.job_seconds = 30.0
    running, pending = newer.submit(red(1)), newer.submit(red(2))
    newer.wait_running(running)
    cancel = newer.post(f"/api/jobs/{pending}/cancel")
    assert (cancel.status_code, cancel.json()) == (CANCEL["status"], CANCEL["response_json"])
    assert newer.get(f"/api/jobs/{pending}").status_code == 404  # removed, never ran
    assert newer.post(f"/api/jobs/{running}/cancel").json() == {"cancelled": True}
    history = newer.history(running)
    assert history["status"]["status_str"] == "error"
    assert "execution_interrupted" in [m[0] for m in history["status"]["messages"]]
    assert newer.job(running)["status"] == "cancelled"
    assert [j["id"] for j in newer.get("/api/jobs?status=cancelled").json()["jobs"]] == [running]
    for job_id in (finished, running, str(uuid.uuid4()), "not-a-uuid"):  # no-ops, still 200
        answer = newer.post(f"/api/jobs/{job_id}/cancel")
        assert (answer.status_code, answer.json()) == (200, {"cancelled": False})
    assert newer.get(f"/history/{pending}").json() == {}


def test_cancel_jobs_batch(newer: Api) -> None:
    for body, expected in ((CANCEL_BAD_IDS["request"]["json_body"], CANCEL_BAD_IDS),
                           ({"job_ids": "not a list"}, CANCEL_NOT_LIST)):
        answer = newer.post("/api/jobs/cancel", json=body)
        assert (answer.status_code, answer.json()) == (expected["status"],
                                                       expected["response_json"])
    mixed = newer.post("/api/jobs/cancel", json={"job_ids": [str(uuid.uuid4()), 7, None, "x"]})
    assert mixed.json() == {"error": "job_ids contains invalid id(s)",
                            "invalid_ids": ["7", "None", "x"]}
    for raw in (b"", b"{nope"):
        answer = newer.post("/api/jobs/cancel", data=raw)
        assert (answer.status_code, answer.json()) == (
            400, {"error": "Request body must be valid JSON"})
    assert newer.post("/api/jobs/cancel", json=[]).json() == {"error": "job_ids must be a list"}
    newer.sim.job_seconds = 30.0
    running, pending = newer.submit(red(1)), newer.submit(red(2))
    newer.wait_running(running)
    unknown = str(uuid.uuid4())
    assert newer.post("/api/jobs/cancel", json={"job_ids": [unknown]}).json() == {
        "cancelled": False}
    answer = newer.post("/api/jobs/cancel", json={"job_ids": [unknown, pending, running]})
    assert (answer.status_code, answer.json()) == (200, {"cancelled": True})
    newer.history(running)  # the interrupt takes effect at the next step or node
    assert newer.job(running)["status"] == "cancelled"
    assert newer.get(f"/api/jobs/{pending}").status_code == 404


# -- create_time, output entries, the WebSocket ------------------------------------------------
def test_create_time(old: Api, newer: Api) -> None:
    for api in (old, newer):
        api.sim.job_seconds = 30.0
        running = api.submit(red(), client_id="cid")
        api.wait_running(running)
        item = api.get("/queue").json()["queue_running"][0]
        if api is old:
            assert item[3] == {"client_id": "cid"}
        else:
            expected = QUEUE["response_json"]["queue_running"][0]
            assert len(item) == len(expected) and set(item[3]) == set(expected[3])
            assert isinstance(item[3]["create_time"], int)
            assert abs(item[3]["create_time"] / 1000 - time.time()) < 60
        api.post("/interrupt")
        assert set(api.history(running)["prompt"][3]) == set(item[3])


def test_output_entries_and_websocket_order(old: Api, newer: Api) -> None:
    for api in (old, newer):
        ws = websocket.create_connection(api.sim.url.replace("http", "ws") + "/ws?clientId=w",
                                         timeout=TIMEOUT)
        OPEN.append(ws)
        first = api.submit(red(), client_id="w")
        messages: list[dict[str, Any]] = []
        while not (messages and messages[-1]["type"] == "executing"
                   and messages[-1]["data"]["node"] is None):
            messages.append(json.loads(ws.recv()))
        assert api.get(f"/history/{first}").json()[first]  # written before executing null
        kinds = [m["type"] for m in messages]
        assert kinds.index("execution_success") < len(kinds) - 1
        executed = next(m["data"]["output"] for m in messages if m["type"] == "executed")
        entry = outputs(api.history(first))[0]
        assert executed["images"][0] == entry
        if api is old:
            assert set(entry) == OUTPUT_KEYS
            continue
        assert set(entry) == OUTPUT_KEYS | NEW_OUTPUT_KEYS
        assert entry["metadata"]["kind"] == "image"
        assert entry["id"] == entry["preview_id"]
        again = outputs(api.history(api.submit(red(), client_id="w")))[0]  # a cached replay
        assert again == entry


# -- the cache -----------------------------------------------------------------------------------
def test_earlier_identical_prompt_is_cached(old: Api, newer: Api) -> None:
    for api in (old, newer):
        _, first = api.run(red(1, "hotfolder/cache"))
        api.run(red(2, "hotfolder/cache"))  # another graph runs in between
        written = files(api.sim)
        _, again = api.run(red(1, "hotfolder/cache"))  # the earlier one, not the last
        cached = next(m[1]["nodes"] for m in again["status"]["messages"]
                      if m[0] == "execution_cached")
        if api is old:  # the CLASSIC cache kept only the last prompt's nodes
            assert files(api.sim) - written == {"cache_00003_.png"}
            assert cached == []
            continue
        assert files(api.sim) == written, "an identical earlier prompt wrote a file"
        assert cached == ["1", "2"]
        assert [o["filename"] for o in outputs(again)] == [
            o["filename"] for o in outputs(first)] == ["cache_00001_.png"]
        _, renamed = api.run(red(1, "hotfolder/other"))  # a new prefix still writes
        assert files(api.sim) - written == {"other_00001_.png"}
        assert outputs(renamed)[0]["filename"] == "other_00001_.png"


def test_trim_cache() -> None:
    cache = {key: key for key in "abcde"}
    trim_cache(cache, {"b", "d"}, 0)  # CLASSIC: what the prompt uses, nothing else
    assert list(cache) == ["b", "d"]
    cache = {key: key for key in "abcde"}
    trim_cache(cache, {"b"}, 3)  # LRU: used entries become the newest; the oldest others go
    assert list(cache) == ["d", "e", "b"]
    trim_cache(cache, {"d", "e", "b", "x"}, 1)  # never what the running prompt uses
    assert list(cache) == ["d", "e", "b"]


# -- system_stats and /view ------------------------------------------------------------------
def test_system_stats(old: Api, newer: Api) -> None:
    recorded = load(FIXTURES / "system_stats.json")["response_json"]["system"]
    assert list(old.get("/system_stats").json()["system"]) == list(recorded)
    system = newer.get("/system_stats").json()["system"]
    assert system["comfyui_version"] == "0.38.1"
    assert set(system) - set(recorded) == {"comfy_package_versions", "deploy_environment"}
    assert system["os"] == sys.platform and isinstance(system["deploy_environment"], str)
    assert all(set(p) == {"name", "installed", "required"} and p["name"].startswith("comfy")
               for p in system["comfy_package_versions"])


def test_view_nosniff(old: Api, newer: Api) -> None:
    recorded = load(FIXTURES / "view_existing_output.json")["response_headers"]
    assert "X-Content-Type-Options" not in recorded
    for api in (old, newer):
        entry = outputs(api.run(red())[1])[0]
        query = f"/view?filename={entry['filename']}&subfolder={entry['subfolder']}&type=output"
        answer = api.get(query)
        assert (answer.status_code, answer.headers["Content-Type"]) == (200, "image/png")
        sniff = answer.headers.get("X-Content-Type-Options")
        assert sniff == (None if api is old else "nosniff")
        assert "X-Content-Type-Options" not in api.get(query + "&preview=jpeg").headers
