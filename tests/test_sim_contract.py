"""The ComfyUI simulator against the real captures in tests/fixtures/comfy-api/.

Every capture file is a named test. A capture is either replayed against a fresh simulator
(status, content type class, JSON structure, error types, node ids, WebSocket message order) or
listed in NOT_REPLAYED with the reason; anything else fails, so a new capture cannot be
forgotten. Ids, numbers, timestamps and file counters naturally differ and are not compared.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from simtools import OPEN, wait_until

from hotfolder.sim import SimServer

FIXTURES = Path(__file__).parent / "fixtures" / "comfy-api"
WORKFLOWS = FIXTURES / "workflows"
CAPTURE_FILES = sorted([*FIXTURES.glob("*.json"), *FIXTURES.glob("object_info/*.json")])
CAPTURE_NAMES = [str(p.relative_to(FIXTURES).with_suffix("")) for p in CAPTURE_FILES]

# Captures deliberately not replayed, with the reason.
NOT_REPLAYED = {
    # The real server accepts two queued items with equal number *and* prompt_id, then heapq
    # compares the prompt dicts and the worker thread dies. The simulator orders ties by arrival
    # instead of dying, so this capture cannot be reproduced (test_same_number_and_prompt_id_...
    # in test_sim_behaviour.py checks what the simulator does instead).
    "prompt_same_number_and_prompt_id": "kills the real worker thread; the simulator survives",
}

TIMEOUT = 15.0
# Input names whose combo lists the simulator replaces with its own files.
PATCHED_COMBOS = {
    "ckpt_name",
    "lora_name",
    "vae_name",
    "unet_name",
    "clip_name",
    "clip_name1",
    "clip_name2",
    "control_net_name",
    "model_name",
    "image",
}


def load(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def workflow(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())




# -- shape comparison ----------------------------------------------------------------------
def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


def _matches(expected: Any, actual: Any) -> bool:
    try:
        assert_shape(expected, actual)
    except AssertionError:
        return False
    return True


def assert_shape(expected: Any, actual: Any, path: str = "$") -> None:
    """Same keys and value kinds, recursively. Lists of different length (tracebacks, file
    lists) only need every actual element to look like some expected element."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r:.200}"
        missing, extra = set(expected) - set(actual), set(actual) - set(expected)
        assert not missing and not extra, f"{path}: missing keys {missing}, extra keys {extra}"
        for key in expected:
            assert_shape(expected[key], actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r:.200}"
        if len(expected) == len(actual):
            for index, (exp, act) in enumerate(zip(expected, actual, strict=True)):
                assert_shape(exp, act, f"{path}[{index}]")
        elif expected:
            for index, act in enumerate(actual):
                assert any(_matches(e, act) for e in expected), (
                    f"{path}[{index}]: unexpected {act!r:.200}"
                )
    else:
        assert _kind(expected) == _kind(actual), (
            f"{path}: expected {_kind(expected)}, got {actual!r:.200}"
        )


def only_entry(history: dict[str, Any]) -> dict[str, Any]:
    assert len(history) == 1, f"expected one history entry, got {list(history)}"
    return next(iter(history.values()))


def check_errors(
    expected: dict[str, Any], actual: dict[str, Any], compare_details: bool = True
) -> None:
    """Error semantics beyond shape: types, messages, node ids, per-node types and inputs."""
    if "error" in expected:
        for key in ("type", "message"):
            assert actual["error"][key] == expected["error"][key]
        if compare_details and "/opt/" not in json.dumps(expected["error"]):
            assert actual["error"]["details"] == expected["error"]["details"]
    exp_nodes, act_nodes = expected.get("node_errors", {}), actual.get("node_errors", {})
    assert set(act_nodes) == set(exp_nodes), f"node_errors ids {set(act_nodes)} != {set(exp_nodes)}"
    for node_id, exp in exp_nodes.items():
        act = act_nodes[node_id]
        assert act["class_type"] == exp["class_type"]
        assert act["dependent_outputs"] == exp["dependent_outputs"]
        for exp_err, act_err in zip(exp["errors"], act["errors"], strict=True):
            assert act_err["type"] == exp_err["type"]
            assert act_err["message"] == exp_err["message"]
            assert act_err["extra_info"].get("input_name") == exp_err["extra_info"].get(
                "input_name"
            )
            if exp_err["extra_info"].get("input_config", {}) is None:  # a list of over 20
                assert act_err["extra_info"]["input_config"] is None
            if compare_details and "/opt/" not in exp_err["details"]:
                assert act_err["details"] == exp_err["details"]


# -- HTTP ----------------------------------------------------------------------------------
def content_class(content_type: str | None) -> str:
    if not content_type:
        return "none"
    if "json" in content_type:
        return "json"
    return content_type.split(";")[0].split("/")[0]




class Client:
    def __init__(self, sim: SimServer) -> None:
        self.sim = sim
        self.session = requests.Session()
        OPEN.append(self.session)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.sim.url + path, timeout=TIMEOUT, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def replay(
        self, request: dict[str, Any], headers: dict[str, str] | None = None
    ) -> requests.Response:
        kwargs: dict[str, Any] = {"headers": headers}
        if "json_body" in request:
            kwargs["json"] = request["json_body"]
        elif "raw_body" in request:
            kwargs["data"] = request["raw_body"].encode()
        return self.request(request["method"], request["path"], **kwargs)

    def submit(self, prompt: dict[str, Any], client_id: str | None = None, **extra: Any) -> str:
        body = {"prompt": copy.deepcopy(prompt), **extra}
        if client_id is not None:
            body["client_id"] = client_id
        response = self.post("/prompt", json=body)
        assert response.status_code == 200, response.text
        return response.json()["prompt_id"]

    def history(self, prompt_id: str) -> dict[str, Any]:
        return wait_until(
            lambda: self.get(f"/history/{prompt_id}").json().get(prompt_id),
            what=f"history of {prompt_id}",
        )

    def run(self, prompt: dict[str, Any], client_id: str | None = None) -> dict[str, Any]:
        return self.history(self.submit(prompt, client_id))


def check_response(
    capture: dict[str, Any], response: requests.Response, compare_details: bool = True
) -> None:
    assert response.status_code == capture["status"], response.text
    expected_type = capture.get("response_headers", {}).get("Content-Type")
    assert content_class(response.headers.get("Content-Type")) == content_class(expected_type)
    if capture.get("response_json") is not None or "response_json" in capture:
        actual = response.json()
        assert_shape(capture["response_json"], actual)
        if isinstance(actual, dict):
            check_errors(capture["response_json"], actual, compare_details)
    elif "response_body_text" in capture:
        assert response.text == capture["response_body_text"]


# -- WebSocket -----------------------------------------------------------------------------
class Recorder:
    """A WebSocket client collecting frames in the background, summarised like the captures."""

    def __init__(
        self, sim: SimServer, client_id: str | None = None, first_message: Any = None
    ) -> None:
        query = f"?clientId={client_id}" if client_id else ""
        self.ws = websocket.create_connection(
            sim.url.replace("http://", "ws://") + "/ws" + query, timeout=TIMEOUT
        )
        OPEN.append(self.ws)
        if first_message is not None:
            self.ws.send(json.dumps(first_message))
        self.frames: list[tuple[str, Any]] = []
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                opcode, data = self.ws.recv_data()
            except Exception:
                break
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            with self.cond:
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self.frames.append(("text", json.loads(data)))
                else:
                    self.frames.append(("binary", bytes(data)))
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait(
        self, predicate: Callable[[list[tuple[str, Any]]], bool], what: str = "frames"
    ) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.frames), TIMEOUT), (
                f"timed out waiting for {what}"
            )

    def wait_done(self, prompt_id: str) -> None:
        def done(frames: list[tuple[str, Any]]) -> bool:
            return any(
                kind == "text"
                and f["type"] == "executing"
                and f["data"].get("node") is None
                and f["data"].get("prompt_id") == prompt_id
                for kind, f in frames
            )

        self.wait(done, f"end of {prompt_id}")

    def texts(self) -> list[dict[str, Any]]:
        with self.cond:
            return [f for kind, f in self.frames if kind == "text"]

    def binaries(self) -> list[bytes]:
        with self.cond:
            return [f for kind, f in self.frames if kind == "binary"]

    def summary(self) -> list[str]:
        out = []
        with self.cond:
            frames = list(self.frames)
        for kind, frame in frames:
            if kind == "binary":
                out.append("<binary>")
                continue
            data = frame["data"]
            if frame["type"] in ("executing", "executed"):
                out.append(f"{frame['type']} node={data.get('node')}")
            elif frame["type"] == "progress":
                out.append(f"progress {data['value']}/{data['max']} node={data['node']}")
            else:
                out.append(frame["type"])
        return out

    def close(self) -> None:
        """Closing handshake without a second reader: the reader thread gets the reply."""
        self.ws.send_close()
        self.thread.join(TIMEOUT)
        self.ws.shutdown()


def normalize(summary: list[str], drop_status: bool = False, drop_nodes: bool = False) -> list[str]:
    """Collapse runs of progress/progress_state (their counts vary) into one "P"."""
    out: list[str] = []
    for item in summary:
        if item == "status" and drop_status:
            continue
        if item.startswith("progress"):
            item = "P"
        elif drop_nodes:
            item = re.sub(r" node=(?!None)\S+", "", item)
        if item == "P" and out and out[-1] == "P":
            continue
        out.append(item)
    return out


def compare_summary(
    expected: list[str], actual: list[str], timing_dependent: bool = False, drop_nodes: bool = False
) -> None:
    """Compare message sequences; when other HTTP calls race with the run, compare statuses by
    count only (their position depends on timing)."""
    if timing_dependent:
        assert actual.count("status") == expected.count("status")
    assert normalize(actual, timing_dependent, drop_nodes) == normalize(
        expected, timing_dependent, drop_nodes
    )


# -- fixtures ------------------------------------------------------------------------------


Replayer = Callable[[dict[str, Any], Callable[..., SimServer]], None]
REPLAYERS: dict[str, Replayer] = {}


def replays(*names: str) -> Callable[[Replayer], Replayer]:
    def register(func: Replayer) -> Replayer:
        for name in names:
            REPLAYERS[name] = func
        return func

    return register


def is_single(capture: Any) -> bool:
    return isinstance(capture, dict) and "request" in capture and "status" in capture


# captures listed in NOT_REPLAYED (with their reason) are left out, not skipped
@pytest.mark.parametrize("name", [n for n in CAPTURE_NAMES if n not in NOT_REPLAYED])
def test_capture(name: str, make_sim: Callable[..., SimServer]) -> None:
    capture = load(name)
    replayer = REPLAYERS.get(name)
    if replayer is None and is_single(capture):
        replayer = replay_single
    assert replayer is not None, f"capture {name!r} is neither replayed nor listed in NOT_REPLAYED"
    replayer(capture, make_sim)


def replay_single(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    check_response(capture, Client(make_sim()).replay(capture["request"]))


# -- scenario helpers ----------------------------------------------------------------------
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
UPLOAD_PNG = base64.b64decode(load("view_existing_output")["response_body_base64"])  # 564 bytes


def txt2img(seed: int = 42, steps: int = 4, prefix: str = "hotfolder/txt2img") -> dict[str, Any]:
    prompt = workflow("txt2img_tiny_sd15")
    prompt["3"]["inputs"].update(seed=seed, steps=steps)
    prompt["9"]["inputs"]["filename_prefix"] = prefix
    return prompt


def posted_prompt(capture: dict[str, Any]) -> dict[str, Any]:
    return capture["request"]["json_body"]["prompt"]


def wait_running(client: Client, prompt_id: str) -> None:
    wait_until(
        lambda: any(item[1] == prompt_id for item in client.get("/queue").json()["queue_running"]),
        what=f"{prompt_id} running",
    )


def wait_progress(rec: Recorder, prompt_id: str, at_least: int = 1) -> None:
    rec.wait(
        lambda frames: (
            sum(
                1
                for kind, f in frames
                if kind == "text"
                and f["type"] == "progress"
                and f["data"]["prompt_id"] == prompt_id
            )
            >= at_least
        ),
        "progress",
    )


def run_ws_capture(
    capture: dict[str, Any],
    sim: SimServer,
    first_message: Any = None,
    client_id: str = "capture-client",
) -> tuple[Recorder, dict[str, Any]]:
    """Replay a one-prompt WebSocket capture; returns the recorder and the history entry."""
    client = Client(sim)
    rec = Recorder(sim, client_id, first_message)
    if first_message is not None:
        rec.wait(
            lambda frames: any(k == "text" and f["type"] == "feature_flags" for k, f in frames)
        )
    prompt_id = client.submit(posted_prompt(capture["post"]), client_id)
    rec.wait_done(prompt_id)
    compare_summary(capture["summary"], rec.summary())
    entry = client.history(prompt_id)
    if "history" in capture:
        expected = only_entry(capture["history"]["response_json"])
        assert_shape(expected, entry)
        assert entry["status"]["status_str"] == expected["status"]["status_str"]
        assert list(entry["outputs"]) == list(expected["outputs"])
    return rec, entry


def messages_of(entry: dict[str, Any], event: str) -> dict[str, Any]:
    return next(data for name, data in entry["status"]["messages"] if name == event)


# -- replays: single requests that need more than a plain replay ------------------------------
@replays("prompt_error_combo_value_not_in_list")
def replay_combo_not_in_list(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    # The captured name is one of the simulator's own checkpoints, so ask for one it lacks.
    client = Client(make_sim())
    request = copy.deepcopy(capture["request"])
    request["json_body"]["prompt"]["4"]["inputs"]["ckpt_name"] = "not-on-this-server.safetensors"
    response = client.replay(request)
    check_response(capture, response, compare_details=False)
    error = response.json()["node_errors"]["4"]["errors"][0]
    models = client.get("/models/checkpoints").json()
    assert error["extra_info"]["input_config"][0] == models
    assert error["details"] == f"ckpt_name: 'not-on-this-server.safetensors' not in {models}"


@replays("prompt_error_origin_mismatch")
def replay_origin_mismatch(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    client = Client(make_sim())
    check_response(capture, client.replay(capture["request"], {"Origin": "http://evil.example"}))
    assert client.get("/queue").json()["queue_pending"] == []


@replays("prompt_origin_matching")
def replay_origin_matching(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim()
    check_response(capture, Client(sim).replay(capture["request"], {"Origin": sim.url}))


@replays(*[n for n in CAPTURE_NAMES if n.startswith("view_")])
def replay_view(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    client = Client(make_sim())
    entry = client.run(workflow("empty_image_save"))
    assert entry["outputs"]["2"]["images"] == [capture["output_entry"]]
    response = client.replay(capture["request"])
    check_response(capture, response)
    if capture["status"] == 200:
        for header in ("Content-Type", "Content-Disposition"):
            assert response.headers[header] == capture["response_headers"][header]
        magic = JPEG_MAGIC if "jpeg" in response.headers["Content-Type"] else PNG_MAGIC
        assert response.content.startswith(magic)
    else:
        assert response.content == b""


def _object_info_normalized(info: dict[str, Any]) -> dict[str, Any]:
    info = copy.deepcopy(info)
    for category in ("required", "optional"):
        for name, spec in info["input"].get(category, {}).items():
            if name not in PATCHED_COMBOS:
                continue
            if isinstance(spec[0], list):
                spec[0] = "<files>"
            elif spec[0] == "COMBO":
                spec[1]["options"] = "<files>"
    return info


@replays(*[n for n in CAPTURE_NAMES if n.startswith("object_info/")])
def replay_object_info_class(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    response = Client(make_sim()).replay(capture["request"])
    check_response(capture, response)
    actual, expected = response.json(), capture["response_json"]
    assert {k: _object_info_normalized(v) for k, v in actual.items()} == {
        k: _object_info_normalized(v) for k, v in expected.items()
    }


@replays("object_info_full")
def replay_object_info_full(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    # Not a request capture: the full real body, source of the simulator's object_info.json.
    response = Client(make_sim()).get("/object_info")
    assert response.status_code == 200
    assert content_class(response.headers["Content-Type"]) == "json"
    for name, info in response.json().items():
        assert _object_info_normalized(info) == _object_info_normalized(capture[name]), name


@replays("object_info_full_summary")
def replay_object_info_summary(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    response = Client(make_sim()).replay(capture["request"])
    assert response.status_code == capture["status"]
    assert content_class(response.headers["Content-Type"]) == "json"
    classes = response.json()
    assert set(classes) <= set(capture["class_names"])
    assert len(classes) >= 47


@replays("object_info_trimmed")
def replay_object_info_trimmed(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    client = Client(make_sim())
    for name, info in capture["response_json"].items():
        actual = client.get(f"/object_info/{name}").json()
        assert _object_info_normalized(actual[name]) == _object_info_normalized(info), name


@replays("upload_image")
def replay_upload(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    import ast

    client = Client(make_sim())
    for upload in capture["uploads"]:
        fields = ast.literal_eval(
            re.search(r"fields=(\{.*?\})", upload["request"]["raw_body"]).group(1)
        )
        response = client.post(
            "/upload/image",
            data=fields,
            files={"image": ("job_input.png", UPLOAD_PNG, "image/png")},
        )
        check_response(upload, response)
        if upload["status"] == 200:
            assert response.json() == upload["response_json"], upload["label"]


# -- replays: one prompt, watched over the WebSocket -----------------------------------------
@replays("ws_success_model_free", "ws_success_string_patch")
def replay_ws_success(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    _, entry = run_ws_capture(capture, make_sim())
    expected = only_entry(capture["history"]["response_json"])
    assert entry["outputs"] == expected["outputs"]  # fresh output folder: same file names


@replays("ws_runtime_error")
def replay_ws_runtime_error(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    rec, entry = run_ws_capture(capture, make_sim())
    expected = next(
        f["data"] for f in (x["json"] for x in capture["frames"]) if f["type"] == "execution_error"
    )
    actual = next(f["data"] for f in rec.texts() if f["type"] == "execution_error")
    assert_shape(expected, actual)
    assert (
        actual["node_id"],
        actual["node_type"],
        actual["executed"],
        actual["exception_type"],
    ) == (
        expected["node_id"],
        expected["node_type"],
        expected["executed"],
        expected["exception_type"],
    )
    assert actual["exception_message"].startswith(
        "**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: "
    )
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False


@replays("history_after_runtime_error")
def replay_history_after_runtime_error(
    capture: dict[str, Any], make_sim: Callable[..., SimServer]
) -> None:
    client = Client(make_sim())
    entry = client.run(workflow("runtime_error_save_outside_output"), "runtime-error-client")
    expected = only_entry(capture["response_json"])
    assert_shape(expected, entry)
    assert_shape(messages_of(expected, "execution_error"), messages_of(entry, "execution_error"))


@replays("history_after_success")
def replay_history_after_success(
    capture: dict[str, Any], make_sim: Callable[..., SimServer]
) -> None:
    client = Client(make_sim())
    entry = client.run(posted_prompt(load("prompt_post_success")), "success-client")
    expected = only_entry(capture["response_json"])
    assert_shape(expected, entry)
    assert entry["outputs"] == expected["outputs"]


@replays("preview_image_temp_output")
def replay_preview_temp(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim()
    _, entry = run_ws_capture(capture, sim)
    image = entry["outputs"]["2"]["images"][0]
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", image["filename"])
    assert (image["subfolder"], image["type"]) == ("", "temp")
    response = Client(sim).get(f"/view?filename={image['filename']}&subfolder=&type=temp")
    view = capture["view_temp"]
    assert response.status_code == view["status"]
    assert response.headers["Content-Type"] == view["response_headers"]["Content-Type"]
    assert response.headers["Content-Disposition"] == f'filename="{image["filename"]}"'


@replays("load_uploaded_image")
def replay_load_uploaded_image(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim()
    uploaded = Client(sim).post(
        "/upload/image",
        data={"subfolder": "hotfolder-jobs"},
        files={"image": ("job_input.png", UPLOAD_PNG, "image/png")},
    )
    assert uploaded.json()["name"] == "job_input.png"
    run_ws_capture(capture, sim)


@replays(
    "ws_binary_saveimagewebsocket",
    "ws_binary_saveimagewebsocket_with_metadata_flag",
    "ws_binary_latent_preview",
    "ws_binary_latent_preview_with_metadata_flag",
)
def replay_ws_binary(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    latent = "server_extra_args" in capture
    sim = make_sim(preview_method="latent2rgb" if latent else None)
    cached = messages_of(only_entry(capture["history"]["response_json"]), "execution_cached")[
        "nodes"
    ]
    if cached:  # the capture ran right after a similar prompt: warm the cache the same way
        warm = copy.deepcopy(posted_prompt(capture["post"]))
        warm["3"]["inputs"]["seed"] += 1
        assert Client(sim).run(warm)["status"]["status_str"] == "success"
    rec, _ = run_ws_capture(capture, sim, capture.get("client_first_message"))
    expected = [f for f in capture["frames"] if f["kind"] == "binary"]
    actual = rec.binaries()
    assert len(actual) == len(expected)
    magic = JPEG_MAGIC if latent else PNG_MAGIC
    for exp, frame in zip(expected, actual, strict=True):
        event = struct.unpack(">I", frame[:4])[0]
        assert event == exp["event_type_be_u32_at_0"]
        if event == 1:
            assert struct.unpack(">I", frame[4:8])[0] == exp["image_format_be_u32_at_4"]
            assert frame[8:].startswith(magic)
        else:
            size = struct.unpack(">I", frame[4:8])[0]
            meta = json.loads(frame[8 : 8 + size])
            assert_shape(exp["metadata_json"], meta)
            assert meta["image_type"] == exp["metadata_json"]["image_type"]
            assert frame[8 + size :].startswith(magic)


@replays("ws_connect_without_clientId")
def replay_ws_without_client_id(
    capture: dict[str, Any], make_sim: Callable[..., SimServer]
) -> None:
    rec = Recorder(make_sim())
    rec.wait(lambda frames: len(frames) >= 1)
    first = rec.texts()[0]
    assert_shape(capture["first_frame"], first)
    assert re.fullmatch(r"[0-9a-f]{32}", first["data"]["sid"])
    rec.close()


@replays("ws_other_clients_prompt")
def replay_ws_other_clients(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim()
    observer, owner = Recorder(sim, "observer"), Recorder(sim, "owner")
    prompt_id = Client(sim).submit(workflow("string_patch"), "owner")
    owner.wait_done(prompt_id)
    observer.wait(lambda frames: len(frames) >= len(capture["observer_summary"]), "observer frames")
    assert observer.summary() == capture["observer_summary"]
    compare_summary(capture["owner_summary"], owner.summary(), drop_nodes=True)


@replays("ws_prompt_without_client_id")
def replay_ws_prompt_without_client_id(
    capture: dict[str, Any], make_sim: Callable[..., SimServer]
) -> None:
    sim = make_sim()
    rec = Recorder(sim, "bystander")
    client = Client(sim)
    client.history(client.submit(posted_prompt(capture["post"])))
    statuses = capture["summary"].count("status")
    rec.wait(
        lambda frames: (
            sum(1 for k, f in frames if k == "text" and f["type"] == "status") >= statuses
        )
    )
    compare_summary(capture["summary"], rec.summary())


@replays("ws_reconnect_during_run")
def replay_ws_reconnect(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim(job_seconds=1.5)
    client = Client(sim)
    first = Recorder(sim, "reconnecting")
    prompt_id = client.submit(txt2img(seed=8080, steps=80), "reconnecting")
    wait_progress(first, prompt_id, 2)
    first.close()
    # Reconnecting before the server dropped the old socket would make the new one deaf.
    wait_until(lambda: client.get("/sim/stats").json()["websockets"] == 0, what="old socket gone")
    second = Recorder(sim, "reconnecting")
    second.wait_done(prompt_id)
    head = second.texts()[:2]
    assert [f["type"] for f in head] == ["status", "executing"]
    assert head[1]["data"] == {"node": "3"}
    compare_summary(capture["second_socket_summary"], second.summary())
    compare_summary(capture["first_socket_summary"], first.summary())
    status = client.history(prompt_id)["status"]
    expected = capture["history_status"]
    assert (status["status_str"], status["completed"]) == (
        expected["status_str"],
        expected["completed"],
    )


@replays("ws_success_txt2img")
def replay_ws_two_prompts(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim()
    client = Client(sim)
    queued = load("queue_running")["response_json"]
    first, second = queued["queue_running"][0][2], queued["queue_pending"][0][2]
    rec = Recorder(sim, "two-prompts")
    first_id = client.submit(first, "two-prompts")
    rec.wait(
        lambda frames: any(k == "text" and f["type"] == "executing" for k, f in frames), "start"
    )
    second_id = client.submit(second, "two-prompts")
    rec.wait_done(second_id)
    compare_summary(capture["summary"], rec.summary(), timing_dependent=True)
    assert client.history(first_id)["status"]["status_str"] == "success"


# -- replays: caching ------------------------------------------------------------------------
def run_cache_runs(capture: dict[str, Any], sim: SimServer) -> list[dict[str, Any]]:
    client = Client(sim)
    entries = []
    for index, run in enumerate(capture["runs"]):
        client_id = f"cache-run-{index}"
        rec = Recorder(sim, client_id)
        prompt_id = client.submit(posted_prompt(run["post"]), client_id)
        rec.wait_done(prompt_id)
        rec.close()
        compare_summary(run["summary"], rec.summary())
        entry = client.history(prompt_id)
        expected = only_entry(run["history"]["response_json"])
        assert_shape(expected, entry)
        assert (
            messages_of(entry, "execution_cached")["nodes"]
            == messages_of(expected, "execution_cached")["nodes"]
        )
        assert entry["status"]["status_str"] == expected["status"]["status_str"]
        entries.append(entry)
    return entries


@replays("cache_identical_twice", "cache_string_patch", "cache_status_after_error")
def replay_cache(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    entries = run_cache_runs(capture, make_sim())
    for entry, run in zip(entries, capture["runs"], strict=True):
        assert entry["outputs"] == only_entry(run["history"]["response_json"])["outputs"]


@replays("cache_changed_inputs")
def replay_cache_changed(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim()
    # The capture continues from cache_identical_twice (seed 777), so run that prompt first.
    Client(sim).run(posted_prompt(load("cache_identical_twice")["runs"][0]["post"]))
    run_cache_runs(capture, sim)


@replays("txt2img_tiny_timing")
def replay_timing(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    # Timings are the simulator's job_seconds by design; the statuses and the fully cached
    # identical resubmission are what carries over.
    client = Client(make_sim())
    prompts = [txt2img(1, 4), txt2img(2, 4), txt2img(3, 20), txt2img(3, 20)]
    entries = [client.run(p, "timing") for p in prompts]
    assert [e["status"]["status_str"] for e in entries] == [
        r["status_str"] for r in capture["runs"]
    ]
    assert sorted(messages_of(entries[-1], "execution_cached")["nodes"]) == sorted(prompts[-1])


# -- replays: history ------------------------------------------------------------------------
def run_models_free(client: Client, count: int) -> list[str]:
    ids = []
    for index in range(count):
        prompt = workflow("empty_image_save")
        prompt["1"]["inputs"]["color"] = index
        ids.append(client.submit(prompt, "history-filler"))
    for prompt_id in ids:
        client.history(prompt_id)
    return ids


@replays("history_all_keys")
def replay_history_all_keys(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    client = Client(make_sim())
    ids = run_models_free(client, capture["count"])
    response = client.get("/history")
    assert response.status_code == capture["status"]
    assert list(response.json()) == ids


@replays("history_max_items", "history_max_items_offset")
def replay_history_max_items(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    client = Client(make_sim())
    run_models_free(client, 6)
    response = client.replay(capture["request"])
    assert response.status_code == capture["status"]
    assert content_class(response.headers["Content-Type"]) == "json"
    expected, actual = capture["response_json"], response.json()
    assert [e["prompt"][0] for e in actual.values()] == [e["prompt"][0] for e in expected.values()]
    for entry in actual.values():
        assert set(entry) == {"prompt", "outputs", "status", "meta"}


@replays("history_clear")
def replay_history_clear(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    client = Client(make_sim())
    run_models_free(client, capture["entries_before"])
    check_response(capture["clear"], client.replay(capture["clear"]["request"]))
    check_response(capture["history_after"], client.replay(capture["history_after"]["request"]))


@replays("history_delete")
def replay_history_delete(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    client = Client(make_sim())
    first, second = run_models_free(client, 2)
    check_response(capture["delete"], client.post("/history", json={"delete": [first]}))
    check_response(capture["get_deleted"], client.get(f"/history/{first}"))
    assert list(client.get("/history").json()) == [second]


def _pending_pair(sim: SimServer) -> tuple[Client, str, str]:
    """A long prompt running and a second one queued behind it."""
    client = Client(sim)
    running = client.submit(txt2img(seed=1001, steps=100), "pair")
    wait_running(client, running)
    pending = client.submit(txt2img(seed=2002, steps=4), "pair")
    return client, running, pending


@replays("history_while_queued", "history_while_running", "prompt_get_running", "queue_running")
def replay_while_busy(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    client, running, pending = _pending_pair(make_sim(job_seconds=30))
    path = capture["request"]["path"]
    if path.startswith("/history/"):
        path = f"/history/{pending if 'queued' in capture['case'] else running}"
    check_response(capture, client.get(path))
    if capture["request"]["path"] == "/queue":
        queue = client.get("/queue").json()
        assert [i[1] for i in queue["queue_running"]] == [running]
        assert [i[1] for i in queue["queue_pending"]] == [pending]
    client.post("/queue", json={"clear": True})
    client.post("/interrupt")


# -- replays: queue, interrupt, prompt fields -------------------------------------------------
@replays("queue_delete_and_clear")
def replay_queue_delete_and_clear(
    capture: dict[str, Any], make_sim: Callable[..., SimServer]
) -> None:
    sim = make_sim(job_seconds=1.5)
    client = Client(sim)
    rec = Recorder(sim, "queue-owner")
    ids = {}
    for key in ("post_A", "post_B", "post_C"):
        ids[key] = client.submit(posted_prompt(capture[key]), "queue-owner")
        if key == "post_A":
            wait_running(client, ids[key])
    check_response(capture["queue_before"], client.get("/queue"))
    check_response(capture["delete_B"], client.post("/queue", json={"delete": [ids["post_B"]]}))
    check_response(capture["queue_after_delete_B"], client.get("/queue"))
    check_response(
        capture["delete_running_A"], client.post("/queue", json={"delete": [ids["post_A"]]})
    )
    check_response(capture["queue_after_delete_A"], client.get("/queue"))
    check_response(capture["clear"], client.post("/queue", json={"clear": True}))
    check_response(capture["queue_after_clear"], client.get("/queue"))
    rec.wait_done(ids["post_A"])
    assert_shape(only_entry(capture["history_A"]["response_json"]), client.history(ids["post_A"]))
    check_response(capture["history_B_deleted"], client.get(f"/history/{ids['post_B']}"))
    check_response(capture["history_C_cleared"], client.get(f"/history/{ids['post_C']}"))
    compare_summary(capture["ws_summary"], rec.summary(), timing_dependent=True)


@replays("interrupt_global_no_body")
def replay_interrupt_global(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim()
    client = Client(sim)
    prompt = posted_prompt(capture["post"])
    warm = copy.deepcopy(prompt)
    warm["3"]["inputs"].update(seed=1, steps=1)
    client.run(warm)  # the capture had the loader and text encoders cached already
    sim.job_seconds = 30
    rec = Recorder(sim, "interrupted")
    prompt_id = client.submit(prompt, "interrupted")
    wait_progress(rec, prompt_id)
    check_response(capture["interrupt"], client.replay(capture["interrupt"]["request"]))
    rec.wait_done(prompt_id)
    compare_summary(capture["summary"], rec.summary())
    entry = client.history(prompt_id)
    expected = only_entry(capture["history"]["response_json"])
    assert_shape(expected, entry)
    assert (entry["status"]["status_str"], entry["status"]["completed"]) == ("error", False)
    assert messages_of(entry, "execution_interrupted")["node_id"] == "3"


@replays("interrupt_running")
def replay_interrupt_running(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim(job_seconds=30)
    client = Client(sim)
    rec = Recorder(sim, "interrupt-owner")
    first = client.submit(posted_prompt(capture["post_A"]), "interrupt-owner")
    wait_progress(rec, first)
    second = client.submit(posted_prompt(capture["post_B"]), "interrupt-owner")
    ignored = client.post("/interrupt", json={"prompt_id": second})
    check_response(capture["interrupt_naming_pending_B"], ignored)
    before = sum(1 for f in rec.texts() if f["type"] == "progress")
    wait_progress(rec, first, before + 1)  # still running after the ignored interrupt
    sim.job_seconds = 0.05  # B is planned when it starts
    check_response(
        capture["interrupt_naming_A"], client.post("/interrupt", json={"prompt_id": first})
    )
    rec.wait_done(second)
    compare_summary(capture["summary"], rec.summary(), timing_dependent=True)
    assert_shape(only_entry(capture["history_A"]["response_json"]), client.history(first))
    assert_shape(only_entry(capture["history_B"]["response_json"]), client.history(second))


@replays("interrupt_while_idle")
def replay_interrupt_idle(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    client = Client(make_sim())
    check_response(capture["interrupt"], client.replay(capture["interrupt"]["request"]))
    expected = only_entry(capture["then_run_model_free"]["response_json"])
    entry = client.run(expected["prompt"][2], "after-idle-interrupt")
    assert_shape(expected, entry)
    assert entry["status"]["status_str"] == "success"


@replays("prompt_client_supplied_prompt_id", "prompt_duplicate_prompt_id")
def replay_client_prompt_id(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    client = Client(make_sim())
    if "history_list_keys_tail" in capture:  # the duplicate follows the first use of the id
        client.run(posted_prompt(load("prompt_client_supplied_prompt_id")["post"]), "first-use")
    response = client.replay(capture["post"]["request"])
    check_response(capture["post"], response)
    assert response.json()["prompt_id"] == capture["post"]["response_json"]["prompt_id"]
    entry = client.history(response.json()["prompt_id"])
    assert_shape(only_entry(capture["history"]["response_json"]), entry)
    assert entry["prompt"][2] == posted_prompt(capture["post"])
    if "history_list_keys_tail" in capture:
        assert list(client.get("/history").json())[-1] == capture["history_list_keys_tail"][-1]


@replays("prompt_partial_valid_outputs")
def replay_partial_valid(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    client = Client(make_sim())
    response = client.replay(capture["post"]["request"])
    check_response(capture["post"], response)
    entry = client.history(response.json()["prompt_id"])
    expected = only_entry(capture["history"]["response_json"])
    assert_shape(expected, entry)
    assert entry["prompt"][4] == expected["prompt"][4]
    assert entry["outputs"] == expected["outputs"]


@replays("prompt_validation_failure_ws_and_number")
def replay_validation_failure_ws(
    capture: dict[str, Any], make_sim: Callable[..., SimServer]
) -> None:
    sim = make_sim()
    client = Client(sim)
    rec = Recorder(sim, "numbers")
    numbers, ids = [], []
    for post in capture["posts"]:
        body = copy.deepcopy(post["request"]["json_body"])
        body["client_id"] = "numbers"
        response = client.post("/prompt", json=body)
        check_response(post, response)
        numbers.append(response.json().get("number"))
        ids.append(response.json().get("prompt_id"))
    assert numbers[-1] - numbers[0] == len(capture["posts"]) - 1  # the 400s used up numbers
    rec.wait_done(ids[-1])
    compare_summary(capture["ws_summary"], rec.summary(), timing_dependent=True)


@replays("prompt_number_and_front")
def replay_number_and_front(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim(job_seconds=30)
    client = Client(sim)
    rec = Recorder(sim, "ordering")
    blocker = client.submit(posted_prompt(capture["blocker_post"]), "ordering")
    wait_running(client, blocker)
    labels = {}
    for post in capture["posts"]:
        response = client.post(
            "/prompt", json={**post["post"]["request"]["json_body"], "client_id": "ordering"}
        )
        check_response(post["post"], response)
        number = response.json()["number"]
        if "number" in post["extra"]:
            assert number == float(post["extra"]["number"]) and isinstance(number, float)
        labels[response.json()["prompt_id"]] = post["label"]
    captured_pending = [
        i[1] for i in capture["queue_while_blocked"]["response_json"]["queue_pending"]
    ]
    captured_labels = {
        p["post"]["response_json"]["prompt_id"]: p["label"] for p in capture["posts"]
    }
    pending = client.get("/queue").json()["queue_pending"]
    assert [labels[i[1]] for i in pending] == [captured_labels[i] for i in captured_pending]
    sim.job_seconds = 0.01
    client.post("/interrupt", json={"prompt_id": blocker})
    for prompt_id in labels:
        rec.wait_done(prompt_id)
    starts = [f["data"]["prompt_id"] for f in rec.texts() if f["type"] == "execution_start"]
    assert [labels[i] for i in starts if i in labels] == capture["execution_order"]


@replays("restart_history_and_queue_lost")
def replay_restart(capture: dict[str, Any], make_sim: Callable[..., SimServer]) -> None:
    before = make_sim()
    client = Client(before)
    prompt = posted_prompt(capture["first_post_after_restart"])
    old = client.run(prompt)  # hotfolder/empty_00001_.png
    before.job_seconds = 30
    running = client.submit(txt2img(seed=8080, steps=200), "restart")
    wait_running(client, running)
    pending = client.submit(txt2img(seed=8081, steps=4), "restart")
    before.stop()
    after = Client(make_sim())  # same output folder, new process state
    check_response(capture["history_after_restart"], after.get("/history"))
    check_response(capture["queue_after_restart"], after.get("/queue"))
    check_response(
        capture["history_of_old_id_after_restart"], after.get(f"/history/{old['prompt'][1]}")
    )
    check_response(
        capture["history_of_running_prompt_after_restart"], after.get(f"/history/{running}")
    )
    assert after.get(f"/history/{pending}").json() == {}
    response = after.replay(capture["first_post_after_restart"]["request"])
    check_response(capture["first_post_after_restart"], response)
    assert response.json()["number"] == 0
    entry = after.history(response.json()["prompt_id"])
    assert_shape(only_entry(capture["first_history_after_restart"]["response_json"]), entry)
    assert entry["outputs"]["2"]["images"][0]["filename"] == "empty_00002_.png"  # counter from disk
