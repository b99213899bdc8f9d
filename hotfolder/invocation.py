"""How the user can run this same program again, for hints that tell them to run a command.

A hint saying `hotfolder check` is wrong for someone who typed `.venv/bin/hotfolder` (no
`hotfolder` on their PATH, or another one that is not this install) or `python -m hotfolder`:
copied as printed, it fails or runs a different version. So a hint prints the command as this
process was started, shortened to `hotfolder` only when that name finds this very program.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

Which = Callable[[str], str | None]


def command_name(argv0: str | None = None, executable: str | None = None,
                 which: Which = shutil.which) -> str:
    """`hotfolder`, the script's path as invoked (`.venv/bin/hotfolder`), or `python -m
    hotfolder` (with the interpreter's path unless PATH finds that same interpreter)."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    path = Path(argv0)
    if path.name == "__main__.py" and path.parent.name == "hotfolder":
        python = next((name for name in ("python3", "python")
                       if _same(which(name), executable, follow=False)), None)
        return f"{python or shlex.quote(executable)} -m hotfolder"
    if not path.stem.startswith("hotfolder"):  # embedded (a test runner, another program)
        return "hotfolder"
    # a script's links lead to the same program (its first line names its interpreter)
    return "hotfolder" if _same(which("hotfolder"), argv0, follow=True) else shlex.quote(argv0)


def command(*args: str | os.PathLike[str], name: str | None = None) -> str:
    """A whole command line to print, e.g. `command("check", "--config", path)`: this
    program's name, then the arguments quoted for a POSIX shell where they need it."""
    return " ".join([name or command_name(), *(shlex.quote(os.fspath(a)) for a in args)])


def _same(found: str | None, wanted: str, *, follow: bool) -> bool:
    """Whether PATH's `found` is `wanted`. An interpreter is compared by its path as given,
    not by what its links lead to: a virtual environment's python is a link to the system's,
    yet another program (it sees other packages)."""
    if found is None:
        return False
    if follow:
        return os.path.realpath(found) == os.path.realpath(wanted)
    return os.path.abspath(found) == os.path.abspath(wanted)
