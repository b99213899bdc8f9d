"""Config loading: every problem reported with its key path, all at once."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from hotfolder.commands.init import config_text
from hotfolder.config.load import load_config, parse_config
from hotfolder.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_loads_and_matches_the_init_text():
    config = load_config(ROOT / "config/hotfolder.yaml")
    assert config.servers[0].url == "http://127.0.0.1:8188"
    assert config.folders[0].root == (ROOT / "hot").resolve()
    assert config.folders[0].template == "sdxl"
    text = (ROOT / "config/hotfolder.yaml").read_text()
    assert text == config_text(root="../hot", workflow="workflows/sdxl_txt2img.json")


def _base(tmp_path: Path) -> dict:
    shutil.copy(ROOT / "config/workflows/sdxl_txt2img.json", tmp_path / "t.json")
    return {"workflows": {"sdxl": "t.json"},
            "folders": [{"root": "hot", "workflow": "sdxl"}]}


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    config = parse_config(_base(tmp_path), base=tmp_path)
    assert config.folders[0].root == tmp_path / "hot"
    assert config.folders[0].inbox == tmp_path / "hot" / "inbox"
    assert config.templates["sdxl"].workflow["4"]["class_type"] == "CheckpointLoaderSimple"


def test_all_problems_with_key_paths(tmp_path):
    data = _base(tmp_path)
    data["folders"].append({"root": "other", "workflow": "missing.json", "settle_seconds": "x",
                            "defaults": {"steps": 0, "colour": "red"}})
    data["comfy"] = {"max_in_flight": 0, "pol_interval": 1}
    data["servers"] = ["ftp://nope"]
    with pytest.raises(ConfigError) as info:
        parse_config(data, base=tmp_path)
    text = "\n".join(info.value.problems)
    assert "folders[1].workflow: file not found:" in text
    assert "folders[1].settle_seconds: expected a number" in text
    assert "folders[1].defaults.steps: must be at least 1" in text
    assert "folders[1].defaults.colour: unknown key" in text
    assert "comfy.max_in_flight: must be at least 1" in text
    assert "comfy.pol_interval: unknown key (did you mean comfy.poll_interval?" in text
    assert "servers[0].url: expected an http:// or https:// URL" in text


def test_output_policy_defaults_and_problems(tmp_path):
    data = _base(tmp_path)
    policy = parse_config(data, base=tmp_path).folders[0].output
    assert (policy.format, policy.quality, policy.metadata, policy.untouched) == \
        ("png", 90, "keep", True)
    data["folders"][0].update(output_format="webp", output_quality=75, metadata="strip")
    policy = parse_config(data, base=tmp_path).folders[0].output
    assert (policy.format, policy.quality, policy.metadata, policy.untouched) == \
        ("webp", 75, "strip", False)
    data["folders"].append({"root": "b", "workflow": "sdxl", "output_format": "gif",
                            "output_quality": 101, "metadata": "drop"})
    data["folders"].append({"root": "c", "workflow": "sdxl", "output_quality": 80})
    with pytest.raises(ConfigError) as info:
        parse_config(data, base=tmp_path)
    text = "\n".join(info.value.problems)
    assert "folders[1].output_format: expected one of png, jpeg, webp, got 'gif'" in text
    assert "folders[1].output_quality: must be at most 100, got 101" in text
    assert "folders[1].metadata: expected one of keep, strip, got 'drop'" in text
    assert "folders[2].output_quality: applies to output_format jpeg or webp only" in text


def test_unknown_template_name(tmp_path):
    data = _base(tmp_path)
    data["folders"][0]["workflow"] = "sdlx"
    with pytest.raises(ConfigError, match=r"folders\[0\].workflow: unknown template 'sdlx'"):
        parse_config(data, base=tmp_path)


def test_gui_template_is_taken_for_conversion_and_a_malformed_one_refused(tmp_path):
    data = _base(tmp_path)
    (tmp_path / "t.json").write_text('{"nodes": [], "links": []}')
    assert parse_config(data, base=tmp_path).templates["sdxl"].source_format == "gui"
    (tmp_path / "t.json").write_text('{"nodes": [{"id": 1}], "links": []}')
    with pytest.raises(ConfigError, match="the GUI workflow is malformed"):
        parse_config(data, base=tmp_path)


def test_bad_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("folders: [\n")
    with pytest.raises(ConfigError, match="the YAML is not valid"):
        load_config(path)


def test_a_yaml_error_in_the_config_is_one_line_with_its_place(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("comfy:\n  poll_interval: 2\n  job_timeout: a: b\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: the YAML is not valid at line 3, column 17: "
                                   "mapping values are not allowed here"]


def test_unknown_key_names_the_closest_key_path(tmp_path):
    data = _base(tmp_path)
    data["folders"][0]["setle_seconds"] = 2
    with pytest.raises(ConfigError) as info:
        parse_config(data, base=tmp_path)
    assert info.value.problems[0].startswith(
        "folders[0].setle_seconds: unknown key (did you mean folders[0].settle_seconds? known: ")


def test_an_empty_or_broken_template_file_says_so(tmp_path):
    data = _base(tmp_path)
    (tmp_path / "t.json").write_text(" \n")
    with pytest.raises(ConfigError, match=r"workflows.sdxl.path: .*t.json is empty\n"):
        parse_config(data, base=tmp_path)
    (tmp_path / "t.json").write_text('{"1": }')
    with pytest.raises(ConfigError, match=r"t.json is not valid JSON at line 1, column 7: "
                                          r"Expecting value\n"):
        parse_config(data, base=tmp_path)


@pytest.mark.parametrize("unit", ["hotfolder.service", "hotfolder@.service"])
def test_the_units_name_the_credential_form_the_config_takes(tmp_path, monkeypatch, unit):
    """The comment beside LoadCredential= is what people copy into their config."""
    text = (ROOT / "systemd" / unit).read_text()
    loaded = re.search(r"^# LoadCredential=([\w-]+):", text, re.M)
    named = re.search(r"^#\s+(token: \{credential: ([\w-]+)\})$", text, re.M)
    assert loaded and named and named.group(2) == loaded.group(1)
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / loaded.group(1)).write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    data = _base(tmp_path)
    data["servers"] = [{"url": "http://127.0.0.1:8188", **yaml.safe_load(named.group(1))}]
    config = parse_config(data, base=tmp_path)
    assert config.servers[0].headers["Authorization"] == "Bearer s3cret"


def test_http_section_is_off_by_default_and_parsed(tmp_path, monkeypatch):
    assert not parse_config(_base(tmp_path), base=tmp_path).http.enabled
    data = _base(tmp_path)
    monkeypatch.setenv("WEB_TOKEN", "a-long-token")
    data["http"] = {"listen": "[::1]:9000", "allow_actions": True, "recent": 5,
                    "token": {"env": "WEB_TOKEN"}}
    http = parse_config(data, base=tmp_path).http
    assert (http.host, http.port, http.listen, http.loopback) == ("::1", 9000, "[::1]:9000", True)
    assert (http.allow_actions, http.recent, http.token) == (True, 5, "a-long-token")
    assert "a-long-token" not in repr(http)


def test_http_problems_with_key_paths(tmp_path):
    data = _base(tmp_path)
    data["http"] = {"listen": "8787", "recent": 0, "colour": "blue",
                    "basic_auth": {"user": "a:b", "password": {"env": "NOT_SET_ANYWHERE"}}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, base=tmp_path)
    text = "\n".join(info.value.problems)
    assert "http.listen: expected HOST:PORT" in text
    assert "http.recent: must be at least 1" in text
    assert "http.colour: unknown key" in text
    assert "http.basic_auth.password: the environment variable NOT_SET_ANYWHERE" in text
    assert "http.basic_auth.user: expected a user name" in text


def test_http_actions_off_loopback_need_auth(tmp_path, monkeypatch):
    data = _base(tmp_path)
    data["http"] = {"listen": "0.0.0.0:8787", "allow_actions": True}
    with pytest.raises(ConfigError, match=r"http.allow_actions: actions on a page listening on "
                                          r"0.0.0.0:8787 \(not loopback\) need http.token"):
        parse_config(data, base=tmp_path)
    monkeypatch.setenv("WEB_PASSWORD", "correct horse")
    data["http"]["basic_auth"] = {"user": "studio", "password": {"env": "WEB_PASSWORD"}}
    http = parse_config(data, base=tmp_path).http
    assert http.basic_auth == ("studio", "correct horse") and not http.loopback


def test_schedule_and_priorities(tmp_path):
    data = _base(tmp_path)
    config = parse_config(data, base=tmp_path)
    assert (config.schedule.policy, config.schedule.max_reorder_seconds,
            config.schedule.max_overtaken, config.schedule.switch_wait_seconds) == (
                "models", 120.0, 20, 0.25)
    folder = config.folders[0]
    assert (folder.priority, folder.limits.min_priority, folder.limits.max_priority) == (0, 0, 0)
    data["schedule"] = "fifo"
    data["folders"][0].update(priority=-2, limits={"min_priority": -5, "max_priority": 3})
    config = parse_config(data, base=tmp_path)
    assert config.schedule.policy == "fifo"
    folder = config.folders[0]
    assert (folder.priority, folder.limits.min_priority, folder.limits.max_priority) == (-2, -5, 3)
    data["schedule"] = {"policy": "models", "max_reorder_seconds": 30, "max_overtaken": 4}
    assert parse_config(data, base=tmp_path).schedule.max_overtaken == 4


def test_schedule_and_priority_problems(tmp_path):
    data = _base(tmp_path)
    data["schedule"] = {"policy": "smart", "max_overtaken": 1.5, "max_reorder": 3,
                        "switch_wait_seconds": 60}
    data["folders"][0].update(priority="high", limits={"min_priority": 2, "max_priority": 1})
    with pytest.raises(ConfigError) as info:
        parse_config(data, base=tmp_path)
    text = "\n".join(info.value.problems)
    assert "schedule.policy: expected one of models, fifo, got 'smart'" in text
    assert "schedule.max_overtaken: expected a whole number, got 1.5" in text
    assert "schedule.switch_wait_seconds: must be at most 30, got 60" in text
    assert "schedule.max_reorder: unknown key (did you mean schedule.max_reorder_seconds?" in text
    assert "folders[0].priority: expected a whole number, got 'high'" in text
    assert "folders[0].limits.min_priority: must not be above max_priority (2 > 1)" in text
    data = _base(tmp_path)
    data["schedule"] = "random"
    with pytest.raises(ConfigError) as info:
        parse_config(data, base=tmp_path)
    assert "schedule.policy: expected one of models, fifo, got 'random'" in info.value.problems
