"""Simulator behaviour beyond the captures: fault switches, CLI, quirks, files, concurrency."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from PIL import Image
from simtools import OPEN, wait_until

from hotfolder.sim import Faults, SimServer, main

FIXTURES = Path(__file__).parent / "fixtures" / "comfy-api"
TIMEOUT = 15.0
TROUBLE = "500 Internal Server Error\n\nServer got itself in trouble"


def workflow(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "workflows" / f"{name}.json").read_text())


def txt2img(seed: int = 42, steps: int = 4, prefix: str = "hotfolder/txt2img") -> dict[str, Any]:
    prompt = workflow("txt2img_tiny_sd15")
    prompt["3"]["inputs"].update(seed=seed, steps=steps)
    prompt["9"]["inputs"]["filename_prefix"] = prefix
    return prompt


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
        return image.size


def text_chunks(data: bytes) -> dict[str, str]:
    """The tEXt chunks of a PNG, by a plain walk over its chunks (SaveImage writes tEXt)."""
    out, pos = {}, 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"tEXt":
            key, _, value = data[pos + 8 : pos + 8 + length].partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + length
    return out






class Api:
    def __init__(self, sim: SimServer) -> None:
        self.url = sim.url
        self.session = requests.Session()
        OPEN.append(self.session)

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.url + path, timeout=TIMEOUT)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url + path, timeout=TIMEOUT, **kwargs)

    def submit(self, prompt: dict[str, Any], client_id: str | None = None, **extra: Any) -> str:
        body = {"prompt": prompt, **extra}
        if client_id:
            body["client_id"] = client_id
        response = self.post("/prompt", json=body)
        assert response.status_code == 200, response.text
        return response.json()["prompt_id"]

    def history(self, prompt_id: str) -> dict[str, Any]:
        return wait_until(
            lambda: self.get(f"/history/{prompt_id}").json().get(prompt_id), "history"
        )


class Socket:
    """A WebSocket client that keeps every text frame it receives."""

    def __init__(self, sim: SimServer, client_id: str) -> None:
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{sim.port}/ws?clientId={client_id}", timeout=TIMEOUT
        )
        OPEN.append(self.ws)
        self.messages: list[dict[str, Any]] = []
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
            if opcode == websocket.ABNF.OPCODE_TEXT:
                with self.cond:
                    self.messages.append(json.loads(data))
                    self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, TIMEOUT), f"timed out waiting for {what}"

    def wait_done(self, prompt_id: str) -> None:
        self.wait(
            lambda: any(
                m["type"] == "executing"
                and m["data"].get("node") is None
                and m["data"].get("prompt_id") == prompt_id
                for m in self.messages
            ),
            "done",
        )

    def types(self) -> list[str]:
        with self.cond:
            return [m["type"] for m in self.messages]

    def close(self) -> None:
        """Closing handshake without a second reader: the reader thread gets the reply."""
        self.ws.send_close()
        self.thread.join(TIMEOUT)
        self.ws.shutdown()




# -- public API ----------------------------------------------------------------------------
def test_public_api_defaults_and_url(make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim()
    assert sim.port > 0 and sim.url == f"http://127.0.0.1:{sim.port}"
    assert Faults() == Faults(0.0, 0, 0.0, 0, 0.0, 0, False)
    assert Api(sim).get("/system_stats").json()["system"]["comfyui_version"] == "0.3.64"
    sim.stop()
    sim.stop()  # idempotent


def test_unknown_paths_and_methods(make_sim: Callable[..., SimServer]) -> None:
    api = Api(make_sim())
    missing = api.get("/nope")
    assert (missing.status_code, missing.text) == (404, "404: Not Found")
    assert api.get("/interrupt").status_code == 405
    assert api.get("/models/not_a_folder").status_code == 404
    assert "sd_xl_base_1.0.safetensors" in api.get("/models/checkpoints").json()
    assert "v1-5-pruned-emaonly.safetensors" in api.get("/models/checkpoints").json()


def test_object_info_uses_the_simulator_model_lists(make_sim: Callable[..., SimServer]) -> None:
    api = Api(make_sim())
    info = api.get("/object_info/CheckpointLoaderSimple").json()["CheckpointLoaderSimple"]
    assert info["input"]["required"]["ckpt_name"][0] == api.get("/models/checkpoints").json()
    upscale = api.get("/object_info/UpscaleModelLoader").json()["UpscaleModelLoader"]
    assert (
        upscale["input"]["required"]["model_name"][1]["options"]
        == api.get("/models/upscale_models").json()
    )
    assert (
        "example.png"
        in api.get("/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][0]
    )


# -- faults ----------------------------------------------------------------------------------
def test_http_5xx_next_is_not_queued(make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim()
    api = Api(sim)
    assert api.post("/sim/faults", json={"http_5xx_next": 1}).json()["http_5xx_next"] == 1
    failed = api.post("/prompt", json={"prompt": workflow("empty_image_save")})
    assert (failed.status_code, failed.text) == (500, TROUBLE)
    assert failed.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert api.get("/sim/stats").json()["prompts_received"] == 0
    assert api.get("/sim/faults").json()["http_5xx_next"] == 0
    api.history(api.submit(workflow("empty_image_save")))
    stats = api.get("/sim/stats").json()
    assert (stats["prompts_received"], stats["http_5xx_injected"]) == (1, 1)


def test_http_5xx_rate_one_always_fails(make_sim: Callable[..., SimServer]) -> None:
    api = Api(make_sim(faults=Faults(http_5xx_rate=1.0)))
    for _ in range(3):
        assert api.post("/prompt", json={"prompt": workflow("empty_image_save")}).status_code == 500
    assert api.get("/queue").json() == {"queue_running": [], "queue_pending": []}


def test_fail_next_raises_at_the_sampler_then_recovers(make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim()
    api = Api(sim)
    sim.set_faults(fail_next=1)
    sock = Socket(sim, "faulty")
    failed = api.submit(txt2img(seed=5), "faulty")
    sock.wait_done(failed)
    error = next(m["data"] for m in sock.messages if m["type"] == "execution_error")
    captured = json.loads((FIXTURES / "ws_runtime_error.json").read_text())
    expected = next(
        f["json"]["data"] for f in captured["frames"] if f["json"]["type"] == "execution_error"
    )
    assert set(error) == set(expected)
    assert (error["node_id"], error["node_type"], error["exception_type"]) == (
        "3",
        "KSampler",
        "torch.OutOfMemoryError",
    )
    assert isinstance(error["traceback"], list) and error["traceback"]
    assert sock.types()[-3:] == ["execution_error", "status", "executing"]
    entry = api.history(failed)
    assert (entry["status"]["status_str"], entry["status"]["completed"]) == ("error", False)
    ok = api.submit(txt2img(seed=5), "faulty")
    assert api.history(ok)["status"]["status_str"] == "success"
    assert api.get("/sim/stats").json()["executions_failed"] == 1


def test_error_rate_without_sampler_and_when_fully_cached(
    make_sim: Callable[..., SimServer],
) -> None:
    sim = make_sim()
    api = Api(sim)
    prompt = workflow("empty_image_save")
    assert api.history(api.submit(prompt))["status"]["status_str"] == "success"
    sim.set_faults(error_rate=1.0)
    entry = api.history(api.submit(prompt))  # fully cached, still made to fail
    error = next(data for name, data in entry["status"]["messages"] if name == "execution_error")
    assert (error["node_type"], error["exception_type"]) == ("SaveImage", "RuntimeError")
    sim.set_faults(error_rate=0.0)
    assert api.history(api.submit(prompt))["status"]["status_str"] == "success"


def test_no_ws_refuses_the_upgrade(make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim(faults=Faults(no_ws=True))
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"ws://127.0.0.1:{sim.port}/ws?clientId=x", timeout=TIMEOUT)
    assert refused.value.status_code == 404
    assert Api(sim).get("/queue").status_code == 200  # HTTP unaffected


def test_drop_ws_after_closes_each_socket(make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim(faults=Faults(drop_ws_after=3))
    sock = Socket(sim, "dropped")
    prompt_id = Api(sim).submit(workflow("empty_image_save"), "dropped")
    sock.wait(lambda: sock.closed, "server close")
    assert sock.types() == ["status", "status", "status"]
    Api(sim).history(prompt_id)  # the run itself is unaffected


def test_fault_endpoint_validates_and_merges(make_sim: Callable[..., SimServer]) -> None:
    api = Api(make_sim())
    assert api.post("/sim/faults", json={"nope": 1}).status_code == 400
    assert api.post("/sim/faults", json={"error_rate": 2}).status_code == 400
    assert api.post("/sim/faults", json=[1]).status_code == 400
    merged = api.post("/sim/faults", json={"slow_seconds": 0.01, "no_ws": True}).json()
    assert merged == {**Faults().__dict__, "slow_seconds": 0.01, "no_ws": True}
    assert api.get("/sim/faults").json() == merged
    assert api.get("/queue").status_code == 200  # slow, not broken


# -- quirks and files ----------------------------------------------------------------------
def test_second_socket_with_same_id_goes_deaf(make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim()
    api = Api(sim)
    old, new = Socket(sim, "shared"), None
    old.wait(lambda: len(old.messages) >= 1, "first status")
    new = Socket(sim, "shared")
    new.wait(lambda: len(new.messages) >= 1, "first status")
    old.close()
    wait_until(lambda: api.get("/sim/stats").json()["websockets"] == 0, "sid popped")
    api.history(api.submit(workflow("empty_image_save"), "shared"))
    assert new.types() == ["status"]  # the old socket's close removed the new one's entry


def test_same_number_and_prompt_id_keeps_worker_alive(make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim(job_seconds=30)
    api = Api(sim)
    blocker = api.submit(txt2img(steps=50))
    wait_until(lambda: api.get("/queue").json()["queue_running"], "blocker running")
    for color in (1, 1, 2):
        prompt = workflow("empty_image_save")
        prompt["1"]["inputs"]["color"] = color
        response = api.post("/prompt", json={"prompt": prompt, "prompt_id": "same-id", "number": 7})
        assert response.json()["number"] == 7.0
    sim.job_seconds = 0.01
    api.post("/interrupt", json={"prompt_id": blocker})
    wait_until(
        lambda: api.get("/prompt").json()["exec_info"]["queue_remaining"] == 0, "queue drained"
    )
    assert api.history("same-id")["status"]["status_str"] == "success"
    assert (
        api.history(api.submit(workflow("empty_image_save")))["status"]["status_str"] == "success"
    )


def test_saved_pngs_carry_the_prompt_and_differ_by_seed_and_text(
    make_sim: Callable[..., SimServer],
) -> None:
    sim = make_sim()
    api = Api(sim)

    def image(prompt: dict[str, Any]) -> tuple[str, bytes]:
        entry = api.history(api.submit(prompt))
        item = entry["outputs"]["9"]["images"][0]
        data = api.get(
            f"/view?filename={item['filename']}&subfolder={item['subfolder']}&type=output"
        ).content
        return item["filename"], data

    _, first = image(txt2img(seed=1, prefix="hotfolder/png"))
    assert png_size(first) == (8, 8)  # 64x64 request: the latent size
    assert json.loads(text_chunks(first)["prompt"]) == txt2img(seed=1, prefix="hotfolder/png")
    assert image(txt2img(seed=2, prefix="hotfolder/png"))[1] != first
    other = txt2img(seed=1, prefix="hotfolder/png")
    other["6"]["inputs"]["text"] = "a lighthouse at night"
    assert image(other)[1] != first
    files = sorted(os.listdir(Path(sim.output_dir) / "hotfolder"))
    again_name, _ = image(other)  # identical resubmission: cached, no new file
    assert sorted(os.listdir(Path(sim.output_dir) / "hotfolder")) == files
    assert again_name == files[-1]
    # the editor sends its graph as extra_pnginfo.workflow: SaveImage embeds it beside the prompt
    gui = {"nodes": [{"id": 9, "type": "SaveImage"}], "links": []}
    seen = api.history(api.submit(txt2img(seed=3, prefix="hotfolder/wf"),
                                  extra_data={"extra_pnginfo": {"workflow": gui}}))
    item = seen["outputs"]["9"]["images"][0]
    chunks = text_chunks(api.get(f"/view?filename={item['filename']}&subfolder="
                                 f"{item['subfolder']}&type=output").content)
    assert json.loads(chunks["workflow"]) == gui and "prompt" in chunks


def test_batch_size_and_other_output_nodes(make_sim: Callable[..., SimServer]) -> None:
    api = Api(make_sim())
    prompt = txt2img(prefix="hotfolder/batch")
    prompt["5"]["inputs"].update(width=2048, height=512, batch_size=3)
    prompt["10"] = {
        "class_type": "SaveAnimatedWEBP",
        "inputs": {
            "images": ["8", 0],
            "filename_prefix": "anim",
            "fps": 6.0,
            "lossless": True,
            "quality": 80,
            "method": "default",
        },
    }
    prompt["11"] = {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}
    outputs = api.history(api.submit(prompt))["outputs"]
    assert [i["filename"] for i in outputs["9"]["images"]] == [
        "batch_00001_.png",
        "batch_00002_.png",
        "batch_00003_.png",
    ]
    assert outputs["10"]["images"][0]["filename"] == "anim_00001_.webp"
    assert outputs["10"]["animated"] == [True]
    assert outputs["11"]["text"][0].startswith("{'samples'")
    data = api.get(
        f"/view?filename={outputs['9']['images'][0]['filename']}&subfolder=hotfolder"
    ).content
    assert png_size(data) == (128, 64)


def test_history_is_capped(
    make_sim: Callable[..., SimServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hotfolder.sim import engine

    monkeypatch.setattr(engine, "MAX_HISTORY", 3)
    api = Api(make_sim(job_seconds=0))
    ids = [api.submit(workflow("empty_image_save"), f"cap-{i}") for i in range(5)]
    api.history(ids[-1])
    assert list(api.get("/history").json()) == ids[-3:]


def test_history_exists_before_the_final_executing_message(
    make_sim: Callable[..., SimServer],
) -> None:
    sim = make_sim()
    api = Api(sim)
    sock = Socket(sim, "order")
    prompt_id = api.submit(txt2img(seed=77), "order")
    sock.wait_done(prompt_id)
    assert sock.types()[-3:] == ["execution_success", "status", "executing"]
    assert api.get(f"/history/{prompt_id}").json()[prompt_id]["status"]["status_str"] == "success"


def test_ws_ping_and_feature_flags(make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim()
    ws = websocket.create_connection(f"ws://127.0.0.1:{sim.port}/ws", timeout=TIMEOUT)
    OPEN.append(ws)
    ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
    ws.ping(b"hello")
    seen: dict[int, Any] = {}
    while websocket.ABNF.OPCODE_PONG not in seen or len(seen) < 2:
        opcode, data = ws.recv_data(control_frame=True)
        seen.setdefault(opcode, data)
        if opcode == websocket.ABNF.OPCODE_TEXT and b"feature_flags" in data:
            seen["flags"] = json.loads(data)
    assert seen[websocket.ABNF.OPCODE_PONG] == b"hello"
    assert seen["flags"]["data"] == Api(sim).get("/features").json()
    ws.close()


# -- concurrency and CLI -------------------------------------------------------------------
def test_dozens_of_keep_alive_clients(make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim()
    results: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        with requests.Session() as session:
            codes = [
                session.get(sim.url + path, timeout=TIMEOUT).status_code
                for path in (
                    "/queue",
                    "/prompt",
                    "/history",
                    "/system_stats",
                    "/object_info/KSampler",
                )
            ]
        with lock:
            results.extend(codes)

    threads = [threading.Thread(target=client) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert results == [200] * 200


def test_cli_port_file_and_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from hotfolder.sim import main; sys.exit(main(sys.argv[1:]))",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--job-seconds",
            "0.01",
            "--output-dir",
            str(tmp_path / "out"),
            "--random-seed",
            "3",
            "--error-rate",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        port = int(
            wait_until(lambda: port_file.exists() and port_file.read_text().strip(), "port file")
        )
        line = process.stdout.readline()
        assert line == f"ComfyUI simulator listening on http://127.0.0.1:{port}\n"
        with requests.get(f"http://127.0.0.1:{port}/queue", timeout=TIMEOUT) as response:
            assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def test_cli_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        main(["--error-rate", "2"])
