"""The commands as a user runs them: check, submit, init, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from harness import make_config

from hotfolder.cli import EX_CONFIG, main

pytestmark = pytest.mark.usefixtures("restore_logging")


def write_config(base: Path, url: str, **folder) -> Path:
    path = base / "hotfolder.yaml"
    path.write_text(yaml.safe_dump(make_config(base, url, **folder)))
    return path


def test_check_passes_on_a_good_setup(tmp_path, sim, capsys):
    assert main(["check", "--config", str(write_config(tmp_path, sim.url))]) == 0
    out = capsys.readouterr().out
    assert "all good" in out and "fields with a place: batch_size, cfg, denoise" in out


def test_check_suggests_the_real_class_name(tmp_path, sim, capsys):
    config = write_config(tmp_path, sim.url)
    template = tmp_path / "workflows" / "sdxl.json"
    workflow = json.loads(template.read_text())
    workflow["4"]["class_type"] = "CheckpointSimple"  # the tutorial's mistake
    template.write_text(json.dumps(workflow))
    assert main(["check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "CheckpointSimple" in out and "CheckpointLoaderSimple" in out


def test_check_reports_an_unreachable_server(tmp_path, capsys):
    config = write_config(tmp_path, "http://127.0.0.1:9")
    assert main(["check", "--config", str(config)]) == 1
    assert "servers[0] http://127.0.0.1:9: ComfyUI at http://127.0.0.1:9 is unreachable" \
        in capsys.readouterr().out


def test_config_error_exits_78_and_names_the_key(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("folders:\n  - root: hot\n    workflow: nowhere.json\n")
    assert main(["run", "--config", str(path)]) == EX_CONFIG
    assert "folders[0].workflow: file not found" in capsys.readouterr().err


def test_submit_runs_files_once_and_reports_outputs(tmp_path, sim, capsys):
    config = write_config(tmp_path, sim.url)
    good = tmp_path / "moon.txt"
    good.write_text("the moon over a lake")
    bad = tmp_path / "bad.json"
    bad.write_text('{"prompt": "x", "seed": "lucky"}')
    assert main(["submit", "--config", str(config), str(good)]) == 0
    out = capsys.readouterr().out
    assert "moon.txt: done ->" in out and "moon_00001.png" in out
    assert good.exists()  # the user's own file stays where it was
    assert (tmp_path / "hot" / "outbox" / "moon_00001.png").exists()
    assert main(["submit", "--config", str(config), str(good), str(bad)]) == 1
    assert "bad.json: failed: " in capsys.readouterr().out


def test_init_creates_a_config_that_runs_from_anywhere(tmp_path, sim):
    target = tmp_path / "studio"
    assert main(["init", str(target)]) == 0
    assert (target / "workflows" / "sdxl_txt2img.json").exists()
    assert (target / "hot" / "inbox").is_dir()
    config = target / "hotfolder.yaml"
    config.write_text(config.read_text().replace("http://127.0.0.1:8188", sim.url))
    (target / "hot" / "inbox" / "owl.txt").write_text("an owl at night")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-m", "hotfolder", "run", "--once", "--config",
                             str(config)], cwd=elsewhere, capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert (target / "hot" / "done" / "owl.txt").exists()
    assert (target / "hot" / "outbox" / "owl_00001.png").exists()
    assert main(["init", str(target)]) == 1  # never overwrites an existing config


def test_version():
    result = subprocess.run([sys.executable, "-m", "hotfolder", "--version"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.startswith("hotfolder ")


def test_install_service_lays_out_unit_config_and_folders(tmp_path, capsys):
    from hotfolder.config.load import load_config

    assert main(["install-service", "--root", str(tmp_path), "--no-user"]) == 0
    out = capsys.readouterr().out
    unit = tmp_path / "etc/systemd/system/hotfolder.service"
    assert unit.read_text() == (Path(__file__).resolve().parents[1]
                                / "systemd/hotfolder.service").read_text()
    config = load_config(tmp_path / "etc/hotfolder/hotfolder.yaml")
    assert config.folders[0].root == Path("/srv/hotfolder")
    assert (tmp_path / "srv/hotfolder/inbox").is_dir()
    assert "systemctl enable --now hotfolder" in out
    assert main(["install-service", "--root", str(tmp_path), "--no-user", "--template"]) == 0
    assert (tmp_path / "etc/systemd/system/hotfolder@.service").exists()
    assert "systemctl enable --now hotfolder@studio" in capsys.readouterr().out


def test_install_service_below_a_root_changes_nothing_outside_it(tmp_path):
    """For packaging: the host's users and groups stay as they were; the package gets
    sysusers.d and tmpfiles.d snippets that create the user and its tree on the target."""
    before = {p: Path(p).read_bytes() for p in ("/etc/passwd", "/etc/group")}
    assert main(["install-service", "--root", str(tmp_path / "pkg")]) == 0
    assert {p: Path(p).read_bytes() for p in before} == before
    sysusers = (tmp_path / "pkg/usr/lib/sysusers.d/hotfolder.conf").read_text()
    assert sysusers.startswith("u hotfolder - ") and "/srv/hotfolder" in sysusers
    tmpfiles = (tmp_path / "pkg/usr/lib/tmpfiles.d/hotfolder.conf").read_text()
    assert "Z /srv/hotfolder - hotfolder hotfolder" in tmpfiles
    assert (tmp_path / "pkg/etc/systemd/system/hotfolder.service").is_file()
