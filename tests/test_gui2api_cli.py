"""`hotfolder convert` and `hotfolder check` with GUI-format workflows."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from harness import make_config

from hotfolder.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
PAIR = FIXTURES / "gui2api" / "image_sdxl_simple"
OBJECT_INFO = FIXTURES / "comfy-api" / "object_info_full.json"


pytestmark = pytest.mark.usefixtures("restore_logging")


def _unknown_node(tmp_path: Path) -> Path:
    gui = json.loads((PAIR / "gui.json").read_text())
    next(n for n in gui["nodes"] if n["id"] == 12)["type"] = "KSamplerUltra"
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(gui))
    return path


def test_convert_with_saved_object_info_prints_the_frontends_prompt(capsys):
    assert main(["convert", str(PAIR / "gui.json"), "--object-info", str(OBJECT_INFO)]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((PAIR / "api.json").read_text())


def test_convert_with_a_server_writes_the_output_file(tmp_path, sim, capsys):
    target = tmp_path / "api.json"
    assert main(["convert", str(PAIR / "gui.json"), "--server", sim.url, "-o", str(target)]) == 0
    assert capsys.readouterr().out == ""
    api = json.loads(target.read_text())
    assert api["12"]["class_type"] == "KSampler" and api["12"]["inputs"]["steps"] == 25


def test_convert_names_the_node_it_cannot_convert(tmp_path, capsys):
    assert main(["convert", str(_unknown_node(tmp_path)), "--object-info",
                 str(OBJECT_INFO)]) == 1
    err = capsys.readouterr().err
    assert "node 12 (KSamplerUltra) is a node type this server does not have" in err


def test_convert_unreachable_server_and_unreadable_files(tmp_path, capsys):
    assert main(["convert", str(PAIR / "gui.json"), "--server", "http://127.0.0.1:9"]) == 1
    assert "cannot get the node definitions" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "nope.json"), "--object-info",
                 str(OBJECT_INFO)]) == 2
    assert "cannot read" in capsys.readouterr().err
    api = tmp_path / "api.json"
    api.write_text((PAIR / "api.json").read_text())
    assert main(["convert", str(api), "--object-info", str(OBJECT_INFO)]) == 0
    out = capsys.readouterr()
    assert "already in API format" in out.err and json.loads(out.out) == json.loads(api.read_text())


def _config(tmp_path: Path, url: str, gui: Path) -> Path:
    config = make_config(tmp_path, url)
    config["workflows"]["statue"] = str(gui)
    config["folders"].append({"name": "statues", "root": "hot2", "workflow": "statue"})
    path = tmp_path / "hotfolder.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_check_says_a_gui_template_will_be_converted_and_that_it_can_be(tmp_path, sim, capsys):
    assert main(["check", "--config", str(_config(tmp_path, sim.url, PAIR / "gui.json"))]) == 0
    out = capsys.readouterr().out
    assert "template statue" in out and "a GUI-format workflow; it will be converted" in out
    name = sim.url.removeprefix("http://")  # a server's name defaults to its host:port
    assert f"template statue on {name}: converts to 7 nodes; fields with a place: batch_size, " \
           "cfg, denoise, filename_prefix, height, negative, prompt, sampler, scheduler, seed, " \
           "steps, width\n" in out
    assert "all good" in out


def test_check_says_when_a_gui_template_cannot_be_converted(tmp_path, sim, capsys):
    config = _config(tmp_path, sim.url, _unknown_node(tmp_path))
    assert main(["check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    name = sim.url.removeprefix("http://")
    assert f"workflows.statue on {name}: cannot convert the GUI workflow: " \
           "node 12 (KSamplerUltra) is a node type this server does not " \
           "have" in out


def test_check_reports_a_required_input_left_without_source(tmp_path, sim, capsys):
    gui = copy.deepcopy(json.loads((PAIR / "gui.json").read_text()))
    next(n for n in gui["nodes"] if n["id"] == 14)["mode"] = 4  # VAE Decode bypassed
    path = tmp_path / "bypassed.json"
    path.write_text(json.dumps(gui))
    assert main(["check", "--config", str(_config(tmp_path, sim.url, path))]) == 1
    assert "node 7 (SaveImage): required input 'images' has no source: it is fed by node 14 " \
           "(VAEDecode), which is bypassed and has no IMAGE input to pass on" \
        in capsys.readouterr().out
