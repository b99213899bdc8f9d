"""`hotfolder install-service`: the unit, the user, /etc/hotfolder and the hot folder tree.

It does the parts a package manager would do and prints the systemctl commands rather than
running them, so nothing starts before the admin has looked at the config.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import TextIO

from hotfolder.commands.init import TEMPLATE_FILE, config_text, copy_templates, folder_roots

UNITS = ("hotfolder.service", "hotfolder@.service")
DATA_ROOT = "/srv/hotfolder"
PREFIX = "/opt/hotfolder"


def unit_text(name: str) -> str:
    """The unit as shipped: from the wheel's package data, or the source tree's systemd/."""
    packaged = resources.files("hotfolder").joinpath("systemd", name)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "systemd" / name).read_text(encoding="utf-8")


def install(*, root: Path = Path("/"), template: bool = False, create_user: bool = True,
            user: str = "hotfolder", out: TextIO | None = None) -> int:
    out = out or sys.stdout  # looked up now: the stream may be replaced after import
    unit_name = UNITS[1] if template else UNITS[0]
    config_name = "studio.yaml" if template else "hotfolder.yaml"
    etc = root / "etc" / "hotfolder"
    units = root / "etc" / "systemd" / "system"
    data = root / DATA_ROOT.lstrip("/")
    units.mkdir(parents=True, exist_ok=True)
    (units / unit_name).write_text(unit_text(unit_name), encoding="utf-8")
    out.write(f"installed {units / unit_name}\n")
    copy_templates(etc / "workflows")
    config = etc / config_name
    if config.exists():
        out.write(f"kept the existing {config}\n")
    else:
        config.write_text(config_text(root=DATA_ROOT, workflow=f"workflows/{TEMPLATE_FILE}"),
                          encoding="utf-8")
        out.write(f"wrote {config} (hot folder at {DATA_ROOT})\n")
    for folder_root in folder_roots(data):
        for sub in ("inbox", "processing", "outbox", "done", "failed"):
            (folder_root / sub).mkdir(parents=True, exist_ok=True)
    steps = []
    if root.resolve() != Path("/"):
        # packaging: nothing outside `root` changes; the package creates the user when it is
        # installed, from these two files, with systemd's own tools
        steps += _packaged_user(root, user, out)
    elif create_user:
        _create_user(user, data, out)
    instance = "hotfolder@studio" if template else "hotfolder"
    if Path(sys.prefix).resolve() != Path(PREFIX):
        steps.append(f"python3 -m venv {PREFIX} && {PREFIX}/bin/pip install "
                     f"/path/to/hotfolder   # this checkout or its wheel: the unit runs "
                     f"{PREFIX}/bin/hotfolder")
    steps += [f"{PREFIX}/bin/hotfolder check --config {config}   # edit servers: first",
              "systemctl daemon-reload", f"systemctl enable --now {instance}",
              f"systemctl status {instance}   # STATUS= shows jobs and servers",
              f"journalctl -u {instance} -f"]
    out.write("\nnext steps:\n" + "".join(f"  {s}\n" for s in steps))
    return 0


def _packaged_user(root: Path, user: str, out: TextIO) -> list[str]:
    """sysusers.d and tmpfiles.d snippets below `root` that create the user and give it the
    hot folder tree; what the package's install script must run."""
    sysusers = root / "usr" / "lib" / "sysusers.d" / f"{user}.conf"
    tmpfiles = root / "usr" / "lib" / "tmpfiles.d" / f"{user}.conf"
    for path in (sysusers, tmpfiles):
        path.parent.mkdir(parents=True, exist_ok=True)
    sysusers.write_text(f'u {user} - "hotfolder daemon" {DATA_ROOT} /usr/sbin/nologin\n',
                        encoding="utf-8")
    tmpfiles.write_text(f"d {DATA_ROOT} 0750 {user} {user} -\n"
                        f"Z {DATA_ROOT} - {user} {user} -\n", encoding="utf-8")
    out.write(f"wrote {sysusers} and {tmpfiles} (the user and the tree's owner: nothing "
              f"outside {root} was changed)\n")
    return [f"systemd-sysusers {user}.conf && systemd-tmpfiles --create {user}.conf   "
            "# in the package's post-install script, on the target machine"]


def _create_user(user: str, home: Path, out: TextIO) -> None:
    if subprocess.run(["id", user], capture_output=True, check=False).returncode == 0:
        out.write(f"user {user} exists\n")
    else:
        subprocess.run(["useradd", "--system", "--home-dir", str(home), "--shell",
                        "/usr/sbin/nologin", "--user-group", user], check=True)
        out.write(f"created system user {user}\n")
    subprocess.run(["chown", "-R", f"{user}:{user}", str(home)], check=True)
