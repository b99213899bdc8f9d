"""The status page and /metrics of the real daemon, against the simulator, in a real browser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
from harness import HotFolder, free_port, make_config, wait_for
from prometheus_client.parser import text_string_to_metric_families

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _daemon(tmp_path: Path, url: str, **http: Any) -> tuple[HotFolder, str]:
    port = free_port()
    config = make_config(tmp_path, url)
    config["http"] = {"listen": f"127.0.0.1:{port}", **http}
    config["stop_grace_seconds"] = 1
    return HotFolder(base=tmp_path, server_url=url, config=config), f"http://127.0.0.1:{port}"


def _query(browser: Any, script: str) -> Any:
    return browser.execute_script(script)


def test_page_shows_progress_thumbnails_failures_and_a_down_server(tmp_path, make_sim, browser):
    from selenium.webdriver.common.by import By

    sim = make_sim()
    gone = make_sim()
    gone_url = gone.url
    gone.stop()  # a server that was there and went down
    hot, base = _daemon(tmp_path, sim.url, allow_actions=True)
    hot.config["servers"] = [{"url": sim.url, "name": "gpu1"}, {"url": gone_url, "name": "gpu2"}]
    hot.start()
    try:
        hot.drop("fox.txt", "a red fox in the snow")
        assert hot.finished("fox.txt") == "done"
        sim.faults.fail_next = 1
        hot.drop("boom.txt", "this one raises inside a node")
        assert hot.finished("boom.txt") == "failed"
        reason = hot.error("boom.txt")["error"]
        markup = "<img src=x onerror=alert(1)>.json"  # markup in a name stays text
        hot.drop(markup, "{ not json", stale=True)
        assert hot.finished(markup) == "failed"

        browser.get(base + "/")
        wait_for(lambda: browser.find_elements(
            By.CSS_SELECTOR, '.server[data-server="gpu2"][data-state="down"]'),
            what="gpu2 shown as down")
        assert browser.find_elements(By.CSS_SELECTOR,
                                     '.server[data-server="gpu1"][data-state="up"]')
        assert "unreachable" in browser.find_element(
            By.CSS_SELECTOR, '.server[data-server="gpu2"] .error').text

        thumb = wait_for(lambda: browser.find_elements(
            By.CSS_SELECTOR, 'figure.finished[data-job="fox.txt"] img'), what="a thumbnail")[0]
        wait_for(lambda: browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", thumb),
            what="the thumbnail to load")
        assert 0 < browser.execute_script("return arguments[0].naturalWidth", thumb) <= 256
        src = thumb.get_attribute("src")
        assert src == base + "/thumb/main/fox_00001.png"
        served = requests.get(src, timeout=10)
        assert served.headers["Content-Type"] == "image/jpeg"  # scaled and re-encoded
        assert served.content != (hot.dir("outbox") / "fox_00001.png").read_bytes()

        failure = wait_for(lambda: browser.find_elements(
            By.CSS_SELECTOR, 'li.failure[data-job="boom.txt"] .reason'), what="the failure")[0]
        assert failure.text == reason
        marked = wait_for(lambda: [li for li in browser.find_elements(By.CSS_SELECTOR, "li.failure")
                                   if li.get_attribute("data-job") == markup], what="markup")[0]
        assert markup in marked.text and not marked.find_elements(By.TAG_NAME, "img")

        sim.job_seconds = 8  # 30 sampler steps of about 0.27 s
        hot.drop("slow.txt", "a slow one, to watch")
        seen: list[tuple[int, float]] = []  # (step, bar width in %) as the page shows them

        def progressed() -> bool:
            shown = _query(browser, "const bar = document.querySelector("
                                    "'li.job[data-job=\"slow.txt\"] .bar');"
                                    "return bar && bar.dataset.step ? [Number(bar.dataset.step),"
                                    " parseFloat(bar.firstChild.style.width)] : null")
            if shown is not None and (not seen or seen[-1][0] != shown[0]):
                seen.append((shown[0], shown[1]))
            return len(seen) >= 3

        wait_for(progressed, timeout=60, what="the progress bar to move")
        steps = [step for step, _ in seen]
        assert steps == sorted(steps) and 0 < steps[0] < steps[-1] <= 30
        assert all(abs(width - 100 * step / 30) < 0.01 for step, width in seen)
        shot = tmp_path / "status-page.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == PNG_MAGIC

        sim.job_seconds = 0.05
        browser.find_element(By.CSS_SELECTOR,
                             'li.failure[data-job="boom.txt"] button[data-retry]').click()
        wait_for(lambda: "moved back to the inbox" in browser.find_element(
            By.CSS_SELECTOR, 'li.failure[data-job="boom.txt"]').text, what="the retry")
        assert not (hot.dir("failed") / "boom.error.json").exists()
        assert hot.finished("slow.txt") == "done"
        assert hot.finished("boom.txt") == "done"
        wait_for(lambda: browser.find_elements(
            By.CSS_SELECTOR, 'figure.finished[data-job="boom.txt"] img'),
            what="the retried job among the finished")
    finally:
        hot.stop()


def _metrics(base: str) -> dict[str, Any]:
    """{(sample name, frozenset(labels)): value} from a scrape, through Prometheus' parser."""
    answer = requests.get(base + "/metrics", timeout=10)
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def test_metrics_and_api_status_match_the_folders(tmp_path, make_sim):
    sim = make_sim()
    hot, base = _daemon(tmp_path, sim.url)
    hot.start()
    try:
        health = requests.get(base + "/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["healthy"] is True
        sim.faults.http_5xx_next = 1  # one submit answered 500, then retried
        hot.drop("a.txt", "first")
        hot.drop("b.json", json.dumps({"prompt": "second", "batch_size": 2}))
        hot.drop("c.yaml", "prompt: x\nstepz: 3\n")
        hot.drop("d.json", "{", stale=True)
        for name in ("a.txt", "b.json", "c.yaml", "d.json"):
            hot.finished(name)
        sim.faults.fail_next = 1
        hot.drop("e.txt", "raises in a node")
        assert hot.finished("e.txt") == "failed"

        done = [p for p in hot.dir("done").iterdir()]
        failed = [p for p in hot.dir("failed").iterdir() if not p.name.endswith(".error.json")]
        assert (len(done), len(failed)) == (2, 3)

        def metrics_settled() -> dict[str, Any] | None:
            m = _metrics(base)
            total = sum(v for (n, _), v in m.items() if n == "hotfolder_jobs_total")
            return m if total == len(done) + len(failed) else None

        m = wait_for(metrics_settled, what="every finished job counted")
        main = frozenset({("folder", "main")})
        assert m[("hotfolder_jobs_total", main | {("outcome", "done")})] == len(done)
        assert m[("hotfolder_jobs_total", main | {("outcome", "failed")})] == len(failed)
        kinds = {dict(labels)["kind"]: v for (n, labels), v in m.items()
                 if n == "hotfolder_job_failures_total"}
        assert kinds == {"invalid": 2, "execution_error": 1}
        assert m[("hotfolder_job_duration_seconds_count", main)] == len(done)
        assert m[("hotfolder_job_duration_seconds_bucket", main | {("le", "+Inf")})] == len(done)
        assert m[("hotfolder_job_queue_wait_seconds_count", main)] == 3  # every job submitted
        assert m[("hotfolder_jobs_waiting", main)] == 0
        assert m[("hotfolder_jobs_in_flight", main)] == 0
        server = next(dict(labels)["server"] for (n, labels), _ in m.items()
                      if n == "hotfolder_server_up")
        assert m[("hotfolder_server_up", frozenset({("server", server)}))] == 1
        assert m[("hotfolder_server_errors_total", frozenset(
            {("server", server), ("operation", "submit"), ("kind", "http_5xx")}))] == 1
        assert m[("hotfolder_healthy", frozenset())] == 1

        for probe in ("/thumb/main/..%2fdone%2fa.txt", "/thumb/main/%2e%2e/done/a.txt",
                      "/thumb/main/a.json", "/thumb/main/b_00001.png/..%2f..%2fhotfolder.yaml"):
            assert requests.get(base + probe, timeout=10).status_code == 404, probe
        assert requests.get(base + "/thumb/main/b_00002.png", timeout=10).ok

        api = requests.get(base + "/api/status", timeout=10).json()
        cli = json.loads(subprocess.run(
            [sys.executable, "-m", "hotfolder", "status", "--json", "--config",
             str(hot.config_path)], capture_output=True, text=True, check=True,
            timeout=30).stdout)
        assert api.keys() == cli.keys() and api["daemon"]["running"] is True
        for ours, theirs in zip(api["folders"], cli["folders"], strict=True):
            assert ours.keys() == theirs.keys()
            for key in ("name", "counts", "recent_done", "recent_failed"):
                assert ours[key] == theirs[key], key
        folder = api["folders"][0]
        assert folder["counts"] == {"waiting": 0, "running": 0, "done": 2, "failed": 3}
        outputs = {d["job"]: d["outputs"] for d in folder["recent_done"]}
        assert outputs == {"a.txt": ["a_00001.png"], "b.json": ["b_00001.png", "b_00002.png"]}
        failures = folder["recent_failed"]
        assert failures[0]["job"] == "e.txt" and failures[0]["kind"] == "execution_error"
        assert {f["job"]: f["file"] for f in failures} == {"e.txt": "e.txt", "d.json": "d.json",
                                                          "c.yaml": "c.yaml"}
    finally:
        hot.stop()
    try:  # the daemon is gone, and its page with it
        requests.get(base + "/healthz", timeout=2)
    except requests.ConnectionError:
        pass
    else:
        raise AssertionError("the page still answers after the daemon stopped")
