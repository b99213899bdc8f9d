"""`hotfolder status` and the status page show everything: batches among the finished and the
failed with their run counts, and inbox files that are not jobs, with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import requests
from harness import HotFolder, free_port, make_config, wait_for


def _status(hot: HotFolder, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotfolder", "status", "--config",
                           str(hot.config_path), *extra], capture_output=True, text=True,
                          check=True, timeout=30)


def _folder(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["folders"][0]


def test_batches_and_ignored_files_in_status_json_text_and_page(tmp_path, sim, browser):
    from selenium.webdriver.common.by import By

    port = free_port()
    config = make_config(tmp_path, sim.url)
    config["http"] = {"listen": f"127.0.0.1:{port}"}
    config["stop_grace_seconds"] = 1
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
    base = f"http://127.0.0.1:{port}"
    hot.start()
    try:
        hot.drop("grid.json", json.dumps({"prompts": ["a lighthouse", "a harbour"], "seed": 1,
                                          "matrix": {"sampler": ["euler", "warp_drive"]}}))
        hot.drop("allbad.json", json.dumps({"prompt": "x", "count": 2, "sampler": "nope"}))
        hot.drop("fox.txt", "a red fox")
        assert [hot.finished(n) for n in ("grid.json", "allbad.json", "fox.txt")] == \
            ["done", "failed", "done"]
        (hot.dir("inbox") / "notes.md").write_text("what to try next")
        (hot.dir("inbox") / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        (hot.dir("inbox") / ".photo.png.part").write_bytes(b"")  # a writer's: not listed

        def listed() -> dict[str, Any] | None:
            doc = requests.get(base + "/api/status", timeout=10).json()
            return doc if _folder(doc)["ignored_total"] == 2 else None

        api = wait_for(listed, what="the ignored files in /api/status")
        cli = json.loads(_status(hot, "--json").stdout)
        for doc in (api, cli):
            folder = _folder(doc)
            assert folder["counts"]["waiting"] == 0
            reasons = {i["file"]: i["reason"] for i in folder["ignored"]}
            assert reasons.keys() == {"notes.md", "photo.png"}
            assert reasons["notes.md"].startswith("extension .md is not one this folder takes "
                                                  "(.txt, .json,")
            assert reasons["photo.png"].startswith("a picture:")
            assert "image_mode: per-file" in reasons["photo.png"]
            done = {d["job"]: d for d in folder["recent_done"]}
            assert done.keys() == {"grid.json", "fox.txt"}
            assert done["fox.txt"]["batch"] is None
            assert done["fox.txt"]["outputs"] == ["fox_00001.png"]
            assert done["grid.json"]["batch"] == {
                "dir": "grid", "status": "partly done", "runs_total": 4, "runs_done": 2,
                "runs_failed": 2, "outputs": 2}
            assert folder["outbox"] == str(hot.dir("outbox"))
            [failed] = folder["recent_failed"]
            assert failed["job"] == "allbad.json" and failed["kind"] == "batch_failed"
            assert failed["batch"] == {"dir": "allbad", "status": "failed", "runs_total": 2,
                                       "runs_done": 0, "runs_failed": 2, "outputs": 0}

        text = _status(hot).stdout.splitlines()
        assert "folder main (" in text[1] and text[1].endswith(
            ": 0 waiting, 0 running, 2 done, 1 failed, 2 ignored")
        assert any(line.startswith("  ignored notes.md: extension .md is not one") for line in text)

        browser.get(base + "/")
        figure = wait_for(lambda: browser.find_elements(
            By.CSS_SELECTOR, 'figure.finished.batch[data-job="grid.json"]'),
            what="the batch among the finished")[0]
        assert "2/4" in figure.text and "2 failed" in figure.text
        link = figure.find_element(By.CSS_SELECTOR, "a.dir")
        assert link.text == "outbox/grid/"
        assert link.get_attribute("href") == (hot.dir("outbox") / "grid").as_uri() + "/"
        assert browser.find_elements(By.CSS_SELECTOR, 'figure.finished[data-job="fox.txt"] img')
        runs = browser.find_element(By.CSS_SELECTOR, 'li.failure[data-job="allbad.json"] .runs')
        assert runs.text == "batch: 0 of 2 runs done, 2 failed"
        ignored = {li.get_attribute("data-file"): li.find_element(By.CSS_SELECTOR, ".reason").text
                   for li in browser.find_elements(By.CSS_SELECTOR, "li.ignored")}
        assert ignored == {i["file"]: i["reason"] for i in _folder(api)["ignored"]}
    finally:
        hot.stop()
    stopped = json.loads(_status(hot, "--json").stdout)["daemon"]
    assert stopped["running"] is False and stopped["stopped_at"]  # said at once, not in 15 s
