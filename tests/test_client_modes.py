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
