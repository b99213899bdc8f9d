"""Batch jobs end to end: one dropped file, many runs, a folder of outputs and a manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import HotFolder, make_config, png_prompt, wait_for

from hotfolder.sim import SimServer


def manifest(hot: HotFolder, name: str) -> dict[str, Any]:
    return json.loads((hot.dir("outbox") / name / "manifest.json").read_text())


def images(hot: HotFolder, name: str) -> list[Path]:
    return sorted((hot.dir("outbox") / name).glob("*.png"))


def test_count_runs_consecutive_seeds_into_a_folder_with_a_manifest(hot):
    hot.start()
    hot.drop("fox.json", json.dumps({"prompt": "a red fox", "count": 3, "seed": 10}))
    assert hot.finished("fox.json") == "done"
    files = images(hot, "fox")
    assert [p.name for p in files] == ["fox-0001_00001.png", "fox-0002_00001.png",
                                       "fox-0003_00001.png"]
    m = manifest(hot, "fox")
    assert (m["status"], m["runs_total"], m["runs_done"], m["runs_failed"]) == ("done", 3, 3, 0)
    assert [r["seed"] for r in m["runs"]] == [10, 11, 12]
    assert [r["outputs"] for r in m["runs"]] == [[p.name] for p in files]
    assert len({r["prompt_id"] for r in m["runs"]}) == 3
    assert [png_prompt(p)["3"]["inputs"]["seed"] for p in files] == [10, 11, 12]
    assert not hot.in_processing()  # no record or journal left behind


def test_count_without_a_seed_gives_each_run_its_own_recorded_seed(hot):
    hot.start()
    hot.drop("cats.yaml", "prompt: a cat\ncount: 3\n")
    assert hot.finished("cats.yaml") == "done"
    m = manifest(hot, "cats")
    seeds = [r["seed"] for r in m["runs"]]
    assert len(set(seeds)) == 3
    assert [png_prompt(p)["3"]["inputs"]["seed"] for p in images(hot, "cats")] == seeds


def test_prompts_times_matrix_of_fields_and_node_inputs(hot):
    hot.start()
    spec = {"prompts": ["a lighthouse", "a harbour"], "seed": 7,
            "matrix": {"cfg": [5, 7], "KSampler.steps": [3, 4]}}
    hot.drop("grid.json", json.dumps(spec))
    assert hot.finished("grid.json") == "done"
    m = manifest(hot, "grid")
    assert m["runs_total"] == 8 and m["runs_done"] == 8
    asked = [(r["prompt"], r["fields"]["cfg"], r["set"]["KSampler.steps"]) for r in m["runs"]]
    assert asked == [(p, c, s) for p in spec["prompts"] for c in (5, 7) for s in (3, 4)]
    for run, path in zip(m["runs"], images(hot, "grid"), strict=True):
        graph = png_prompt(path)
        assert path.name == run["outputs"][0]
        assert graph["6"]["inputs"]["text"] == run["prompt"]
        assert (graph["3"]["inputs"]["cfg"], graph["3"]["inputs"]["steps"]) == asked[
            run["run"] - 1][1:]


def test_run_cap_refuses_a_typo_before_anything_runs(tmp_path, sim):
    hot = HotFolder(base=tmp_path, server_url=sim.url,
                    config=make_config(tmp_path, sim.url, limits={"max_runs": 50}))
    hot.start()
    try:
        hot.drop("oops.json", json.dumps({"prompt": "x", "count": 10**6}))
        assert hot.finished("oops.json") == "failed"
        error = hot.error("oops")
        assert "1000000 runs" in error["error"] and "limits.max_runs" in error["error"]
        assert sim.stats()["prompts_received"] == 0
    finally:
        hot.stop()


def test_csv_rows_are_runs_with_fields_and_node_inputs(hot):
    hot.start()
    hot.drop("shots.csv", "prompt,seed,cfg,KSampler.steps\n"
                          "a fox,1,6.5,3\n"
                          "\"a cat, sleeping\",2,,4\n")
    assert hot.finished("shots.csv") == "done"
    m = manifest(hot, "shots")
    assert [(r["prompt"], r["seed"], r["set"]) for r in m["runs"]] == [
        ("a fox", 1, {"KSampler.steps": 3}), ("a cat, sleeping", 2, {"KSampler.steps": 4})]
    graphs = [png_prompt(p) for p in images(hot, "shots")]
    assert graphs[0]["3"]["inputs"]["cfg"] == 6.5
    assert graphs[1]["3"]["inputs"]["cfg"] != 6.5  # empty cell: the template's value


def test_jsonl_lines_are_runs_and_a_bad_line_is_named(hot):
    hot.start()
    hot.drop("list.jsonl", '{"prompt": "one", "seed": 1}\n\n{"prompt": "two", "steps": 3}\n')
    hot.drop("bad.jsonl", '{"prompt": "one"}\n{"prompt": "two", "stepz": 3}\n')
    assert hot.finished("list.jsonl") == "done"
    assert [r["prompt"] for r in manifest(hot, "list")["runs"]] == ["one", "two"]
    assert hot.finished("bad.jsonl") == "failed"
    error = hot.error("bad")["error"]
    assert error.startswith("JSONL line 2:") and "'stepz'" in error and "'steps'" in error


def test_txt_lines_mode_makes_a_run_per_line(tmp_path, sim):
    hot = HotFolder(base=tmp_path, server_url=sim.url,
                    config=make_config(tmp_path, sim.url, txt_mode="lines"))
    hot.start()
    try:
        hot.drop("ideas.txt", "a fox\n\n# not this one\n  a cat  \n")
        assert hot.finished("ideas.txt") == "done"
        assert [r["prompt"] for r in manifest(hot, "ideas")["runs"]] == ["a fox", "a cat"]
        assert len(images(hot, "ideas")) == 2
    finally:
        hot.stop()


def test_a_partly_failed_batch_is_done_with_its_failures_listed(hot):
    hot.start()
    hot.drop("mixed.json", json.dumps({"prompt": "x", "seed": 1,
                                       "matrix": {"sampler": ["euler", "warp_drive"]}}))
    assert hot.finished("mixed.json") == "done"
    m = manifest(hot, "mixed")
    assert (m["status"], m["runs_done"], m["runs_failed"]) == ("partly done", 1, 1)
    good, bad = m["runs"]
    assert good["status"] == "done" and len(good["outputs"]) == 1
    assert bad["status"] == "failed" and bad["outputs"] == []
    assert "warp_drive" in bad["error"] and "sampler_name" in bad["error"]


def test_a_batch_fails_when_every_run_failed_or_any_if_the_folder_says_so(tmp_path, sim):
    hot = HotFolder(base=tmp_path, server_url=sim.url,
                    config=make_config(tmp_path, sim.url, batch_fail="any"))
    hot.start()
    try:
        hot.drop("allbad.json", json.dumps({"prompt": "x", "count": 2, "sampler": "nope"}))
        hot.drop("onebad.json", json.dumps({"prompt": "x",
                                            "matrix": {"sampler": ["euler", "nope"]}}))
        assert hot.finished("allbad.json") == "failed"
        assert hot.error("allbad")["error"].startswith("every run failed: run 1:")
        assert hot.finished("onebad.json") == "failed"
        error = hot.error("onebad")
        assert error["error"].startswith("1 of 2 runs failed: run 2:")
        assert error["kind"] == "batch_failed" and error["details"]["failed_runs"][0]["run"] == 2
        assert manifest(hot, "onebad")["runs"][0]["status"] == "done"  # its image is kept
    finally:
        hot.stop()


def test_a_batch_resumes_after_sigkill_without_running_anything_twice(tmp_path):
    with SimServer(host="127.0.0.1", port=0, job_seconds=0.4) as sim:
        config = make_config(tmp_path, sim.url)
        config["comfy"]["max_in_flight"] = 1
        hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
        hot.start()
        try:
            hot.drop("long.json", json.dumps({"prompt": "x", "count": 6, "seed": 100}))
            wait_for(lambda: len(images(hot, "long")) >= 2, what="two runs delivered")
            hot.kill()
            hot.start()
            assert hot.finished("long.json") == "done"
            m = manifest(hot, "long")
            assert m["runs_done"] == 6 and [r["seed"] for r in m["runs"]] == list(range(100, 106))
            assert [p.name for p in images(hot, "long")] == [
                f"long-{i:04d}_00001.png" for i in range(1, 7)]
            assert sim.stats()["prompts_received"] == 6  # none submitted twice
        finally:
            hot.stop()


def test_cancelling_a_batch_stops_its_runs_and_keeps_what_finished(tmp_path):
    with SimServer(host="127.0.0.1", port=0, job_seconds=0.5) as sim:
        hot = HotFolder(base=tmp_path, server_url=sim.url,
                        config=make_config(tmp_path, sim.url))
        hot.start()
        try:
            hot.drop("many.json", json.dumps({"prompt": "x", "count": 12, "seed": 1}))
            wait_for(lambda: len(images(hot, "many")) >= 2, what="two runs delivered")
            hot.drop("many.cancel", "")
            assert hot.finished("many.json") == "failed"
            error = hot.error("many")
            assert error["kind"] == "cancelled" and "a .cancel file asked for it" in error["error"]
            m = manifest(hot, "many")
            statuses = [r["status"] for r in m["runs"]]
            assert statuses.count("done") >= 2 and "cancelled" in statuses
            assert len(images(hot, "many")) == statuses.count("done")
            assert sim.stats()["prompts_received"] < 12
            hot.drop("after.txt", "a job of the same daemon, not cancelled")
            assert hot.finished("after.txt") == "done"
        finally:
            hot.stop()
