"""When a file is ready, and which file it is: the kernel's answer about writers, descriptors
that never follow a link, the claim tied to an inode, and the watcher's rules (a fake clock)."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hotfolder.config.model import FolderConfig
from hotfolder.errors import JobError
from hotfolder.fsutil import apply_mode
from hotfolder.job import claim as claim_module
from hotfolder.job.claim import BeingWritten, claim
from hotfolder.job.intake import StillWritten, read_job, verify_content, verify_unchanged
from hotfolder.job.state import JobState
from hotfolder.job.watch import InboxWatcher
from hotfolder.jobfile import InUse, Refused, open_file
from hotfolder.writers import ignore_lease_breaks, open_for_writing, writers_of


@pytest.fixture
def leases() -> Iterator[None]:
    """SIGIO ignored, as the daemon does at start, so leases may be tried; put back after."""
    before = signal.getsignal(signal.SIGIO)
    assert ignore_lease_breaks()
    yield
    signal.signal(signal.SIGIO, before)


def folder_config(tmp_path: Path, **kwargs: Any) -> FolderConfig:
    folder = FolderConfig(name="f", root=tmp_path / "hot", template="t", **kwargs)
    for path in folder.all_dirs():
        path.mkdir(parents=True, exist_ok=True)
    return folder


def _ask(path: Path) -> Any:
    fd = os.open(path, os.O_RDONLY)
    try:
        return open_for_writing(fd)
    finally:
        os.close(fd)


# -- the kernel's answer ---------------------------------------------------------------------


def test_the_kernel_says_whether_a_file_is_open_for_writing(tmp_path, leases):
    path = tmp_path / "a.txt"
    with open(path, "wb") as fh:
        fh.write(b"x")
        assert _ask(path).writing is True
        mine = {"pid": os.getpid(), "process": Path("/proc/self/comm").read_text().strip()}
        assert mine in writers_of(path)
    assert _ask(path).writing is False
    assert writers_of(path) == []
    with open(path, "rb"):  # readers do not count
        assert _ask(path).writing is False


def test_without_sigio_ignored_no_lease_is_tried(tmp_path):
    before = signal.getsignal(signal.SIGIO)
    signal.signal(signal.SIGIO, signal.SIG_DFL)
    try:
        path = tmp_path / "a.txt"
        path.write_text("x")
        answer = _ask(path)
        assert answer.writing is None and "SIGIO" in answer.reason
    finally:
        signal.signal(signal.SIGIO, before)


def test_descriptors_never_follow_links_nor_open_fifos_or_hard_links(tmp_path, leases):
    (tmp_path / "real.txt").write_text("x")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    os.mkfifo(tmp_path / "pipe.txt")
    os.link(tmp_path / "real.txt", tmp_path / "hard.txt")
    for name, words in [("link.txt", "symbolic link"), ("pipe.txt", "not a regular file"),
                        ("hard.txt", "hard link")]:
        with pytest.raises(Refused, match=words):
            open_file(tmp_path, name)
    (tmp_path / "hard.txt").unlink()
    fd, st = open_file(tmp_path, "real.txt")
    os.close(fd)
    assert st.st_nlink == 1
    # another program's write lease (Samba's oplocks, say): the open does not wait for it
    path = tmp_path / "leased.txt"
    path.write_text("x")
    holder = os.open(path, os.O_RDWR)
    try:
        fcntl.fcntl(holder, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        with pytest.raises(InUse):
            open_file(tmp_path, "leased.txt")
    finally:
        fcntl.fcntl(holder, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        os.close(holder)


def test_modes_and_times_never_change_through_a_link_or_a_hard_link(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0o600)
    os.utime(secret, (1000, 1000))
    (tmp_path / "link").symlink_to(secret)
    os.link(secret, tmp_path / "hard")
    for name in ("link", "hard"):
        apply_mode(tmp_path / name, 0o666, touch=True)
    assert secret.stat().st_mode & 0o777 == 0o600 and secret.stat().st_mtime == 1000
    (tmp_path / "own").write_text("x")
    apply_mode(tmp_path / "own", 0o640, touch=True)
    assert (tmp_path / "own").stat().st_mode & 0o777 == 0o640


# -- the claim ---------------------------------------------------------------------------------


def test_the_claim_refuses_links_and_files_being_written(tmp_path, leases):
    folder = folder_config(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("token")
    (folder.inbox / "link.txt").symlink_to(secret)
    os.link(secret, folder.inbox / "hard.txt")
    for name in ("link.txt", "hard.txt"):
        with pytest.raises(Refused):
            claim(folder, folder.inbox / name)
        assert os.path.lexists(folder.inbox / name)
    with open(folder.inbox / "open.txt", "wb") as fh:
        fh.write(b"half a prompt")
        with pytest.raises(BeingWritten):
            claim(folder, folder.inbox / "open.txt")
        assert claim(folder, folder.inbox / "open.txt", ask_writers=False) is not None
    # the job and the record written with its claim; nothing of the refused ones
    assert sorted(p.name for p in folder.processing.iterdir()) == [".open.txt.state.json",
                                                                   "open.txt"]


def test_the_claim_is_tied_to_the_inode_it_judged(tmp_path, monkeypatch):
    folder = folder_config(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("token")
    (folder.inbox / "job.txt").write_text("a prompt")
    rename = os.rename

    def swap_then_rename(src: Any, dst: Any) -> None:  # the attacker wins the race
        os.unlink(src)
        os.symlink(secret, src)
        rename(src, dst)

    monkeypatch.setattr(claim_module.os, "rename", swap_then_rename)
    with pytest.raises(Refused, match="replaced by another file"):
        claim(folder, folder.inbox / "job.txt")
    monkeypatch.setattr(claim_module.os, "rename", rename)
    assert os.path.islink(folder.inbox / "job.txt")  # the swapped-in link went back, unread
    assert list(folder.processing.iterdir()) == []
    with pytest.raises(Refused, match="symbolic link"):  # and it stays refused
        claim(folder, folder.inbox / "job.txt")


def test_reading_a_claimed_job_checks_the_inode_and_the_version(tmp_path):
    folder = folder_config(tmp_path, settle_seconds=0.1)
    (folder.inbox / "job.txt").write_text("a red fox")
    state = claim(folder, folder.inbox / "job.txt", ask_writers=False)
    assert state is not None and state.file is not None
    assert read_job(folder, state).fields["prompt"] == "a red fox"
    assert state.read["bytes"] == 9
    verify_unchanged(folder, state)
    verify_content(folder, state)
    with open(folder.processing / "job.txt", "ab") as fh:  # a writer that kept its descriptor
        fh.write(b" in snow")
    with pytest.raises(StillWritten):
        verify_unchanged(folder, state)
    with pytest.raises(StillWritten) as caught:
        verify_content(folder, state)
    assert caught.value.rerun
    assert read_job(folder, state, settled=True).fields["prompt"] == "a red fox in snow"
    (folder.processing / "other").write_text("someone else's prompt")
    os.replace(folder.processing / "other", folder.processing / "job.txt")  # another file
    with pytest.raises(JobError, match="no longer the file that was claimed"):
        read_job(folder, state, settled=True)


def test_a_fresh_file_that_cannot_be_parsed_is_waited_for_a_stable_one_fails(tmp_path):
    folder = folder_config(tmp_path, settle_seconds=0.1)
    path = folder.processing / "cut.json"
    path.write_text('{"prompt": "a fox')
    state = JobState(name="cut.json", folder="f")
    with pytest.raises(StillWritten) as caught:
        read_job(folder, state)
    assert caught.value.window == 5.0 and caught.value.error is not None
    old = time.time() - 60
    os.utime(path, (old, old))
    state = JobState(name="cut.json", folder="f")
    with pytest.raises(JobError, match=r"invalid JSON .* had not changed for 6\d\.\d s"):
        read_job(folder, state)
    path.write_text('{"prompt": "a fox", "colour": "red"}')  # complete, and wrong: at once
    with pytest.raises(JobError, match="unknown field 'colour'"):
        read_job(folder, JobState(name="cut.json", folder="f"))


# -- the watcher's rules -------------------------------------------------------------------------


class Ready(list):
    def __call__(self, folder: FolderConfig, path: Path, detected_at: float, how: str) -> None:
        self.append((path.name, how))


def _watcher(folder: FolderConfig, mode: str = "native") -> tuple[InboxWatcher, Ready]:
    ready = Ready()
    watcher = InboxWatcher([folder], ready)
    watcher._modes[folder.inbox.resolve()] = mode  # as start() would find it, no observer
    return watcher, ready


def test_a_closed_or_renamed_file_is_ready_at_once_a_file_held_open_never(tmp_path, leases):
    folder = folder_config(tmp_path, settle_seconds=60.0)
    watcher, ready = _watcher(folder)
    inbox = folder.inbox.resolve()
    (inbox / "closed.txt").write_text("done writing")
    watcher._note(str(inbox / "closed.txt"), "writer closed")
    (inbox / ".x.part").write_text("renamed")
    os.rename(inbox / ".x.part", inbox / "renamed.txt")
    watcher._note(str(inbox / "renamed.txt"), "renamed in")
    fh = open(inbox / "held.txt", "wb")  # noqa: SIM115 - closed below
    fh.write(b"quiet, but still open")
    fh.flush()
    watcher._note(str(inbox / "held.txt"), "changed")
    watcher.tick(now=100.0)
    assert sorted(ready) == [("closed.txt", "writer closed"), ("renamed.txt", "renamed in")]
    watcher.tick(now=1000.0)  # long past settle_seconds: still held open, still not taken
    assert [name for name, _ in ready] == ["closed.txt", "renamed.txt"]
    held = watcher.being_written()["f"]
    assert held[0]["file"] == "held.txt" and held[0]["writers"][0]["pid"] == os.getpid()
    fh.close()
    watcher._note(str(inbox / "held.txt"), "writer closed")
    watcher.tick(now=1000.1)
    assert ready[-1] == ("held.txt", "writer closed")
    assert watcher.being_written() == {}


def test_a_file_only_seen_created_waits_for_its_close_or_the_settle_window(tmp_path, leases):
    folder = folder_config(tmp_path, settle_seconds=1.0)
    watcher, ready = _watcher(folder)
    inbox = folder.inbox.resolve()
    (inbox / "new.txt").write_text("x")
    watcher._note(str(inbox / "new.txt"), "changed")
    watcher.tick(now=100.0)
    watcher.tick(now=100.5)
    assert ready == []
    watcher.tick(now=101.1)
    assert ready == [("new.txt", "settled")]
    (inbox / "found.txt").write_text("already there at start")
    watcher.rescan()
    watcher.tick(now=102.0)
    assert ready[-1] == ("found.txt", "found")


def test_polling_and_ready_settle_wait_out_the_window(tmp_path, leases):
    for mode, ready_setting in (("poll", "auto"), ("native", "settle")):
        base = tmp_path / mode
        folder = folder_config(base, settle_seconds=1.0, ready=ready_setting)
        watcher, ready = _watcher(folder, mode)
        inbox = folder.inbox.resolve()
        (inbox / "a.txt").write_text("x")
        watcher._note(str(inbox / "a.txt"), "writer closed")
        watcher.tick(now=10.0)
        assert ready == [], mode
        watcher.tick(now=11.1)
        assert ready == [("a.txt", "settled")], mode
    # polling still refuses a file a writer on this machine holds open
    folder = folder_config(tmp_path / "held", settle_seconds=1.0)
    watcher, ready = _watcher(folder, "poll")
    inbox = folder.inbox.resolve()
    with open(inbox / "b.txt", "wb") as fh:
        fh.write(b"x")
        fh.flush()
        watcher._note(str(inbox / "b.txt"), "changed")
        watcher.tick(now=10.0)
        watcher.tick(now=20.0)
        assert ready == []
    watcher.tick(now=21.5)
    assert ready == [("b.txt", "settled")]


def test_status_text_names_a_file_being_written_and_its_writer():
    from hotfolder.commands.status import format_text

    doc = {"daemon": {"running": True, "pid": 1, "host": "h"}, "servers": [],
           "folders": [{"name": "f", "root": "/hot", "jobs": [],
                        "counts": {"waiting": 1, "running": 0, "done": 0, "failed": 0},
                        "being_written": [{"file": "slow.txt", "since": 0, "seconds": 12.4,
                                           "writers": [{"pid": 42, "process": "rsync"}]}]}]}
    assert "  slow.txt: being written for 12 s by pid 42 (rsync); taken once its writer " \
           "closes it" in format_text(doc).splitlines()


def test_a_suspect_job_does_its_risky_steps_alone():
    import threading

    from hotfolder.job.crashguard import Gate

    gate = Gate(threading.Event())
    inside: list[str] = []
    seen: list[list[str]] = []
    lock = threading.Lock()

    def job(name: str, suspect: bool) -> None:
        with gate.passage(suspect=suspect):
            with lock:
                inside.append(name)
                seen.append(list(inside))
            time.sleep(0.05)  # stay inside, so that the other threads try to come in meanwhile
            with lock:
                inside.remove(name)

    threads = [threading.Thread(target=job, args=(f"j{i}", i % 3 == 0)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for view in seen:  # a suspect (j0, j3, j6) never shares its passage
        assert len(view) == 1 or not {"j0", "j3", "j6"} & set(view), view
    assert len(seen) == 9


def test_a_claimed_job_left_half_moved_by_a_crash_is_still_read(tmp_path):
    """A kill between the link into done/ and the unlink leaves the claimed file with a second
    link of the daemon's own: it is the claimed inode, so it is read and finished, not refused."""
    folder = folder_config(tmp_path)
    (folder.inbox / "job.txt").write_text("a red fox")
    state = claim(folder, folder.inbox / "job.txt", ask_writers=False)
    assert state is not None
    os.link(folder.processing / "job.txt", folder.done / "job.txt")
    assert read_job(folder, state).fields["prompt"] == "a red fox"
    verify_content(folder, state)  # unchanged: no rerun


def test_a_daemon_in_a_thread_leaves_sigio_alone():
    """The demo runs its daemon in a thread, where Python allows no signal handler."""
    import threading

    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(ignore_lease_breaks()))
    thread.start()
    thread.join()
    assert answers == [False]
