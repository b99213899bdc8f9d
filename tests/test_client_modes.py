"""The client against both kinds of ComfyUI the simulator plays: 0.3.64 (as recorded) and a
current one (the jobs API, canonical prompt ids, more keys in output entries, a cache that
keeps earlier prompts). Features are detected, never looked up by version."""

from __future__ import annotations

import json
import uuid

import pytest
from harness import TEMPLATE, HotFolder, make_config, wait_for

from hotfolder.comfy.client import ComfyClient
from hotfolder.sim.server import SimServer

MODES = ["0.3.64", "newer"]


def _workflow(prompt: str) -> dict:
    workflow = json.loads(TEMPLATE.read_text())
    for node in workflow.values():
        if node["class_type"] == "CLIPTextEncode":
            node["inputs"]["text"] = prompt
            break
    return workflow


@pytest.mark.parametrize("mode", MODES)
def test_lookup_and_cancel_by_feature_detection(mode):
    with SimServer(host="127.0.0.1", port=0, job_seconds=1.0, api=mode) as sim:
        client = ComfyClient(sim.url)
        assert client.where(str(uuid.uuid4())) == "unknown"
        assert client.jobs_api is (mode == "newer")
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        client.submit(_workflow("first"), prompt_id=first, client_id="c")
        client.submit(_workflow("second"), prompt_id=second, client_id="c")
        assert client.where(second) == "queued"
        wait_for(lambda: client.where(first) == "running", what="the first to run")
        client.cancel(second)  # pending: taken off the queue, never run
        wait_for(lambda: client.where(first) == "done", what="the first to finish")
        assert client.history(first)["status"]["status_str"] == "success"
        # one prompt at a time, in order: an empty queue now means the second ran or never will
        wait_for(lambda: client.queue_remaining() == 0, what="the queue to empty")
        assert client.history(second) is None or \
            client.history(second)["status"]["status_str"] != "success"
        assert client.where(second) in ("unknown", "done")  # gone, or "cancelled" (newer)


@pytest.mark.parametrize("mode", MODES)
def test_jobs_run_on_both_and_an_earlier_identical_job_gets_a_fresh_file(tmp_path, mode):
    with SimServer(host="127.0.0.1", port=0, job_seconds=0.05, api=mode,
                   output_dir=tmp_path / "comfy-out") as sim:
        hot = HotFolder(base=tmp_path, server_url=sim.url, config=make_config(tmp_path, sim.url))
        hot.start()
        try:
            for name in ("a.txt", "b.txt", "a-again.txt"):  # the earlier one, not the last
                hot.drop(name, "a lighthouse" if name.startswith("a") else "an owl")
                assert hot.finished(name) == "done", hot.log()[-3000:]
            for stem in ("a", "b", "a-again"):
                assert (hot.dir("outbox") / f"{stem}_00001.png").stat().st_size > 0
                assert len(hot.sidecar(stem)["prompt_id"]) == 36
        finally:
            hot.stop()


def test_a_front_submission_runs_before_the_prompts_queued_earlier():
    with SimServer(host="127.0.0.1", port=0, job_seconds=0.5) as sim:
        client = ComfyClient(sim.url)
        ids = [str(uuid.uuid4()) for _ in range(4)]
        for prompt_id, text in zip(ids[:3], ("running", "queued", "queued too"), strict=True):
            client.submit(_workflow(text), prompt_id=prompt_id, client_id="c")
        client.submit(_workflow("rush"), prompt_id=ids[3], client_id="c", front=True)
        wait_for(lambda: all(client.history(p) for p in ids), what="every prompt run")
        with sim.engine.mutex:
            ran = [p for p in sim.engine.history if p in ids]
        # ahead of the prompts still queued when it came (never of the one running)
        assert ran[0] == ids[0] and ran.index(ids[3]) < ran.index(ids[2])
