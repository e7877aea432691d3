"""The folder watcher of KVM machines, without a machine: which paths of the machine a
change here names (real fanotify on a temporary folder), that changes made by the
machine's own server are not sent back, and that `ensure` keeps one watcher per
machine, started once, ended by `stop`."""

from __future__ import annotations

import os
import time
from pathlib import Path

from provisioners.ssh import Target
from vbox_cli import folderwatch
from vbox_cli.project import Project


def _read_all(watcher: folderwatch.Watcher) -> list[str]:
    import select

    found: list[str] = []
    while select.select([watcher.fd], [], [], 0.2)[0]:
        found += [p for p in watcher.read() if p not in found]
    return found


def test_changes_name_the_machines_paths(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "old.txt").write_text("x")
    watcher = folderwatch.Watcher()
    watcher.add_tree(tmp_path, "/vbox")
    (tmp_path / "src" / "app.py").write_text("print(1)\n")  # written: the file
    (tmp_path / "old.txt").unlink()  # removed: its folder
    (tmp_path / ".git" / "index").write_text("x")  # not watched
    (tmp_path / "new").mkdir()  # a new folder is watched from now on
    time.sleep(0.05)
    assert _read_all(watcher) == ["/vbox/src/app.py", "/vbox", "/vbox/new"]
    (tmp_path / "new" / "inner.txt").write_text("y")
    os.utime(tmp_path / "src" / "app.py")  # an attribute change (the machine's own touch): not forwarded
    assert _read_all(watcher) == ["/vbox/new/inner.txt"]


def test_changes_of_the_machines_own_server_are_not_sent_back(tmp_path):
    import subprocess

    writer = subprocess.Popen(["sh", "-c", "read go; echo x > made-by-server; read done"], cwd=tmp_path,
                              stdin=subprocess.PIPE, text=True)
    watcher = folderwatch.Watcher(ignore=lambda pid: pid == writer.pid)
    watcher.add_tree(tmp_path, "/vbox")
    try:
        writer.stdin.write("go\n")
        writer.stdin.flush()
        time.sleep(0.2)
        (tmp_path / "made-here").write_text("y")
        assert _read_all(watcher) == ["/vbox/made-here"]
    finally:
        writer.stdin.close()
        writer.wait()


def test_one_watcher_per_machine(tmp_path):
    project = Project.at(tmp_path)
    target = Target(name="vm", host="127.0.0.1", port=1, user="vbox", client_key=tmp_path / "key",
                    host_key="ssh-ed25519 AAAA")  # nothing answers there: it keeps trying
    folders = [(str(tmp_path), "/vbox")]
    try:
        assert folderwatch.ensure(project, "vm", target, folders)
        pid = int((tmp_path / ".vbox/watch/vm.pid").read_text())
        assert folderwatch.leaks(project.id) and not folderwatch.ensure(project, "vm", target, folders)
        assert int((tmp_path / ".vbox/watch/vm.pid").read_text()) == pid  # the same one, not another
        assert folderwatch.ensure(project, "vm", target, [(str(tmp_path), "/project")])  # changed: replaced
        assert int((tmp_path / ".vbox/watch/vm.pid").read_text()) != pid
    finally:
        folderwatch.stop(project, "vm")
    for _ in range(50):
        if not folderwatch.leaks(project.id):
            break
        time.sleep(0.1)
    assert folderwatch.leaks(project.id) == []
    assert not (tmp_path / ".vbox/watch/vm.json").exists() and not Path(f"/proc/{pid}").exists() or \
        b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()


def test_a_burst_becomes_its_folders():
    few = [f"/vbox/src/f{i}" for i in range(folderwatch.MAX_BATCH)]
    assert folderwatch.batch(few) == few
    many = few + [f"/vbox/out/f{i}" for i in range(50)] + ["/top"]
    assert folderwatch.batch(many) == ["/vbox/src", "/vbox/out", "/"]
