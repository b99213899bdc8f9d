"""Hints print the command as the user can run it; `init` says what to do next."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hotfolder.commands.init import init_dir, next_steps
from hotfolder.invocation import command, command_name


def _which(table: dict[str, str]):
    return lambda name: table.get(name)


def test_the_script_path_as_invoked_unless_path_finds_this_same_script(tmp_path):
    script = tmp_path / "venv" / "bin" / "hotfolder"
    script.parent.mkdir(parents=True)
    script.write_text("#!/usr/bin/env python3\n")
    other = tmp_path / "other-hotfolder"
    other.write_text("#!/usr/bin/env python3\n")
    link = tmp_path / "hotfolder"
    link.symlink_to(script)

    assert command_name(".venv/bin/hotfolder", which=_which({})) == ".venv/bin/hotfolder"
    assert command_name(str(script), which=_which({"hotfolder": str(other)})) == str(script)
    assert command_name(str(script), which=_which({"hotfolder": str(script)})) == "hotfolder"
    # a link on PATH to this very script (pipx, ~/.local/bin) runs the same program
    assert command_name(str(script), which=_which({"hotfolder": str(link)})) == "hotfolder"
    spaced = "/opt/my tools/bin/hotfolder"
    assert command_name(spaced, which=_which({})) == "'/opt/my tools/bin/hotfolder'"


def test_python_dash_m_keeps_the_interpreter_unless_path_finds_the_same_one(tmp_path):
    main = "/src/hotfolder/__main__.py"
    venv = "/work/.venv/bin/python"
    assert command_name(main, venv, which=_which({"python3": venv})) == "python3 -m hotfolder"
    assert command_name(main, venv, which=_which({"python": venv})) == "python -m hotfolder"
    # the system's python3 is not the virtual environment's, though the venv's links to it
    assert command_name(main, venv, which=_which({"python3": "/usr/bin/python3"})) == \
        f"{venv} -m hotfolder"


def test_embedded_in_another_program_says_hotfolder():
    assert command_name("/usr/bin/pytest", which=_which({})) == "hotfolder"


def test_command_quotes_its_arguments(tmp_path):
    assert command("check", "--config", Path("/a b/c.yaml"), name="hf") == \
        "hf check --config '/a b/c.yaml'"


def test_python_dash_m_run_for_real_prints_it_that_way(tmp_path):
    env = {**os.environ, "PATH": "/nonexistent"}  # no python3 to shorten it to
    written = subprocess.run([sys.executable, "-m", "hotfolder", "init", str(tmp_path / "d")],
                             capture_output=True, text=True, env=env, timeout=30, check=True)
    assert f"{sys.executable} -m hotfolder check --config {tmp_path / 'd'}" in written.stdout


def test_init_says_what_to_do_next_in_order(tmp_path):
    config = init_dir(tmp_path / "studio")
    text = next_steps(config, name="hf")
    steps = [text.index(s) for s in (
        f"Point `servers:` in {config} at your ComfyUI",
        f"hf check --config {config}",
        f"hf run --config {config}",
        "Drop files into")]
    assert steps == sorted(steps)
    for inbox in ("hot/inbox", "hot/img2img/inbox", "hot/upscale/inbox"):
        assert f"{tmp_path / 'studio' / inbox}/" in text
        assert (tmp_path / "studio" / inbox).is_dir()
    assert text.rstrip().endswith("hf demo")
